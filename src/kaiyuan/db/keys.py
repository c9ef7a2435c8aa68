"""API keys: created, listed, revoked and rotated by ``kaiyuan keys``, checked by the server.

A secret is ``ky-<id>-<random>``: the id (public, shown by ``keys list``) finds the row, and
only the secret's SHA-256 is stored; the digests are compared in constant time. A secret has
256 random bits, so a plain hash is enough (no password stretching needed) and checking one
costs microseconds. The secret is shown once, by ``create`` and ``rotate``, and never again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, delete, func, insert, select, update

from kaiyuan.db.schema import api_keys, conversations
from kaiyuan.errors import InvalidRequest, NotFound

Period = Literal["day", "month"]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
_SECRET = re.compile(r"^ky-([0-9a-f]{12})-[A-Za-z0-9_-]{43}$")
_DUMMY = hashlib.sha256(b"no such key").hexdigest()


@dataclass(slots=True, frozen=True)
class ApiKey:
    id: str
    name: str
    models: tuple[str, ...] | None  # None: every model
    rpm: int | None
    tpm: int | None
    parallel: int | None
    budget_tokens: int | None
    budget_usd: float | None
    period: Period
    expires_at: datetime | None
    admin: bool
    created_at: datetime
    revoked_at: datetime | None
    # Limits per model on top of the key's own: {model: {"rpm"|"tpm"|"parallel": N}}.
    model_limits: dict[str, dict[str, int]] | None = None

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def usable(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        live = self.expires_at is None or _aware(self.expires_at) > now
        return self.revoked_at is None and live

    def public(self) -> dict[str, Any]:
        """What ``keys list`` shows: everything but the secret's digest."""
        return {
            "id": self.id,
            "name": self.name,
            "models": list(self.models) if self.models is not None else None,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "parallel": self.parallel,
            "budget_tokens": self.budget_tokens,
            "budget_usd": self.budget_usd,
            "period": self.period,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "admin": self.admin,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "model_limits": self.model_limits,
        }


@dataclass(slots=True, frozen=True)
class Limits:
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None
    budget_tokens: int | None = None
    budget_usd: float | None = None
    period: Period = "month"
    expires_at: datetime | None = None
    admin: bool = False
    model_limits: dict[str, dict[str, int]] | None = None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def _new_secret() -> tuple[str, str]:
    key_id = secrets.token_hex(6)
    return key_id, f"ky-{key_id}-{secrets.token_urlsafe(32)}"


def _row(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        models=tuple(row.models) if row.models is not None else None,
        rpm=row.rpm,
        tpm=row.tpm,
        parallel=row.parallel,
        budget_tokens=row.budget_tokens,
        budget_usd=row.budget_usd,
        period=row.period,
        expires_at=_aware(row.expires_at) if row.expires_at else None,
        admin=bool(row.admin),
        created_at=_aware(row.created_at),
        revoked_at=_aware(row.revoked_at) if row.revoked_at else None,
        model_limits=row.model_limits or None,
    )


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, limits: Limits | None = None) -> tuple[ApiKey, str]:
        """A new key and its secret (shown once)."""
        if not NAME.fullmatch(name):
            raise InvalidRequest(
                "a key name is 1-128 letters, digits, '_', '.', '@' or '-', starting with a "
                "letter or digit",
                param="name",
            )
        limits = limits or Limits()
        key_id, secret = _new_secret()
        with self.engine.begin() as db:
            taken = db.execute(select(api_keys.c.id).where(api_keys.c.name == name)).first()
            if taken is not None:
                raise InvalidRequest(f"a key named '{name}' exists already", param="name")
            db.execute(
                insert(api_keys).values(
                    id=key_id,
                    name=name,
                    secret_sha256=_digest(secret),
                    models=list(limits.models) if limits.models is not None else None,
                    rpm=limits.rpm,
                    tpm=limits.tpm,
                    parallel=limits.parallel,
                    budget_tokens=limits.budget_tokens,
                    budget_usd=limits.budget_usd,
                    period=limits.period,
                    expires_at=_aware(limits.expires_at) if limits.expires_at else None,
                    admin=limits.admin,
                    model_limits=limits.model_limits,
                    created_at=datetime.now(UTC),
                    revoked_at=None,
                )
            )
        return self.get(name), secret

    def list(self) -> list[ApiKey]:
        with self.engine.connect() as db:
            rows = db.execute(select(api_keys).order_by(api_keys.c.created_at)).all()
        return [_row(r) for r in rows]

    def get(self, name: str) -> ApiKey:
        with self.engine.connect() as db:
            row = db.execute(select(api_keys).where(api_keys.c.name == name)).first()
        if row is None:
            raise NotFound(f"no key is named '{name}' (see `kaiyuan keys list`)", param="name")
        return _row(row)

    def count_usable(self) -> int:
        """Keys that are not revoked (expired ones count: their holders get a 401 that says
        so, rather than an open server)."""
        with self.engine.connect() as db:
            query = select(func.count()).select_from(api_keys)
            return int(db.execute(query.where(api_keys.c.revoked_at.is_(None))).scalar_one())

    def revoke(self, name: str) -> ApiKey:
        self.get(name)
        with self.engine.begin() as db:
            db.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return self.get(name)

    def rotate(self, name: str) -> tuple[ApiKey, str]:
        """A new secret for the key (the old one stops working at once); same limits, and the
        same conversations."""
        old = self.get(name)
        if old.revoked_at is not None:
            raise InvalidRequest(f"key '{name}' is revoked; create a new one", param="name")
        key_id, secret = _new_secret()
        with self.engine.begin() as db:
            db.execute(
                update(api_keys)
                .where(api_keys.c.id == old.id)
                .values(id=key_id, secret_sha256=_digest(secret))
            )
            # What the key owns is the key's, whatever its secret: its conversations follow.
            db.execute(
                update(conversations).where(conversations.c.owner == old.id).values(owner=key_id)
            )
        return self.get(name), secret

    def remove(self, name: str) -> None:
        with self.engine.begin() as db:
            db.execute(delete(api_keys).where(api_keys.c.name == name))

    def verify(self, secret: str) -> ApiKey | None:
        """The key ``secret`` belongs to (revoked and expired ones too: the caller says why it
        is refused), or None. The digests are compared in constant time."""
        match = _SECRET.fullmatch(secret)
        key_id = match.group(1) if match else ""
        with self.engine.connect() as db:
            row = db.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        stored = row.secret_sha256 if row is not None else _DUMMY
        if hmac.compare_digest(_digest(secret), stored) and row is not None:
            return _row(row)
        return None
