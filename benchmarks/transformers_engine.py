"""Decode speed of the transformers engine on a tiny random Qwen3 (4 layers, hidden 256, built
in code): greedy tokens per second through ``engine.generate``, end tokens banned so every run
writes exactly --tokens tokens. Pass --src to time another checkout's engine (interleave runs
to compare; the machine is noisy).

    .venv/bin/python benchmarks/transformers_engine.py [--tokens 256] [--rounds 3] [--src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def checkpoint(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(["The quick brown fox jumps over the lazy dog."] * 50, trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=CHATML,
    ).save_pretrained(folder)  # fmt: skip
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=512,
        num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4, head_dim=32,
        max_position_embeddings=2048, tie_word_embeddings=True,
    )  # fmt: skip
    Qwen3ForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


async def run(folder: Path, tokens: int, rounds: int) -> list[float]:
    from kaiyuan.engines.base import Finish, SamplingParams
    from kaiyuan.engines.hf_transformers import TransformersEngine

    engine = TransformersEngine(model_id="bench", path=folder, threads=2)
    prompt = engine.tokenize("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    params = SamplingParams(max_tokens=tokens, temperature=0, logit_bias=((2, -100.0),))
    speeds = []
    for _ in range(rounds + 1):  # the first round warms up
        start, produced = time.perf_counter(), 0
        async for event in engine.generate(prompt, params):
            if isinstance(event, Finish):
                produced = event.completion_tokens
        speeds.append(produced / (time.perf_counter() - start))
    await engine.aclose()
    return speeds[1:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", type=Path, help="a checkout's src/ to import kaiyuan from")
    args = parser.parse_args()
    if args.src:
        sys.path.insert(0, str(args.src.resolve()))
    folder = checkpoint(Path(tempfile.mkdtemp()))
    speeds = asyncio.run(run(folder, args.tokens, args.rounds))
    print(" ".join(f"{s:.1f}" for s in speeds), "tok/s")


if __name__ == "__main__":
    main()
