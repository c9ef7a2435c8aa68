"""/v1/kaiyuan/conversations: the web app's chats, kept on the server (db/conversations.py).

With API keys, a key sees and changes only its own; another key's conversation is a 404 like
one that does not exist (T14). Without keys, the conversations belong to nobody and every
client of the (loopback-only) server sees them. Export is GET; import is a POST of that JSON.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from kaiyuan.db.conversations import FIELDS
from kaiyuan.db.conversations import Conversation as Stored
from kaiyuan.protocol.kaiyuan.conversations import (
    Conversation,
    ConversationBody,
    ConversationDeleted,
    ConversationImport,
    ConversationList,
    ConversationSummary,
)
from kaiyuan.server.auth import key_of
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute

PATH = "/v1/kaiyuan/conversations"
ONE = PATH + "/{conversation_id}"
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {**ERROR_RESPONSES[404], "description": "No such conversation of this key"}
}
router = APIRouter(
    tags=["conversations"], route_class=ApiRoute, responses={**ERROR_RESPONSES, **NOT_FOUND}
)


def _owner(request: Request) -> str | None:
    key = key_of(request)
    return key.id if key is not None else None


def _wire(stored: Stored) -> Conversation:
    return Conversation.model_validate(stored.public())


@router.get(PATH)
async def list_conversations(
    request: Request,
    q: Annotated[str | None, Query(max_length=200, description="In the title or a message")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ConversationList:
    store = request.app.state.conversations
    found = await asyncio.to_thread(store.list, _owner(request), q, limit)
    return ConversationList(data=[ConversationSummary.model_validate(c.public()) for c in found])


@router.post(PATH)
async def create_conversation(request: Request, body: ConversationBody) -> Conversation:
    store = request.app.state.conversations
    return _wire(await asyncio.to_thread(store.create, _owner(request), body.model_dump()))


@router.post(PATH + "/import")
async def import_conversation(request: Request, body: ConversationImport) -> Conversation:
    """A conversation as GET exported it, saved as a new one (a new id, new times)."""
    store = request.app.state.conversations
    fields = body.model_dump(include=set(FIELDS))
    return _wire(await asyncio.to_thread(store.create, _owner(request), fields))


@router.get(ONE)
async def get_conversation(request: Request, conversation_id: str) -> Conversation:
    store = request.app.state.conversations
    return _wire(await asyncio.to_thread(store.get, _owner(request), conversation_id))


@router.put(ONE)
async def replace_conversation(
    request: Request, conversation_id: str, body: ConversationBody
) -> Conversation:
    store = request.app.state.conversations
    fields = body.model_dump()
    return _wire(await asyncio.to_thread(store.update, _owner(request), conversation_id, fields))


@router.patch(ONE)
async def change_conversation(
    request: Request, conversation_id: str, body: ConversationBody
) -> Conversation:
    """Only the fields given change: ``{"title": "..."}`` renames."""
    store = request.app.state.conversations
    fields = {k: v for k, v in body.model_dump().items() if k in body.model_fields_set}
    return _wire(await asyncio.to_thread(store.update, _owner(request), conversation_id, fields))


@router.delete(ONE)
async def delete_conversation(request: Request, conversation_id: str) -> ConversationDeleted:
    store = request.app.state.conversations
    await asyncio.to_thread(store.delete, _owner(request), conversation_id)
    return ConversationDeleted(id=conversation_id)
