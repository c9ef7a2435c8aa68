"""The agent's tools on real inputs, offline: ``fetch`` and ``search`` (SearXNG) against local
HTTP servers on 127.0.0.1, the document index over a real mixed folder (Markdown, text, HTML,
DOCX, a hand-written two-page PDF, Chinese) with the bundled MiniLM, the ``files`` tool, and
the ``kaiyuan tool`` / ``kaiyuan docs`` commands as subprocesses."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kaiyuan.config import Settings, load_settings
from kaiyuan.documents import ingest
from kaiyuan.documents.index import RRF_K, DocIndex, Hit
from kaiyuan.errors import InvalidRequest
from kaiyuan.net.fetch import FetchRefused
from kaiyuan.tools import base
from kaiyuan.tools.base import ToolFailed
from tests.harness import KAIYUAN, LocalWeb, Route

pytestmark = pytest.mark.slow


@pytest.fixture
def web() -> Iterator[LocalWeb]:
    server = LocalWeb()
    yield server
    server.close()


# --- documents -----------------------------------------------------------------------------------
ARTICLE_SENTENCE = "Keepers trimmed the wicks of the great lamp every four hours through the night"
ARTICLE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>The Lighthouse Keepers of Skerryvore</title>
<script>var secret = "TRACKING-PIXEL-SECRET";</script>
<style>body {{ color: #333; }}</style></head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/about">About our newsroom</a></li>
<li><a href="/shop">Shop the merchandise</a></li></ul></nav>
<main><article>
<h1>The Lighthouse Keepers of Skerryvore</h1>
<p>Skerryvore lighthouse stands on a reef eleven miles south-west of the island of Tiree, and for
more than a century it was kept by three men at a time who lived in its narrow granite tower.</p>
<p>{ARTICLE_SENTENCE}, and a log book recorded the weather, the passing ships and every repair
that the keepers made to the clockwork that turned the lens.</p>
<p>Relief boats came every fortnight when the sea allowed it, but winter storms could keep them
away for weeks, so the keepers stored flour, oatmeal, salted fish and paraffin in the lower
rooms of the tower and rationed them carefully.</p>
<p>The light was automated in 1994, and today the old shore station at Hynish is a museum that
tells the story of the keepers, their families and the engineers who built the tower.</p>
</article></main>
<footer><p>Copyright 2024 Example Media Group. All rights reserved. Cookie settings.</p></footer>
<script>console.log("INLINE-SCRIPT-MARKER");</script>
</body></html>
"""

MARKDOWN = """# Garden Notes

Heirloom tomatoes need staking before the first truss of flowers opens; tie the stems loosely
with soft twine so that they can thicken without being cut.

Water the beds early in the morning and mulch them with straw to keep the soil cool.
"""

RECIPE = """Sourdough bread

Feed the starter the night before baking. Mix flour, water and the bubbly starter, rest the dough
for an hour, then fold it every thirty minutes. Bake in a covered cast-iron pot at 250 degrees.
"""

CHINESE = (
    "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，绵延数千公里。\n\n"
    "修建长城的目的是抵御北方游牧民族的侵扰。今天，长城是世界文化遗产，每年吸引大量游客。\n"
)

PDF_PAGE1 = ["Laboratory Safety Manual", "The centrifuge must be balanced before each run."]
PDF_PAGE2 = ["Calibrate the spectrometer every ninety days using the argon lamp.",
             "Record each calibration in the instrument log."]  # fmt: skip
PDF_TITLE = "Lab Manual"

LONG_SENTENCES = [
    f"The river Velora passes mill number {i} where millers ground barley and rye for the towns "
    f"along the valley, and record {i} of the archive describes its wheel."
    for i in range(40)
]
LONG_SENTENCES[36] = "The last mill, called Quillbrook, was swept away by the great flood of 1887."
LONG_TEXT = " ".join(LONG_SENTENCES)


def pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A minimal valid PDF: one Helvetica text stream per page, a correct xref table."""
    n = len(pages)
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        ("<< /Type /Pages /Kids [" + " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
         + f"] /Count {n} >>").encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]  # fmt: skip
    for i, lines in enumerate(pages):
        shown = " T* ".join(f"({line}) Tj" for line in lines)
        stream = f"BT /F1 12 Tf 16 TL 72 720 Td {shown} ET".encode("latin-1")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    info = None
    if title is not None:
        objects.append(f"<< /Title ({title}) >>".encode("latin-1"))
        info = len(objects)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    trailer = b"/Size %d /Root 1 0 R" % (len(objects) + 1)
    if info is not None:
        trailer += b" /Info %d 0 R" % info
    out += b"trailer\n<< %s >>\nstartxref\n%d\n%%%%EOF\n" % (trailer, xref)
    return bytes(out)


def docx_file(path: Path) -> Path:
    from docx import Document

    document = Document()
    document.core_properties.title = "Budget Review"
    document.add_heading("Budget Review 2024", level=1)
    document.add_paragraph("The board approved the maintenance budget for the wind farm.")
    document.add_paragraph("Spending on spare parts rose because of gearbox failures.")
    table = document.add_table(rows=3, cols=2)
    for row, (name, count) in zip(
        table.rows, [("Item", "Quantity"), ("Zephyr turbine", "42 units"), ("Nacelle", "7")],
        strict=True,
    ):  # fmt: skip
        row.cells[0].text, row.cells[1].text = name, count
    document.save(str(path))
    return path


def build_corpus(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "md": folder / "garden.md",
        "txt": folder / "recipe.txt",
        "html": folder / "lighthouse.html",
        "docx": folder / "budget.docx",
        "pdf": folder / "manual.pdf",
        "zh": folder / "长城.txt",
        "long": folder / "velora.txt",
    }
    files["md"].write_text(MARKDOWN, encoding="utf-8")
    files["txt"].write_text(RECIPE, encoding="utf-8")
    files["html"].write_text(ARTICLE, encoding="utf-8")
    docx_file(files["docx"])
    files["pdf"].write_bytes(pdf([PDF_PAGE1, PDF_PAGE2], title=PDF_TITLE))
    files["zh"].write_text(CHINESE, encoding="utf-8")
    files["long"].write_text(LONG_TEXT, encoding="utf-8")
    (folder / "ignored.exe").write_bytes(b"MZ\x90\x00 not a document")
    return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def docs_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("docs-home")


@pytest.fixture(scope="module")
def indexed(corpus: dict[str, Path], docs_home: Path) -> Iterator[tuple[DocIndex, list[Any]]]:
    index = DocIndex.open(docs_home)
    added = index.add([corpus["md"].parent])
    yield index, added
    index.close()


@pytest.fixture
def index(indexed: tuple[DocIndex, list[Any]]) -> DocIndex:
    return indexed[0]


# A fused score above this needs both rankings (BM25 and vectors) to have found the chunk.
BOTH = 1 / (RRF_K + 1)


def src(path: Path) -> str:
    return str(path.resolve())


def top(hits: list[Hit]) -> Hit:
    assert hits, "no hits"
    return hits[0]


def private(home: Path, **overrides: Any) -> Settings:
    return load_settings(home=home, fetch_allow_private=True, **overrides)


# --- 1. fetch -------------------------------------------------------------------------------------
def test_fetch_html_article_gives_title_and_main_text(web: LocalWeb, tmp_path: Path) -> None:
    web.routes["/article"] = (200, {"Content-Type": "text/html; charset=utf-8"}, ARTICLE.encode())
    got = base.call("fetch", {"url": f"{web.url}/article"}, private(tmp_path))
    assert got["status"] == 200
    assert got["content_type"] == "text/html"
    assert got["url"] == f"{web.url}/article"
    assert got["title"] == "The Lighthouse Keepers of Skerryvore"
    assert ARTICLE_SENTENCE in got["text"]
    assert "automated in 1994" in got["text"]
    for noise in ("TRACKING-PIXEL-SECRET", "INLINE-SCRIPT-MARKER", "color: #333"):
        assert noise not in got["text"]
    for boilerplate in ("About our newsroom", "Shop the merchandise", "All rights reserved"):
        assert boilerplate not in got["text"]
    assert got["truncated"] is False
    assert web.requests == ["/article"]


def test_fetch_plain_text_is_returned_as_is(web: LocalWeb, tmp_path: Path) -> None:
    body = "plain notes: 开源 line one\nline two\n"
    web.routes["/notes.txt"] = (200, {"Content-Type": "text/plain; charset=utf-8"}, body.encode())
    got = base.call("fetch", {"url": f"{web.url}/notes.txt"}, private(tmp_path))
    assert got["content_type"] == "text/plain"
    assert got["text"] == body
    assert got["title"] is None
    assert got["truncated"] is False


def test_fetch_pdf_is_read_as_text(web: LocalWeb, tmp_path: Path) -> None:
    web.routes["/m.pdf"] = (200, {"Content-Type": "application/pdf"}, pdf([PDF_PAGE1, PDF_PAGE2]))
    got = base.call("fetch", {"url": f"{web.url}/m.pdf"}, private(tmp_path))
    assert "centrifuge must be balanced" in got["text"]
    assert "spectrometer every ninety days" in got["text"]
    assert got["text"].index("centrifuge") < got["text"].index("spectrometer")


def test_fetch_max_chars_truncates(web: LocalWeb, tmp_path: Path) -> None:
    body = ("0123456789" * 100).encode()
    web.routes["/long"] = (200, {"Content-Type": "text/plain"}, body)
    settings = private(tmp_path)
    cut = base.call("fetch", {"url": f"{web.url}/long", "max_chars": 150}, settings)
    assert cut["truncated"] is True
    assert cut["text"] == body.decode()[:150]
    whole = base.call("fetch", {"url": f"{web.url}/long", "max_chars": 1000}, settings)
    assert whole["truncated"] is False and len(whole["text"]) == 1000


def test_fetch_404_is_a_tool_failure(web: LocalWeb, tmp_path: Path) -> None:
    with pytest.raises(ToolFailed, match="404"):
        base.call("fetch", {"url": f"{web.url}/missing"}, private(tmp_path))
    assert web.requests == ["/missing"]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-length"])
def test_fetch_refuses_bodies_over_fetch_max_bytes(
    web: LocalWeb, tmp_path: Path, declared: bool
) -> None:
    headers = {"Content-Type": "text/plain"} | ({} if declared else {"no-length": "1"})
    web.routes["/big"] = (200, headers, b"x" * 20_000)
    web.routes["/small"] = (200, {"Content-Type": "text/plain"}, b"y" * 2000)
    settings = private(tmp_path, fetch_max_bytes=4096)
    with pytest.raises(FetchRefused, match="4096"):
        base.call("fetch", {"url": f"{web.url}/big"}, settings)
    assert base.call("fetch", {"url": f"{web.url}/small"}, settings)["text"] == "y" * 2000


def test_fetch_follows_redirects(web: LocalWeb, tmp_path: Path) -> None:
    web.routes["/old"] = (302, {"Location": "/new"}, b"")
    web.routes["/new"] = (200, {"Content-Type": "text/plain"}, b"moved here")
    got = base.call("fetch", {"url": f"{web.url}/old"}, private(tmp_path))
    assert got["text"] == "moved here"
    assert got["url"] == f"{web.url}/new"
    assert web.requests == ["/old", "/new"]


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        ("text/plain; charset=gbk", "长城是中国古代的军事防御工程。".encode("gbk"), "军事防御工程"),
        ("text/plain; charset=iso-8859-1", "café crème".encode("latin-1"), "café crème"),
    ],
    ids=["gbk", "latin-1"],
)
def test_fetch_honours_the_declared_charset(
    web: LocalWeb, tmp_path: Path, kind: str, body: bytes, expected: str
) -> None:
    web.routes["/page"] = (200, {"Content-Type": kind}, body)
    got = base.call("fetch", {"url": f"{web.url}/page"}, private(tmp_path))
    assert expected in got["text"]
    assert "\ufffd" not in got["text"]


def test_fetch_unreadable_content_type_is_a_tool_failure(web: LocalWeb, tmp_path: Path) -> None:
    web.routes["/img"] = (200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n0000")
    with pytest.raises(ToolFailed, match="image/png"):
        base.call("fetch", {"url": f"{web.url}/img"}, private(tmp_path))


def test_fetch_by_default_refuses_loopback_without_connecting(
    web: LocalWeb, tmp_path: Path
) -> None:
    web.routes["/secret"] = (200, {"Content-Type": "text/plain"}, b"internal secret")
    settings = load_settings(home=tmp_path)
    assert settings.fetch_allow_private is False
    with pytest.raises(FetchRefused, match="refused"):
        base.call("fetch", {"url": f"{web.url}/secret"}, settings)
    assert web.requests == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "http://169.254.169.254/", "http://localhost:1/"]
)
def test_fetch_by_default_refuses_local_and_metadata_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(FetchRefused):
        base.call("fetch", {"url": url}, load_settings(home=tmp_path))


@pytest.mark.parametrize(
    "arguments",
    [{}, {"url": 5}, {"url": "http://x/", "max_chars": 10}, {"url": "http://x/", "extra": 1}, []],
)
def test_fetch_arguments_are_checked_against_the_schema(arguments: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest):
        base.call("fetch", arguments, private(tmp_path))


def test_unknown_tool_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="unknown tool 'nope'"):
        base.call("nope", {}, load_settings(home=tmp_path))
    assert {base.builtin(n).name for n in base.BUILTIN} == {"code", "fetch", "search", "files"}
    spec = base.builtin("search").spec()
    assert spec["type"] == "function" and spec["function"]["name"] == "search"


# --- 2. search ------------------------------------------------------------------------------------
SEARX_RESULTS = [
    {"title": "Kaiyuan docs", "url": "https://example.org/kaiyuan", "content": "Open weights."},
    {"title": "Second", "url": "https://example.org/2", "content": "second snippet"},
    {"title": "Third", "url": "https://example.org/3", "content": "third snippet"},
]


@pytest.fixture
def searx(web: LocalWeb) -> LocalWeb:
    def answer(query: dict[str, list[str]]) -> Route:
        assert query.get("format") == ["json"]
        q = query["q"][0]
        results = [dict(r, content=f"{r['content']} ({q})") for r in SEARX_RESULTS]
        return 200, {"Content-Type": "application/json"}, json.dumps({"results": results}).encode()

    web.handlers["/search"] = answer
    return web


def searx_settings(home: Path, url: str, **more: Any) -> Settings:
    return load_settings(home=home, search_provider="searxng", searxng_url=url, **more)


def test_searxng_results_are_mapped_and_limited(searx: LocalWeb, tmp_path: Path) -> None:
    settings = searx_settings(tmp_path, searx.url)
    got = base.call("search", {"query": "  open models ", "max_results": 2}, settings)
    assert got["provider"] == "searxng"
    assert got["query"] == "open models"
    assert got["cached"] is False
    assert got["results"] == [
        {"title": "Kaiyuan docs", "url": "https://example.org/kaiyuan",
         "snippet": "Open weights. (open models)"},
        {"title": "Second", "url": "https://example.org/2",
         "snippet": "second snippet (open models)"},
    ]  # fmt: skip
    assert len(searx.requests) == 1
    sent = urllib.parse.urlsplit(searx.requests[0])
    assert sent.path == "/search"
    assert urllib.parse.parse_qs(sent.query) == {"q": ["open models"], "format": ["json"]}


def test_searxng_second_identical_call_comes_from_the_cache(
    searx: LocalWeb, tmp_path: Path
) -> None:
    settings = searx_settings(tmp_path, searx.url)
    first = base.call("search", {"query": "cache me", "max_results": 3}, settings)
    second = base.call("search", {"query": "cache me", "max_results": 3}, settings)
    assert first["cached"] is False and second["cached"] is True
    assert second["results"] == first["results"] and len(first["results"]) == 3
    assert len(searx.requests) == 1
    assert (tmp_path / "cache" / "search.sqlite").is_file()
    # A different query or limit is a different key.
    assert base.call("search", {"query": "cache me", "max_results": 1}, settings)["cached"] is False
    assert base.call("search", {"query": "other", "max_results": 3}, settings)["cached"] is False
    assert len(searx.requests) == 3


def test_search_cache_expires(searx: LocalWeb, tmp_path: Path) -> None:
    settings = searx_settings(tmp_path, searx.url, search_cache_seconds=0)
    base.call("search", {"query": "fresh"}, settings)
    time.sleep(0.01)
    assert base.call("search", {"query": "fresh"}, settings)["cached"] is False
    assert len(searx.requests) == 2


def test_provider_argument_overrides_the_setting(searx: LocalWeb, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, searxng_url=searx.url)
    assert settings.search_provider == "duckduckgo"
    got = base.call("search", {"query": "q", "provider": "searxng"}, settings)
    assert got["provider"] == "searxng" and len(got["results"]) == 3


def test_searxng_server_error_is_a_tool_failure(web: LocalWeb, tmp_path: Path) -> None:
    web.routes["/search"] = (500, {"Content-Type": "text/plain"}, b"boom")
    settings = searx_settings(tmp_path, web.url)
    with pytest.raises(ToolFailed, match="SearXNG"):
        base.call("search", {"query": "anything"}, settings)
    assert len(web.requests) == 1
    # A failure is not cached: the next call asks again.
    with pytest.raises(ToolFailed):
        base.call("search", {"query": "anything"}, settings)
    assert len(web.requests) == 2


def test_searxng_non_json_is_a_tool_failure(web: LocalWeb, tmp_path: Path) -> None:
    web.routes["/search"] = (200, {"Content-Type": "text/html"}, b"<html>not json</html>")
    with pytest.raises(ToolFailed):
        base.call("search", {"query": "anything"}, searx_settings(tmp_path, web.url))


@pytest.mark.parametrize("body", [b"[]", b'{"results": null}'], ids=["array", "null-results"])
def test_searxng_malformed_json_is_a_tool_failure(
    web: LocalWeb, tmp_path: Path, body: bytes
) -> None:
    web.routes["/search"] = (200, {"Content-Type": "application/json"}, body)
    with pytest.raises(ToolFailed):
        base.call("search", {"query": "anything"}, searx_settings(tmp_path, web.url))


def test_searxng_without_url_is_a_tool_failure(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, search_provider="searxng")
    with pytest.raises(ToolFailed, match="searxng_url"):
        base.call("search", {"query": "anything"}, settings)


def test_duckduckgo_offline_fails_quickly_with_one_line(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, search_provider="duckduckgo", fetch_timeout=2)
    start = time.monotonic()
    with pytest.raises(ToolFailed) as failed:
        base.call("search", {"query": "kaiyuan open weights"}, settings)
    assert time.monotonic() - start < 20
    message = failed.value.message
    assert message and "\n" not in message and "Traceback" not in message
    assert len(message) < 400
    assert "search" in message.lower() or "duckduckgo" in message.lower()


@pytest.mark.parametrize(
    "arguments",
    [{}, {"query": ""}, {"query": "x", "max_results": 0}, {"query": "x", "provider": "bing"}],
)
def test_search_arguments_are_checked(arguments: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest):
        base.call("search", arguments, load_settings(home=tmp_path))


# --- 3. the document index ------------------------------------------------------------------------
def test_hand_written_pdf_is_valid_and_has_two_pages() -> None:
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf([PDF_PAGE1, PDF_PAGE2], title=PDF_TITLE)), strict=True)
    assert len(reader.pages) == 2
    assert reader.metadata is not None and reader.metadata.title == PDF_TITLE
    assert "centrifuge" in (reader.pages[0].extract_text() or "")
    assert "spectrometer" in (reader.pages[1].extract_text() or "")


def test_ingest_reads_every_format(corpus: dict[str, Path]) -> None:
    title, parts = ingest.read(corpus["md"])
    assert title == "Garden Notes" and "Heirloom tomatoes" in parts[0].text
    title, parts = ingest.read(corpus["txt"])
    assert title is None and parts[0].text == RECIPE
    title, parts = ingest.read(corpus["html"])
    assert title == "The Lighthouse Keepers of Skerryvore"
    assert ARTICLE_SENTENCE in parts[0].text and "INLINE-SCRIPT-MARKER" not in parts[0].text
    title, parts = ingest.read(corpus["docx"])
    assert title == "Budget Review"
    assert "gearbox failures" in parts[0].text and "Zephyr turbine | 42 units" in parts[0].text
    title, parts = ingest.read(corpus["pdf"])
    assert title == PDF_TITLE
    assert [p.page for p in parts] == [1, 2]
    assert "centrifuge" in parts[0].text and "centrifuge" not in parts[1].text
    assert "argon lamp" in parts[1].text
    title, parts = ingest.read(corpus["zh"])
    assert parts[0].text == CHINESE


def test_add_reports_each_supported_file_once(
    indexed: tuple[DocIndex, list[Any]], corpus: dict[str, Path]
) -> None:
    _, added = indexed
    assert sorted(a.source for a in added) == sorted(src(p) for p in corpus.values())
    assert {a.status for a in added} == {"added"}
    assert all(a.chunks >= 1 for a in added)
    assert not any(a.source.endswith(".exe") for a in added)


def test_documents_lists_sources_titles_and_chunks(
    index: DocIndex, corpus: dict[str, Path]
) -> None:
    docs = {d["source"]: d for d in index.documents()}
    assert set(docs) == {src(p) for p in corpus.values()}
    assert docs[src(corpus["md"])]["title"] == "Garden Notes"
    assert docs[src(corpus["html"])]["title"] == "The Lighthouse Keepers of Skerryvore"
    assert docs[src(corpus["docx"])]["title"] == "Budget Review"
    assert docs[src(corpus["pdf"])]["title"] == PDF_TITLE
    assert docs[src(corpus["txt"])]["title"] == "recipe.txt"  # no title: the file name
    assert docs[src(corpus["pdf"])]["chunks"] == 2  # one per page, never across pages
    assert docs[src(corpus["long"])]["chunks"] >= 5
    for doc in docs.values():
        assert len(doc["sha256"]) == 64 and doc["added"] > 0


def test_re_adding_unchanged_files_is_a_no_op(index: DocIndex, corpus: dict[str, Path]) -> None:
    before = index.documents()
    again = index.add([corpus["md"].parent])
    assert {a.status for a in again} == {"unchanged"}
    assert len(again) == len(corpus)
    assert index.documents() == before


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("heirloom tomatoes staking twine", "md"),
        ("sourdough starter cast-iron pot", "txt"),
        ("lighthouse keepers lamp wicks", "html"),
        ("maintenance budget gearbox spare parts", "docx"),
        ("centrifuge balanced", "pdf"),
        ("barley mills on the river Velora", "long"),
    ],
)
def test_search_finds_the_right_source(
    index: DocIndex, corpus: dict[str, Path], query: str, key: str
) -> None:
    hits = index.search(query, 3)
    assert top(hits).source == src(corpus[key])
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_in_chinese(index: DocIndex, corpus: dict[str, Path]) -> None:
    hit = top(index.search("军事防御工程", 3))
    assert hit.source == src(corpus["zh"])
    assert "军事防御工程" in hit.text
    assert hit.url.startswith("file:///") and hit.url.endswith("#chunk=0")
    assert hit.score > BOTH  # BM25 (character bigrams) matched it, not only the vectors
    zh_chunks = {
        row[0]
        for row in index.db.execute(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document WHERE d.source = ?",
            (src(corpus["zh"]),),
        )
    }
    assert index._bm25("军事防御工程") == [min(zh_chunks)]
    # no spaces in Chinese: two-character words and whole questions match through bigrams
    assert index._bm25("长城")[:1] == [min(zh_chunks)]
    assert index._bm25("长城是什么时候修建的")[:1] == [min(zh_chunks)]


def test_search_pdf_page_two(index: DocIndex, corpus: dict[str, Path]) -> None:
    hit = top(index.search("calibrate the spectrometer every ninety days", 3))
    assert hit.source == src(corpus["pdf"])
    assert hit.page == 2
    assert hit.url == corpus["pdf"].resolve().as_uri() + "#page=2"
    assert "argon lamp" in hit.text and "centrifuge" not in hit.text
    assert hit.score > BOTH
    first = top(index.search("centrifuge balanced before each run", 3))
    assert first.source == src(corpus["pdf"]) and first.page == 1
    assert first.url.endswith("#page=1")
    assert first.position == 0 and hit.position == 1


def test_search_docx_table_text(index: DocIndex, corpus: dict[str, Path]) -> None:
    hit = top(index.search("Zephyr turbine", 3))
    assert hit.source == src(corpus["docx"])
    assert "Zephyr turbine | 42 units" in hit.text
    assert hit.score > BOTH
    assert hit.title == "Budget Review" and hit.page is None


def document_text(path: Path) -> str:
    """The text a document's chunk offsets refer to (pages joined by two characters)."""
    _, parts = ingest.read(path)
    return "\n\n".join(p.text for p in parts)


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("river Velora mill number 33 record 33", "long"),
        ("spectrometer argon lamp", "pdf"),
        ("Zephyr turbine", "docx"),
        ("修建长城的目的", "zh"),
    ],
)
def test_hits_carry_consistent_positions(
    index: DocIndex, corpus: dict[str, Path], query: str, key: str
) -> None:
    hits = index.search(query, 5)
    assert top(hits).source == src(corpus[key])
    for hit in hits:
        text = document_text(Path(hit.source))
        assert 0 <= hit.start < hit.end <= len(text)
        assert text[hit.start : hit.end].strip() == hit.text
        assert hit.position >= 0
        as_dict = hit.to_dict()
        assert as_dict["url"] == hit.url and as_dict["text"] == hit.text
        assert set(as_dict) == {"source", "title", "url", "position", "page", "start", "end",
                                "score", "text"}  # fmt: skip


