"""The ``search`` tool: providers behind one interface, results cached in SQLite.

- ``duckduckgo``: DuckDuckGo through ``ddgs`` (no key); rate limits are retried with backoff.
- ``searxng``: a SearXNG instance's JSON API (``searxng_url``).
- ``docs``: the local document index (``kaiyuan docs add``).

A result is ``{"title", "url", "snippet"}``; a document hit's ``url`` is the file's
``file://`` URI with ``#page=N`` (PDF) or ``#chunk=N``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from kaiyuan.config import Settings
from kaiyuan.tools.base import Tool, ToolFailed

RETRIES = 3  # rate-limited DuckDuckGo queries: waits of 1, 2, 4 s
Provider = Callable[[str, int, Settings], list[dict[str, str]]]


def duckduckgo(query: str, limit: int, settings: Settings) -> list[dict[str, str]]:
    from ddgs import DDGS
    from ddgs.exceptions import DDGSException, RatelimitException

    for attempt in range(RETRIES + 1):
        try:
            found = DDGS(timeout=max(1, math.ceil(settings.fetch_timeout))).text(
                query, max_results=limit
            )
            break
        except RatelimitException:
            if attempt == RETRIES:
                raise ToolFailed("DuckDuckGo is rate-limiting this machine; try later") from None
            time.sleep(2**attempt)
        except DDGSException as exc:
            reason = str(exc).splitlines()[0][:200]
            raise ToolFailed(f"web search failed (is this machine offline?): {reason}") from None
    return [
        {"title": r.get("title", ""), "url": r.get("href", ""), "snippet": r.get("body", "")}
        for r in found[:limit]
    ]


def searxng(query: str, limit: int, settings: Settings) -> list[dict[str, str]]:
    if not settings.searxng_url:
        raise ToolFailed("search_provider is searxng but searxng_url is not set")
    try:
        response = httpx.get(
            settings.searxng_url.rstrip("/") + "/search",
            params={"q": query, "format": "json"},
            timeout=settings.fetch_timeout,
        )
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ToolFailed(f"SearXNG at {settings.searxng_url} failed: {exc}") from None
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise ToolFailed(f"SearXNG at {settings.searxng_url} did not answer with results")
    return [
        {"title": r.get("title", ""), "url": r.get("url", ""), "snippet": r.get("content", "")}
        for r in results[:limit]
        if isinstance(r, dict)
    ]


def docs(query: str, limit: int, settings: Settings) -> list[dict[str, str]]:
    from kaiyuan.documents.index import DocIndex

    with DocIndex.open(settings.home) as index:
        hits = index.search(query, limit)
    return [{"title": hit.title, "url": hit.url, "snippet": hit.text} for hit in hits]


PROVIDERS: dict[str, Provider] = {"duckduckgo": duckduckgo, "searxng": searxng, "docs": docs}


class Cache:
    def __init__(self, path: Path, ttl: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=10)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS hits (key TEXT PRIMARY KEY, at REAL, value TEXT)"
        )
        self.ttl = ttl

    def get(self, key: str) -> list[dict[str, str]] | None:
        row = self.db.execute("SELECT at, value FROM hits WHERE key = ?", (key,)).fetchone()
        if row is None or time.time() - row[0] > self.ttl:
            return None
        value: list[dict[str, str]] = json.loads(row[1])
        return value

    def put(self, key: str, value: list[dict[str, str]]) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO hits VALUES (?, ?, ?)",
                (key, time.time(), json.dumps(value)),
            )

    def close(self) -> None:
        self.db.close()


def run(arguments: dict[str, Any], settings: Settings) -> dict[str, Any]:
    query = arguments["query"].strip()
    limit = int(arguments.get("max_results") or 5)
    name = arguments.get("provider") or settings.search_provider
    key = json.dumps([name, query, limit, settings.searxng_url if name == "searxng" else None])
    cache = Cache(settings.home / "cache" / "search.sqlite", settings.search_cache_seconds)
    try:
        results, cached = cache.get(key), True
        if results is None:
            results, cached = PROVIDERS[name](query, limit, settings), False
            if name != "docs":  # the local index changes as documents are added
                cache.put(key, results)
    finally:
        cache.close()
    return {"provider": name, "query": query, "cached": cached, "results": results}


TOOL = Tool(
    name="search",
    description=(
        "Search the web (or the user's documents with provider 'docs') and return titles, "
        "URLs and snippets. Read a page with the fetch tool for details."
    ),
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 500},
            "max_results": {"type": "integer", "minimum": 1, "maximum": 20},
            "provider": {"enum": sorted(PROVIDERS)},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    run=run,
)
