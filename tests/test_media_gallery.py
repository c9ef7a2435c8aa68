"""The images the server keeps (``response_format: "url"``): GET /v1/kaiyuan/media lists them
newest first with the settings each was made with, DELETE removes one; only files the server
wrote with a record are listed, and with API keys each key sees only its own (T14). A fake
pipeline paints one colour per seed, so a listed seed can be shown to remake its image."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from kaiyuan.config import Settings
from kaiyuan.db import open_for
from kaiyuan.db.keys import KeyStore
from kaiyuan.engines.base import MediaEngine, MediaRequest, ModelInfo, Rules
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from tests.fakes import ScriptedEngine
from tests.harness import serve_app

LIST = "/v1/kaiyuan/media"


class Painter(MediaEngine):
    """Each image one colour, drawn from the seed: the same seed, the same pixels."""

    rules = Rules(multiple=8, default_size=(16, 16), video=False)
    takes_image = needs_image = False

    def __init__(self, model_id: str = "painter") -> None:
        self.info = ModelInfo(model_id, "fake", 0, None, capabilities=("image",))
        self.requests: list[MediaRequest] = []

    @property
    def in_flight(self) -> int:
        return 0

    @property
    def alive(self) -> bool:
        return True

    async def aclose(self) -> None:
        pass

    def generate_media(self, request: MediaRequest) -> list[Any]:
        self.requests.append(request)
        assert request.seed is not None  # the route always picks one
        colour = (request.seed % 251, request.seed // 251 % 251, 7)
        return [Image.new("RGB", (request.width, request.height), colour)] * request.n


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Painter]]:
    painter = Painter()
    app = create_app(Settings(home=tmp_path), EnginePool([ScriptedEngine(), painter]))
    with serve_app(app) as url:
        yield url, painter


def generate(url: str, client: Any = httpx, **fields: Any) -> dict[str, Any]:
    body = {"model": "painter", "prompt": "a red fox", "response_format": "url", **fields}
    made = client.post(url + "/v1/images/generations", json=body, timeout=30)
    assert made.status_code == 200, made.text
    return dict(made.json())


def name_of(image_url: str) -> str:
    return image_url.rsplit("/", 1)[1]


def test_kept_images_are_listed_newest_first_with_their_settings(
    served: tuple[str, Painter], tmp_path: Path
) -> None:
    url, painter = served
    first = generate(url, prompt="狐狸 in the snow", negative_prompt="blur", size="32x16",
                     steps=3, seed=1234, guidance_scale=4.5)  # fmt: skip
    second = generate(url)  # no seed, no size, no steps: the server's choices are recorded
    inline = httpx.post(url + "/v1/images/generations",
                        json={"model": "painter", "prompt": "not kept"}, timeout=30)  # fmt: skip
    assert inline.status_code == 200 and "b64_json" in inline.json()["data"][0]

    listed = httpx.get(url + LIST).json()
    assert listed["object"] == "list"
    items = listed["data"]
    assert [i["id"] for i in items] == [
        name_of(second["data"][0]["url"]),
        name_of(first["data"][0]["url"]),
    ]
    newest, oldest = items
    assert oldest == {
        "object": "media", "id": oldest["id"], "kind": "image", "created": oldest["created"],
        "model": "painter", "prompt": "狐狸 in the snow", "negative_prompt": "blur",
        "size": "32x16", "steps": 3, "seed": 1234, "guidance_scale": 4.5,
    }  # fmt: skip
    assert newest["created"] >= oldest["created"] > 0
    assert newest["size"] == "16x16" and newest["steps"] == 30 and newest["negative_prompt"] is None
    assert isinstance(newest["seed"], int) and newest["seed"] == painter.requests[1].seed
    # The listed seed remakes the image: the file served and a fresh one have the same pixels.
    served_png = httpx.get(f"{url}/v1/media/{newest['id']}")
    assert served_png.status_code == 200 and served_png.headers["content-type"] == "image/png"
    again = generate(url, seed=newest["seed"], prompt="again")
    remade = httpx.get(again["data"][0]["url"]).content
    pixels = [Image.open(io.BytesIO(png)).tobytes() for png in (served_png.content, remade)]
    assert pixels[0] == pixels[1]

    assert len(httpx.get(url + LIST, params={"limit": 1}).json()["data"]) == 1
    for bad in (0, 201, "x"):
        assert httpx.get(url + LIST, params={"limit": bad}).status_code == 400


def test_only_the_servers_own_records_are_listed_and_delete_removes_both_files(
    served: tuple[str, Painter], tmp_path: Path
) -> None:
    url, _ = served
    kept = name_of(generate(url, n=2)["data"][1]["url"])
    folder = tmp_path / "media"
    stray = "ab" * 16
    (folder / f"{stray}.png").write_bytes(b"\x89PNG not ours")  # no record: served, not listed
    (folder / f"{'cd' * 16}.json").write_text(json.dumps({"owner": None}))  # a record, no image
    (folder / f"{'ef' * 16}.json").write_text("{not json")
    (folder / "notes.json").write_text("{}")
    assert len(list(folder.glob("*.png"))) == 3
    listed = [i["id"] for i in httpx.get(url + LIST).json()["data"]]
    assert len(listed) == 2 and kept in listed and f"{stray}.png" not in listed

    gone = httpx.delete(f"{url}{LIST}/{kept}")
    assert gone.status_code == 200 and gone.json() == {
        "object": "media.deleted", "id": kept, "deleted": True,
    }  # fmt: skip
    assert not (folder / kept).exists() and not (folder / kept.replace(".png", ".json")).exists()
    assert kept not in [i["id"] for i in httpx.get(url + LIST).json()["data"]]
    assert httpx.get(f"{url}/v1/media/{kept}").status_code == 404
    for name in (kept, f"{stray}.png", "notes.json", f"{'cd' * 16}.png"):
        missing = httpx.delete(f"{url}{LIST}/{name}")
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "name", name
    assert httpx.delete(f"{url}{LIST}/..%2Fserver.log").status_code == 404
    assert (folder / f"{stray}.png").exists()  # not the server's to delete


def test_with_keys_each_key_sees_and_deletes_only_its_own(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    keys = KeyStore(open_for(settings))
    _, alice = keys.create("alice")
    _, bob = keys.create("bob")
    as_alice = httpx.Client(headers={"authorization": f"Bearer {alice}"}, timeout=30)
    as_bob = httpx.Client(headers={"authorization": f"Bearer {bob}"}, timeout=30)
    app = create_app(settings, EnginePool([ScriptedEngine(), Painter()]))
    with serve_app(app) as url:
        assert httpx.get(url + LIST).status_code == 401
        made = name_of(generate(url, as_alice, prompt="alice's fox")["data"][0]["url"])
        assert [i["id"] for i in as_alice.get(url + LIST).json()["data"]] == [made]
        assert as_bob.get(url + LIST).json()["data"] == []
        assert as_bob.delete(f"{url}{LIST}/{made}").status_code == 404  # as absent as none
        assert as_alice.delete(f"{url}{LIST}/{made}").status_code == 200
        assert as_alice.get(url + LIST).json()["data"] == []