def test_long_document_is_chunked_in_order(index: DocIndex, corpus: dict[str, Path]) -> None:
    rows = index.db.execute(
        "SELECT c.position, c.start, c.end, c.text FROM chunks c JOIN documents d "
        "ON d.id = c.document WHERE d.source = ? ORDER BY c.position",
        (src(corpus["long"]),),
    ).fetchall()
    assert len(rows) >= 5
    assert [r[0] for r in rows] == list(range(len(rows)))
    assert all(a[1] < b[1] for a, b in itertools.pairwise(rows))
    assert rows[0][1] == 0 and rows[-1][2] == len(LONG_TEXT)
    for _, start, end, text in rows:
        assert text == LONG_TEXT[start:end].strip()
        assert end - start <= ingest.CHUNK_CHARS
    hit = top(index.search("Quillbrook swept away by the flood", 3))
    assert hit.source == src(corpus["long"]) and hit.position >= 4
    assert "Quillbrook" in hit.text


def test_chunk_unit() -> None:
    text = LONG_TEXT
    chunks = ingest.chunk([ingest.Part(text)])
    assert len(chunks) > 3
    for i, piece in enumerate(chunks):
        assert piece.position == i and piece.page is None
        assert piece.text == text[piece.start : piece.end].strip()
        assert len(piece.text) <= ingest.CHUNK_CHARS
    for a, b in itertools.pairwise(chunks):
        assert a.start < b.start < a.end <= b.end  # increasing, overlapping, no gaps
        assert text[a.end - 1] == " " or text[a.end - 2 : a.end] == ". "  # cut at a break
    assert chunks[0].start == 0 and chunks[-1].end == len(text)

    # No break anywhere: hard cuts of CHUNK_CHARS with OVERLAP.
    solid = ingest.chunk([ingest.Part("x" * 2000)])
    assert [(c.start, c.end) for c in solid] == [(0, 800), (680, 1480), (1360, 2000)]

    # Pages are never crossed; offsets continue across them (two separator characters).
    paged = ingest.chunk([ingest.Part("page one text", 1), ingest.Part("", 2),
                          ingest.Part("page three", 3)])  # fmt: skip
    assert [(c.text, c.page, c.position) for c in paged] == [
        ("page one text", 1, 0), ("page three", 3, 1)
    ]  # fmt: skip
    joined = "\n\n".join(["page one text", "", "page three"])
    assert [joined[c.start : c.end] for c in paged] == ["page one text", "page three"]

    assert ingest.chunk([]) == [] and ingest.chunk([ingest.Part("  \n\n ")]) == []
    short = ingest.chunk([ingest.Part("  short text  ")])
    assert len(short) == 1 and short[0].text == "short text"


