"""Deterministic, realistic benchmark corpus: documentation in every supported format.

``generate_corpus(root, seed, size_mb)`` writes, under ``root``:

* ``docs/<doc_type>/<section>/<name>.<ext>``: Markdown (front matter, code blocks, tables, lists),
  MDX (imports, JSX components, admonitions), reStructuredText (Sphinx directives), HTML pages
  with site chrome, OpenAPI 3 specs in JSON and YAML with many operations, Jupyter notebooks with
  outputs (some with embedded images), RFC-style plain text with page breaks, and a few small
  PDFs with real text streams; for rust, cilium, talos, ebpf, solana, jupiter, meteora, raydium,
  birdeye, jupyter and ietf_rfc.
* ``sources.yaml``: the manifest (doc type from the folder, 8 shards).
* ``dump/<doc_type>/*.sql`` + ``dump-sources.yaml``: the doc-server SQL dump case, INSERT
  statements with precomputed 3072-dimensional embeddings whose metadata names the offline model,
  so the pipeline carries them over instead of re-embedding.
* ``corpus.json``: what was written (files and bytes per format and doc type), written last: its
  presence with the same generator version marks a complete corpus (the cache key is seed + size).

Text comes from a Zipf-distributed vocabulary (general English words in frequency order with each
doc type's own terms mixed in) filled into realistic templates, so chunks are essentially never
identical and the embedding cache cannot dedupe the corpus away. The same seed and size give
byte-identical files on every machine.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from doc_migration.config import OFFLINE_MODEL

from .words import CONTENT_WORDS, DOMAIN_TERMS, FUNCTION_WORDS, IDENT_PARTS, LANGUAGES

GENERATOR_VERSION = 5  # 5: the stamp records the dump's embedding model
DEFAULT_SEED = 42
DEFAULT_SIZE_MB = 184.0
DEFAULT_DUMP_DOCS = 4200
DUMP_MODEL = OFFLINE_MODEL  # so the offline run carries the vectors over
SHARDS = 8
MB = 1_000_000

# Share of the corpus bytes per doc type, and per doc type the share of each format.
DOC_TYPES: dict[str, tuple[float, dict[str, float]]] = {
    "rust": (0.14, {"md": 0.85, "html": 0.15}),
    "cilium": (0.12, {"md": 0.45, "rst": 0.45, "html": 0.10}),
    "talos": (0.08, {"md": 0.50, "mdx": 0.50}),
    "ebpf": (0.08, {"md": 0.60, "rst": 0.30, "txt": 0.10}),
    "solana": (0.14, {"mdx": 0.42, "md": 0.13, "yaml": 0.30, "json": 0.10, "pdf": 0.05}),
    "jupiter": (0.09, {"md": 0.55, "html": 0.18, "json": 0.20, "pdf": 0.07}),
    "meteora": (0.05, {"mdx": 0.60, "json": 0.40}),
    "raydium": (0.06, {"md": 0.60, "json": 0.30, "pdf": 0.10}),
    "birdeye": (0.05, {"yaml": 0.45, "json": 0.15, "rst": 0.25, "md": 0.15}),
    "jupyter": (0.10, {"ipynb": 0.80, "md": 0.20}),
    "ietf_rfc": (0.09, {"txt": 1.0}),
}
# Median file size (bytes) and log-normal sigma per format; sizes are clipped to [min, max].
FILE_SIZES: dict[str, tuple[int, float, int, int]] = {
    "md": (9_000, 0.9, 600, 250_000),
    "mdx": (7_000, 0.8, 600, 150_000),
    "rst": (11_000, 0.8, 800, 200_000),
    "html": (28_000, 0.7, 3_000, 400_000),
    "json": (220_000, 0.8, 20_000, 2_500_000),
    "yaml": (160_000, 0.8, 15_000, 2_000_000),
    "ipynb": (45_000, 0.9, 4_000, 1_500_000),
    "txt": (110_000, 0.7, 10_000, 900_000),
    "pdf": (40_000, 0.5, 8_000, 160_000),
}
SECTIONS = ["guides", "reference", "concepts", "tutorials", "operations", "api", "how-to", "internals"]
DUMP_DOC_TYPES = ("jupiter", "raydium", "meteora")
DUMP_ROWS_PER_FILE = 100


# ---------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------
def _vocabulary(doc_type: str) -> list[str]:
    """Function words first, then content words (fixed shuffle) with the doc type's terms interleaved."""
    content = list(CONTENT_WORDS)
    perm = np.random.default_rng(12345).permutation(len(content))
    content = [content[i] for i in perm]
    general = list(dict.fromkeys(FUNCTION_WORDS + content))
    terms = DOMAIN_TERMS[doc_type]
    vocab = general[:40]
    rest = general[40:]
    t = 0
    for i, word in enumerate(rest):
        vocab.append(word)
        if i % 6 == 0 and t < len(terms):
            vocab.append(terms[t])
            t += 1
    vocab.extend(terms[t:])
    # Derived forms widen the vocabulary's long tail (plural, past, gerund, agent noun).
    for word in rest[:400]:
        if word.isalpha() and word.islower() and len(word) > 3:
            vocab.extend((word + "s", word + ("d" if word.endswith("e") else "ed"),
                          (word[:-1] if word.endswith("e") else word) + "ing"))
    return vocab


