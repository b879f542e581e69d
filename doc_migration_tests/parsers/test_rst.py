"""reStructuredText parser: Sphinx-flavoured input keeps its readable text and never crashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from docutils import utils
from docutils.parsers.rst import directives, roles
from docutils.parsers.rst.languages import en

from doc_migration.sources import rst
from doc_migration.sources.base import Block, ParseContext, ParsedDocument, QuarantineError


def _rst(text: str | bytes, path: str = "docs/guide.rst") -> ParsedDocument:
    data = text.encode() if isinstance(text, str) else text
    docs = rst.parse(data, ParseContext(rel_path=path, doc_type="guide", source_name="s", fmt="rst"))
    assert len(docs) == 1 and docs[0].path == path
    return docs[0]


def _block_with(doc: ParsedDocument, needle: str) -> Block:
    hits = [b for b in doc.blocks if needle in b.text]
    assert hits, f"{needle!r} not found in {[b.text for b in doc.blocks]}"
    return hits[0]


SPHINX = """
.. _getting-started:

Getting Started
===============

Welcome to :ref:`the install guide <install-guide>`, :class:`~widgets.core.Engine` and
:doc:`usage`. Ask on `Widget Slack`_ if stuck.

.. toctree::
   :maxdepth: 2

   install
   usage

Installation
------------

.. code-block:: bash
   :emphasize-lines: 1
   :caption: Install from PyPI

   pip install widgets
   widgets --version

.. only:: html

   This paragraph only shows in HTML builds.

.. tabs::

   .. group-tab:: Helm

      Install the chart with Helm.

      .. code-block:: shell-session

         helm install widgets ./chart

.. note::

   Restart the service after upgrading.

.. widgets-helm-install::
   :namespace: kube-system

Nested Topic
~~~~~~~~~~~~

* first item
* second item with ``inline code``

  * nested item

+--------+---------+
| Option | Default |
+========+=========+
| port   | 8080    |
+--------+---------+

Term
   The definition of the term.

Example::

   literal block after a double colon

Reference
---------