def test_chinese_text_is_cut_at_chinese_punctuation() -> None:
    text = "这是一个用于测试分块的中文句子。" * 80
    chunks = ingest.chunk([ingest.Part(text)])
    assert len(chunks) > 1
    assert all(c.text.endswith("。") for c in chunks)


def test_empty_query_is_invalid(index: DocIndex) -> None:
    with pytest.raises(InvalidRequest):
        index.search("   ")


def test_short_query_still_searches_by_vector(index: DocIndex) -> None:
    hits = index.search("ok", 2)  # too short for trigrams: vectors alone
    assert len(hits) == 2


def test_unsupported_and_missing_files_are_invalid(tmp_path: Path) -> None:
    exe = tmp_path / "tool.exe"
    exe.write_bytes(b"MZ")
    index = DocIndex.open(tmp_path / "home")
    try:
        with pytest.raises(InvalidRequest, match=r"tool\.exe"):
            index.add([exe])
        with pytest.raises(InvalidRequest, match="does not exist"):
            index.add([tmp_path / "nowhere.md"])
        broken = tmp_path / "broken.pdf"
        broken.write_bytes(b"%PDF-1.4 this is not really a pdf")
        with pytest.raises(InvalidRequest):
            index.add([broken])
        broken_docx = tmp_path / "broken.docx"
        broken_docx.write_bytes(b"PK not a zip")
        with pytest.raises(InvalidRequest):
            index.add([broken_docx])
        assert index.documents() == []
    finally:
        index.close()