class TextGen:
    """Words, sentences, paragraphs and code for one file, from one seeded generator."""

    def __init__(self, rng: np.random.Generator, doc_type: str, vocab: list[str], probs: np.ndarray) -> None:
        self.rng = rng
        self.doc_type = doc_type
        self.vocab = np.array(vocab, dtype=object)
        self.probs = probs
        self.terms = DOMAIN_TERMS[doc_type]
        self._buf: list[str] = []
        self._pos = 0

    def _refill(self) -> None:
        idx = self.rng.choice(len(self.vocab), size=8192, p=self.probs)
        self._buf = self.vocab[idx].tolist()
        self._pos = 0

    def words(self, n: int) -> list[str]:
        out: list[str] = []
        while n > 0:
            if self._pos >= len(self._buf):
                self._refill()
            take = min(n, len(self._buf) - self._pos)
            out.extend(self._buf[self._pos:self._pos + take])
            self._pos += take
            n -= take
        return out

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi]."""
        return int(self.rng.integers(lo, hi + 1))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def pick(self, seq: list[str] | tuple[str, ...]) -> str:
        return seq[int(self.rng.integers(0, len(seq)))]

    def ident(self) -> str:
        parts = [self.pick(IDENT_PARTS) for _ in range(self.randint(2, 3))]
        return "_".join(parts)

    def camel(self) -> str:
        return "".join(self.pick(IDENT_PARTS).capitalize() for _ in range(self.randint(2, 3)))

    def number(self) -> str:
        kind = self.randint(0, 5)
        if kind == 0:
            return f"{self.randint(1, 9)}.{self.randint(0, 40)}.{self.randint(0, 20)}"
        if kind == 1:
            return f"{self.randint(1, 65535)}"
        if kind == 2:
            return f"{self.randint(1, 999)} ms"
        if kind == 3:
            return f"0x{int(self.rng.integers(0, 2**32)):08x}"
        if kind == 4:
            return f"{self.randint(1, 100)}%"
        return f"{self.randint(10, 255)}.{self.randint(0, 255)}.{self.randint(0, 255)}.{self.randint(1, 254)}"

    def sentence(self, markup: str = "md") -> str:
        n = max(4, int(self.rng.normal(15, 6)))
        words = self.words(n)
        words[0] = words[0][:1].upper() + words[0][1:]
        if n > 9 and self.chance(0.35):
            words[self.randint(3, n - 3)] += ","
        r = self.rng.random()
        if r < 0.22:
            code = self.ident() if self.chance(0.7) else self.camel()
            words.insert(self.randint(1, len(words)), _inline_code(code, markup))
        elif r < 0.30:
            words.insert(self.randint(1, len(words)), self.number())
        elif r < 0.36:
            words.insert(self.randint(1, len(words)), _link(self, markup))
        elif r < 0.42:
            words.insert(self.randint(1, len(words)), _emph(self.pick(self.terms), markup))
        return " ".join(words) + ("?" if self.chance(0.03) else ".")

    def paragraph(self, markup: str = "md", lo: int = 2, hi: int = 7) -> str:
        return " ".join(self.sentence(markup) for _ in range(self.randint(lo, hi)))

    def title(self) -> str:
        words = [w for w in self.words(self.randint(2, 6)) if w.isalpha()] or ["Overview"]
        if self.chance(0.5):
            words.insert(0, self.pick(self.terms))
        return " ".join(w[:1].upper() + w[1:] for w in words)

    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title().lower()).strip("-")[:48] or "page"

    def code(self, lang: str, lines: int | None = None) -> list[str]:
        n = lines if lines is not None else self.randint(4, 28)
        return [_code_line(self, lang, i) for i in range(n)]


def _inline_code(code: str, markup: str) -> str:
    if markup == "rst":
        return f"``{code}``"
    if markup == "html":
        return f"<code>{code}</code>"
    if markup == "plain":
        return f"'{code}'"
    return f"`{code}`"


def _emph(word: str, markup: str) -> str:
    if markup == "html":
        return f"<strong>{word}</strong>"
    if markup == "plain":
        return word.upper()
    return f"**{word}**"


def _link(gen: TextGen, markup: str) -> str:
    words = " ".join(gen.words(gen.randint(1, 3)))
    url = f"https://docs.{gen.doc_type.replace('_', '-')}.example.org/{gen.pick(SECTIONS)}/{gen.slug()}"
    if markup == "rst":
        return f"`{words} <{url}>`_"
    if markup == "html":
        return f'<a href="{url}">{words}</a>'
    if markup == "plain":
        return f"<{url}>"
    return f"[{words}]({url})"


def _code_line(gen: TextGen, lang: str, i: int) -> str:
    a, b, c = gen.ident(), gen.ident(), gen.camel()
    num = gen.randint(0, 4096)
    indent = "    " * gen.randint(0, 2)
    if lang == "rust":
        forms = [f"let {a} = {b}(&ctx.accounts.{gen.pick(IDENT_PARTS)})?;", f"fn {a}(&self, {b}: u64) -> Result<{c}> {{",
                 f"impl {c} for {gen.camel()} {{", f"if {a}.len() > {num} {{ return Err(Error::{c}); }}",
                 f"// {gen.sentence('plain')}", f"{a}.insert({b}, {num});", "}", f"#[derive(Debug, Clone)] struct {c};"]
    elif lang == "python":
        forms = [f"{a} = {b}({gen.ident()}, timeout={num})", f"def {a}({b}, *, limit={num}):",
                 f"for {gen.pick(IDENT_PARTS)} in {a}:", f"# {gen.sentence('plain')}", f"print({a}[{num % 16}])",
                 f"return {c}({b}={num})", f"import {gen.pick(IDENT_PARTS)}", f"df = pd.read_csv('{a}.csv')"]
    elif lang == "typescript":
        forms = [f"const {a} = await {b}({{ amount: {num} }});", f"export async function {a}({b}: {c}) {{",
                 f"// {gen.sentence('plain')}", f"if (!{a}) throw new Error('{gen.ident()}');",
                 f"const {{ {gen.pick(IDENT_PARTS)} }} = {b};", "}", f"import {{ {c} }} from '@{gen.doc_type}/sdk';"]
    elif lang == "bash":
        forms = [f"{gen.pick(gen.terms).lower()} {gen.pick(IDENT_PARTS)} --{gen.pick(IDENT_PARTS)}={num}",
                 f"export {a.upper()}={num}", f"curl -s https://api.example.org/v1/{b}?limit={num}",
                 f"# {gen.sentence('plain')}", f"kubectl -n {gen.pick(IDENT_PARTS)} get {gen.pick(IDENT_PARTS)}s"]
    elif lang == "yaml":
        forms = [f"{a}: {num}", f"{b}:", f"  {gen.pick(IDENT_PARTS)}: {gen.ident()}", f"- name: {c}",
                 f"  enabled: {'true' if num % 2 else 'false'}", f"# {gen.sentence('plain')}"]
    elif lang == "json":
        forms = [f'"{a}": {num},', f'"{b}": "{gen.ident()}",', f'"{c}": {{', "},", f'"{a}": [{num}, {num // 2}],']
    elif lang == "go":
        forms = [f"{a} := {b}(ctx, {num})", f"func {c}({b} string) error {{", "if err != nil {", "\treturn err",
                 "}", f"// {gen.sentence('plain')}", f'log.Printf("{a}: %v", {b})']
    elif lang == "c":
        forms = [f"int {a} = bpf_map_lookup_elem(&{b}, &key);", f"SEC(\"{gen.pick(['xdp', 'tc', 'kprobe/sys_open'])}\")",
                 f"if (!{a}) return {num % 3};", f"struct {a} *{b} = ctx->data;", f"/* {gen.sentence('plain')} */", "}"]
    elif lang == "toml":
        forms = [f"[{a}]", f'{b} = "{gen.number()}"', f"{a} = {num}", f"# {gen.sentence('plain')}"]
    else:
        forms = [f"SELECT {a}, {b} FROM {gen.pick(IDENT_PARTS)}s WHERE {a} > {num};",  # noqa: S608 - file text
                 f"CREATE INDEX ON {gen.pick(IDENT_PARTS)}s ({b});", f"-- {gen.sentence('plain')}"]
    return indent + forms[(i * 7 + gen.randint(0, 97)) % len(forms)]


def _lang_for(doc_type: str, gen: TextGen) -> str:
    preferred = {"rust": ["rust", "toml", "bash"], "cilium": ["yaml", "bash", "go"], "talos": ["yaml", "bash"],
                 "ebpf": ["c", "bash", "go"], "solana": ["rust", "typescript", "bash"],
                 "jupiter": ["typescript", "json", "bash"], "meteora": ["typescript", "rust"],
                 "raydium": ["typescript", "rust", "json"], "birdeye": ["bash", "json", "python"],
                 "jupyter": ["python", "bash"], "ietf_rfc": ["bash"]}[doc_type]
    return gen.pick(preferred) if gen.chance(0.85) else gen.pick(LANGUAGES)


# ---------------------------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------------------------
def _markdown(gen: TextGen, target: int, mdx: bool) -> str:
    title = gen.title()
    out = ["---", f"title: {title}", f"description: {gen.sentence('plain')}",
           f"sidebar_position: {gen.randint(1, 40)}", f"tags: [{', '.join(gen.pick(gen.terms) for _ in range(3))}]",
           "---", ""]
    if mdx:
        out += ["import Tabs from '@theme/Tabs';", "import TabItem from '@theme/TabItem';",
                f"import {{ {gen.camel()} }} from '@site/src/components';", ""]
    out += [f"# {title}", "", gen.paragraph(), ""]
    size = sum(len(x) for x in out)
    while size < target:
        block: list[str] = []
        kind = gen.rng.random()
        if kind < 0.12:
            block = [f"{'#' * gen.randint(2, 3)} {gen.title()}", ""]
        elif kind < 0.55:
            block = [gen.paragraph(), ""]
        elif kind < 0.67:
            lang = _lang_for(gen.doc_type, gen)
            block = [f"```{lang}", *gen.code(lang), "```", ""]
        elif kind < 0.77:
            block = [f"{'-' if gen.chance(0.6) else '1.'} {gen.sentence()}" for _ in range(gen.randint(2, 7))] + [""]
        elif kind < 0.83:
            cols = gen.randint(2, 4)
            block = ["| " + " | ".join(gen.title() for _ in range(cols)) + " |", "|" + "---|" * cols]
            block += ["| " + " | ".join(" ".join(gen.words(gen.randint(1, 5))) for _ in range(cols)) + " |"
                      for _ in range(gen.randint(2, 8))] + [""]
        elif kind < 0.89:
            block = [f":::{gen.pick(['note', 'tip', 'warning', 'info'])}", gen.paragraph(lo=1, hi=3), ":::", ""]
        elif kind < 0.94 and mdx:
            block = ["<Tabs>"]
            for _ in range(gen.randint(2, 3)):
                block += [f'  <TabItem value="{gen.ident()}" label="{gen.title()}">', f"    {gen.sentence()}",
                          "  </TabItem>"]
            block += ["</Tabs>", ""]
        elif kind < 0.97:
            block = [f"> {gen.paragraph(lo=1, hi=2)}", ""]
        else:
            block = [f"![{gen.title()}](/img/{gen.slug()}.png)", ""]
        out += block
        size += sum(len(x) + 1 for x in block)
    return "\n".join(out) + "\n"


def _rst(gen: TextGen, target: int) -> str:
    title = gen.title()
    out = [f".. _{gen.ident()}:", "", "#" * len(title), title, "#" * len(title), "", gen.paragraph("rst"), ""]
    size = sum(len(x) for x in out)
    while size < target:
        kind = gen.rng.random()
        if kind < 0.12:
            h = gen.title()
            block = [h, gen.pick(["=", "-", "~"]) * len(h), ""]
        elif kind < 0.55:
            block = [gen.paragraph("rst"), ""]
        elif kind < 0.68:
            lang = _lang_for(gen.doc_type, gen)
            block = [f".. code-block:: {lang}", "", *("   " + line for line in gen.code(lang)), ""]
        elif kind < 0.78:
            block = [f"* {gen.sentence('rst')}" for _ in range(gen.randint(2, 6))] + [""]
        elif kind < 0.86:
            block = [f".. {gen.pick(['note', 'warning', 'tip', 'important'])}::", "",
                     f"   {gen.paragraph('rst', 1, 3)}", ""]
        elif kind < 0.92:
            block = [f"{gen.ident()}", f"   {gen.sentence('rst')}", ""] * 2
        elif kind < 0.96:
            block = [".. toctree::", "   :maxdepth: 2", "", *(f"   {gen.slug()}" for _ in range(3)), ""]
        else:
            block = [f"See :ref:`{gen.ident()}` and :doc:`/{gen.pick(SECTIONS)}/{gen.slug()}`.", ""]
        out += block
        size += sum(len(x) + 1 for x in block)
    return "\n".join(out) + "\n"


def _html(gen: TextGen, target: int) -> str:
    title = gen.title()
    nav = "".join(f'<li><a href="/{gen.pick(SECTIONS)}/{gen.slug()}">{gen.title()}</a></li>' for _ in range(12))
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', f"<title>{title}</title>",
           '<link rel="stylesheet" href="/static/site.css">',
           "<script>window.dataLayer = window.dataLayer || []; function gtag(){dataLayer.push(arguments);}</script>",
           "</head>", "<body>", f'<header class="site-header"><a href="/">{gen.doc_type} docs</a></header>',
           f'<nav class="sidebar"><ul>{nav}</ul></nav>', "<main>", "<article>", f"<h1>{title}</h1>",
           f"<p>{gen.paragraph('html')}</p>"]
    size = sum(len(x) for x in out)
    while size < target:
        kind = gen.rng.random()
        if kind < 0.12:
            level = gen.randint(2, 3)
            block = [f"<h{level}>{gen.title()}</h{level}>"]
        elif kind < 0.6:
            block = [f"<p>{gen.paragraph('html')}</p>"]
        elif kind < 0.72:
            lang = _lang_for(gen.doc_type, gen)
            code = "\n".join(gen.code(lang)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            block = [f'<pre><code class="language-{lang}">{code}</code></pre>']
        elif kind < 0.84:
            block = ["<ul>", *(f"<li>{gen.sentence('html')}</li>" for _ in range(gen.randint(2, 6))), "</ul>"]
        elif kind < 0.92:
            cols = gen.randint(2, 4)
            rows = "".join("<tr>" + "".join(f"<td>{' '.join(gen.words(gen.randint(1, 4)))}</td>" for _ in range(cols))
                           + "</tr>" for _ in range(gen.randint(2, 6)))
            head = "".join(f"<th>{gen.title()}</th>" for _ in range(cols))
            block = [f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"]
        else:
            block = [f'<div class="admonition note"><p>{gen.paragraph("html", 1, 2)}</p></div>']
        out += block
        size += sum(len(x) + 1 for x in block)
    out += ["</article>", "</main>", f'<footer><p>&copy; 2025 {gen.doc_type} contributors</p></footer>',
            '<script src="/static/search.js"></script>', "</body>", "</html>"]
    return "\n".join(out) + "\n"


def _schema(gen: TextGen, names: list[str]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for _ in range(gen.randint(3, 12)):
        kind = 6 if gen.chance(0.04) else gen.randint(0, 4)
        prop: dict[str, Any] = {"description": gen.sentence("plain")}
        if kind == 0:
            prop.update(type="string", example=gen.ident())
        elif kind == 1:
            prop.update(type="integer", format="int64", minimum=0)
        elif kind == 2:
            prop.update(type="number", format="double")
        elif kind == 3:
            prop.update(type="string", enum=[gen.ident() for _ in range(gen.randint(2, 5))])
        elif kind == 6 and names:
            prop = {"$ref": f"#/components/schemas/{gen.pick(names)}"}
        else:
            prop.update(type="array", items={"type": "string"})
        props[gen.ident()] = prop
    return {"type": "object", "description": gen.sentence("plain"), "required": list(props)[:2], "properties": props}


def _openapi(gen: TextGen, target: int) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    names: list[str] = []
    for _ in range(max(4, target // 9000)):
        name = gen.camel()
        if name not in schemas:
            schemas[name] = _schema(gen, names)
            names.append(name)
    spec: dict[str, Any] = {
        "openapi": gen.pick(["3.0.3", "3.1.0"]),
        "info": {"title": f"{gen.doc_type.capitalize()} {gen.title()} API", "version": gen.number().split()[0],
                 "description": gen.paragraph("plain")},
        "servers": [{"url": f"https://api.{gen.doc_type.replace('_', '-')}.example.org/v{gen.randint(1, 3)}"}],
        "tags": [{"name": t, "description": gen.sentence("plain")} for t in dict.fromkeys(gen.title() for _ in range(4))],
        "paths": {},
        "components": {"schemas": schemas},
    }
    size = len(json.dumps(schemas))
    paths: dict[str, Any] = spec["paths"]
    while size < target:
        path = "/" + "/".join(gen.pick(IDENT_PARTS) for _ in range(gen.randint(1, 3)))
        if gen.chance(0.4):
            path += "/{" + gen.pick(IDENT_PARTS) + "_id}"
        item: dict[str, Any] = paths.setdefault(path, {})
        for method in dict.fromkeys(gen.pick(["get", "post", "put", "delete", "patch"]) for _ in range(gen.randint(1, 3))):
            op: dict[str, Any] = {
                "tags": [gen.pick([t["name"] for t in spec["tags"]])],
                "operationId": f"{method}{gen.camel()}",
                "summary": gen.sentence("plain").rstrip("."),
                "description": gen.paragraph("md", 1, 4),
                "parameters": [
                    {"name": gen.ident(), "in": gen.pick(["query", "query", "header"]), "required": gen.chance(0.4),
                     "description": gen.sentence("plain"), "schema": {"type": gen.pick(["string", "integer", "boolean"])}}
                    for _ in range(gen.randint(0, 5))],
                "responses": {
                    "200": {"description": gen.sentence("plain"), "content": {"application/json": {
                        "schema": {"$ref": f"#/components/schemas/{gen.pick(names)}"}}}},
                    "400": {"description": "Bad request: " + gen.sentence("plain")},
                    "429": {"description": "Rate limited: " + gen.sentence("plain")},
                },
            }
            if method in ("post", "put", "patch"):
                op["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{gen.pick(names)}"}}}}
            item[method] = op
            size += len(json.dumps(op)) + len(path)
    return spec


def _notebook(gen: TextGen, target: int) -> str:
    cells: list[dict[str, Any]] = []
    size = 0
    n = 0
    while size < target:
        n += 1
        if gen.chance(0.45):
            lines = [f"## {gen.title()}", "", gen.paragraph()] if gen.chance(0.4) else [gen.paragraph()]
            src = "\n".join(lines)
            cells.append({"cell_type": "markdown", "id": f"c{n:04d}", "metadata": {}, "source": _nb_lines(src)})
        else:
            src = "\n".join(gen.code("python", gen.randint(2, 14)))
            outputs: list[dict[str, Any]] = []
            r = gen.rng.random()
            if r < 0.35:
                outputs.append({"name": "stdout", "output_type": "stream",
                                "text": _nb_lines("\n".join(" ".join(gen.words(6)) for _ in range(gen.randint(1, 6))))})
            elif r < 0.55:
                outputs.append({"output_type": "execute_result", "execution_count": n, "metadata": {},
                                "data": {"text/plain": _nb_lines(f"{gen.camel()}({gen.ident()}={gen.number()})")}})
            elif r < 0.62:
                png = base64.b64encode(gen.rng.bytes(gen.randint(3_000, 24_000))).decode()
                outputs.append({"output_type": "display_data", "metadata": {},
                                "data": {"image/png": png, "text/plain": ["<Figure size 640x480 with 1 Axes>"]}})
            cells.append({"cell_type": "code", "execution_count": n, "id": f"c{n:04d}", "metadata": {},
                          "outputs": outputs, "source": _nb_lines(src)})
        size += len(json.dumps(cells[-1]))
    nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                      "name": "python3"},
                                       "language_info": {"name": "python", "version": "3.11.7"}},
          "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def _nb_lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def _wrap(text: str, width: int, indent: str) -> list[str]:
    lines: list[str] = []
    cur: list[str] = []
    n = len(indent)
    for word in text.split():
        if cur and n + len(word) + 1 > width:
            lines.append(indent + " ".join(cur))
            cur, n = [], len(indent)
        cur.append(word)
        n += len(word) + 1
    if cur:
        lines.append(indent + " ".join(cur))
    return lines


def _rfc(gen: TextGen, target: int, number: int) -> str:
    title = gen.title()
    header = f"RFC {number}{title[:40]:^52}June 2025"
    body: list[str] = [f"Internet Engineering Task Force (IETF){'':>20}{gen.title()[:20]}",
                       f"Request for Comments: {number}", "Category: Standards Track", "ISSN: 2070-1721", "", "",
                       f"{title:^72}", "", "Abstract", "", *_wrap(gen.paragraph("plain"), 72, "   "), "",
                       "Status of This Memo", "", *_wrap(gen.paragraph("plain"), 72, "   "), ""]
    size = sum(len(x) for x in body)
    sec = 0
    while size < target:
        sec += 1
        block = [f"{sec}.  {gen.title()}", ""]
        for sub in range(gen.randint(1, 4)):
            if sub and gen.chance(0.5):
                block += [f"{sec}.{sub}.  {gen.title()}", ""]
            block += [*_wrap(gen.paragraph("plain", 3, 8), 72, "   "), ""]
            if gen.chance(0.3):
                block += [*("      " + line for line in gen.code("bash", gen.randint(3, 9))), ""]
        body += block
        size += sum(len(x) + 1 for x in block)
    out: list[str] = []
    page = 1
    for i in range(0, len(body), 54):
        out += body[i:i + 54]
        out += ["", f"{gen.title()[:20]:<30}Standards Track{'':>13}[Page {page}]", "\f", header, ""]
        page += 1
    return "\n".join(out) + "\n"


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF (1.4): Helvetica text, one content stream per page, exact xref offsets."""
    objects: list[bytes] = []
    n_pages = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 10 Tf", "13 TL", "56 790 Td"]
        ops += [f"({_pdf_escape(line)}) Tj T*" for line in lines]
        ops.append("ET")
        stream = ("\n".join(ops) + "\n").encode("latin-1", "replace")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
                       f"/Contents {5 + 2 * i} 0 R >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{num} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _pdf(gen: TextGen, target: int) -> bytes:
    pages: list[list[str]] = []
    size = 0
    while size < target:
        lines = [gen.title(), ""]
        while len(lines) < 56:
            lines += _wrap(gen.paragraph("plain", 2, 5), 95, "") + [""]
        pages.append(lines[:58])
        size += sum(len(x) + 12 for x in pages[-1])
    return make_pdf(pages)


