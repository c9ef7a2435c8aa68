"""/v1/kaiyuan/evals: runs started over the API against the server's own endpoint (the bundled
model, and a scripted one where a run must hang or keys must be checked), polled to the end,
read back with their reports and items; past runs written by `kaiyuan eval`; one run at a
time, cancel, delete; bounded inputs; with keys, admin keys only."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.evals import report, suites
from kaiyuan.evals.runner import Plan, results_path
from kaiyuan.server.app import create_app
from tests.conftest import MODEL
from tests.fakes import Reply, ScriptedEngine
from tests.harness import KaiyuanServer, serve_app

EVALS = "/v1/kaiyuan/evals"
# 2 right, 5 wrong, 1 failed request of 8: "25% ± 16 (95% CI 7–59%, n=8)"
EIGHT = ["right", "right", "wrong", "wrong", "wrong", "wrong", "wrong", None]


def past_run(home: Path, name: str, outcomes: list[str | None] = EIGHT) -> Path:
    """What `kaiyuan eval -m m -s bilingual --limit N -o HOME/evals/NAME` leaves, made by the
    real scorer and report, from replies: "right" (a reference answer), "wrong", None (the
    request failed). Its records carry no prompts (as runs made before they were recorded):
    the shipped suite's are found by item id."""
    out = home / "evals" / name
    suite = suites.load("bilingual", home)
    plan = Plan(models=["m"], suites=[suite], out=out, endpoint="http://x", limit=len(outcomes))
    path = results_path(out, "m", suite)
    path.parent.mkdir(parents=True)
    lines = []
    for item, outcome in zip(plan.items(suite), outcomes, strict=True):
        record: dict[str, Any] = {
            "id": item.id, "model": "m", "suite": suite.name,
            "template_hash": suite.template_hash, "error": None if outcome else "503: overloaded",
            "timing": {"started": 1.0, "finished": 2.5, "chunk_times": [0.5, 0.6],
                       "prompt_tokens": 3, "completion_tokens": 2},
        }  # fmt: skip
        if outcome is not None:
            reply = item.reference["answers"][0] if outcome == "right" else "I <b>do not</b> know"
            record |= {"content": reply, "reasoning": "", "finish_reason": "stop",
                       "score": suite.score(item, reply).to_dict()}  # fmt: skip
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    data = report.eval_report(plan)
    report.write(out, data, report.eval_html(data))
    return out


def finished(url: str, run_id: str, timeout: float = 120, **headers: str) -> dict[str, Any]:
    """Poll the run until it is no longer running (the API's own progress, as the page does)."""
    deadline = time.monotonic() + timeout
    while True:
        run = httpx.get(f"{url}{EVALS}/{run_id}", headers=headers).json()
        if run["status"] != "running" or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    with KaiyuanServer(home=tmp_path_factory.mktemp("evals-api")) as running:
        yield running


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[tuple[str, ScriptedEngine]]:
    engine = ScriptedEngine(context_length=4096, capacity=16)
    with serve_app(create_app(Settings(home=tmp_path), EnginePool([engine]))) as url:
        yield url, engine


