"""Files -> text -> chunks that remember where they came from (page, character range)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kaiyuan.errors import InvalidRequest

SUFFIXES = {".pdf", ".docx", ".html", ".htm", ".md", ".markdown", ".txt", ".text", ".rst"}
CHUNK_CHARS = 800
OVERLAP = 120


@dataclass(slots=True, frozen=True)
class Part:
    text: str
    page: int | None = None  # 1-based PDF page


@dataclass(slots=True, frozen=True)
class Chunk:
    position: int  # 0-based chunk number in its document
    text: str
    start: int  # character offsets in the document's text
    end: int
    page: int | None


def read(path: Path) -> tuple[str | None, list[Part]]:
    """The document's title (if it has one) and its text, page by page for PDF."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidRequest(
            f"'{path.name}': kaiyuan reads {', '.join(sorted(SUFFIXES))} files", param="path"
        )
    data = path.read_bytes()
    if suffix == ".pdf":
        return _pdf(data, path)
    if suffix == ".docx":
        return _docx(path)
    text = data.decode("utf-8", errors="replace")
    if suffix in (".html", ".htm"):
        from kaiyuan.net.html import html_text

        title, body = html_text(data, path.as_uri())
        return title, [Part(body)]
    heading = (
        re.search(r"^#\s+(.+)$", text, re.MULTILINE) if suffix in (".md", ".markdown") else None
    )
    return (heading.group(1).strip() if heading else None), [Part(text)]


def _pdf(data: bytes, path: Path) -> tuple[str | None, list[Part]]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        parts = [Part((p.extract_text() or "").strip(), i + 1) for i, p in enumerate(reader.pages)]
        title = reader.metadata.title if reader.metadata else None
    except (PdfReadError, ValueError, KeyError) as exc:
        raise InvalidRequest(f"'{path.name}' is not a readable PDF: {exc}", param="path") from None
    return (str(title) if title else None), parts


def _docx(path: Path) -> tuple[str | None, list[Part]]:
    from docx import Document
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = Document(str(path))
    except (PackageNotFoundError, KeyError, ValueError) as exc:
        raise InvalidRequest(f"'{path.name}' is not a readable DOCX: {exc}", param="path") from None
    paragraphs = [p.text for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        for row in table.rows:
            paragraphs.append(" | ".join(cell.text.strip() for cell in row.cells))
    title = document.core_properties.title or None
    return title, [Part("\n\n".join(paragraphs))]


def chunk(parts: list[Part]) -> list[Chunk]:
    """Pieces of about CHUNK_CHARS characters, cut at paragraph or sentence ends where one is
    near, overlapping by OVERLAP characters; never across PDF pages."""
    chunks: list[Chunk] = []
    offset = 0
    for part in parts:
        text = part.text
        start = 0
        while start < len(text):
            end = min(len(text), start + CHUNK_CHARS)
            if end < len(text):
                end = _cut(text, start, end)
            piece = text[start:end].strip()
            if piece:
                chunks.append(Chunk(len(chunks), piece, offset + start, offset + end, part.page))
            if end >= len(text):
                break
            start = max(end - OVERLAP, start + 1)
        offset += len(text) + 2
    return chunks


def _cut(text: str, start: int, end: int) -> int:
    floor = start + CHUNK_CHARS // 2
    for mark in ("\n\n", "\n", "。", ". ", "！", "？", "! ", "? ", "; ", "，", ", ", " "):
        found = text.rfind(mark, floor, end)
        if found != -1:
            return found + len(mark)
    return end
