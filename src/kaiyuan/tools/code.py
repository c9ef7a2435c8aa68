"""The ``code`` tool: Python run in the bubblewrap sandbox (``tools/sandbox.py``)."""

from __future__ import annotations

import contextlib
import shutil
from typing import Any

from kaiyuan.config import Settings
from kaiyuan.tools import sandbox
from kaiyuan.tools.base import Tool

TEXT_PREVIEW = 4096  # bytes of each small text file the code wrote, returned to the model


def run(arguments: dict[str, Any], settings: Settings) -> dict[str, Any]:
    limits = sandbox.Limits(
        wall_seconds=settings.sandbox_seconds,
        cpu_seconds=max(1, int(settings.sandbox_seconds)),
        memory_bytes=settings.sandbox_memory_mb * 2**20,
    )
    work = sandbox.new_workdir()
    try:
        result = sandbox.run_python(arguments["code"], limits=limits, work=work)
        for entry in result.files:
            if entry["bytes"] <= TEXT_PREVIEW:
                data = (work / entry["path"]).read_bytes()
                with contextlib.suppress(UnicodeDecodeError):
                    entry["text"] = data.decode("utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    output = result.to_dict()
    # The run's wall time tells the model nothing it can act on (a timeout is ``timed_out``)
    # and would make its input differ between two runs of one program; the trace's tool step
    # keeps how long the call took.
    del output["seconds"]
    return output


TOOL = Tool(
    name="code",
    description=(
        "Run Python 3 code in an isolated sandbox (no network, no access to the user's files; "
        "standard library only) and return its stdout, stderr, exit code and the files it "
        "wrote in its working folder. Print what you need to see."
    ),
    parameters={
        "type": "object",
        "properties": {"code": {"type": "string", "description": "A complete Python program."}},
        "required": ["code"],
        "additionalProperties": False,
    },
    run=run,
)
