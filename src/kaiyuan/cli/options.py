"""CLI flags generated from :class:`kaiyuan.config.Settings`, so flags, ``KAIYUAN_*``
variables and the config file share one definition (type, constraint and help text)."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kaiyuan.config import Settings

F = TypeVar("F", bound=Callable[..., Any])

_CLICK_TYPES: dict[Any, click.ParamType] = {
    int: click.INT,
    float: click.FLOAT,
    str: click.STRING,
    Path: click.Path(path_type=Path),
}


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(element type, is a list) of a field annotation such as ``int | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def setting(name: str, *flags: str) -> Callable[[F], F]:
    """A click option for the setting ``name``; unset flags stay None (lower layers apply).

    Its help shows the variable and the default (click's ``show_default`` cannot: the
    option's own default is None, so that a flag not given leaves the variable and the
    config file their say)."""
    field = Settings.model_fields[name]
    base, many = _base_type(field.annotation)
    shown = [f"env: {env_var(name)}"]
    default = default_text(name)
    if default is not None:
        shown.append(f"default: {default}")
    names = flags or (f"--{name.replace('_', '-')}",)
    text = f"{field.description}  [{'; '.join(shown)}]"
    if base is bool:  # a flag: given, it sets True; absent, the lower layers decide
        return click.option(*names, name, is_flag=True, flag_value=True, default=None, help=text)
    return click.option(
        *names,
        name,
        type=_CLICK_TYPES.get(base, click.STRING),
        multiple=many,
        default=None,
        help=text,
    )


def env_var(name: str) -> str:
    return f"KAIYUAN_{name.upper()}"


def default_text(name: str) -> str | None:
    """The default of setting ``name`` as people write it (``~/.kaiyuan``, ``300``, ``none``);
    None for a None default, whose description says what happens instead."""
    return shown(Settings.model_fields[name].get_default(call_default_factory=True))


def shown(value: Any) -> str | None:
    """A default value as help and docs show it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Path):
        home = Path.home()
        return f"~/{value.relative_to(home)}" if value.is_relative_to(home) else str(value)
    if isinstance(value, list | tuple | dict):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Flag values that were actually given (click reports an unused multiple flag as ())."""
    return {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in values.items()
        if v not in (None, ())
    }
