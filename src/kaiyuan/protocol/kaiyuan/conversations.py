"""/v1/kaiyuan/conversations: chats the web app keeps on the server, one key's own (issue 20).

An export is what GET answers; an import takes that same JSON (its id and times are ignored,
the copy gets new ones). Every field is bounded; the whole body is bounded by the server's
``max_body_bytes`` besides.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_MESSAGES = 2000
MAX_TEXT = 2_000_000  # characters of one message's content or reasoning
MAX_IMAGES = 16  # per message

Key = Annotated[str, Field(min_length=1, max_length=64)]
# JSON's numbers and short strings: a setting (temperature, max_tokens, a stop string) or a
# statistic (ttft_ms, tokens, tokens_per_s). Finite: NaN is no JSON a database keeps.
Scalar = (
    bool
    | Annotated[int, Field(ge=-(2**53), le=2**53)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | Annotated[str, Field(max_length=4096)]
    | None
)
Settings = Annotated[
    dict[Key, Scalar | Annotated[list[Scalar], Field(max_length=64)]], Field(max_length=64)
]
Stats = Annotated[dict[Key, Scalar], Field(max_length=32)]
Title = Annotated[str, Field(max_length=200)]
ModelName = Annotated[str, Field(max_length=256)]
System = Annotated[str, Field(max_length=200_000)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
# A data: URL of an image, as the chat API takes one (the bytes are bounded by the body).
Image = Annotated[str, Field(pattern=r"^data:image/[A-Za-z0-9.+-]{1,64};base64,")]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant", "system"]
    content: Text
    reasoning: Text | None = None  # what a reasoning model thought, shown folded
    images: Annotated[list[Image], Field(max_length=MAX_IMAGES)] | None = None
    stats: Stats | None = None
    model: ModelName | None = None  # the model that wrote an assistant message


class ConversationBody(BaseModel):
    """POST (a new conversation) and PUT (all of it replaced): a field left out is empty. PATCH
    takes the same fields and changes only those given (``{"title": ...}`` renames)."""

    model_config = ConfigDict(extra="forbid")
    title: Title = ""
    model: ModelName | None = None
    system: System | None = None
    settings: Settings = Field(default_factory=dict)
    messages: Annotated[list[Message], Field(max_length=MAX_MESSAGES)] = Field(default_factory=list)


class ConversationImport(ConversationBody):
    """An exported conversation (GET's answer): the server's fields are taken and ignored."""

    object: Literal["conversation"] | None = None
    id: Annotated[str, Field(max_length=64)] | None = None
    created_at: Annotated[int, Field(ge=0, le=2**53)] | None = None
    updated_at: Annotated[int, Field(ge=0, le=2**53)] | None = None


class ConversationSummary(BaseModel):
    """A conversation without its messages, as the list shows it."""

    object: Literal["conversation"] = "conversation"
    id: str
    title: str
    model: str | None
    system: str | None
    settings: dict[str, Scalar | list[Scalar]]
    created_at: int  # unix seconds
    updated_at: int


class Conversation(ConversationSummary):
    messages: list[Message]


class ConversationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ConversationSummary]


class ConversationDeleted(BaseModel):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: Literal[True] = True
