"""Usage rows: one per API request, written when its response is done (cancelled and failed
requests too), and the sums that budgets need."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Integer, String, cast, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from kaiyuan.db.schema import usage, usage_daily


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
    publisher: str | None = None
    origin: str | None = None
    licence: str | None = None
    cost_usd: float = 0.0


def period_start(period: Literal["day", "month"], now: datetime | None = None) -> datetime:
    """The start (UTC) of the budget period ``now`` is in."""
    now = now or datetime.now(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


class UsageStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, row: UsageRow) -> None:
        """The row and its day's roll-up, in one transaction: both or neither."""
        with self.engine.begin() as db:
            db.execute(insert(usage).values(**asdict(row)))
            _roll_up(db, row)

    def spent_since(self, key_id: str, since: datetime) -> tuple[int, float]:
        """Prompt plus completion tokens, and dollars, of a key's requests from ``since`` on."""
        tokens = func.coalesce(func.sum(usage.c.prompt_tokens + usage.c.completion_tokens), 0)
        dollars = func.coalesce(func.sum(usage.c.cost_usd), 0.0)
        query = select(tokens, dollars).where(usage.c.key_id == key_id, usage.c.at >= since)
        with self.engine.connect() as db:
            used, cost = db.execute(query).one()
        return int(used), float(cost)

    def tokens_since(self, key_id: str, since: datetime) -> int:
        return self.spent_since(key_id, since)[0]

    def daily(self, since: datetime, key_id: str | None = None) -> list[dict[str, Any]]:
        """The roll-up rows from ``since``'s day on, oldest first."""
        query = (
            select(usage_daily)
            .where(usage_daily.c.day >= since.strftime("%Y-%m-%d"))
            .order_by(usage_daily.c.day)
        )
        if key_id is not None:
            query = query.where(usage_daily.c.key_id == key_id)
        with self.engine.connect() as db:
            return [dict(r._mapping) for r in db.execute(query)]

    def rows(self, key_id: str | None = None, limit: int = 1000) -> list[UsageRow]:
        query = select(usage).order_by(usage.c.at.desc()).limit(limit)
        if key_id is not None:
            query = query.where(usage.c.key_id == key_id)
        with self.engine.connect() as db:
            found = db.execute(query).all()
        return [
            UsageRow(**{k: getattr(r, k) for k in UsageRow.__dataclass_fields__}) for r in found
        ]


def _roll_up(db: Connection, row: UsageRow) -> None:
    values = {
        "day": row.at.astimezone(UTC).strftime("%Y-%m-%d"),
        "key_id": row.key_id or "",
        "model": row.model or "",
        "publisher": row.publisher,
        "origin": row.origin,
        "requests": 1,
        "prompt_tokens": row.prompt_tokens,
        "cached_tokens": row.cached_tokens,
        "completion_tokens": row.completion_tokens,
        "cost_usd": row.cost_usd,
    }
    dialect = postgresql if db.dialect.name == "postgresql" else sqlite
    upsert = dialect.insert(usage_daily).values(**values)
    sums = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd")
    db.execute(
        upsert.on_conflict_do_update(
            index_elements=["day", "key_id", "model"],
            set_={c: usage_daily.c[c] + upsert.excluded[c] for c in sums}
            | {"publisher": upsert.excluded.publisher, "origin": upsert.excluded.origin},
        )
    )


GROUPS = ("model", "publisher", "origin", "key", "app", "endpoint", "day")


def _column(by: str) -> Any:
    if by not in GROUPS:
        raise ValueError(by)
    return {
        "model": usage.c.model,
        "publisher": usage.c.publisher,
        "origin": usage.c.origin,
        "key": usage.c.key_name,
        "app": usage.c.app,
        "endpoint": usage.c.endpoint,
        "day": func.substr(cast(usage.c.at, String), 1, 10),
    }[by]


def summary(
    engine: Engine,
    by: str,
    since: datetime,
    key_id: str | None = None,
    split: str | None = None,
) -> list[dict[str, Any]]:
    """Requests, tokens and dollars per ``by`` (one of GROUPS) from ``since`` on, the most
    tokens first (days in order). With ``split`` (another of GROUPS) each group is cut again,
    a row per pair with the second value under "split": the usage page's tokens per day by
    model, origin or app come from one query."""
    if split == by:
        raise ValueError(split)
    column = _column(by)
    tokens = func.sum(usage.c.prompt_tokens + usage.c.completion_tokens)
    groups, labels = [column], [column.label("group")]
    order = [column if by == "day" else tokens.desc()]
    if split is not None:
        second = _column(split)
        groups.append(second)
        labels.append(second.label("split"))
        order.append(second if split == "day" else tokens.desc())
    query = (
        select(
            *labels,
            func.count().label("requests"),
            func.sum(usage.c.prompt_tokens).label("prompt_tokens"),
            func.sum(usage.c.cached_tokens).label("cached_tokens"),
            func.sum(usage.c.completion_tokens).label("completion_tokens"),
            func.sum(cast(usage.c.cancelled, Integer)).label("cancelled"),
            func.sum(usage.c.cost_usd).label("cost_usd"),
        )
        .where(usage.c.at >= since)
        .group_by(*groups)
        .order_by(*order)
    )
    if key_id is not None:
        query = query.where(usage.c.key_id == key_id)
    with engine.connect() as db:
        return [dict(r._mapping) for r in db.execute(query)]
