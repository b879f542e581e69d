"""Markdown / MDX parser: front matter, heading paths, code kept whole, MDX reduced to its text.

Also holds the sweep over every real .md/.mdx/.rst/.html file of the shared corpus.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from doc_migration.sources.base import Block, ParseContext, ParsedDocument, QuarantineError
from doc_migration.sources.markdown import parse, parse_mdx
from doc_migration.sources.registry import EXTENSIONS, get_parser


def _md(text: str | bytes, path: str = "guide/intro.md") -> ParsedDocument:
    data = text.encode() if isinstance(text, str) else text
    docs = parse(data, ParseContext(rel_path=path, doc_type="guide", source_name="s", fmt="markdown"))
    assert len(docs) == 1
    assert docs[0].path == path
    return docs[0]


def _mdx(text: str, path: str = "docs/page.mdx") -> ParsedDocument:
    docs = parse_mdx(text.encode(), ParseContext(rel_path=path, doc_type="guide", source_name="s", fmt="mdx"))
    assert len(docs) == 1
    return docs[0]


def _block_with(doc: ParsedDocument, needle: str) -> Block:
    hits = [b for b in doc.blocks if needle in b.text]
    assert hits, f"{needle!r} not found in {[b.text for b in doc.blocks]}"
    return hits[0]


GUIDE = """---
title: Installing Widgets
date: 2024-03-05
updated: 2024-03-05T10:20:30Z
tags: [install, widgets]
weight: 3
---

# Widget Guide

Widgets turn configuration into running services.

## Installation

Install the package with pip:

```bash
pip install widgets

# blank line above stays inside the block
widgets --version
```

~~~python
import widgets
~~~

| Option | Default |
|--------|---------|
| `port` | 8080    |

### From source

Clone the repository first.

Troubleshooting
---------------

