"""HTML parser: page chrome dropped, main content kept, encodings sniffed, nesting survived."""

from __future__ import annotations

import codecs
import time
from pathlib import Path

import pytest

from doc_migration.sources.base import Block, ParseContext, ParsedDocument, QuarantineError
from doc_migration.sources.html import declared_charset, limit_depth, parse


def _html(data: str | bytes, path: str = "site/page.html") -> ParsedDocument:
    raw = data.encode() if isinstance(data, str) else data
    docs = parse(raw, ParseContext(rel_path=path, doc_type="web", source_name="s", fmt="html"))
    assert len(docs) == 1 and docs[0].path == path
    return docs[0]


def _block_with(doc: ParsedDocument, needle: str) -> Block:
    hits = [b for b in doc.blocks if needle in b.text]
    assert hits, f"{needle!r} not found in {[b.text for b in doc.blocks]}"
    return hits[0]


PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Widget Docs</title>
<script>var trackingSecret = "do-not-index";</script>
<style>.hidden { display: none }</style></head>
<body>
<header><a href="/">Site header link</a></header>
<nav><ul><li><a href="/a">Navigation entry</a></li></ul></nav>
<main>
  <h1>Widget Guide</h1>
  <p>Widgets turn <b>configuration</b> into running services with <code>widgets run</code>.<br>Second line.</p>
  <div>Loose text in a div <p>then a nested paragraph</p></div>
  <h2>Installation</h2>
  <pre><code class="language-bash">pip install widgets

widgets --version</code></pre>
  <ul><li>first item</li><li>second item<ul><li>nested item</li></ul></li></ul>
  <h3>Options</h3>
  <table><thead><tr><th>Option</th><th>Default</th></tr></thead>
    <tbody><tr><td>port</td><td>8080</td></tr></tbody></table>
  <dl><dt>Engine</dt><dd>The thing that runs widgets.</dd></dl>
  <noscript>Enable JavaScript</noscript>
  <template><p>template text</p></template>
  <form><label>Search the docs</label><input name="q"></form>
  <svg><text>svg label</text></svg>
  <aside>Sidebar advert</aside>