def test_update_and_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    note = folder / "note.md"
    note.write_text("# Note\n\nThe quartz clock gains a minute each week.\n", encoding="utf-8")
    other = folder / "other.txt"
    other.write_text("Penguins huddle together to survive the Antarctic winter.\n")
    index = DocIndex.open(tmp_path / "home")
    try:
        assert [a.status for a in index.add([folder])] == ["added", "added"]
        assert [a.status for a in index.add([note])] == ["unchanged"]
        note.write_text("# Note v2\n\nThe pendulum clock loses a minute each day.\n")
        (updated,) = index.add([note])
        assert updated.status == "updated" and updated.source == src(note)
        docs = {d["source"]: d for d in index.documents()}
        assert len(docs) == 2 and docs[src(note)]["title"] == "Note v2"
        hits = index.search("pendulum clock", 5)
        assert top(hits).source == src(note)
        assert all("quartz" not in h.text for h in hits)  # the old chunks are gone
        assert index.db.execute("SELECT count(*) FROM chunks").fetchone()[0] == 2
        fts = index.db.execute(
            "SELECT count(*) FROM chunk_terms WHERE chunk_terms MATCH '\"quartz\"'"
        ).fetchone()[0]
        assert fts == 0

        monkeypatch.chdir(folder)
        assert index.remove("note.md") is True  # a relative path is resolved
        assert index.remove(src(note)) is False
        assert [d["source"] for d in index.documents()] == [src(other)]
        assert all(h.source == src(other) for h in index.search("pendulum clock", 5))
        assert index.remove(src(other)) is True
        assert index.documents() == [] and index.search("penguins") == []
    finally:
        index.close()


