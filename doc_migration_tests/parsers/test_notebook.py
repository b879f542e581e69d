"""Notebook parser: cell order, heading paths, code fences, which outputs survive, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from doc_migration.sources.base import ParseContext, QuarantineError
from doc_migration.sources.notebook import parse

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def _ctx() -> ParseContext:
    return ParseContext(rel_path="nb/tour.ipynb", doc_type="jupyter", source_name="nbs", fmt="notebook")


def _nb(cells: list[dict[str, Any]], **meta: Any) -> bytes:
    metadata = meta or {
        "kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"},
        "language_info": {"name": "python"},
    }
    return json.dumps({"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}).encode()


def _md(src: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": {}, "source": src.splitlines(keepends=True)}


def _code(src: str, outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": src, "outputs": outputs or []}


def test_cells_in_order_with_headings_and_outputs() -> None:
    data = _nb([
        _md("# Tour\n\nIntro text about the **tour**."),
        _code("import math\nprint(math.pi)", [{"output_type": "stream", "name": "stdout", "text": ["3.14159\n"]}]),
        _md("## Plotting [docs](https://example.org)\nA plot follows.\n```python\n# not a heading\n```"),
        _code("plt.plot([1, 2])", [
            {"output_type": "display_data", "metadata": {},
             "data": {"image/png": PNG_B64, "text/plain": ["<Figure size 640x480 with 1 Axes>"]}},
            {"output_type": "execute_result", "execution_count": 2, "metadata": {},
             "data": {"text/plain": ["[<matplotlib.lines.Line2D at 0x7f00>]"]}},
        ]),
        _code("x = 40 + 2\nx", [{"output_type": "execute_result", "metadata": {}, "execution_count": 3,
                                 "data": {"text/plain": "42", "text/html": "<b>42</b>"}}]),
        _code("print('x' * 5000)", [{"output_type": "stream", "name": "stdout", "text": "x" * 5000}]),
        _code("1/0", [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
                       "traceback": ["\x1b[0;31mZeroDivisionError\x1b[0m"]}]),
        {"cell_type": "raw", "metadata": {}, "source": ".. raw rst"},
    ])
    (doc,) = parse(data, _ctx())
    assert doc.path == "nb/tour.ipynb"
    assert doc.title == "Tour"
    assert doc.metadata == {
        "kernel_language": "python", "kernel_name": "python3", "cells": 8, "code_cells": 5,
        "markdown_cells": 2, "outputs_kept": 2, "nbformat": 4,
    }
    text = doc.text
    order = ["Intro text about the", "import math", "3.14159", "A plot follows", "plt.plot", "x = 40 + 2",
             "42", "1/0", ".. raw rst"]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions)
    # Code is fenced in the kernel language; the short stream output is kept beside its code.
    code_blocks = [b for b in doc.blocks if b.kind == "code"]
    assert code_blocks[0].text.startswith("```python\nimport math")
    assert "Output:\n```\n3.14159\n```" in code_blocks[0].text
    # Images (and their placeholder reprs), long outputs and tracebacks are dropped.
    assert PNG_B64[:20] not in text and "Figure size" not in text and "Line2D" not in text
    assert "x" * 1001 not in text
    assert "ZeroDivisionError" not in text and "<b>42</b>" not in text
    # Headings drive heading_path; '#' inside a code fence is not a heading; markup is stripped.
    intro = next(b for b in doc.blocks if "Intro text" in b.text)
    assert intro.text == "# Tour\n\nIntro text about the **tour**."
    assert intro.heading_path == ("Tour",)
    assert next(b for b in doc.blocks if "A plot follows" in b.text).heading_path == ("Tour", "Plotting docs")
    plot_code = next(b for b in code_blocks if "plt.plot" in b.text)
    assert plot_code.heading_path == ("Tour", "Plotting docs")


def test_attachment_images_in_markdown_are_reduced_to_alt_text() -> None:
    src = f"See ![diagram](attachment:img.png) and ![inline](data:image/png;base64,{PNG_B64 * 3})"
    (doc,) = parse(_nb([_md(src)]), _ctx())
    assert doc.text == "See [image: diagram] and [image: inline]"


def test_code_containing_fences_gets_a_longer_fence() -> None:
    (doc,) = parse(_nb([_code('s = """\n```\nnot the end\n```\n"""')]), _ctx())
    assert doc.blocks[0].text.startswith("````python\n")
    assert doc.blocks[0].text.endswith("\n````")


def test_nbformat3_worksheets() -> None:
    nb = {
        "nbformat": 3, "nbformat_minor": 0, "metadata": {"name": "old"},
        "worksheets": [{"cells": [
            {"cell_type": "heading", "level": 1, "source": ["Old style"]},
            {"cell_type": "markdown", "source": ["Some prose."]},
            {"cell_type": "code", "language": "python", "input": ["print(1)"],
             "outputs": [{"output_type": "stream", "stream": "stdout", "text": ["1\n"]},
                         {"output_type": "pyout", "png": PNG_B64, "text": ["<Figure>"]}]},
        ]}],
    }
    (doc,) = parse(json.dumps(nb).encode(), _ctx())
    assert doc.title == "Old style"
    assert "Some prose." in doc.text
    assert "```python\nprint(1)\n```\nOutput:\n```\n1\n```" in doc.text
    assert PNG_B64[:20] not in doc.text
    assert doc.metadata["nbformat"] == 3


def test_only_empty_cells_is_quarantined() -> None:
    with pytest.raises(QuarantineError) as exc:
        parse(_nb([_code(""), _md("   \n")]), _ctx())
    assert exc.value.reason == "notebook has no text"


def test_invalid_json_names_line_and_column() -> None:
    with pytest.raises(QuarantineError) as exc:
        parse(b'{"cells": [\n  {"cell_type": "markdown",,}\n]}', _ctx())
    assert exc.value.reason.startswith("invalid JSON at line 2 column")


def test_not_a_notebook_and_deep_nesting() -> None:
    with pytest.raises(QuarantineError, match="not a Jupyter notebook"):
        parse(b'{"hello": "world"}', _ctx())
    with pytest.raises(QuarantineError, match="not a Jupyter notebook"):
        parse(b"[1, 2, 3]", _ctx())
    deep = b'{"cells": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    with pytest.raises(QuarantineError, match="nested deeper than 200"):
        parse(deep, _ctx())


@pytest.mark.shared_corpus
def test_real_notebook_running_code(shared_corpus: Path) -> None:
    path = shared_corpus / "real-formats/jupyter/jupyter__notebook/docs/source/examples/Notebook/Running Code.ipynb"
    (doc,) = parse(path.read_bytes(), _ctx())
    assert doc.title == "Running Code"
    assert doc.metadata["kernel_language"] == "python"
    code = [b for b in doc.blocks if b.kind == "code"]
    assert any(b.text == "```python\na = 10\n```" for b in code)
    assert any("print(a)" in b.text and "Output:\n```\n10\n```" in b.text for b in code)
    assert all(b.heading_path[0] == "Running Code" for b in doc.blocks)


@pytest.mark.shared_corpus
def test_real_notebook_with_embedded_images_stays_small(shared_corpus: Path) -> None:
    path = shared_corpus / "real-formats/jupyter/jupyter__notebook/binder/example.ipynb"
    data = path.read_bytes()
    (doc,) = parse(data, _ctx())
    assert len(data) > 700_000 and len(doc.text) < 10_000
    assert "base64" not in doc.text
    assert "Welcome to Jupyter Notebook v7!" in doc.text