# ---------------------------------------------------------------------------------------------
# the corpus
# ---------------------------------------------------------------------------------------------
@dataclass
class CorpusInfo:
    root: Path
    seed: int
    size_mb: float
    generator_version: int = GENERATOR_VERSION
    shards: int = SHARDS
    doc_types: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    by_format: dict[str, dict[str, int]] = field(default_factory=dict)
    by_doc_type: dict[str, dict[str, int]] = field(default_factory=dict)
    dump_files: int = 0
    dump_docs: int = 0
    dump_bytes: int = 0
    dump_model: str = ""  # the dump's vectors were made by this model: a model change regenerates them
    seconds: float = 0.0

    @property
    def manifest(self) -> Path:
        return self.root / "sources.yaml"

    @property
    def dump_manifest(self) -> Path:
        return self.root / "dump-sources.yaml"

    @property
    def docs_dir(self) -> Path:
        return self.root / "docs"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["root"] = str(self.root)
        return d

    @classmethod
    def load(cls, root: Path) -> CorpusInfo | None:
        stamp = root / "corpus.json"
        if not stamp.is_file():
            return None
        try:
            raw = json.loads(stamp.read_text(encoding="utf-8"))
        except ValueError:
            return None
        if raw.get("generator_version") != GENERATOR_VERSION:
            return None
        raw["root"] = root
        return cls(**raw)