# --- 4. the files tool and the docs provider ------------------------------------------------------
@pytest.mark.parametrize(
    "query",
    ["lighthouse keepers lamp wicks", "军事防御工程"],
)
def test_files_tool_and_docs_provider_agree_with_the_index(
    index: DocIndex, docs_home: Path, query: str
) -> None:
    expected = index.search(query, 3)
    settings = load_settings(home=docs_home)
    files = base.call("files", {"query": query, "max_results": 3}, settings)
    assert files["query"] == query
    assert [r["source"] for r in files["results"]] == [h.source for h in expected]
    assert files["results"][0] == top(expected).to_dict()
    found = base.call("search", {"query": query, "provider": "docs", "max_results": 3}, settings)
    assert found["provider"] == "docs" and found["cached"] is False
    assert [r["url"] for r in found["results"]] == [h.url for h in expected]
    assert found["results"][0] == {
        "title": top(expected).title, "url": top(expected).url, "snippet": top(expected).text
    }  # fmt: skip
    # The local index is never answered from the cache.
    again = base.call("search", {"query": query, "provider": "docs", "max_results": 3}, settings)
    assert again["cached"] is False


def test_files_tool_defaults_to_five_results(docs_home: Path, indexed: Any) -> None:
    got = base.call("files", {"query": "the"}, load_settings(home=docs_home))
    assert len(got["results"]) == 5


