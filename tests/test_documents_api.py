"""/v1/kaiyuan/documents: upload into the document index, list, remove; what file_search then
finds; bad uploads refused whole; with keys, an admin key's to change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from tests.fakes import ScriptedEngine
from tests.harness import serve_app

NOTES = "# Ferry timetable\n\nThe ferry to Tiree leaves Oban at 07:15 on weekdays.\n"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with serve_app(create_app(Settings(home=tmp_path), EnginePool([ScriptedEngine()]))) as url:
        yield url, tmp_path


def upload(url: str, name: str, data: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/kaiyuan/documents", params={"filename": name}, content=data,
                      headers=headers, timeout=120)  # fmt: skip


def test_upload_list_search_remove(served: tuple[str, Path]) -> None:
    url, home = served
    added = upload(url, "ferry notes.md", NOTES.encode())
    assert added.status_code == 200, added.text
    doc = added.json()
    assert doc["status"] == "added" and doc["filename"] == "ferry notes.md"
    assert doc["title"] == "Ferry timetable" and doc["chunks"] >= 1
    assert upload(url, "ferry notes.md", NOTES.encode()).json()["status"] == "unchanged"
    listed = httpx.get(f"{url}/v1/kaiyuan/documents").json()["data"]
    assert [d["id"] for d in listed] == [doc["id"]]
    assert str(home) not in httpx.get(f"{url}/v1/kaiyuan/documents").text  # no server paths

    from kaiyuan.documents.index import DocIndex

    with DocIndex.open(home) as index:
        hits = index.search("When does the ferry to Tiree leave?")
    assert hits and "07:15" in hits[0].text
    gone = httpx.delete(f"{url}/v1/kaiyuan/documents/{doc['id']}")
    assert gone.status_code == 200 and gone.json() == {
        "object": "document.deleted", "id": doc["id"], "deleted": True
    }  # fmt: skip
    assert httpx.get(f"{url}/v1/kaiyuan/documents").json()["data"] == []
    assert not list((home / "docs" / "uploads").iterdir())  # the upload's copy went too
    assert httpx.delete(f"{url}/v1/kaiyuan/documents/{doc['id']}").status_code == 404


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        ("script.exe", b"MZ", "reads"),
        ("empty.txt", b"", "empty"),
        ("../../etc/passwd.txt", NOTES.encode(), None),  # a path in the name is only a name
        ("broken.pdf", b"%PDF-1.4 not really", None),
    ],
)
def test_bad_uploads(served: tuple[str, Path], name: str, data: bytes, says: str | None) -> None:
    url, home = served
    answer = upload(url, name, data)
    if name.startswith("../"):
        assert answer.status_code == 200 and answer.json()["filename"] == "passwd.txt"
        assert not (home.parent / "etc").exists()
        return
    assert answer.status_code == 400, answer.text
    assert says is None or says in answer.json()["error"]["message"]
    assert httpx.get(f"{url}/v1/kaiyuan/documents").json()["data"] == []


def test_with_keys_only_an_admin_changes_the_index(tmp_path: Path) -> None:
    from kaiyuan.db import open_for
    from kaiyuan.db.keys import KeyStore, Limits

    settings = Settings(home=tmp_path)
    store = KeyStore(open_for(settings))
    _, user = store.create("user")
    _, admin = store.create("boss", Limits(admin=True))
    with serve_app(create_app(settings, EnginePool([ScriptedEngine()]))) as url:
        refused = upload(url, "a.md", NOTES.encode(), authorization=f"Bearer {user}")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"
        added = upload(url, "a.md", NOTES.encode(), authorization=f"Bearer {admin}")
        assert added.status_code == 200
        doc = added.json()["id"]
        as_user = {"authorization": f"Bearer {user}"}
        assert httpx.delete(f"{url}/v1/kaiyuan/documents/{doc}", headers=as_user).status_code == 403
