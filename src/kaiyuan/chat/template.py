"""Renders a model's own chat template in Jinja's immutable sandbox.

Templates come only from model files (GGUF metadata, tokenizer_config.json), never from a
request. Message contents are data: they are passed as values and never compiled, so Jinja
syntax inside them is inert. A template that reaches for unsafe attributes raises a
:class:`kaiyuan.errors.TemplateError` instead of running.

A template is code from a model file, so it is also bounded in time and output (T22): every
call, attribute and item access and every piece of output checks a deadline, ``*`` and ``**``
refuse results past the output cap, and the output stops at ``max_chars``. Callers render off
the event loop.
"""

from __future__ import annotations

import datetime
import json
import operator
import threading
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, NoReturn

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from kaiyuan.errors import ContextLengthExceeded, InvalidRequest, TemplateError

RENDER_SECONDS = 2.0
RENDER_MAX_CHARS = 64 * 2**20


class _Budget(threading.local):
    deadline = float("inf")
    max_chars = RENDER_MAX_CHARS


_budget = _Budget()


class _OverBudget(Exception):
    """The template ran past its time or output budget."""


def _spend() -> None:
    if time.monotonic() > _budget.deadline:
        raise _OverBudget("ran past its time limit")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        _spend()
        if operator_ == "**":
            if isinstance(left, int | float) and isinstance(right, int | float) and abs(right) > 64:
                raise _OverBudget("computed a power too large")
            return operator.pow(left, right)
        if isinstance(right, int) and isinstance(left, str | list | tuple):
            left, right = right, left
        sized = isinstance(left, int) and isinstance(right, str | list | tuple)
        if sized and left * len(right) > _budget.max_chars:
            raise _OverBudget("repeated a string or list past the output limit")
        return operator.mul(left, right)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _spend()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _spend()
        return super().getitem(obj, argument)


class _TemplateRaised(Exception):
    """The template itself called raise_exception(): the conversation is malformed."""


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # As transformers renders templates: plain JSON, not Jinja's HTML-escaped variant, which
    # would turn the '<' and '&' of tool schemas into \u003c / \u0026.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> ImmutableSandboxedEnvironment:
    env = _BoundedEnvironment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    return env


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    return _environment().from_string(source)


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = ""):
        try:
            self._template = _compile(source)
        except jinja2.TemplateError as exc:
            raise TemplateError("the model's chat template does not compile") from exc
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        max_chars: int = RENDER_MAX_CHARS,
        seconds: float = RENDER_SECONDS,
        **extra: Any,
    ) -> str:
        """The prompt text; a :class:`ContextLengthExceeded` when it grows past ``max_chars``
        (the most the model's context could hold), a :class:`TemplateError` past ``seconds``."""
        _budget.deadline, _budget.max_chars = time.monotonic() + seconds, max_chars
        try:
            pieces, size = [], 0
            for piece in self._template.generate(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            ):
                _spend()
                size += len(piece)
                if size > max_chars:
                    raise ContextLengthExceeded(
                        f"the conversation renders to more than {max_chars} characters, more "
                        "than this model's context can hold; shorten it",
                        param="messages",
                    )
                pieces.append(piece)
            return "".join(pieces)
        except _OverBudget as exc:
            raise TemplateError(
                f"the model's chat template was stopped: it {exc} ({seconds:g} s)"
            ) from None
        except RecursionError:
            raise TemplateError("the model's chat template recursed too deeply") from None
        except _TemplateRaised as exc:
            raise InvalidRequest(
                f"the model's chat template rejected the conversation: {exc}", param="messages"
            ) from exc
        except SecurityError as exc:
            raise TemplateError(
                "the model's chat template attempted an unsafe operation and was stopped"
            ) from exc
        except (
            jinja2.TemplateError, TypeError, ValueError, AttributeError, OverflowError,
            MemoryError, IndexError, KeyError, ZeroDivisionError,
        ) as exc:  # fmt: skip
            raise TemplateError("the model's chat template failed to render") from exc
        finally:
            _budget.deadline = float("inf")
