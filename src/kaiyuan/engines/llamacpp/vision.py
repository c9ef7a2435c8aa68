"""Images for GGUF vision models: a projector file (``mmproj``) bound to the loaded model
through llama.cpp's libmtmd, as llama-server does it.

The chat template sees each image as mtmd's media marker (``ModelInfo.image_placeholder``);
``Projector.tokenize`` turns the prompt text and the decoded images into mtmd chunks (the
model's own image preprocessing and resizing happen there; guarded client text, T25, is read as
plain text) and ``MediaPrompt.evaluate`` reads them into one slot's sequence, text and image
embeddings alike. The scheduler does that when the request starts, then the slot generates in
the shared batch like any other.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import _logger as llama_logger
from llama_cpp import mtmd_cpp

from kaiyuan.chat.guard import split_guarded
from kaiyuan.errors import InvalidRequest
from kaiyuan.store.inspection import is_projector

IMAGE_TOKEN = -1  # stands for an image position in a MediaPrompt's token list


def find_projector(model_file: Path) -> Path | None:
    """The vision projector stored beside a GGUF model, if any."""
    found = sorted(p for p in model_file.parent.glob("*.gguf") if is_projector(p.name))
    return found[0] if found else None


class Projector:
    def __init__(self, path: Path, model: Any, threads: int) -> None:
        quiet = ctypes.c_void_p(0)
        mtmd_cpp.mtmd_log_set(llama_logger.llama_log_callback, quiet)
        mtmd_cpp.mtmd_helper_log_set(llama_logger.llama_log_callback, quiet)
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = True  # where llama.cpp was built with a GPU backend
        params.print_timings = False
        params.n_threads = threads
        self.ctx = mtmd_cpp.mtmd_init_from_file(str(path).encode(), model, params)
        if not self.ctx:
            raise ValueError(f"the vision projector {path.name} could not be loaded")
        if not mtmd_cpp.mtmd_support_vision(self.ctx):
            self.close()
            raise ValueError(f"{path.name} is not a vision projector")
        self.marker = mtmd_cpp.mtmd_default_marker().decode()
        self.lock = threading.Lock()  # libmtmd is not documented as thread-safe

    def tokenize(self, text: str, images: Sequence[Any]) -> MediaPrompt:
        """``images`` are decoded RGB PIL images, one per marker in ``text``."""
        if text.count(self.marker) != len(images):
            raise InvalidRequest(
                f"the chat template placed {text.count(self.marker)} image markers for "
                f"{len(images)} images",
                param="messages",
            )
        bitmaps = []
        for image in images:
            data = image.tobytes()  # RGB, row-major
            buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
            bitmaps.append(mtmd_cpp.mtmd_bitmap_init(image.width, image.height, buffer))
        prompt = MediaPrompt(mtmd_cpp.mtmd_input_chunks_init(), bitmaps)
        # What mtmd_tokenize does with the markers, with special tokens parsed only in the
        # template's text: each guard's text is a part of its own, read as plain text.
        parts: list[Any] = []
        pending = iter(bitmaps)
        for piece, plain in split_guarded(text):
            for k, sub in enumerate([piece] if plain else piece.split(self.marker)):
                if k:
                    parts.append(mtmd_cpp.mtmd_input_part(None, next(pending)))
                if sub:
                    encoded = sub.encode()
                    source = mtmd_cpp.mtmd_input_text(encoded, len(encoded), False, not plain)
                    parts.append(mtmd_cpp.mtmd_input_part(ctypes.pointer(source), None))
        array = (ctypes.POINTER(mtmd_cpp.mtmd_input_part) * len(parts))(
            *(ctypes.pointer(p) for p in parts)
        )
        with self.lock:
            rc = mtmd_cpp.mtmd_tokenize_from_parts(self.ctx, prompt.chunks, array, len(parts), True)
        if rc != 0:
            raise InvalidRequest(
                f"the images could not be prepared (mtmd error {rc})", param="messages"
            )
        prompt.read_tokens()
        return prompt

    def close(self) -> None:
        if self.ctx:
            mtmd_cpp.mtmd_free(self.ctx)
            self.ctx = None


class MediaPrompt:
    """mtmd chunks (text tokens and preprocessed images) for one prompt; freed when the last
    request using it lets go."""

    def __init__(self, chunks: Any, bitmaps: list[Any]) -> None:
        self.chunks = chunks
        self.bitmaps = bitmaps
        self.tokens: list[int] = []

    def read_tokens(self) -> None:
        """The text tokens, with IMAGE_TOKEN for each position an image takes in the cache."""
        for i in range(mtmd_cpp.mtmd_input_chunks_size(self.chunks)):
            chunk = mtmd_cpp.mtmd_input_chunks_get(self.chunks, i)
            if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                ids = mtmd_cpp.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                self.tokens.extend(int(ids[j]) for j in range(n.value))
            else:
                count = mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk)
                self.tokens.extend([IMAGE_TOKEN] * count)

    def evaluate(self, projector: Projector, ctx: Any, seq: int, n_batch: int) -> int:
        """Read the whole prompt into sequence ``seq`` (logits for its last token); returns the
        next position (images may take fewer positions than cache cells, as with M-RoPE)."""
        new_past = llama_cpp.llama_pos(0)
        with projector.lock:
            rc = mtmd_cpp.mtmd_helper_eval_chunks(
                projector.ctx, ctx, self.chunks, 0, seq, n_batch, True, ctypes.byref(new_past)
            )
        if rc != 0:
            raise RuntimeError(f"mtmd_helper_eval_chunks returned {rc}")
        return int(new_past.value)

    def __del__(self) -> None:
        if self.chunks:
            mtmd_cpp.mtmd_input_chunks_free(self.chunks)
            self.chunks = None
        for bitmap in self.bitmaps:
            mtmd_cpp.mtmd_bitmap_free(bitmap)
        self.bitmaps = []
