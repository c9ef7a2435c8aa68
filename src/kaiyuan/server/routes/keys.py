"""/v1/keys (admin keys only): list, create (the secret in this answer only), revoke and
rotate, the same as `kaiyuan keys`. A revoked or rotated secret is refused at once here (the
server's key cache is dropped), within seconds on other servers of the same database."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from kaiyuan.db.keys import ApiKey, Limits
from kaiyuan.errors import InvalidRequest
from kaiyuan.protocol.kaiyuan.keys import Key, KeyCreate, KeyCreated, KeyList
from kaiyuan.server.auth import require_admin
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute

ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    403: {**ERROR_RESPONSES[400], "description": "Not an admin key (admin_required)"}
}
router = APIRouter(tags=["keys"], route_class=ApiRoute, responses={**ERROR_RESPONSES, **ADMIN_ONLY})


def _admin(request: Request) -> None:
    require_admin(request, "managing keys")


def _wire(key: ApiKey) -> Key:
    return Key(**key.public())


@router.get("/v1/keys")
async def list_keys(request: Request) -> KeyList:
    _admin(request)
    keys = await asyncio.to_thread(request.app.state.keys.store.list)
    return KeyList(data=[_wire(k) for k in keys])


@router.post("/v1/keys")
async def create_key(request: Request, body: KeyCreate) -> KeyCreated:
    _admin(request)
    if body.budget_tokens is not None and body.budget_usd is not None:
        raise InvalidRequest("give budget_tokens or budget_usd, not both", param="budget_usd")
    fields = body.model_dump(exclude={"name"}, exclude_none=True)
    if "models" in fields:
        fields["models"] = tuple(fields["models"])
    if "model_limits" in fields:  # a model named with no limit of its own adds nothing
        fields["model_limits"] = {m: on for m, on in fields["model_limits"].items() if on} or None
    limits = Limits(**fields)
    key, secret = await asyncio.to_thread(request.app.state.keys.store.create, body.name, limits)
    return KeyCreated(**key.public(), secret=secret)


@router.delete("/v1/keys/{name}")
async def revoke_key(request: Request, name: str) -> Key:
    _admin(request)
    key = await asyncio.to_thread(request.app.state.keys.store.revoke, name)
    request.app.state.keys.forget()
    return _wire(key)


@router.post("/v1/keys/{name}/rotate")
async def rotate_key(request: Request, name: str) -> KeyCreated:
    _admin(request)
    key, secret = await asyncio.to_thread(request.app.state.keys.store.rotate, name)
    request.app.state.keys.forget()
    return KeyCreated(**key.public(), secret=secret)