If the build fails, check your compiler.
"""


def test_front_matter_becomes_json_safe_metadata() -> None:
    doc = _md(GUIDE)
    assert doc.title == "Installing Widgets"
    assert doc.metadata["title"] == "Installing Widgets"
    assert doc.metadata["format"] == "markdown"
    assert doc.metadata["date"] == "2024-03-05"
    assert doc.metadata["updated"].startswith("2024-03-05T10:20:30")
    assert doc.metadata["tags"] == ["install", "widgets"]
    json.dumps(doc.metadata)  # must be serialisable as-is
    assert "title: Installing Widgets" not in doc.text  # front matter is not body text


def test_heading_paths_nest_and_headings_lead_their_section() -> None:
    doc = _md(GUIDE)
    intro = _block_with(doc, "Widgets turn configuration")
    assert intro.heading_path == ("Widget Guide",)
    assert intro.text.startswith("# Widget Guide\n\n")
    pip = _block_with(doc, "Install the package with pip")
    assert pip.heading_path == ("Widget Guide", "Installation")
    assert pip.text.startswith("## Installation")
    source = _block_with(doc, "Clone the repository")
    assert source.heading_path == ("Widget Guide", "Installation", "From source")
    setext = _block_with(doc, "If the build fails")
    assert setext.heading_path == ("Widget Guide", "Troubleshooting")  # setext H2 closes the H3


def test_fenced_code_is_one_whole_code_block_with_its_fence() -> None:
    doc = _md(GUIDE)
    code = _block_with(doc, "pip install widgets")
    assert code.kind == "code"
    assert code.text.startswith("```bash\n") and code.text.endswith("```")
    assert "# blank line above stays inside the block\nwidgets --version" in code.text
    assert code.heading_path == ("Widget Guide", "Installation")
    tilde = _block_with(doc, "import widgets")
    assert tilde.kind == "code" and tilde.text.startswith("~~~python\n")
    table = _block_with(doc, "| Option | Default |")
    assert table.kind == "table" and "8080" in table.text


def test_title_falls_back_to_first_h1() -> None:
    doc = _md("Intro line.\n\n# Real Title\n\nBody text.\n\n# Second\n")
    assert doc.title == "Real Title"
    assert doc.metadata["title"] == "Real Title"
    assert _block_with(doc, "Intro line.").heading_path == ()


def test_toml_front_matter() -> None:
    doc = _md('+++\ntitle = "Hugo Page"\ndate = 2023-01-02T03:04:05Z\ndraft = false\n+++\n\nHugo body.\n')
    assert doc.title == "Hugo Page"
    assert doc.metadata["draft"] is False
    assert doc.metadata["date"].startswith("2023-01-02T03:04:05")
    assert "Hugo body." in doc.text


def test_bad_front_matter_keeps_body_and_records_error() -> None:
    doc = _md("---\ntitle: [unclosed\n  : : bad\n---\n# Still Here\n\nThe body survives.\n")
    assert "front_matter_error" in doc.metadata
    assert "The body survives." in doc.text
    assert doc.title == "Still Here"
    doc2 = _md("---\n- just\n- a list\n---\nBody.\n")
    assert "not a mapping" in doc2.metadata["front_matter_error"]


def test_yaml_alias_bomb_stays_small() -> None:
    bomb = "---\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    ) + "---\nBody.\n"
    started = time.process_time()
    doc = _md(bomb)
    assert time.process_time() - started < 5
    assert len(json.dumps(doc.metadata)) < 200_000
    assert "Body." in doc.text


def test_front_matter_only_page_keeps_title_and_description() -> None:
    doc = _md('---\ntitle: "Concepts"\ndescription: >\n  The concepts section explains things.\n---\n')
    assert doc.title == "Concepts"
    assert "The concepts section explains things." in doc.text


@pytest.mark.parametrize("data", [b"", b"   \n\n\t  \n", b"\xef\xbb\xbf\n"])
def test_empty_input_is_quarantined(data: bytes) -> None:
    with pytest.raises(QuarantineError) as exc:
        _md(data)
    assert "empty" in exc.value.reason


def test_binary_input_is_quarantined() -> None:
    with pytest.raises(QuarantineError):
        _md(bytes(range(256)) * 40)
    with pytest.raises(QuarantineError):
        _md(b"# Title\n\x00\x00 binary tail")


def test_crlf_and_utf8_bom_are_normalised() -> None:
    doc = _md(b"\xef\xbb\xbf# Title\r\n\r\nLine one.\r\n\r\n```sh\r\necho hi\r\n```\r\n")
    assert doc.title == "Title"
    code = _block_with(doc, "echo hi")
    assert code.kind == "code" and "\r" not in code.text


def test_doc_site_dialects_keep_their_text() -> None:
    src = """# Page

:::note Heads up
Docusaurus admonition body.
:::

!!! warning "Careful"
    MkDocs admonition body, indented.

See [the guide]({{< ref "/docs/guide" >}}).

{{< tabpane >}}
{{< tab "Linux" >}}
Linux instructions.
{{< /tab >}}
{{< /tabpane >}}

<!-- an HTML comment that is not content -->
"""
    doc = _md(src)
    assert "Docusaurus admonition body." in doc.text and ":::" not in doc.text
    mk = _block_with(doc, "MkDocs admonition body")
    assert mk.kind == "text" and "Warning: Careful" in mk.text  # not an indented code block
    assert "/docs/guide" in doc.text and "{{" not in doc.text
    assert "Linux instructions." in doc.text
    assert "HTML comment" not in doc.text


def test_code_fences_are_never_rewritten() -> None:
    src = "# T\n\n```html\n<!-- keep -->\n<Tabs>{{< x >}}\n:::note\n```\n"
    code = _block_with(_md(src), "<!-- keep -->")
    assert code.kind == "code"
    assert "<Tabs>{{< x >}}\n:::note" in code.text


def test_unclosed_fence_runs_to_the_end() -> None:
    doc = _md("# T\n\nText.\n\n```python\nprint(1)\n\nprint(2)\n")
    code = _block_with(doc, "print(1)")
    assert code.kind == "code" and "print(2)" in code.text


MDX = """---
title: Using Tabs
---
import Tabs from '@theme/Tabs';
import TabItem from '@theme/TabItem';
import {
  Card,
  CardGroup,
} from '../components';
export const meta = {
  author: 'someone',
};