@pytest.mark.slow
def test_a_two_item_eval_of_the_bundled_model(server: KaiyuanServer) -> None:
    body = {"models": [MODEL], "suites": ["bilingual"], "limit": 2, "max_tokens": 24}
    started = httpx.post(server.url + EVALS, json=body)
    assert started.status_code == 200, started.text
    run = started.json()
    assert run["status"] == "running" and run["progress"]["total"] == 2
    assert run["kind"] == "eval" and run["models"] == [MODEL] and run["suites"] == ["bilingual"]
    run = finished(server.url, run["id"])
    assert run["status"] == "completed", run
    assert run["progress"]["done"] == 2 and run["error"] is None
    [score] = run["scores"]
    share = score["score"]
    assert score["items"] == score["answered"] == 2 and score["errors"] == 0
    assert share["n"] == 2 and share["stderr"] is not None
    low, high = share["ci95"]
    assert 0 <= low <= share["value"] <= high <= 1
    assert score["output_tokens_per_second"] > 0
    # report.json as written, and the HTML report: no script, served under a policy of none
    written = run["report"]
    assert written["kind"] == "kaiyuan-eval" and written["results"][0]["score_ci95"] == [low, high]
    page = httpx.get(server.url + run["report_url"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text and "95% CI" in page.text
    assert "script-src" not in page.headers["content-security-policy"]
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    # each item: the prompt as sent, the answer, the verdict
    items = httpx.get(f"{server.url}{EVALS}/{run['id']}/items").json()
    assert items["total"] == 2 and len(items["data"]) == 2
    prompts = {i.id: i.messages for i in suites.load("bilingual", server.home).items()[:2]}
    for item in items["data"]:
        assert item["prompt"] == prompts[item["id"]]
        assert isinstance(item["answer"], str) and item["verdict"]["correct"] in (True, False)
        assert item["seconds"] > 0 and item["error"] is None
    listed = httpx.get(server.url + EVALS).json()["data"]
    assert run["id"] in [r["id"] for r in listed]


@pytest.mark.slow
def test_a_bench_of_the_bundled_model(server: KaiyuanServer) -> None:
    body = {"kind": "bench", "model": MODEL, "concurrency": [1, 2], "requests": 2,
            "max_tokens": 8}  # fmt: skip
    started = httpx.post(server.url + EVALS, json=body)
    assert started.status_code == 200, started.text
    assert started.json()["progress"]["total"] == 4
    run = finished(server.url, started.json()["id"])
    assert run["status"] == "completed" and run["kind"] == "bench" and run["suites"] == []
    assert [level["concurrency"] for level in run["levels"]] == [1, 2]
    assert all(level["requests"] == 2 and level["failures"] == 0 for level in run["levels"])
    assert run["report"]["kind"] == "kaiyuan-bench"
    assert run["report_url"].endswith("/bench.html")
    assert "<script" not in httpx.get(server.url + run["report_url"]).text


def test_past_runs_of_the_cli_are_listed_with_their_intervals(tmp_path: Path) -> None:
    past_run(tmp_path, "nightly")
    interrupted = tmp_path / "evals" / "20250101-000000-eval-abcdef"
    interrupted.mkdir()
    (interrupted / "job.json").write_text(json.dumps({
        "kind": "eval", "models": ["m"], "suites": ["mmlu"], "settings": {}, "created": 5.0,
        "status": "running", "progress": {"done": 1, "total": 4, "current": "m · mmlu"},
    }))  # fmt: skip
    (tmp_path / "evals" / "not-a-run").mkdir()
    engine = ScriptedEngine()
    with serve_app(create_app(Settings(home=tmp_path), EnginePool([engine]))) as url:
        runs = {r["id"]: r for r in httpx.get(url + EVALS).json()["data"]}
        assert set(runs) == {"nightly", interrupted.name}
        assert runs[interrupted.name]["status"] == "interrupted"
        run = runs["nightly"]
        assert run["status"] == "completed" and run["models"] == ["m"]
        assert run["suites"] == ["bilingual"] and run["settings"]["limit"] == 8
        [score] = run["scores"]
        share = score["score"]
        assert share["value"] == 0.25 and share["n"] == 8 and score["errors"] == 1
        assert share["stderr"] == pytest.approx(0.1637, abs=1e-4)
        assert share["ci95"] == pytest.approx([0.0715, 0.5907], abs=1e-4)
        items = httpx.get(f"{url}{EVALS}/nightly/items", params={"limit": 3, "offset": 6}).json()
        assert items["total"] == 8 and [i["id"] for i in items["data"]] == ["zh-007", "zh-008"]
        wrong, failed = items["data"]
        assert wrong["prompt"][0]["content"].strip() and wrong["answer"] == "I <b>do not</b> know"
        assert wrong["verdict"]["correct"] is False
        assert failed["verdict"] is None and failed["answer"] is None
        assert failed["error"] == "503: overloaded"
        none = httpx.get(f"{url}{EVALS}/nightly/items", params={"model": "other"}).json()
        assert none["total"] == 0
        assert httpx.delete(f"{url}{EVALS}/nightly").json()["deleted"] is True
        assert not (tmp_path / "evals" / "nightly").exists()
        assert httpx.get(f"{url}{EVALS}/nightly").status_code == 404


def test_one_run_at_a_time_cancel_and_what_it_kept(
    scripted: tuple[str, ScriptedEngine], tmp_path: Path
) -> None:
    url, engine = scripted
    engine.enqueue(Reply(list("Paris")), *[Reply(list("ok"), hang_after=1)] * 3)
    body = {"models": ["fake-model"], "suites": ["bilingual"], "limit": 4, "concurrency": 1,
            "max_tokens": 8}  # fmt: skip
    run = httpx.post(url + EVALS, json=body).json()
    assert run["status"] == "running"
    again = httpx.post(url + EVALS, json={"kind": "bench", "model": "fake-model"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "eval_running"
    assert run["id"] in again.json()["error"]["message"]
    assert httpx.delete(f"{url}{EVALS}/{run['id']}").status_code == 409  # cancel it first
    deadline = time.monotonic() + 20
    while httpx.get(f"{url}{EVALS}/{run['id']}").json()["progress"]["done"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stopped = httpx.post(f"{url}{EVALS}/{run['id']}/cancel", timeout=60).json()
    assert stopped["status"] == "cancelled" and stopped["progress"]["done"] == 1
    # what it answered before the cancel is reported: 1 of 4 answered, 3 missing
    [score] = stopped["scores"]
    assert score["answered"] == 1 and score["items"] == 4 and score["score"]["n"] == 4
    assert (tmp_path / "evals" / run["id"] / "report.html").is_file()
    assert httpx.post(url + EVALS, json=body | {"limit": 1}).status_code == 200  # free again


def test_with_keys_only_an_admin_reads_and_starts_runs(tmp_path: Path) -> None:
    from kaiyuan.db import open_for
    from kaiyuan.db.keys import KeyStore, Limits

    settings = Settings(home=tmp_path)
    store = KeyStore(open_for(settings))
    _, user = store.create("user")
    _, admin = store.create("boss", Limits(admin=True))
    past_run(tmp_path, "secret")
    body = {"models": ["fake-model"], "suites": ["bilingual"], "limit": 2, "max_tokens": 8}
    engine = ScriptedEngine(context_length=4096)
    with serve_app(create_app(settings, EnginePool([engine]))) as url:
        as_user = {"authorization": f"Bearer {user}"}
        admin_only = [
            ("GET", EVALS), ("GET", f"{EVALS}/secret"), ("GET", f"{EVALS}/secret/items"),
            ("GET", f"{EVALS}/secret/report.html"), ("GET", "/v1/kaiyuan/suites"),
            ("POST", EVALS), ("POST", f"{EVALS}/secret/cancel"), ("DELETE", f"{EVALS}/secret"),
        ]  # fmt: skip
        for method, path in admin_only:
            refused = httpx.request(method, url + path, headers=as_user, json=body)
            assert refused.status_code == 403, (method, path, refused.text)
            assert refused.json()["error"]["code"] == "admin_required"
            assert "zh-00" not in refused.text
        assert httpx.get(url + EVALS).status_code == 401
        as_admin = {"authorization": f"Bearer {admin}"}
        started = httpx.post(url + EVALS, json=body, headers=as_admin)
        assert started.status_code == 200, started.text
        # the run's own requests carry the admin's key: without it every one would be a 401
        run = finished(url, started.json()["id"], **as_admin)
        assert run["status"] == "completed", run
        assert run["scores"][0]["answered"] == 2 and run["scores"][0]["errors"] == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"models": [], "suites": ["mmlu"]}, "models"),
        ({"models": ["m"] * 9, "suites": ["mmlu"]}, "models"),
        ({"models": ["m" * 300], "suites": ["mmlu"]}, "models"),
        ({"models": ["fake-model"], "suites": ["gsm9k"]}, "suites"),
        ({"models": ["fake-model"], "suites": ["/etc/passwd.jsonl"]}, "suites"),
        ({"models": ["fake-model"], "suites": ["mmlu"], "limit": 0}, "limit"),
        ({"models": ["fake-model"], "suites": ["mmlu"], "concurrency": 65}, "concurrency"),
        ({"models": ["fake-model"], "suites": ["mmlu"], "max_tokens": 10**6}, "max_tokens"),
        ({"models": ["fake-model"], "suites": ["mmlu"], "url": "http://x"}, "url"),
        ({"kind": "bench", "model": "fake-model", "concurrency": [0]}, "concurrency"),
        ({"kind": "bench", "model": "fake-model", "concurrency": list(range(1, 10))}, None),
        ({"kind": "bench", "model": "fake-model", "requests": 100_000}, "requests"),
        ({"kind": "other", "model": "fake-model"}, None),
        ({"models": ["fake-model"], "suites": ["math"]}, None),  # not fetched here
    ],
)
def test_bounded_inputs_are_a_400(
    scripted: tuple[str, ScriptedEngine], body: dict[str, Any], param: str | None
) -> None:
    url, _ = scripted
    answer = httpx.post(url + EVALS, json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["message"] and (param is None or param in (error["param"] or ""))
    assert httpx.get(url + EVALS).json()["data"] == []  # nothing was started


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", None, 404),  # an unknown model
        ("GET", f"{EVALS}/nope", 404),
        ("GET", f"{EVALS}/..%2F..%2Fetc", 404),
        ("GET", f"{EVALS}/.hidden", 400),
        ("GET", f"{EVALS}/{'a' * 65}", 400),
        ("GET", f"{EVALS}/nope/items?limit=1000", 400),
        ("GET", f"{EVALS}/nope/items", 404),
        ("GET", f"{EVALS}/nope/other.html", 400),
        ("GET", f"{EVALS}?limit=0", 400),
        ("DELETE", f"{EVALS}/nope", 404),
        ("POST", f"{EVALS}/nope/cancel", 404),
    ],
)
def test_unknown_runs_and_models(
    scripted: tuple[str, ScriptedEngine], method: str, path: str | None, status: int
) -> None:
    url, _ = scripted
    body = {"models": ["fake-modle"], "suites": ["mmlu"]} if path is None else None
    answer = httpx.request(method, url + (path or EVALS), json=body)
    assert answer.status_code == status, answer.text
    message = answer.json()["error"]["message"]
    if path is None:
        assert "did you mean 'fake-model'" in message


def test_suites_say_what_is_here(scripted: tuple[str, ScriptedEngine]) -> None:
    url, _ = scripted
    listed = {s["name"]: s for s in httpx.get(url + "/v1/kaiyuan/suites").json()["data"]}
    assert list(listed) == list(suites.BUILTIN)
    assert listed["bilingual"]["items"] == 60 and listed["bilingual"]["unavailable"] is None
    assert listed["mmlu"]["items"] == 317 and listed["refusal"]["metric"] == "refusal_rate"
    assert listed["math"]["items"] is None
    assert "kaiyuan suites fetch math" in listed["math"]["unavailable"]
