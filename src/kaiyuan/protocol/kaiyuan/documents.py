"""/v1/kaiyuan/documents: the document index the agent's file_search reads (the web app's
documents page; `kaiyuan docs add|list|rm` from a shell). An upload is the file's bytes as the
body, its name in ``?filename=``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Document(BaseModel):
    object: Literal["document"] = "document"
    id: str  # stable for the document's place in the index
    filename: str
    title: str
    chunks: int
    added: float  # unix seconds
    sha256: str
    status: Literal["added", "updated", "unchanged"] | None = None  # on upload only


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Document]


class DocumentDeleted(BaseModel):
    object: Literal["document.deleted"] = "document.deleted"
    id: str
    deleted: bool = True
