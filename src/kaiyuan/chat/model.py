"""What the chat layer needs to know of a model.

The engines' ``ModelInfo`` has these fields (and more); the chat layer reads them through this
protocol, so it never imports an engine.
"""

from __future__ import annotations

from typing import Protocol

# More characters per token than any real vocabulary averages over a whole context (the longest
# tokens are runs of spaces or '=' of 64 to 128), so a longer text cannot fit: it is refused
# before it is rendered or tokenized. The exact token count is still checked afterwards.
CHARS_PER_TOKEN_BOUND = 128


class ChatModel(Protocol):
    """A loaded model as a chat prompt sees it (read-only)."""

    @property
    def id(self) -> str: ...
    @property
    def context_length(self) -> int: ...
    @property
    def chat_template(self) -> str | None: ...
    @property
    def bos_token(self) -> str: ...
    @property
    def eos_token(self) -> str: ...
    @property
    def capabilities(self) -> tuple[str, ...]: ...
    # None: an HF-style {"type": "image"} part; a string: that text in the image's place.
    @property
    def image_placeholder(self) -> str | None: ...
    # The texts the tokenizer turns into control tokens (only the template may write them).
    @property
    def control_texts(self) -> tuple[str, ...]: ...


class _Sized(Protocol):
    @property
    def context_length(self) -> int: ...


def max_prompt_chars(info: _Sized) -> int:
    return info.context_length * CHARS_PER_TOKEN_BOUND
