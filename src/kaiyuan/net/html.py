"""An HTML document -> its title and main text (trafilatura).

Main content as Markdown, tables kept, navigation and boilerplate dropped; trafilatura's
baseline extractor when the page is too small for the main one. Used by the agent's ``fetch``
tool (web pages) and by the document index (local HTML files).
"""

from __future__ import annotations

import re


def html_text(body: bytes, url: str, *, charset: str | None = None) -> tuple[str | None, str]:
    """Title and main text of an HTML document; ``charset`` from the Content-Type header, if
    any, else the document's own ``<meta charset>``, else UTF-8."""
    return _extract(decode(body, charset or _meta_charset(body)), url)


def header_charset(params: str) -> str | None:
    """The charset in a Content-Type header's parameters (``; charset=gbk``), if any."""
    found = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", params, re.IGNORECASE)
    return found.group(1) if found else None


def decode(body: bytes, charset: str | None) -> str:
    """By the declared charset (GBK, Latin-1, ...), else UTF-8; bad bytes become U+FFFD."""
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        return body.decode("utf-8", errors="replace")


def _meta_charset(body: bytes) -> str | None:
    found = re.search(rb"<meta[^>]+charset\s*=\s*[\"']?([\w.:-]+)", body[:4096], re.IGNORECASE)
    return found.group(1).decode("ascii") if found else None


def _extract(html: str, url: str) -> tuple[str | None, str]:
    import trafilatura

    text = trafilatura.extract(
        html, url=url, output_format="markdown", include_tables=True, include_links=False,
        include_comments=False, favor_recall=True,
    )  # fmt: skip
    if not text:
        _, text, _ = trafilatura.baseline(html)
    meta = trafilatura.extract_metadata(html)
    return (meta.title if meta is not None else None), (text or "").strip()
