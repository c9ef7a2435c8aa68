"""Usage rows: one per API request, written when its response is done (cancelled and failed
requests too), and the sums that budgets need."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, Integer, String, cast, func, insert, select

from kaiyuan.db.schema import usage


@dataclass(slots=True, frozen=True)
class UsageRow:
    at: datetime
    key_id: str | None
    key_name: str | None
    model: str | None
    endpoint: str
    app: str | None
    status: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    duration_ms: float
    finish_reason: str | None
    cancelled: bool


def period_start(period: Literal["day", "month"], now: datetime | None = None) -> datetime:
    """The start (UTC) of the budget period ``now`` is in."""
    now = now or datetime.now(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


class UsageStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, row: UsageRow) -> None:
        with self.engine.begin() as db:
            db.execute(insert(usage).values(**asdict(row)))

    def tokens_since(self, key_id: str, since: datetime) -> int:
        """Prompt plus completion tokens of a key's requests from ``since`` on."""
        total = func.coalesce(func.sum(usage.c.prompt_tokens + usage.c.completion_tokens), 0)
        query = select(total).where(usage.c.key_id == key_id, usage.c.at >= since)
        with self.engine.connect() as db:
            return int(db.execute(query).scalar_one())

    def rows(self, key_id: str | None = None, limit: int = 1000) -> list[UsageRow]:
        query = select(usage).order_by(usage.c.at.desc()).limit(limit)
        if key_id is not None:
            query = query.where(usage.c.key_id == key_id)
        with self.engine.connect() as db:
            found = db.execute(query).all()
        return [
            UsageRow(**{k: getattr(r, k) for k in UsageRow.__dataclass_fields__}) for r in found
        ]


GROUPS = ("model", "key", "app", "endpoint", "day")


def summary(
    engine: Engine, by: str, since: datetime, key_id: str | None = None
) -> list[dict[str, Any]]:
    """Requests and tokens per ``by`` (model, key, app, endpoint, day) from ``since`` on, the
    most tokens first (days in order)."""
    if by not in GROUPS:
        raise ValueError(by)
    column: Any = {
        "model": usage.c.model,
        "key": usage.c.key_name,
        "app": usage.c.app,
        "endpoint": usage.c.endpoint,
        "day": func.substr(cast(usage.c.at, String), 1, 10),
    }[by]
    tokens = func.sum(usage.c.prompt_tokens + usage.c.completion_tokens)
    query = (
        select(
            column.label("group"),
            func.count().label("requests"),
            func.sum(usage.c.prompt_tokens).label("prompt_tokens"),
            func.sum(usage.c.cached_tokens).label("cached_tokens"),
            func.sum(usage.c.completion_tokens).label("completion_tokens"),
            func.sum(cast(usage.c.cancelled, Integer)).label("cancelled"),
        )
        .where(usage.c.at >= since)
        .group_by(column)
        .order_by(column if by == "day" else tokens.desc())
    )
    if key_id is not None:
        query = query.where(usage.c.key_id == key_id)
    with engine.connect() as db:
        return [dict(r._mapping) for r in db.execute(query)]
