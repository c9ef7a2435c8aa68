"""/v1/kaiyuan/documents: upload into, list and remove from the document index. The index is
one for the whole server (file_search reads it for every key), so with keys it is an admin
key's to change; anyone may list it on an open server."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from kaiyuan.errors import InvalidRequest, NotFound
from kaiyuan.extras import require
from kaiyuan.protocol.kaiyuan.documents import Document, DocumentDeleted, DocumentList
from kaiyuan.server.auth import require_admin
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routes.keys import ADMIN_ONLY
from kaiyuan.server.routing import ApiRoute

router = APIRouter(
    tags=["documents"], route_class=ApiRoute, responses={**ERROR_RESPONSES, **ADMIN_ONLY}
)
UPLOADS = "uploads"  # under <home>/docs
NAME = re.compile(r"[^\w.\- ]+")
WHAT = "changing the document index"


def _id(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _wire(doc: dict[str, Any], status: str | None = None) -> Document:
    name = FilePath(doc["source"]).name
    if FilePath(doc["source"]).parent.name == UPLOADS:
        name = name.split("-", 1)[-1]  # the upload's own name, without its digest prefix
    return Document(id=_id(doc["source"]), filename=name, title=doc["title"] or name,
                    chunks=doc["chunks"], added=doc["added"], sha256=doc["sha256"],
                    status=status)  # fmt: skip


def _list(home: FilePath) -> list[dict[str, Any]]:
    from kaiyuan.documents.index import DocIndex

    with DocIndex.open(home) as index:
        return index.documents()


def _add(home: FilePath, filename: str, data: bytes) -> Document:
    from kaiyuan.documents import ingest
    from kaiyuan.documents.index import DocIndex

    clean = NAME.sub("_", FilePath(filename).name).strip(" .")[:120]
    if FilePath(clean).suffix.lower() not in ingest.SUFFIXES:
        raise InvalidRequest(
            f"'{filename}': kaiyuan reads {', '.join(sorted(ingest.SUFFIXES))} files",
            param="filename",
        )
    if not data:
        raise InvalidRequest(f"'{filename}' is empty", param="filename")
    folder = home / "docs" / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:12]}-{clean}"
    path.write_bytes(data)
    with DocIndex.open(home) as index:
        try:
            [added] = index.add([path])
        except Exception:
            path.unlink(missing_ok=True)
            raise
        found = next(d for d in index.documents() if d["source"] == added.source)
    return _wire(found, added.status)


def _remove(home: FilePath, doc_id: str) -> DocumentDeleted:
    from kaiyuan.documents.index import DocIndex

    with DocIndex.open(home) as index:
        found = next((d for d in index.documents() if _id(d["source"]) == doc_id), None)
        if found is None:
            raise NotFound(f"no document '{doc_id}' in the index", param="id")
        index.remove(found["source"])
    source = FilePath(found["source"])
    if source.parent == home.resolve() / "docs" / UPLOADS:
        source.unlink(missing_ok=True)  # an upload's copy; files indexed from disk stay
    return DocumentDeleted(id=doc_id)


@router.get("/v1/kaiyuan/documents", response_model=DocumentList)
async def list_documents(request: Request) -> DocumentList:
    require("agent", "your documents")
    require_admin(request, "reading the document index", open_without_keys=True)
    found = await asyncio.to_thread(_list, request.app.state.settings.home)
    return DocumentList(data=[_wire(d) for d in found])


@router.post("/v1/kaiyuan/documents", response_model=Document)
async def upload_document(
    request: Request, filename: Annotated[str, Query(min_length=1, max_length=255)]
) -> Document:
    """The request body is the file (PDF, DOCX, HTML, Markdown or text), at most the server's
    ``max_body_bytes``."""
    require("agent", "your documents")
    require_admin(request, WHAT, open_without_keys=True)
    data = await request.body()
    return await asyncio.to_thread(_add, request.app.state.settings.home, filename, data)


@router.delete("/v1/kaiyuan/documents/{doc_id}", response_model=DocumentDeleted)
async def delete_document(
    request: Request, doc_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]
) -> DocumentDeleted:
    require("agent", "your documents")
    require_admin(request, WHAT, open_without_keys=True)
    return await asyncio.to_thread(_remove, request.app.state.settings.home, doc_id)
