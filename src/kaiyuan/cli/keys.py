"""``kaiyuan keys``: create, list, revoke and rotate API keys (the database of settings)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from kaiyuan.config import Settings
from kaiyuan.db import open_for
from kaiyuan.db.keys import KeyStore, Limits, Period
from kaiyuan.errors import InvalidRequest


def store(settings: Settings) -> KeyStore:
    return KeyStore(open_for(settings))


LIMIT_NAMES = ("rpm", "tpm", "parallel")


def model_limits(text: str) -> tuple[str, dict[str, int]]:
    """``MODEL:rpm=N,tpm=N,parallel=N`` (any of the three) as (model, limits)."""
    model, sep, spec = text.rpartition(":")
    shape = f"--model-limit '{text}' is not like MODEL:rpm=10,tpm=20000,parallel=2"
    if not sep or not model or not spec:
        raise InvalidRequest(shape)
    limits: dict[str, int] = {}
    for part in spec.split(","):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in LIMIT_NAMES:
            raise InvalidRequest(f"{shape} ('{part}': the limits are {', '.join(LIMIT_NAMES)})")
        if not value.strip().isdigit() or int(value) < 1 or len(value.strip()) > 12:
            raise InvalidRequest(f"{shape} ({name} must be a whole number of at least 1)")
        limits[name] = int(value)
    return model, limits


def expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"--expires '{text}' is not a date (YYYY-MM-DD)") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment <= datetime.now(UTC):
        raise InvalidRequest(f"--expires {text} is in the past")
    return moment


def create(
    settings: Settings,
    name: str,
    *,
    models: str | None,
    rpm: int | None,
    tpm: int | None,
    parallel: int | None,
    budget_tokens: int | None,
    budget_usd: float | None,
    period: Period,
    expires: str | None,
    admin: bool,
    model_limit: tuple[str, ...] = (),
) -> None:
    if budget_tokens is not None and budget_usd is not None:
        raise InvalidRequest("give --budget-tokens or --budget-usd, not both")
    per_model = dict(model_limits(text) for text in model_limit) or None
    names = tuple(m.strip() for m in models.split(",") if m.strip()) if models else None
    limits = Limits(models=names, rpm=rpm, tpm=tpm, parallel=parallel,
                    budget_tokens=budget_tokens, budget_usd=budget_usd, period=period,
                    expires_at=expiry(expires), admin=admin,
                    model_limits=per_model)  # fmt: skip
    key, secret = store(settings).create(name, limits)
    click.echo(secret)
    click.echo(
        f"key '{key.name}' created (id {key.id}); the secret above is shown only now: "
        "keep it somewhere safe",
        err=True,
    )
    if budget_usd is not None and not (settings.prices or settings.dollars_per_hour):
        click.echo(
            "note: no `prices` and no `dollars_per_hour` are configured, so requests cost "
            "nothing and this dollar budget is never spent (see docs/settings.md)",
            err=True,
        )


def show_list(settings: Settings, as_json: bool) -> None:
    keys = store(settings).list()
    if as_json:
        click.echo(json.dumps([k.public() for k in keys], indent=2))
        return
    if not keys:
        click.echo("no keys: the server is open to anyone who reaches it (loopback only by "
                   "default); `kaiyuan keys create NAME` adds one")  # fmt: skip
        return
    for key in keys:
        state = "revoked" if key.revoked_at else "expired" if not key.usable() else "active"
        limits = [f"models={','.join(key.models)}" if key.models is not None else "all models"]
        limits += [f"{n}={v}" for n, v in (("rpm", key.rpm), ("tpm", key.tpm),
                   ("parallel", key.parallel), ("budget_tokens", key.budget_tokens),
                   ("budget_usd", key.budget_usd)) if v is not None]  # fmt: skip
        if key.budget_tokens is not None or key.budget_usd is not None:
            limits.append(f"per {key.period}")
        for model, on in (key.model_limits or {}).items():
            limits.append(f"on {model}: " + ",".join(f"{n}={v}" for n, v in on.items()))
        if key.expires_at:
            limits.append(f"expires {key.expires_at.date().isoformat()}")
        role = " admin" if key.admin else ""
        click.echo(f"{key.name}  {key.id}  {state}{role}  {'  '.join(limits)}")


def revoke(settings: Settings, name: str) -> None:
    key = store(settings).revoke(name)
    click.echo(f"key '{key.name}' revoked; requests with it get a 401 within seconds")


def rotate(settings: Settings, name: str) -> None:
    key, secret = store(settings).rotate(name)
    click.echo(secret)
    click.echo(f"key '{key.name}' has a new secret (id {key.id}); the old one no longer works",
               err=True)  # fmt: skip
