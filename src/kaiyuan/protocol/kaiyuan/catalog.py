"""/v1/kaiyuan/catalog: the well-known open models, and how each would run on this machine
(the web app's models page; `kaiyuan models --catalog` and `kaiyuan recommend` from a shell)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Fit(BaseModel):
    quantisation: str | None  # GGUF quantisation; None for safetensors and diffusers models
    size_gb: float  # the download, about what the weights take in memory
    tokens_per_second: float | None  # estimated decode speed here
    pull: str  # the name to pull (`POST /api/pull {"model": pull}`)


class CatalogEntry(BaseModel):
    id: str
    title: str
    family: str
    publisher: str
    origin: str
    licence: str
    capabilities: list[str]
    format: str
    parameters_b: float | None
    context_length: int | None
    installed: bool
    fit: Fit | None  # None: it does not fit this machine's memory


class Machine(BaseModel):
    cpus: int
    memory_bytes: int  # what models may use (RAM, or GPU memory)
    gpus: int


class Catalog(BaseModel):
    object: Literal["list"] = "list"
    machine: Machine
    data: list[CatalogEntry]
