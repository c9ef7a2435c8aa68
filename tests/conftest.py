from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import KaiyuanServer
from tests.postgres import database_url, postgres_database, postgres_server  # noqa: F401

MODEL = "smollm2-135m-instruct"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing a test does touches the user's real store or config."""
    monkeypatch.setenv("KAIYUAN_HOME", str(tmp_path / "kaiyuan-home"))
    for name in ("KAIYUAN_CONFIG", "KAIYUAN_MODELS", "KAIYUAN_PORT", "KAIYUAN_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    """`kaiyuan serve` as a subprocess on a free loopback port, serving the bundled model."""
    home = tmp_path_factory.mktemp("server-home")
    with KaiyuanServer(home=home, args=["--max-queue", "12"]) as running:
        yield running
