"""Where an agent run went wrong in known ways, found from its stored steps (the audit view).

- ``repeated_call``: the same tool with the same arguments called again and again;
- ``recurring_error``: the same error, step after step;
- ``growing_input``: the model's input tokens keep growing while it produces nothing new (the
  same answer or the same tool calls as before).
Each flag names the steps that show it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

REPEATS = 3  # this many identical calls, or errors, make a pattern
GROWING = 3  # model turns in a row with growing input and nothing new


@dataclass(frozen=True)
class Flag:
    kind: str
    message: str
    steps: list[int] = field(default_factory=list)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def repeated_calls(steps: list[dict[str, Any]]) -> list[Flag]:
    seen: dict[tuple[str, str], list[int]] = defaultdict(list)
    for step in steps:
        if step["kind"] == "tool":
            seen[(step["name"], _canonical(step["input"]))].append(step["index"])
    return [
        Flag(
            "repeated_call",
            f"tool '{name}' was called {len(indexes)} times with the same arguments",
            indexes,
        )
        for (name, _), indexes in seen.items()
        if len(indexes) >= REPEATS
    ]


def recurring_errors(steps: list[dict[str, Any]]) -> list[Flag]:
    seen: dict[str, list[int]] = defaultdict(list)
    for step in steps:
        if step.get("error"):
            seen[step["error"].strip()[:500]].append(step["index"])
    return [
        Flag("recurring_error", f"the same error {len(indexes)} times: {error[:120]}", indexes)
        for error, indexes in seen.items()
        if len(indexes) >= REPEATS
    ]


def growing_input(steps: list[dict[str, Any]]) -> list[Flag]:
    """Runs of model turns whose input grows while each output repeats an earlier one."""
    outputs: set[str] = set()
    streaks: list[list[int]] = [[]]
    last_input = -1
    for step in steps:
        if step["kind"] != "model":
            continue
        tokens = step.get("usage", {}).get("prompt_tokens", 0)
        output = _canonical(step.get("output"))
        if output in outputs and tokens > last_input:
            streaks[-1].append(step["index"])
        elif streaks[-1]:
            streaks.append([])
        outputs.add(output)
        last_input = tokens
    return [
        Flag("growing_input", f"input grew over {len(s)} model turns that produced nothing new", s)
        for s in streaks
        if len(s) >= GROWING
    ]


def audit(steps: list[dict[str, Any]]) -> list[Flag]:
    """Every known failure pattern in a run's steps (as ``Traces.get`` returns them)."""
    return [*repeated_calls(steps), *recurring_errors(steps), *growing_input(steps)]
