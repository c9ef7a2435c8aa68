"""Conversations the web app keeps on the server (``/v1/kaiyuan/conversations``).

Each row belongs to the API key that made it (its id; a rotated key takes its rows along, see
``KeyStore.rotate``) or, on a server without keys, to nobody. Every read and write names the
owner, and a row of another owner is as absent as one that never existed: the route answers
both with the same 404, so a key cannot learn that another key's conversation exists (T14).

Search is a case-insensitive substring of the title or of a message's content. A ``search``
column holds both, case-folded, and ``?q=`` is case-folded the same way before a ``LIKE``: the
same answer on SQLite and PostgreSQL, whatever the script, with no JSON functions of either.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, delete, insert, select, update

from kaiyuan.db.schema import conversations
from kaiyuan.errors import InvalidRequest, NotFound

# What a client writes; the id, the owner and the times are the server's.
FIELDS = ("title", "model", "system", "settings", "messages")
_ID = re.compile(r"conv_[0-9a-f]{24}")
_SUMMARY = [c for c in conversations.c if c.name not in ("messages", "search")]


class ConversationNotFound(NotFound):
    code = "conversation_not_found"


@dataclass(slots=True, frozen=True)
class Conversation:
    id: str
    owner: str | None
    title: str
    model: str | None
    system: str | None
    settings: dict[str, Any]
    messages: list[dict[str, Any]] | None  # None in a listing
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, Any]:
        """The wire shape (``protocol/kaiyuan/conversations.py``); no messages in a listing."""
        shown: dict[str, Any] = {
            "object": "conversation",
            "id": self.id,
            "title": self.title,
            "model": self.model,
            "system": self.system,
            "settings": self.settings,
            "created_at": int(self.created_at.timestamp()),
            "updated_at": int(self.updated_at.timestamp()),
        }
        if self.messages is not None:
            shown["messages"] = self.messages
        return shown


class ConversationStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, owner: str | None, fields: Mapping[str, Any]) -> Conversation:
        """A new conversation of ``owner`` from ``fields`` (any of ``FIELDS``; the rest empty)."""
        values = _checked({"title": "", "model": None, "system": None, "settings": {},
                           "messages": [], **fields})  # fmt: skip
        now = datetime.now(UTC)
        new_id = f"conv_{secrets.token_hex(12)}"
        with self.engine.begin() as db:
            db.execute(
                insert(conversations).values(
                    id=new_id, owner=owner, **values, created_at=now, updated_at=now
                )
            )
        return self.get(owner, new_id)

    def list(self, owner: str | None, q: str | None = None, limit: int = 100) -> list[Conversation]:
        """``owner``'s conversations, the last updated first, without their messages; with
        ``q``, those whose title or a message's content holds it (any case)."""
        query = select(*_SUMMARY).where(_owned(owner))
        needle = _fold(q or "")
        if needle:
            query = query.where(conversations.c.search.contains(needle, autoescape=True))
        query = query.order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
        with self.engine.connect() as db:
            rows = db.execute(query.limit(limit)).all()
        return [_row(r, messages=False) for r in rows]

    def get(self, owner: str | None, conversation_id: str) -> Conversation:
        with self.engine.connect() as db:
            row = db.execute(select(conversations).where(*_this(owner, conversation_id))).first()
        if row is None:
            raise _missing(conversation_id)
        return _row(row, messages=True)

    def update(
        self, owner: str | None, conversation_id: str, fields: Mapping[str, Any]
    ) -> Conversation:
        """Replace the given ``FIELDS`` (a PUT gives all, a PATCH some); the rest stay."""
        with self.engine.begin() as db:
            # FOR UPDATE on PostgreSQL: two saves at once cannot interleave their read and write.
            query = select(conversations).where(*_this(owner, conversation_id)).with_for_update()
            row = db.execute(query).first()
            if row is None:
                raise _missing(conversation_id)
            merged = _checked({**{f: getattr(row, f) for f in FIELDS}, **fields})
            db.execute(
                update(conversations)
                .where(*_this(owner, conversation_id))
                .values(**merged, updated_at=datetime.now(UTC))
            )
        return self.get(owner, conversation_id)

    def delete(self, owner: str | None, conversation_id: str) -> None:
        with self.engine.begin() as db:
            gone = db.execute(delete(conversations).where(*_this(owner, conversation_id)))
        if gone.rowcount == 0:
            raise _missing(conversation_id)


def _owned(owner: str | None) -> ColumnElement[bool]:
    column = conversations.c.owner
    return column.is_(None) if owner is None else column == owner


def _this(owner: str | None, conversation_id: str) -> tuple[ColumnElement[bool], ...]:
    if not _ID.fullmatch(conversation_id):  # not one of ours: never sent to the database
        raise _missing(conversation_id)
    return conversations.c.id == conversation_id, _owned(owner)


def _missing(conversation_id: str) -> ConversationNotFound:
    # The same answer for another key's conversation as for none at all (T14).
    shown = f" '{conversation_id}'" if _ID.fullmatch(conversation_id) else ""
    return ConversationNotFound(
        f"no conversation{shown} (list yours with GET /v1/kaiyuan/conversations)",
        param="conversation_id",
    )


def _fold(text: str) -> str:
    # PostgreSQL's text cannot hold NUL; nobody searches for one.
    return text.casefold().replace("\x00", "")


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the search column; text columns refuse NUL (PostgreSQL's text cannot
    hold it; the JSON columns can)."""
    for name in ("title", "model", "system"):
        if values[name] is not None and "\x00" in values[name]:
            raise InvalidRequest(f"{name} contains a NUL character (\\u0000)", param=name)
    parts = [values["title"], *(str(m.get("content") or "") for m in values["messages"])]
    return {**values, "search": _fold("\n".join(parts))}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _row(row: Any, *, messages: bool) -> Conversation:
    return Conversation(
        id=row.id,
        owner=row.owner,
        title=row.title,
        model=row.model,
        system=row.system,
        settings=dict(row.settings or {}),
        messages=list(row.messages) if messages else None,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
    )