The end.
"""


def test_sections_give_nested_heading_paths_and_title() -> None:
    doc = _rst(SPHINX)
    assert doc.title == "Getting Started"
    assert doc.metadata["title"] == "Getting Started" and doc.metadata["format"] == "rst"
    intro = _block_with(doc, "Welcome to")
    assert intro.heading_path == ("Getting Started",)
    assert intro.text.startswith("# Getting Started\n\n")
    nested = _block_with(doc, "first item")
    assert nested.heading_path == ("Getting Started", "Installation", "Nested Topic")
    assert _block_with(doc, "The end.").heading_path == ("Getting Started", "Reference")


def test_sphinx_roles_keep_visible_text() -> None:
    doc = _rst(SPHINX)
    intro = _block_with(doc, "Welcome to")
    assert "the install guide" in intro.text and "install-guide" not in intro.text
    assert "`Engine`" in intro.text
    assert "usage" in intro.text
    assert "Widget Slack" in intro.text and "`_" not in intro.text  # unresolved target: text kept


def test_sphinx_directives_do_not_crash_and_keep_text() -> None:
    doc = _rst(SPHINX)
    code = _block_with(doc, "pip install widgets")
    assert code.kind == "code"
    assert code.text == "```bash\npip install widgets\nwidgets --version\n```"
    assert "Install from PyPI" in doc.text  # the caption is readable text
    assert "This paragraph only shows in HTML builds." in doc.text
    assert "Install the chart with Helm." in doc.text
    helm = _block_with(doc, "helm install widgets")
    assert helm.kind == "code" and helm.text.startswith("```shell-session\n")
    assert "Restart the service after upgrading." in _block_with(doc, "Note:").text
    assert "namespace: kube-system" in doc.text
    assert "maxdepth" not in doc.text and "toctree" not in doc.text
    assert "System Message" not in doc.text


def test_lists_tables_and_literal_blocks() -> None:
    doc = _rst(SPHINX)
    lst = _block_with(doc, "first item")
    assert lst.text.splitlines()[-3:] == ["- first item", "- second item with `inline code`", "  - nested item"]
    table = _block_with(doc, "| Option | Default |")
    assert table.kind == "table" and "| port | 8080 |" in table.text
    assert "The definition of the term." in _block_with(doc, "Term").text
    literal = _block_with(doc, "literal block after a double colon")
    assert literal.kind == "code"


def test_rejected_directive_content_is_recovered() -> None:
    src = "Broken\n======\n\n.. list-table::\n   :header-rows: 5\n\n   * - lonely cell text\n\nUse |undefined| here.\n"
    doc = _rst(src)
    assert "lonely cell text" in doc.text
    assert "Use undefined here." in doc.text


def test_docutils_failure_falls_back_to_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("docutils bug")

    monkeypatch.setattr(rst.docutils.core, "publish_doctree", boom)
    doc = _rst("Fallback Title\n==============\n\nStill readable paragraph.\n\nSub\n---\n\nMore text.\n")
    assert "parse_fallback" in doc.metadata
    assert doc.title == "Fallback Title"
    assert _block_with(doc, "Still readable paragraph.").heading_path == ("Fallback Title",)
    assert _block_with(doc, "More text.").heading_path == ("Fallback Title", "Sub")


def test_pathological_nesting_does_not_raise() -> None:
    src = "Deep\n====\n\n" + "".join("  " * i + f"* level {i}\n\n" for i in range(400))
    doc = _rst(src)
    assert "level 399" in doc.text


def test_lenient_handlers_do_not_leak_outside_the_parser() -> None:
    _rst(SPHINX)
    document = utils.new_document("<test>")
    assert directives.directive("toctree", en, document)[0] is None
    assert roles.role("ref", en, 0, document.reporter)[0] is None


@pytest.mark.parametrize("data", [b"", b"\n \n"])
def test_empty_is_quarantined(data: bytes) -> None:
    with pytest.raises(QuarantineError):
        _rst(data)


def test_backslash_escapes_do_not_leak_nul() -> None:
    doc = _rst("Escapes\n=======\n\nA literal \\*star\\* and a / \\* * comment.\n")
    assert "\x00" not in doc.text
    assert "*star*" in doc.text


@pytest.mark.shared_corpus
def test_real_cilium_page(shared_corpus: Path) -> None:
    matches = sorted((shared_corpus / "real-formats" / "cilium").glob("*/Documentation/observability/hubble/hubble-cli.rst"))
    if not matches:
        pytest.skip("hubble-cli.rst not in the shared corpus")
    doc = _rst(matches[0].read_bytes(), "Documentation/observability/hubble/hubble-cli.rst")
    assert doc.title == "Inspecting Network Flows with the CLI"
    prereq = _block_with(doc, "Cilium has been correctly installed in your Kubernetes cluster.")
    assert prereq.heading_path == ("Inspecting Network Flows with the CLI", "Pre-Requisites")
    code = _block_with(doc, "hubble observe --pod deathstar --protocol http")
    assert code.kind == "code" and code.text.startswith("```shell-session\n")
    assert ":ref:" not in doc.text and ".. code-block::" not in doc.text


@pytest.mark.shared_corpus
def test_real_grid_table_with_row_spans(shared_corpus: Path) -> None:
    path = shared_corpus / "real-formats" / "ebpf" / "libbpf__libbpf" / "docs" / "program_types.rst"
    if not path.is_file():
        pytest.skip("program_types.rst not in the shared corpus")
    doc = _rst(path.read_bytes(), "docs/program_types.rst")
    table = _block_with(doc, "| Program Type | Attach Type | ELF Section Name | Sleepable |")
    assert table.kind == "table"
    # a row-spanning "Program Type" cell is repeated so each row stands alone
    assert "| `BPF_PROG_TYPE_CGROUP_SKB` | `BPF_CGROUP_INET_EGRESS` | `cgroup_skb/egress` |" in table.text


def test_docinfo_option_lists_and_footnotes_read_as_text() -> None:
    src = """
:Author: Jane Doe
:Version: 1.2

Tool
====

-v, --verbose   Print more output.
--config=FILE   Read settings from FILE.

Text with a footnote [#f1]_.

.. [#f1] The footnote text.
"""
    doc = _rst(src)
    assert "Author: Jane Doe\nVersion: 1.2" in doc.text
    assert "-v, --verbose  Print more output.\n--config=FILE  Read settings from FILE." in doc.text
    assert "The footnote text." in doc.text
    assert "f1" not in doc.text
