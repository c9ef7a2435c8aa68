"""The ``files`` tool: hybrid search over the user's documents (``kaiyuan docs add``)."""

from __future__ import annotations

from typing import Any

from kaiyuan.config import Settings
from kaiyuan.documents.index import DocIndex
from kaiyuan.tools.base import Tool


def run(arguments: dict[str, Any], settings: Settings) -> dict[str, Any]:
    with DocIndex.open(settings.home) as index:
        hits = index.search(arguments["query"], int(arguments.get("max_results") or 5))
    return {"query": arguments["query"], "results": [hit.to_dict() for hit in hits]}


TOOL = Tool(
    name="files",
    description=(
        "Search the user's own documents (added with `kaiyuan docs add`) and return the most "
        "relevant passages, each with its source file and position for citation."
    ),
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 1000},
            "max_results": {"type": "integer", "minimum": 1, "maximum": 20},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    run=run,
)