# Using Tabs

{/* editors: keep this page short */}

<Tabs groupId="os">
  <TabItem value="linux" label="Linux">
    Run the installer on Linux.

    ```bash
    ./install.sh --prefix=<dir>
    ```
  </TabItem>
  <TabItem value="mac" label="macOS">
    Use Homebrew on a Mac.
  </TabItem>
</Tabs>

<CardGroup cols={2}>
  <Card title="Fast Queries" icon="bolt" href="/q">
    Direct storage access keeps queries fast.
  </Card>
</CardGroup>

A paragraph with an inline <Badge text="beta" /> badge and `Vec<T>` code.

:::tip
Docusaurus tip text.
:::
"""


def test_mdx_strips_imports_exports_and_jsx_but_keeps_inner_text() -> None:
    doc = _mdx(MDX)
    text = doc.text
    assert doc.title == "Using Tabs" and doc.metadata["format"] == "mdx"
    for gone in ("import ", "export const", "author: 'someone'", "<Tabs", "</TabItem>", "<Card", "<Badge",
                 "editors: keep", "{/*", "groupId"):
        assert gone not in text, gone
    assert "Run the installer on Linux." in text
    assert "Use Homebrew on a Mac." in text
    assert "Direct storage access keeps queries fast." in text
    assert "Fast Queries" in text  # the card's title attribute is readable text
    assert "Docusaurus tip text." in text
    assert "A paragraph with an inline badge and `Vec<T>` code." in " ".join(text.split())


def test_mdx_code_inside_jsx_stays_code_and_untouched() -> None:
    doc = _mdx(MDX)
    code = _block_with(doc, "install.sh")
    assert code.kind == "code"
    assert code.text == "```bash\n./install.sh --prefix=<dir>\n```"
    assert code.heading_path == ("Using Tabs",)


def test_docusaurus_md_that_is_really_mdx_is_cleaned() -> None:
    src = (
        "import Tabs from '@theme/Tabs';\n\n<head>\n  <title>Head title</title>\n"
        "  <meta name=\"twitter:card\" content=\"summary\" />\n</head>\n\n"
        "# Swap\n\n<Tabs>\n<TabItem value=\"a\">\nSwap text.\n</TabItem>\n</Tabs>\n"
    )
    doc = _md(src)
    assert "import Tabs" not in doc.text and "<Tabs>" not in doc.text
    assert "Head title" not in doc.text and "twitter" not in doc.text
    assert "Swap text." in doc.text
    # ...but a plain shell `export` line in a Markdown file is content, not MDX
    plain = _md("# Env\n\nexport PATH=$HOME/bin:$PATH\n")
    assert "export PATH=$HOME/bin:$PATH" in plain.text


def test_markdown_speed_is_several_mb_per_second() -> None:
    section = GUIDE.split("---\n", 2)[2]
    data = (section * 600).encode()  # ~0.5 MB
    started = time.process_time()
    doc = _md(data)
    elapsed = time.process_time() - started
    assert len(doc.blocks) > 1000
    assert len(data) / elapsed > 500_000, f"{len(data) / elapsed / 1e6:.2f} MB/s"


# --------------------------------------------------------------------------- real files

REAL = "real-formats"


def _real(shared_corpus: Path, rel: str) -> Path:
    path = shared_corpus / REAL / rel
    if not path.is_file():
        pytest.skip(f"{rel} not in the shared corpus")
    return path


@pytest.mark.shared_corpus
def test_real_nomicon_chapter(shared_corpus: Path) -> None:
    path = _real(shared_corpus, "rust/rust-lang__nomicon/src/arc-mutex/arc-layout.md")
    doc = _md(path.read_bytes(), "src/arc-mutex/arc-layout.md")
    assert doc.title == "Layout"
    first = doc.blocks[0]
    assert first.text.startswith("# Layout\n\nLet's start by making the layout")
    code = _block_with(doc, "pub struct ArcInner<T> {")
    assert code.kind == "code" and code.text.startswith("```rust\nuse std::sync::atomic;")
    assert code.text.rstrip().endswith("```") and "data: T," in code.text
    assert all(b.heading_path[:1] == ("Layout",) for b in doc.blocks)


@pytest.mark.shared_corpus
def test_real_mintlify_mdx(shared_corpus: Path) -> None:
    path = _real(shared_corpus, "solana/helius-labs__docs/rpc/historical-data.mdx")
    doc = parse_mdx(path.read_bytes(), ParseContext("rpc/historical-data.mdx", "solana", "s", "mdx"))[0]
    assert doc.title == "Solana Historical Data Overview & Tutorials"
    assert doc.metadata["sidebarTitle"] == "Historical Data"
    assert "<Card" not in doc.text and "</CardGroup>" not in doc.text
    block = _block_with(doc, "Helius runs its own archival system, not shared BigTable")
    assert block.heading_path == ("Why Helius for historical data?",)
    assert "Independent Infrastructure" in doc.text


@pytest.mark.shared_corpus
def test_real_hugo_front_matter_only_page(shared_corpus: Path) -> None:
    path = _real(shared_corpus, "cilium/cilium__tetragon/docs/content/en/docs/concepts/_index.md")
    doc = _md(path.read_bytes(), "docs/concepts/_index.md")
    assert doc.title == "Concepts"
    assert doc.metadata["weight"] == 4
    assert "helps you understand various Tetragon abstractions" in doc.text


KNOWN_EMPTY = {"jupiter/jup-ag__space-station/Moved/1-comparator.md"}


@pytest.mark.shared_corpus
def test_every_real_markup_file_parses(shared_corpus: Path) -> None:
    """Every .md/.mdx/.rst/.html of the shared corpus parses; only the known empty file is refused."""
    root = shared_corpus / REAL
    if not root.is_dir():
        pytest.skip("real-formats corpus not present")
    stats: dict[str, list[float]] = {}
    quarantined: set[str] = set()
    for ext in (".md", ".mdx", ".rst", ".html"):
        fmt = EXTENSIONS[ext]
        parser = get_parser(fmt)
        files = sorted(root.rglob(f"*{ext}"))
        assert files, ext
        size = elapsed = 0.0
        for path in files:
            rel = path.relative_to(root).as_posix()
            data = path.read_bytes()
            ctx = ParseContext(rel_path=rel, doc_type=rel.split("/", 1)[0], source_name="real", fmt=fmt)
            started = time.process_time()
            try:
                docs = parser(data, ctx)
            except QuarantineError:
                quarantined.add(rel)
                continue
            finally:
                elapsed += time.process_time() - started  # CPU time: stable when the machine is busy
                size += len(data)
            assert len(docs) == 1, rel
            doc = docs[0]
            assert doc.blocks and doc.text.strip(), rel
            assert "\x00" not in doc.text, rel
            json.dumps(doc.metadata)
            for block in doc.blocks:
                assert isinstance(block.heading_path, tuple) and block.kind in ("text", "code", "table"), rel
        stats[ext] = [len(files), size, elapsed]
    assert quarantined == KNOWN_EMPTY
    for ext, (count, size, elapsed) in stats.items():
        print(f"{ext}: {int(count)} files, {size / 1e6:.2f} MB, {size / 1e6 / elapsed:.2f} MB/s")


def test_mdx_keeps_prose_lines_that_start_with_import_or_export() -> None:
    doc = _mdx("import X from './x';\n\n# Data\n\nimport the data first, then\nexport the report as CSV.\n")
    assert "import the data first, then\nexport the report as CSV." in doc.text
    assert "./x" not in doc.text
