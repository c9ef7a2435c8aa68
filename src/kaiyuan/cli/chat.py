"""``kaiyuan chat``: one answer, or an interactive conversation that keeps its history.

Without ``--url`` the model is served in-process on an ephemeral loopback port, so the CLI
always goes through the same server code and the official ``openai`` client. Standard output
carries only the model's answers (so they can be piped); the conversation's commands (/help,
/reset, /model, /system) answer on standard error and are never sent to the model.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

import click
import openai
from openai.types.chat import ChatCompletionChunk

from kaiyuan.cli.endpoint import ChatError, api_url, default_model, embedded_server
from kaiyuan.config import Settings
from kaiyuan.errors import closest

# Piped input beyond this is refused: more text than the largest contexts (~1M tokens) hold.
MAX_STDIN_BYTES = 4 * 2**20


def with_stdin(prompt: str, stdin: BinaryIO, limit: int = MAX_STDIN_BYTES) -> str:
    """``prompt`` followed by piped input (``cat notes.md | kaiyuan chat "Summarise"``)."""
    data = stdin.read(limit + 1)
    if len(data) > limit:
        raise ChatError(
            f"standard input is over {limit // 2**20} MiB, more than a model's context holds; "
            "pipe in a part of it"
        )
    text = data.decode("utf-8", errors="replace").strip()
    return f"{prompt}\n\n{text}" if text else prompt


def run(
    *,
    prompt: str | None,
    model: str | None,
    url: str | None,
    settings: Settings,
    system: str | None = None,
    **sampling: Any,
) -> None:
    # (sys.stdin is None when the process was started with standard input closed)
    piped = prompt is not None and sys.stdin is not None and not sys.stdin.isatty()
    if prompt is not None and piped:  # read before a model loads: too much fails at once
        prompt = with_stdin(prompt, sys.stdin.buffer)
    if url is None and model is not None:
        settings = settings.model_copy(update={"models": [model]})
    endpoint = contextlib.nullcontext(api_url(url)) if url else embedded_server(settings)
    try:
        with endpoint as base_url:
            client = openai.OpenAI(base_url=base_url, api_key="kaiyuan", max_retries=1)
            chat = Conversation(
                client,
                model or default_model(client),
                {k: v for k, v in sampling.items() if v is not None},
                system=system,
            )
            if prompt is not None:
                chat.ask(prompt, keep=False)
                return
            chat.converse()
    except openai.APIStatusError as exc:
        raise ChatError(_message(exc, piped)) from None
    except openai.APIConnectionError:
        raise ChatError(f"cannot reach the server at {url}") from None


def _message(exc: openai.APIStatusError, piped: bool = False) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    message = str(body.get("message") or exc.message)
    if piped and body.get("code") == "context_length_exceeded":
        message += " (the prompt includes what was piped to standard input)"
    return message


def _answer(
    client: openai.OpenAI, model: str, messages: list[dict[str, str]], extra: dict[str, Any]
) -> str:
    stream = cast(
        "openai.Stream[ChatCompletionChunk]",
        client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            **extra,
        ),
    )
    parts: list[str] = []
    try:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text = chunk.choices[0].delta.content
                parts.append(text)
                sys.stdout.write(text)
                sys.stdout.flush()
    finally:
        stream.close()  # on Ctrl-C this disconnects, which stops the generation
        sys.stdout.write("\n")
        sys.stdout.flush()
    return "".join(parts)


HELP = """commands (never sent to the model):
  /help           this list
  /reset          forget the conversation (the system prompt stays)
  /model [ID]     show the model, or switch to another one
  /system [TEXT]  show the system prompt, or set it
  /exit           end (also /quit, /bye, Ctrl-D)
a line that starts with // is sent with one / removed"""


def _say(text: str) -> None:
    click.echo(text, err=True)


@dataclass(slots=True)
class Conversation:
    """One chat: the model, the system prompt and the turns so far."""

    client: openai.OpenAI
    model: str
    extra: dict[str, Any]
    system: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, *self.turns]

    def ask(self, text: str, *, keep: bool = True) -> None:
        """Send ``text`` and stream the answer; with ``keep`` both join the conversation."""
        self.turns.append({"role": "user", "content": text})
        try:
            reply = _answer(self.client, self.model, self.messages(), self.extra)
        except BaseException:
            self.turns.pop()
            raise
        if keep:
            self.turns.append({"role": "assistant", "content": reply})
        else:
            self.turns.pop()

    def converse(self) -> None:
        if sys.stdin is None:
            raise ChatError("standard input is closed: give a PROMPT to answer")
        interactive = sys.stdin.isatty()
        if interactive:
            _say(f"chatting with {self.model}; /help lists the commands, /exit or Ctrl-D ends")
        while True:
            try:
                line = input(">>> " if interactive else "")
            except EOFError:
                return
            text = line.strip()
            if not text:
                continue
            if _is_command(text):
                if not self.command(text):
                    return
                continue
            if text.startswith("//"):
                text = text[1:]
            try:
                self.ask(text)
            except KeyboardInterrupt:
                _say("(interrupted)")
            except openai.APIStatusError as exc:
                if not interactive:
                    raise
                # A person at the prompt can fix the turn (shorter, or /model); keep going.
                _say(f"error: {_message(exc)}")

    def command(self, text: str) -> bool:
        """Run a /command; False ends the conversation."""
        name, _, argument = text.partition(" ")
        argument = argument.strip()
        handlers: dict[str, Callable[[str], None]] = {
            "/help": lambda _: _say(HELP),
            "/?": lambda _: _say(HELP),
            "/reset": self._reset,
            "/clear": self._reset,
            "/model": self._model,
            "/system": self._system,
        }
        if name in ("/exit", "/quit", "/bye"):
            return False
        handler = handlers.get(name)
        if handler is None:
            close = closest(name, [*handlers, "/exit"])
            guess = f" (did you mean {close}?)" if close else ""
            _say(f"unknown command {name}{guess}; /help lists the commands")
        else:
            handler(argument)
        return True

    def _reset(self, _: str) -> None:
        self.turns.clear()
        _say("conversation cleared" + (" (the system prompt stays)" if self.system else ""))

    def _model(self, model_id: str) -> None:
        if not model_id:
            _say(f"chatting with {self.model}")
            return
        try:
            found = self.client.models.retrieve(model_id)
        except openai.NotFoundError as exc:
            _say(f"error: {_message(exc)}")
            return
        capabilities = (found.model_extra or {}).get("capabilities", ["chat"])
        if "chat" not in capabilities:
            _say(f"error: {model_id} cannot chat (it does: {', '.join(capabilities)})")
            return
        self.model = found.id
        _say(f"now chatting with {self.model}; the conversation so far is kept (/reset clears it)")

    def _system(self, text: str) -> None:
        if text:
            self.system = text
            _say("system prompt set")
        else:
            _say(f"system prompt: {self.system}" if self.system else "no system prompt")


def _is_command(text: str) -> bool:
    """``/word`` starts a command; ``/usr/bin is what?`` and ``//x`` do not."""
    word = text.split(maxsplit=1)[0]
    return word.startswith("/") and (word == "/?" or word[1:].isalpha())