def test_files_tool_on_an_empty_index(tmp_path: Path) -> None:
    got = base.call("files", {"query": "anything at all"}, load_settings(home=tmp_path))
    assert got == {"query": "anything at all", "results": []}


# --- 5. the CLI ---------------------------------------------------------------------------------
def kaiyuan(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAIYUAN_HOME": str(home)}
    return subprocess.run(
        [KAIYUAN, *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    for text in expected:
        assert text in lines[0]


def test_cli_tool_code_runs_in_the_sandbox(tmp_path: Path) -> None:
    result = kaiyuan(tmp_path, "tool", "code", '{"code": "print(6*7)"}')
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["stdout"] == "42\n" and got["exit_code"] == 0 and got["timed_out"] is False


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["tool", "code", '{"cod": 1}'], ["'code' is a required property"]),
        (["tool", "nope"], ["unknown tool 'nope'", "code, fetch, files, search"]),
        (["tool", "code", "not json"], ["not JSON"]),
        (["tool", "code", "[1, 2]"], ["JSON object"]),
        (["tool", "fetch", '{"url": "file:///etc/passwd"}'], ["http"]),
        (["docs", "rm", "/not/indexed"], ["/not/indexed", "not in the document index"]),
        (["docs", "add", "/no/such/folder"], ["does not exist"]),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], expected: list[str]) -> None:
    result = kaiyuan(tmp_path, *args)
    assert_one_error_line(result, *expected)
    assert result.stdout == ""


