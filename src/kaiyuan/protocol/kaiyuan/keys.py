"""/v1/keys: API keys for an admin key (the web app's keys page; `kaiyuan keys` does the same
from a shell). A key's secret appears once, in the answer that made it; never afterwards."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Count = Annotated[int, Field(ge=1, le=10**12)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")]


class ModelLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rpm: Count | None = None
    tpm: Count | None = None
    parallel: Count | None = None


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    models: Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=256)] | None = (
        None
    )
    rpm: Count | None = None
    tpm: Count | None = None
    parallel: Count | None = None
    budget_tokens: Count | None = None
    budget_usd: Annotated[float, Field(gt=0, le=1e9)] | None = None
    period: Literal["day", "month"] = "month"
    expires_at: datetime | None = None
    admin: bool = False
    model_limits: Annotated[dict[str, ModelLimit], Field(max_length=256)] | None = None


class Key(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    name: str
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    parallel: int | None
    budget_tokens: int | None
    budget_usd: float | None
    period: str
    expires_at: str | None
    admin: bool
    created_at: str
    revoked_at: str | None
    model_limits: dict[str, dict[str, int]] | None = None


class KeyCreated(Key):
    secret: str  # shown this once


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Key]
