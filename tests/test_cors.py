"""Browser safety (issue 19 item 7): CORS is off unless `cors_origins` lists an origin; a listed
origin's page can read answers (its 401s and 429s too, and the limits' headers) but still needs
a key when keys exist; an unlisted origin's preflight gets no allow header; the host check
stands in front of it all."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kaiyuan.db import open_database
from kaiyuan.db.keys import KeyStore, Limits
from tests.conftest import MODEL
from tests.harness import KAIYUAN, KaiyuanServer

pytestmark = pytest.mark.slow

APP = "http://app.example:3000"  # the listed origin
OTHER = "https://evil.example"
ASK = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
ALLOW = "access-control-allow-origin"


def preflight(url: str, origin: str) -> httpx.Response:
    """What a browser sends before a POST with a JSON body and an Authorization header."""
    return httpx.options(
        url + "/v1/chat/completions",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )


def test_cors_is_off_by_default(server: KaiyuanServer) -> None:
    answer = preflight(server.url, APP)
    assert ALLOW not in answer.headers and "access-control-allow-methods" not in answer.headers
    read = httpx.get(server.url + "/v1/models", headers={"origin": APP})
    assert read.status_code == 200 and ALLOW not in read.headers  # the browser hides it


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KaiyuanServer, str]]:
    home = tmp_path_factory.mktemp("cors")
    _, secret = KeyStore(open_database(home)).create("web", Limits(rpm=100))
    env = {"KAIYUAN_CORS_ORIGINS": f"{APP}/"}  # a trailing slash, as people paste origins
    with KaiyuanServer(home=home, env=env) as server:
        yield server, secret


def test_a_listed_origin_is_allowed_and_still_needs_a_key(
    listed: tuple[KaiyuanServer, str],
) -> None:
    server, secret = listed
    allowed = preflight(server.url, APP)
    assert allowed.status_code == 200
    assert allowed.headers[ALLOW] == APP
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers  # keys, not cookies
    # without a key: the 401 in OpenAI's envelope, readable by the page
    refused = httpx.post(server.url + "/v1/chat/completions", json=ASK, headers={"origin": APP})
    assert refused.status_code == 401 and refused.headers[ALLOW] == APP
    assert refused.json()["error"]["code"] == "invalid_api_key"
    # with one: the answer, and the limits' headers exposed to the page's script
    served = httpx.post(server.url + "/v1/chat/completions", json=ASK,
                        headers={"origin": APP, "authorization": f"Bearer {secret}"})  # fmt: skip
    assert served.status_code == 200 and served.headers[ALLOW] == APP
    exposed = served.headers["access-control-expose-headers"].lower()
    assert "x-ratelimit-remaining-requests" in exposed and "retry-after" in exposed
    assert served.headers["x-ratelimit-limit-requests"] == "100"


def test_an_unlisted_origin_gets_no_allow_header(listed: tuple[KaiyuanServer, str]) -> None:
    server, secret = listed
    for origin in (OTHER, "http://app.example:3001", "https://app.example:3000", "null"):
        answer = preflight(server.url, origin)
        assert answer.status_code >= 400 and ALLOW not in answer.headers, origin
    # a key does not make another origin's page able to read the answer
    served = httpx.get(server.url + "/v1/models",
                       headers={"origin": OTHER, "authorization": f"Bearer {secret}"})  # fmt: skip
    assert served.status_code == 200 and ALLOW not in served.headers


def test_the_host_check_comes_first(listed: tuple[KaiyuanServer, str]) -> None:
    server, secret = listed
    rebound = httpx.post(
        server.url + "/v1/chat/completions",
        json=ASK,
        headers={"origin": APP, "host": "rebind.example", "authorization": f"Bearer {secret}"},
    )
    assert rebound.status_code == 400
    assert rebound.json()["error"]["code"] == "host_not_allowed"
    assert ALLOW not in rebound.headers


def test_a_malformed_origin_is_one_line(tmp_path: Path) -> None:
    ran = subprocess.run(
        [KAIYUAN, "serve", "--cors-origin", "app.example/path"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"KAIYUAN_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert ran.returncode != 0
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and "cors_origins" in lines[0] and "not an origin" in lines[0], lines
