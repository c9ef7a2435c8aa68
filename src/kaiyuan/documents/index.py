"""The document index: one SQLite file under KAIYUAN_HOME/docs.

Chunks are kept with their document, position, character range and page. Retrieval is hybrid:
BM25 over an FTS5 table (words, and CJK text as character bigrams, so Chinese matches without
a word segmenter) and cosine similarity over MiniLM vectors, fused by reciprocal rank (RRF,
k = 60). Every hit carries its source and position for citation.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaiyuan.documents import ingest
from kaiyuan.errors import InvalidRequest

RRF_K = 60
CANDIDATES = 30  # per ranking, before fusion

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY, source TEXT UNIQUE NOT NULL, title TEXT, sha256 TEXT NOT NULL,
    added REAL NOT NULL, chunks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, document INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    position INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, page INTEGER,
    text TEXT NOT NULL, vector BLOB NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_terms USING fts5(
    terms, tokenize='unicode61 remove_diacritics 2');
"""
# Chinese, Japanese and Korean have no spaces between words: their runs are indexed and
# queried as overlapping character pairs (the usual CJK bigram scheme), other text as words.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
TERM = re.compile(f"[{CJK}]+|[^\\W_]+")
MAX_QUERY_TERMS = 64


@dataclass(slots=True, frozen=True)
class Hit:
    source: str
    title: str
    position: int
    page: int | None
    start: int
    end: int
    text: str
    score: float

    @property
    def url(self) -> str:
        anchor = f"#page={self.page}" if self.page else f"#chunk={self.position}"
        return Path(self.source).as_uri() + anchor

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "title": self.title, "url": self.url,
            "position": self.position, "page": self.page, "start": self.start, "end": self.end,
            "score": round(self.score, 5), "text": self.text,
        }  # fmt: skip


@dataclass(slots=True, frozen=True)
class Added:
    source: str
    chunks: int
    status: str  # "added", "updated", "unchanged"


class DocIndex:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30)
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.executescript(SCHEMA)
        self._model: Any = None

    @classmethod
    def open(cls, home: Path) -> DocIndex:
        return cls(home / "docs" / "index.sqlite")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> DocIndex:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- writing --------------------------------------------------------------------------------
    def add(self, paths: list[Path]) -> list[Added]:
        files = list(_files(paths))  # every path is checked before anything is added
        return [self._add_file(f) for f in files]

    def _add_file(self, path: Path) -> Added:
        source = str(path.resolve())
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        row = self.db.execute(
            "SELECT id, sha256, chunks FROM documents WHERE source = ?", (source,)
        ).fetchone()
        if row is not None and row[1] == digest:
            return Added(source, row[2], "unchanged")
        title, parts = ingest.read(path)
        chunks = ingest.chunk(parts)
        vectors = self._embed([c.text for c in chunks]) if chunks else []
        with self.db:
            if row is not None:
                self._delete(row[0])
            cursor = self.db.execute(
                "INSERT INTO documents (source, title, sha256, added, chunks) VALUES (?,?,?,?,?)",
                (source, title or path.name, digest, time.time(), len(chunks)),
            )
            for c, vector in zip(chunks, vectors, strict=True):
                inserted = self.db.execute(
                    "INSERT INTO chunks (document, position, start, end, page, text, vector) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (cursor.lastrowid, c.position, c.start, c.end, c.page, c.text,
                     vector.tobytes()),
                )  # fmt: skip
                self.db.execute(
                    "INSERT INTO chunk_terms (rowid, terms) VALUES (?, ?)",
                    (inserted.lastrowid, " ".join(terms(c.text))),
                )
        return Added(source, len(chunks), "updated" if row is not None else "added")

    def remove(self, source: str) -> bool:
        with self.db:
            row = self.db.execute(
                "SELECT id FROM documents WHERE source = ? OR source = ?",
                (source, str(Path(source).expanduser().resolve())),
            ).fetchone()
            if row is not None:
                self._delete(row[0])
        return row is not None

    def _delete(self, document: int) -> None:
        self.db.execute(
            "DELETE FROM chunk_terms WHERE rowid IN (SELECT id FROM chunks WHERE document = ?)",
            (document,),
        )
        self.db.execute("DELETE FROM documents WHERE id = ?", (document,))

    def documents(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT source, title, chunks, added, sha256 FROM documents ORDER BY source"
        ).fetchall()
        keys = ("source", "title", "chunks", "added", "sha256")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # --- reading --------------------------------------------------------------------------------
    def search(self, query: str, limit: int = 5) -> list[Hit]:
        query = query.strip()
        if not query:
            raise InvalidRequest("the query is empty", param="query")
        ranks: dict[int, float] = {}
        for ranking in (self._bm25(query), self._nearest(query)):
            for rank, chunk_id in enumerate(ranking):
                ranks[chunk_id] = ranks.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(ranks.items(), key=lambda item: -item[1])[:limit]
        return [self._hit(chunk_id, score) for chunk_id, score in best]

    def _bm25(self, query: str) -> list[int]:
        wanted = list(dict.fromkeys(terms(query)))[:MAX_QUERY_TERMS]
        if not wanted:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in wanted)
        rows = self.db.execute(
            "SELECT rowid FROM chunk_terms WHERE chunk_terms MATCH ? ORDER BY bm25(chunk_terms) "
            "LIMIT ?",
            (match, CANDIDATES),
        ).fetchall()
        return [r[0] for r in rows]

    def _nearest(self, query: str) -> list[int]:
        import numpy as np

        rows = self.db.execute("SELECT id, vector FROM chunks").fetchall()
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(
            len(rows), -1
        )
        scores = matrix @ self._embed([query])[0]
        order = np.argsort(-scores)[:CANDIDATES]
        return [rows[i][0] for i in order]

    def _hit(self, chunk_id: int, score: float) -> Hit:
        row = self.db.execute(
            "SELECT d.source, d.title, c.position, c.page, c.start, c.end, c.text "
            "FROM chunks c JOIN documents d ON d.id = c.document WHERE c.id = ?",
            (chunk_id,),
        ).fetchone()
        source, title, position, page, start, end, text = row
        return Hit(source, title, position, page, start, end, text, score)

    def _embed(self, texts: list[str]) -> Any:
        if self._model is None:
            self._model = embedder()
        return self._model.encode(
            texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True
        ).astype("float32")


def terms(text: str) -> list[str]:
    """Index terms: lower-cased words, and each CJK run as its overlapping character pairs."""
    out: list[str] = []
    for match in TERM.finditer(text):
        word = match.group()
        if "\u3040" <= word[0] <= "\ufaff" and not word.isascii():
            out.extend(word[i : i + 2] for i in range(max(1, len(word) - 1)))
        else:
            out.append(word.lower())
    return out


def embedder() -> Any:
    """The bundled all-MiniLM-L6-v2, from its folder (``local_files_only``: never a hub; the
    process environment is left alone, so a later hub call in the same process still works)."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from kaiyuan.store import bundled

    _, folder = bundled.resolve("all-minilm-l6-v2")
    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        path = path.expanduser()
        if not path.exists():
            raise InvalidRequest(f"'{path}' does not exist", param="path")
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in ingest.SUFFIXES
            )
        elif path.suffix.lower() not in ingest.SUFFIXES:
            raise InvalidRequest(
                f"'{path.name}': kaiyuan reads {', '.join(sorted(ingest.SUFFIXES))} files",
                param="path",
            )
        else:
            yield path
