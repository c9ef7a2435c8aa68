"""GET /v1/models and the health endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Model(BaseModel):
    """OpenAI's model object, plus what kaiyuan knows of the model's provenance."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    format: str | None = None
    architecture: str | None = None
    parameters: int | None = None
    quantisation: str | None = None
    context_length: int | None = None
    size_bytes: int | None = None
    capabilities: list[str] = []
    publisher: str | None = None
    origin: str | None = None
    licence: str | None = None
    source: str | None = None
    sha256: str | None = None
    added: str | None = None
    loaded: bool = False
    alias_of: str | None = None  # this id is another name (config ``aliases``) for that model


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    models: dict[str, str] = {}
