"""Conversations kept on the server for the web app (issue 20): the store on SQLite and
PostgreSQL (order, search, update, delete, one key's rows only, import), and the routes over a
real socket, where another key's conversation is a 404 (T14) and bad bodies are 400s/413s in
the OpenAI envelope."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaiyuan.config import Settings
from kaiyuan.db import open_database
from kaiyuan.db.conversations import ConversationNotFound, ConversationStore
from kaiyuan.db.keys import KeyStore
from kaiyuan.engines.pool import EnginePool
from kaiyuan.errors import InvalidRequest
from kaiyuan.protocol.kaiyuan.conversations import ConversationImport
from kaiyuan.server import create_app
from tests.fakes import ScriptedEngine
from tests.harness import serve_app

PATH = "/v1/kaiyuan/conversations"
ANSWER = {
    "role": "assistant",
    "content": "Lifetimes name how long a borrow lives.",
    "reasoning": "The user asks about Rust.",
    "images": None,
    "stats": {"ttft_ms": 41.5, "tokens": 9, "tokens_per_s": 55.2},
    "model": "fake-model",
}
PICTURE = "data:image/png;base64,iVBORw0KGgo="
HI = {"role": "user", "content": "hi"}


def _user(content: str, images: list[str] | None = None) -> dict[str, Any]:
    return {"role": "user", "content": content, "reasoning": None, "images": images,
            "stats": None, "model": None}  # fmt: skip


def test_the_store_orders_searches_updates_and_keeps_each_key_to_its_own(
    tmp_path: Path, database_url: str
) -> None:
    store = ConversationStore(open_database(tmp_path, database_url))
    chat = [_user("Explain the borrow CHECKER"), ANSWER]
    rust = store.create("key1", {"title": "Rust lifetimes", "model": "fake-model",
                                 "settings": {"temperature": 0.2, "stop": ["\n\n"]},
                                 "messages": chat})  # fmt: skip
    maths = store.create("key1", {"title": "数学", "messages": [
        _user("Die Größe: 100%_sicher\x00", images=[PICTURE])]})  # fmt: skip
    theirs = store.create("key2", {"title": "Rust, the other key's"})
    open_one = store.create(None, {"title": "Rust without keys"})
    assert rust.id.startswith("conv_") and len({rust.id, maths.id, theirs.id, open_one.id}) == 4
    assert store.get("key1", rust.id).messages == chat
    assert store.get("key1", maths.id).messages == [_user("Die Größe: 100%_sicher\x00", [PICTURE])]

    def listed(owner: str | None, q: str | None = None) -> list[str]:
        return [c.id for c in store.list(owner, q)]

    assert listed("key1") == [maths.id, rust.id]  # the last made first
    assert all(c.messages is None for c in store.list("key1"))  # a listing has no messages
    # Case-insensitive substrings of the title or any message's content, this key's only.
    assert listed("key1", "rust") == listed("key1", "borrow checker") == [rust.id]
    assert listed("key1", "LIFETIMES NAME") == [rust.id]  # an assistant message counts
    assert listed("key1", "GRÖSSE") == listed("key1", "数") == [maths.id]  # ß folds to ss
    assert listed("key1", "%") == listed("key1", "%_") == [maths.id]  # LIKE's wildcards escaped
    assert listed("key1", "the user asks") == []  # reasoning is not searched
    assert listed("key1", "nothing like it") == []
    assert listed("key2", "rust") == [theirs.id] and listed(None) == [open_one.id]
    assert [c.id for c in store.list("key1", limit=1)] == [maths.id]

    time.sleep(0.01)
    renamed = store.update("key1", rust.id, {"title": "Borrowing"})  # a PATCH: the rest stays
    assert renamed.title == "Borrowing" and renamed.messages == rust.messages
    assert renamed.settings == {"temperature": 0.2, "stop": ["\n\n"]}
    assert renamed.created_at == rust.created_at and renamed.updated_at > rust.updated_at
    assert listed("key1") == [rust.id, maths.id]  # the last updated first
    assert listed("key1", "rust") == [] and listed("key1", "borrowing") == [rust.id]
    replaced = store.update("key1", rust.id, {"title": "", "model": None, "system": "Be brief.",
                                              "settings": {}, "messages": []})  # fmt: skip
    assert (replaced.system, replaced.messages, replaced.model) == ("Be brief.", [], None)

    # Another owner's row is as absent as one that never was, for every call.
    for owner in ("key2", None):
        with pytest.raises(ConversationNotFound):
            store.get(owner, rust.id)
        with pytest.raises(ConversationNotFound):
            store.update(owner, rust.id, {"title": "taken"})
        with pytest.raises(ConversationNotFound):
            store.delete(owner, rust.id)
    assert store.get("key1", rust.id).title == ""
    for odd in ("nope", "conv_' OR 1=1 --", "conv_\x00", "x" * 10_000):
        with pytest.raises(ConversationNotFound) as missing:
            store.get("key1", odd)
        assert odd not in missing.value.message or odd == "nope"
    with pytest.raises(InvalidRequest):  # PostgreSQL's text cannot hold NUL: a 400, not a 500
        store.create("key1", {"title": "a\x00b"})

    # Import: the export (GET's JSON) read back through the wire model, saved anew.
    exported = json.loads(json.dumps(store.get("key1", maths.id).public()))
    copy = store.create("key1", ConversationImport.model_validate(exported).model_dump(
        include={"title", "model", "system", "settings", "messages"}))  # fmt: skip
    assert copy.id != maths.id and copy.messages == store.get("key1", maths.id).messages
    assert copy.title == "数学"

    store.delete("key1", maths.id)
    with pytest.raises(ConversationNotFound):
        store.get("key1", maths.id)
    with pytest.raises(ConversationNotFound):
        store.delete("key1", maths.id)
    assert listed("key1") == [copy.id, rust.id]


def test_a_rotated_key_keeps_its_conversations(tmp_path: Path, database_url: str) -> None:
    engine = open_database(tmp_path, database_url)
    keys, store = KeyStore(engine), ConversationStore(engine)
    alice, _ = keys.create("alice")
    bob, _ = keys.create("bob")
    mine = store.create(alice.id, {"title": "mine"})
    store.create(bob.id, {"title": "bob's"})
    rotated, _ = keys.rotate("alice")
    assert rotated.id != alice.id
    assert [c.id for c in store.list(rotated.id)] == [mine.id]
    assert store.list(alice.id) == [] and [c.title for c in store.list(bob.id)] == ["bob's"]


def _app(home: Path, database_url: str | None = None, **settings: Any) -> Any:
    engine = ScriptedEngine("fake-model", context_length=4096)
    options = {"home": home, "database_url": database_url, **settings}
    return create_app(Settings(**options), EnginePool([engine]))


def _error(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    return dict(error)


def test_the_routes_keep_each_keys_conversations_to_it(tmp_path: Path, database_url: str) -> None:
    keys = KeyStore(open_database(tmp_path, database_url))
    _, alice = keys.create("alice")
    _, bob = keys.create("bob")
    as_alice = httpx.Client(headers={"authorization": f"Bearer {alice}"}, timeout=30)
    as_bob = httpx.Client(headers={"x-api-key": bob}, timeout=30)
    with serve_app(_app(tmp_path, database_url)) as url:
        assert httpx.get(url + PATH).status_code == 401  # keys exist: none is no entry
        question = {"role": "user", "content": "Explain the borrow checker"}
        body = {"title": "Rust lifetimes", "model": "fake-model", "system": "Be brief.",
                "settings": {"temperature": 0.7, "max_tokens": 512},
                "messages": [question, ANSWER]}  # fmt: skip
        made = as_alice.post(url + PATH, json=body)
        assert made.status_code == 200, made.text
        conversation = made.json()
        assert conversation["object"] == "conversation" and conversation["id"].startswith("conv_")
        assert conversation["messages"] == [_user("Explain the borrow checker"), ANSWER]
        assert conversation["settings"] == {"temperature": 0.7, "max_tokens": 512}
        assert abs(conversation["created_at"] - time.time()) < 60
        assert conversation["updated_at"] == conversation["created_at"]
        one = f"{url}{PATH}/{conversation['id']}"
        assert as_alice.get(one).json() == conversation
        other = as_alice.post(url + PATH, json={"title": "Shopping list"}).json()

        listed = as_alice.get(url + PATH).json()
        assert listed["object"] == "list"
        assert [c["id"] for c in listed["data"]] == [other["id"], conversation["id"]]
        assert all("messages" not in c for c in listed["data"])
        found = as_alice.get(url + PATH, params={"q": "BORROW"}).json()["data"]
        assert [c["id"] for c in found] == [conversation["id"]]
        assert as_alice.get(url + PATH, params={"limit": 1}).json()["data"][0]["id"] == other["id"]

        # Bob: nothing listed, and Alice's conversation is a 404 as if it did not exist (T14).
        assert as_bob.get(url + PATH).json()["data"] == []
        assert as_bob.get(url + PATH, params={"q": "rust"}).json()["data"] == []
        rename = {"title": "mine now"}
        for reply in (as_bob.get(one), as_bob.put(one, json=body),
                      as_bob.patch(one, json=rename), as_bob.delete(one)):  # fmt: skip
            assert _error(reply, 404)["code"] == "conversation_not_found"
        unknown = _error(as_alice.get(f"{url}{PATH}/conv_{'0' * 24}"), 404)
        refused = _error(as_bob.get(one), 404)
        assert {**unknown, "message": ""} == {**refused, "message": ""}  # the same but the id
        assert as_alice.get(one).json() == conversation  # untouched by Bob's tries

        renamed = as_alice.patch(one, json={"title": "Borrowing"}).json()
        assert renamed["title"] == "Borrowing" and renamed["messages"] == conversation["messages"]
        replaced = as_alice.put(one, json={"title": "Short", "messages": [ANSWER]}).json()
        assert replaced["messages"] == [ANSWER] and replaced["system"] is None
        assert replaced["settings"] == {} and replaced["created_at"] == conversation["created_at"]

        # Export is GET; importing it makes a copy with a new id, for whoever imports it.
        exported = as_alice.get(one).json()
        copied = as_bob.post(url + PATH + "/import", json=exported)
        assert copied.status_code == 200, copied.text
        copy = copied.json()
        assert copy["id"] != exported["id"]
        assert {k: copy[k] for k in ("title", "system", "settings", "messages")} == {
            k: exported[k] for k in ("title", "system", "settings", "messages")
        }
        assert [c["id"] for c in as_bob.get(url + PATH).json()["data"]] == [copy["id"]]

        gone = as_alice.delete(one)
        assert gone.json() == {"id": conversation["id"], "object": "conversation.deleted",
                               "deleted": True}  # fmt: skip
        assert _error(as_alice.get(one), 404)["code"] == "conversation_not_found"
        assert [c["id"] for c in as_alice.get(url + PATH).json()["data"]] == [other["id"]]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"title": "x" * 201}, "title"),
        ({"messages": [HI] * 2001}, "messages"),
        ({"messages": [{"role": "tool", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{**HI, "images": ["http://x/y.png"]}]}, "messages[0].images[0]"),
        ({"settings": {"temperature": float("nan")}}, None),  # NaN is no JSON
        ({"settings": {"deep": {"no": "objects"}}}, "settings.deep"),
        ({"title": "ok", "id": "conv_mine"}, "id"),  # the server names it
        ({"title": "ok", "colour": "red"}, "colour"),
        ({"title": "a\x00b"}, "title"),
    ],
)
def test_a_bad_body_is_a_400_in_the_openai_envelope(
    tmp_path: Path, body: dict[str, Any], param: str | None
) -> None:
    with serve_app(_app(tmp_path)) as url:
        raw = json.dumps(body)  # NaN as JSON's unofficial literal: the server must refuse it
        reply = httpx.post(url + PATH, content=raw, headers={"content-type": "application/json"})
        error = _error(reply, 400)
        if param is not None:
            assert error["param"] == param, error
        assert httpx.get(url + PATH).json()["data"] == []  # nothing was saved


def test_open_server_bounds_and_whole_body_limit(tmp_path: Path) -> None:
    with serve_app(_app(tmp_path, max_body_bytes=64 * 1024)) as url:
        made = httpx.post(url + PATH, json={"title": "open"}).json()  # no keys: open to all
        assert httpx.get(f"{url}{PATH}/{made['id']}").json()["title"] == "open"
        huge = {"messages": [{"role": "user", "content": "x" * 70_000}]}
        too_big = httpx.post(url + PATH, json=huge)
        assert _error(too_big, 413)["code"] == "payload_too_large"
        assert _error(httpx.put(f"{url}{PATH}/{made['id']}", json=huge), 413)
        assert _error(httpx.get(url + PATH, params={"q": "q" * 201}), 400)["param"] == "q"
        assert _error(httpx.get(url + PATH, params={"limit": 0}), 400)["param"] == "limit"
        assert _error(httpx.get(f"{url}{PATH}/import"), 404)["code"] == "conversation_not_found"
        assert _error(httpx.post(url + PATH, content=b"{not json"), 400)
        gone = httpx.delete(f"{url}{PATH}/{made['id']}").json()
        assert gone["deleted"] is True and httpx.get(url + PATH).json()["data"] == []


def test_saving_is_not_a_model_request(tmp_path: Path) -> None:
    """A key limited to one model, with one request a minute and no token budget left, still
    saves a conversation naming another model: no 403, no 429, no usage row."""
    from kaiyuan.db.keys import Limits
    from kaiyuan.db.usage import UsageStore

    database = open_database(tmp_path)
    keys = KeyStore(database)
    _, secret = keys.create("narrow", Limits(models=("fake-model",), rpm=1, budget_tokens=1))
    auth = {"authorization": f"Bearer {secret}"}
    with serve_app(_app(tmp_path)) as url:
        first = httpx.post(f"{url}/v1/chat/completions", headers=auth, json={
            "model": "fake-model", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2})  # fmt: skip
        assert first.status_code == 200, first.text
        body = {"title": "t", "model": "qwen3-8b", "messages": [_user("hello")]}
        for _ in range(3):
            saved = httpx.post(f"{url}/v1/kaiyuan/conversations", headers=auth, json=body)
            assert saved.status_code == 200, saved.text
        reader = {"authorization": f"Bearer {keys.create('reader')[1]}"}
        assert httpx.get(f"{url}/v1/models", headers=reader).status_code == 200
        again = httpx.post(f"{url}/v1/chat/completions", headers=auth, json={
            "model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert again.status_code == 429  # the model requests are still limited
    endpoints = {row.endpoint for row in UsageStore(database).rows()}
    assert "/v1/chat/completions" in endpoints
    assert not [e for e in endpoints if e.startswith("/v1/kaiyuan/")]
    assert "/v1/models" not in endpoints  # a read uses no model: no usage row