</main>
<footer>Copyright footer</footer>
<script>console.log("late script")</script>
</body></html>
"""


def test_main_content_with_heading_paths() -> None:
    doc = _html(PAGE)
    assert doc.title == "Widget Docs"
    assert doc.metadata == {"format": "html", "headings": 3, "title": "Widget Docs"}
    intro = _block_with(doc, "Widgets turn configuration into running services")
    assert intro.heading_path == ("Widget Guide",)
    assert intro.text.startswith("# Widget Guide\n\n")
    assert "`widgets run`" in intro.text and "\nSecond line." in intro.text
    assert _block_with(doc, "then a nested paragraph").heading_path == ("Widget Guide",)
    table = _block_with(doc, "| Option | Default |")
    assert table.kind == "table" and "| port | 8080 |" in table.text
    assert table.heading_path == ("Widget Guide", "Installation", "Options")
    lst = _block_with(doc, "first item")
    assert lst.text == "- first item\n- second item\n  - nested item"
    assert "Engine\n  The thing that runs widgets." in doc.text


def test_pre_is_a_whole_code_block() -> None:
    doc = _html(PAGE)
    code = _block_with(doc, "pip install widgets")
    assert code.kind == "code"
    assert code.text == "```bash\npip install widgets\n\nwidgets --version\n```"
    assert code.heading_path == ("Widget Guide", "Installation")


def test_chrome_scripts_and_styles_are_dropped() -> None:
    text = _html(PAGE).text
    for gone in ("trackingSecret", "do-not-index", "display: none", "late script", "Site header link",
                 "Navigation entry", "Copyright footer", "Enable JavaScript", "template text",
                 "Search the docs", "svg label", "Sidebar advert"):
        assert gone not in text, gone


def test_body_is_used_without_main_and_title_falls_back_to_h1() -> None:
    doc = _html("<html><body><nav>menu</nav><h1>Only Heading</h1><p>Body text.</p></body></html>")
    assert doc.title == "Only Heading"
    assert "Body text." in doc.text and "menu" not in doc.text


def test_utf16_sniff_beats_a_wrong_meta_charset() -> None:
    page = '<html><head><meta charset="utf-8"><title>Café</title></head><body><p>Grüße aus Köln — ünïcödé</p></body></html>'
    for data in (page.encode("utf-16-le"), page.encode("utf-16-be"), codecs.BOM_UTF16_LE + page.encode("utf-16-le")):
        doc = _html(data)
        assert doc.title == "Café"
        assert "Grüße aus Köln — ünïcödé" in doc.text


def test_declared_charset_then_utf8_then_cp1252() -> None:
    latin = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"></head>' \
            '<body><p>Caf\u00e9 \u201cquoted\u201d</p></body></html>'
    assert declared_charset(latin.encode("cp1252")) == "cp1252"
    assert "Café “quoted”" in _html(latin.encode("cp1252")).text
    undeclared = "<p>Na\u00efve caf\u00e9 \u2013 dash</p>".encode("cp1252")  # not valid UTF-8, no meta
    assert "Naïve café – dash" in _html(undeclared).text
    utf8 = "<p>Plain UTF-8: 日本語</p>"
    assert "日本語" in _html(utf8.encode()).text
    # a meta that claims UTF-16 over ASCII-compatible bytes is read as UTF-8, as browsers do
    assert declared_charset(b'<meta charset="utf-16">') == "utf-8"


def test_deep_nesting_does_not_blow_the_stack() -> None:
    n = 100_000
    started = time.perf_counter()
    doc = _html("<html><body>" + "<div>" * n + "deep text" + "</div>" * n + "<p>after</p></body></html>")
    assert time.perf_counter() - started < 20
    assert "deep text" in doc.text and "after" in doc.text
    flat = limit_depth("<div>" * 600 + "x" + "</div>" * 600, 512)
    assert flat.count("<div>") == 512 and flat.count("</div>") == 512
    small = "<div><p>unchanged</p></div>"
    assert limit_depth(small) is small


def test_empty_and_textless_pages_are_quarantined() -> None:
    with pytest.raises(QuarantineError):
        _html(b"   \n")
    with pytest.raises(QuarantineError) as exc:
        _html("<html><head><script>x()</script></head><body><nav>menu</nav></body></html>")
    assert "no readable text" in exc.value.reason


@pytest.mark.shared_corpus
def test_real_openapi_spec_page(shared_corpus: Path) -> None:
    path = shared_corpus / "real-formats" / "openapi_spec" / "OAI__spec.openapis.org" / "oas" / "v3.2.0.html"
    if not path.is_file():
        pytest.skip("v3.2.0.html not in the shared corpus")
    doc = _html(path.read_bytes(), "oas/v3.2.0.html")
    assert doc.title == "OpenAPI Specification v3.2.0"
    intro = _block_with(doc, "The OpenAPI Specification (OAS) defines a standard, programming language-agnostic")
    assert intro.heading_path[-1] == "What is the OpenAPI Specification?"
    assert any(b.heading_path and b.heading_path[-1].endswith("Info Object") for b in doc.blocks)
    assert any(b.kind == "code" for b in doc.blocks)
    assert any(b.kind == "table" for b in doc.blocks)
    assert "dataLayer" not in doc.text and "gtag(" not in doc.text and "@keyframes" not in doc.text


def test_article_header_heading_is_content_but_site_header_is_not() -> None:
    doc = _html(
        "<body><header><h1>Site Name</h1><a>Login</a></header>"
        "<article><header><h1>Article Heading</h1><p class='byline'>by Jane</p></header>"
        "<p>Article body.</p></article></body>"
    )
    assert "Site Name" not in doc.text and "Login" not in doc.text
    body = _block_with(doc, "Article body.")
    assert body.heading_path == ("Article Heading",)
    assert doc.title == "Article Heading"