MANIFEST = """# Benchmark corpus (generated by benchmarks.corpus, seed {seed}, {size_mb:g} MB).
shards: {shards}
chunking: {{max_tokens: 800, overlap_tokens: 64}}
sources:
  - source_name: "{{doc_type}}-docs"
    doc_type: "{{folder}}"
    path: docs
    include: ["*/**/*.md", "*/**/*.mdx", "*/**/*.rst", "*/**/*.html", "*/**/*.txt", "*/**/*.ipynb",
              "*/**/*.pdf", "*/**/*.json", "*/**/*.yaml"]
    format: auto
    metadata: {{benchmark: true}}
"""

DUMP_MANIFEST = """# doc-server SQL dumps with precomputed embeddings (generated by benchmarks.corpus).
shards: {shards}
sources:
  - source_name: "{{doc_type}}-docs"
    doc_type: "{{folder}}"
    path: dump
    include: ["*/*.sql"]
    format: sql-dump
"""

EXT = {"md": ".md", "mdx": ".mdx", "rst": ".rst", "html": ".html", "json": ".json", "yaml": ".yaml",
       "ipynb": ".ipynb", "txt": ".txt", "pdf": ".pdf"}


def _size(rng: np.random.Generator, fmt: str) -> int:
    median, sigma, lo, hi = FILE_SIZES[fmt]
    return int(min(hi, max(lo, median * math.exp(sigma * rng.standard_normal()))))