def test_cli_docs_add_list_search_remove(tmp_path: Path) -> None:
    home, folder = tmp_path / "home", tmp_path / "papers"
    folder.mkdir()
    (folder / "garden.md").write_text(MARKDOWN, encoding="utf-8")
    (folder / "长城.txt").write_text(CHINESE, encoding="utf-8")
    (folder / "skip.exe").write_bytes(b"MZ")

    added = kaiyuan(home, "docs", "add", str(folder))
    assert added.returncode == 0, added.stderr
    lines = added.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("added") for line in lines)
    assert any(line.endswith(str((folder / "长城.txt").resolve())) for line in lines)

    listed = kaiyuan(home, "docs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    documents = json.loads(listed.stdout)
    assert sorted(d["source"] for d in documents) == sorted(
        src(folder / name) for name in ("garden.md", "长城.txt")
    )
    assert {d["title"] for d in documents} == {"Garden Notes", "长城.txt"}

    found = kaiyuan(home, "tool", "files", '{"query": "长城 军事防御工程", "max_results": 1}')
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert len(results) == 1 and results[0]["source"] == src(folder / "长城.txt")
    assert "军事防御工程" in results[0]["text"]  # ensure_ascii=False keeps it readable
    assert "军事防御工程" in found.stdout

    removed = kaiyuan(home, "docs", "rm", "garden.md", cwd=folder)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "removed garden.md"
    again = kaiyuan(home, "docs", "rm", "garden.md", cwd=folder)
    assert_one_error_line(again, "not in the document index")

    text_list = kaiyuan(home, "docs", "list")
    assert text_list.returncode == 0
    assert "长城.txt" in text_list.stdout and "garden.md" not in text_list.stdout

    readded = kaiyuan(home, "docs", "add", str(folder / "长城.txt"))
    assert readded.returncode == 0 and readded.stdout.startswith("unchanged")
