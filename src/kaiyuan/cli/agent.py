"""The agent's commands: run a tool alone, manage the document index."""

from __future__ import annotations

import json
from pathlib import Path

import click

from kaiyuan.config import Settings
from kaiyuan.errors import InvalidRequest
from kaiyuan.tools import base


def run_tool(settings: Settings, name: str, arguments: str) -> None:
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        raise InvalidRequest(f"the arguments are not JSON: {exc}", param="arguments") from None
    result = base.call(name, parsed, settings)
    click.echo(json.dumps(result, ensure_ascii=False, indent=2))


def docs_add(settings: Settings, paths: list[Path]) -> None:
    from kaiyuan.docs.index import DocIndex

    index = DocIndex.open(settings.home)
    try:
        for added in index.add(paths):
            click.echo(f"{added.status:9} {added.chunks:5} chunks  {added.source}")
    finally:
        index.close()


def docs_list(settings: Settings, *, as_json: bool) -> None:
    from kaiyuan.docs.index import DocIndex

    index = DocIndex.open(settings.home)
    try:
        documents = index.documents()
    finally:
        index.close()
    if as_json:
        click.echo(json.dumps(documents, ensure_ascii=False, indent=2))
        return
    for doc in documents:
        click.echo(f"{doc['chunks']:5} chunks  {doc['source']}  ({doc['title']})")
    if not documents:
        click.echo("no documents yet: kaiyuan docs add PATH...")


def docs_rm(settings: Settings, source: str) -> None:
    from kaiyuan.docs.index import DocIndex

    index = DocIndex.open(settings.home)
    try:
        if not index.remove(source):
            raise InvalidRequest(f"'{source}' is not in the document index", param="source")
    finally:
        index.close()
    click.echo(f"removed {source}")