def _render(gen: TextGen, fmt: str, target: int, number: int) -> bytes:
    if fmt in ("md", "mdx"):
        return _markdown(gen, target, fmt == "mdx").encode()
    if fmt == "rst":
        return _rst(gen, target).encode()
    if fmt == "html":
        return _html(gen, target).encode()
    if fmt == "json":
        return (json.dumps(_openapi(gen, int(target * 0.67)), indent=2) + "\n").encode()
    if fmt == "yaml":
        dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        text = yaml.dump(_openapi(gen, int(target * 0.84)), Dumper=dumper, sort_keys=False, width=100,
                         allow_unicode=True)
        return text.encode()
    if fmt == "ipynb":
        return _notebook(gen, int(target * 0.82)).encode()
    if fmt == "txt":
        return _rfc(gen, target, 9000 + number % 1000).encode()
    return _pdf(gen, target)


def _zipf(n: int) -> np.ndarray:
    ranks = np.arange(n, dtype=np.float64)
    weights = 1.0 / (ranks + 2.7) ** 1.05
    return weights / weights.sum()


def generate_corpus(root: Path, seed: int = DEFAULT_SEED, size_mb: float = DEFAULT_SIZE_MB,
                    dump_docs: int = DEFAULT_DUMP_DOCS, dims: int = 3072,
                    log: Callable[[str], None] | None = None, doc_types: Sequence[str] | None = None,
                    shards: int = SHARDS, dump_doc_types: Sequence[str] = DUMP_DOC_TYPES) -> CorpusInfo:
    """Write the corpus under ``root`` (replacing an incomplete one); reuse it when already complete.

    ``doc_types`` picks a subset of :data:`DOC_TYPES` (their shares are rescaled to ``size_mb``) and
    ``shards`` the manifest's shard count: a small, fast corpus for tests.
    """
    import time

    chosen = list(doc_types) if doc_types else list(DOC_TYPES)
    unknown = [d for d in [*chosen, *dump_doc_types] if d not in DOC_TYPES]
    if unknown:
        raise ValueError(f"unknown doc type(s) {unknown}; known: {list(DOC_TYPES)}")
    cached = CorpusInfo.load(root)
    if (cached is not None and cached.seed == seed and cached.size_mb == size_mb and cached.dump_docs == dump_docs
            and cached.shards == shards and (cached.doc_types or list(DOC_TYPES)) == chosen
            and cached.dump_model == DUMP_MODEL):
        return cached
    start = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    (root / "docs").mkdir(parents=True)
    info = CorpusInfo(root=root, seed=seed, size_mb=size_mb, shards=shards, doc_types=chosen, dump_model=DUMP_MODEL)
    total_share = sum(DOC_TYPES[d][0] for d in chosen)
    budget_total = int(size_mb * MB / total_share)
    number = 0
    for dt_index, (doc_type, (share, formats)) in enumerate(DOC_TYPES.items()):
        if doc_type not in chosen:
            continue
        vocab = _vocabulary(doc_type)
        probs = _zipf(len(vocab))
        for fmt_index, (fmt, fshare) in enumerate(formats.items()):
            rng = np.random.default_rng([seed, dt_index, fmt_index])
            budget = int(budget_total * share * fshare)
            written = 0
            i = 0
            while written < budget:
                target = min(_size(rng, fmt), max(FILE_SIZES[fmt][2], budget - written))
                number += 1
                gen = TextGen(np.random.default_rng([seed, dt_index, fmt_index, i]), doc_type, vocab, probs)
                data = _render(gen, fmt, target, number)
                section = SECTIONS[(i * 5 + fmt_index) % len(SECTIONS)]
                rel = Path(doc_type) / section / f"{gen.slug()}-{i:05d}{EXT[fmt]}"
                path = root / "docs" / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                written += len(data)
                i += 1
                info.files += 1
                info.bytes += len(data)
                f = info.by_format.setdefault(fmt, {"files": 0, "bytes": 0})
                f["files"] += 1
                f["bytes"] += len(data)
                d = info.by_doc_type.setdefault(doc_type, {"files": 0, "bytes": 0})
                d["files"] += 1
                d["bytes"] += len(data)
        if log:
            log(f"corpus: {doc_type} done ({info.files} files, {info.bytes / MB:.1f} MB)")
    (root / "sources.yaml").write_text(MANIFEST.format(seed=seed, size_mb=size_mb, shards=shards), encoding="utf-8")
    if dump_docs > 0:
        write_dump(root / "dump", seed, dump_docs, dims, info, tuple(dump_doc_types))
        (root / "dump-sources.yaml").write_text(DUMP_MANIFEST.format(shards=shards), encoding="utf-8")
        if log:
            log(f"corpus: dump done ({info.dump_docs} documents, {info.dump_bytes / MB:.1f} MB)")
    info.seconds = round(time.perf_counter() - start, 2)
    (root / "corpus.json").write_text(json.dumps({k: v for k, v in info.as_dict().items() if k != "root"}, indent=2),
                                      encoding="utf-8")
    return info


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def write_dump(folder: Path, seed: int, docs: int, dims: int, info: CorpusInfo,
               doc_types: tuple[str, ...] = DUMP_DOC_TYPES) -> None:
    """doc-server dumps: ``INSERT INTO documents (...) VALUES (...)`` with vector literals, in files of 100 rows."""
    from doc_migration.embedding.offline import OfflineEmbedder

    embedder = OfflineEmbedder(dims)
    columns = "id, doc_type, source_name, doc_path, content, metadata, embedding, token_count, created_at, updated_at"
    per_type = [docs // len(doc_types) + (1 if i < docs % len(doc_types) else 0) for i in range(len(doc_types))]
    for t, (doc_type, count) in enumerate(zip(doc_types, per_type, strict=True)):
        vocab = _vocabulary(doc_type)
        probs = _zipf(len(vocab))
        (folder / doc_type).mkdir(parents=True, exist_ok=True)
        for part, first in enumerate(range(0, count, DUMP_ROWS_PER_FILE)):
            rng = np.random.default_rng([seed, 1000 + t, part])
            gen = TextGen(rng, doc_type, vocab, probs)
            lines = ["-- doc-server export of the documents table", "BEGIN;"]
            rows: list[tuple[str, str]] = []
            for row in range(first, min(count, first + DUMP_ROWS_PER_FILE)):
                path = f"temp_{doc_type}_docs/docs/{gen.pick(SECTIONS)}/{row:05d}-{gen.slug()}.md"
                content = _markdown(gen, int(min(9000, max(400, 2500 * math.exp(0.6 * rng.standard_normal())))),
                                    False)
                rows.append((path, content))
            # The vectors are what the offline model gives for the content, as a real export would carry.
            vectors = embedder.embed([c for _, c in rows])
            for (path, content), vec in zip(rows, vectors, strict=True):
                literal = "[" + ",".join(map(repr, np.round(vec.astype(np.float64), 8).tolist())) + "]"
                meta = json.dumps({"embedding_model": DUMP_MODEL, "title": gen.title(), "source": "doc-server"})
                tokens = len(content) // 4
                values = (f"gen_random_uuid(), {_sql_str(doc_type)}, {_sql_str(doc_type + '-docs')}, {_sql_str(path)}, "
                          f"{_sql_str(content)}, {_sql_str(meta)}::jsonb, '{literal}', {tokens}, NOW(), NOW()")
                lines.append(f"INSERT INTO documents ({columns}) VALUES ({values});")  # noqa: S608 - file text
                info.dump_docs += 1
            lines.append("COMMIT;")
            data = ("\n".join(lines) + "\n").encode()
            (folder / doc_type / f"{doc_type}-documents-{part:03d}.sql").write_bytes(data)
            info.dump_files += 1
            info.dump_bytes += len(data)


# ---------------------------------------------------------------------------------------------
# working copies and edits
# ---------------------------------------------------------------------------------------------
def working_copy(info: CorpusInfo, dest: Path) -> Path:
    """A hard-linked copy of the corpus (fast, no extra space) whose files may then be replaced."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        shutil.copytree(info.docs_dir, dest / "docs", copy_function=os.link)
    except OSError:
        shutil.rmtree(dest / "docs", ignore_errors=True)
        shutil.copytree(info.docs_dir, dest / "docs")
    shutil.copy2(info.manifest, dest / "sources.yaml")
    return dest


EDITABLE = (".md", ".mdx", ".rst", ".html", ".txt", ".json", ".yaml", ".ipynb")


def modify_files(docs_dir: Path, share: float, seed: int) -> list[str]:
    """Edit ``share`` of the text files in place (a word in the middle gains one), replacing the
    hard link so the cached corpus is untouched. Returns the relative paths edited."""
    files = sorted(p for p in docs_dir.rglob("*") if p.is_file() and p.suffix in EDITABLE)
    rng = np.random.default_rng([seed, 777])
    n = max(1, round(len(files) * share))
    chosen = sorted(rng.choice(len(files), size=min(n, len(files)), replace=False).tolist())
    edited: list[str] = []
    for i in chosen:
        path = files[i]
        text = path.read_text(encoding="utf-8")
        pos = text.find(" and ", len(text) // 2)
        if pos < 0:
            pos = text.find(" and ")
        if pos < 0:
            continue
        text = text[:pos] + " and also" + text[pos + 4:]
        path.unlink()
        path.write_text(text, encoding="utf-8")
        edited.append(str(path.relative_to(docs_dir)))
    return edited


def delete_files(docs_dir: Path, n: int, seed: int) -> list[str]:
    """Delete ``n`` text files of the working copy (its own links: the cached corpus is untouched)."""
    files = sorted(p for p in docs_dir.rglob("*") if p.is_file() and p.suffix in EDITABLE)
    rng = np.random.default_rng([seed, 778])
    chosen = sorted(rng.choice(len(files), size=min(n, len(files)), replace=False).tolist())
    for i in chosen:
        files[i].unlink()
    return [str(files[i].relative_to(docs_dir)) for i in chosen]


def change_chunker(manifest: Path) -> list[str]:
    """Lower the manifest's chunking.max_tokens by an eighth: every chunked file is affected."""
    import yaml

    data = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    chunking = data.setdefault("chunking", {})
    chunking["max_tokens"] = int(chunking.get("max_tokens", 800)) * 7 // 8
    manifest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return [str(manifest.name)]
