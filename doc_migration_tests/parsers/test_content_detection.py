"""Issue 15: what a person would call a readable document is loaded, whatever its name or encoding.

Detection looks at content (JSON top-level keys, YAML column-0 keys, sniffed extension-less
files); legacy encodings are decoded and recorded; Word files load with their headings; hostile
input is refused with a reason, never an exception other than QuarantineError.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from doc_migration.manifest import ChunkingConfig
from doc_migration.pipeline.parse import FileJob, parse_file
from doc_migration.sources.base import (
    ParseContext,
    ParsedDocument,
    ParseLimits,
    QuarantineError,
    decode_text_with_encoding,
)
from doc_migration.sources.registry import detect, detect_format, get_parser


def _load(path: Path, rel: str | None = None) -> tuple[str, list[ParsedDocument]]:
    """Detect and parse a file as the pipeline does (whole file to detection, then the parser)."""
    data = path.read_bytes()
    rel = rel or path.name
    fmt = detect_format(rel, data)
    ctx = ParseContext(rel, "docs", "test", fmt)
    return fmt, get_parser(fmt)(data, ctx)


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# --------------------------------------------------------------------------- JSON by top-level keys


def test_openapi_json_with_sorted_keys_is_openapi_whatever_the_key_order(tmp_path: Path) -> None:
    schemas = {f"Model{i}": {"type": "object", "properties": {"id": {"type": "string", "description": "x" * 200}}}
               for i in range(60)}  # "openapi" lands well past the first 4 KB
    spec = {"components": {"schemas": schemas}, "info": {"title": "Pets", "version": "1"}, "openapi": "3.0.3",
            "paths": {"/pets": {"get": {"summary": "List pets", "responses": {"200": {"description": "ok"}}}}}}
    text = json.dumps(spec, sort_keys=True)
    assert text.index('"openapi"') > 4096
    found = detect("api/spec.json", text.encode())
    assert (found.fmt, found.evidence) == ("openapi", "top-level key 'openapi'")
    fmt, docs = _load(_write(tmp_path, "spec.json", text))
    assert fmt == "openapi" and any("List pets" in d.text for d in docs)


def test_swagger_key_and_a_nested_openapi_string_are_told_apart() -> None:
    assert detect_format("s.json", json.dumps({"definitions": {}, "swagger": "2.0", "paths": {}}).encode()) == "openapi"
    # "openapi" only as a nested key or value: not a spec
    nested = {"description": 'see "openapi": in the spec', "x": {"openapi": "3.0"}}
    assert detect_format("n.json", json.dumps(nested).encode()) == "json-text"


def test_docserver_record_and_list_of_records(tmp_path: Path) -> None:
    record = {"url": "https://docs.example/guide/intro.md", "content": "# Intro\n\nHello there.",
              "item_type": "page", "module_path": "guide/intro.md", "extracted_at": "2024-01-01"}
    assert detect_format("r.json", json.dumps(record).encode()) == "docserver-json"
    fmt, docs = _load(_write(tmp_path, "records.json", json.dumps([record, {**record, "content": "Second page."},
                                                                    {**record, "content": "  "}])))
    assert fmt == "docserver-json"
    assert [d.path for d in docs] == ["records.json#0", "records.json#1"]
    assert "Hello there." in docs[0].text and docs[0].metadata["url"] == record["url"]


def test_json_schema_anchor_idl_and_other_json_load_as_structured_text(tmp_path: Path) -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Pet",
              "type": "object", "properties": {"name": {"type": "string", "description": "The pet's name"}}}
    idl = {"version": "0.1.0", "name": "escrow",
           "instructions": [{"name": "initialize", "accounts": [{"name": "vault", "isMut": True}], "args": []}],
           "accounts": [{"name": "Vault", "type": {"kind": "struct", "fields": []}}]}
    other = {"compilerOptions": {"strict": True, "target": "es2022"}}
    for name, value, kind, title in (("schema.json", schema, "json-schema", "Pet"),
                                     ("idl.json", idl, "anchor-idl", "escrow"),
                                     ("tsconfig.json", other, "json", "tsconfig.json")):
        fmt, docs = _load(_write(tmp_path, name, json.dumps(value)))
        assert fmt == "json-text", name
        assert len(docs) == 1 and docs[0].path == name
        doc = docs[0]
        assert doc.metadata["json_kind"] == kind and doc.metadata["format"] == "json-text"
        assert doc.title == title
        assert json.loads("{" + ",\n".join(b.text for b in doc.blocks) + "}") == value  # pretty JSON, per key
        assert "\n  " in doc.text  # pretty-printed, not one line
    idl_doc = _load(_write(tmp_path, "idl.json", json.dumps(idl)))[1][0]
    assert ("instructions",) in [b.heading_path for b in idl_doc.blocks]


# --------------------------------------------------------------------------- YAML


def test_yaml_openapi_key_anywhere_at_column_zero(tmp_path: Path) -> None:
    spec = ("components:\n  schemas: {}\ninfo:\n  title: Pets\n  version: '1'\n"
            "paths:\n  /pets:\n    get:\n      summary: List pets\n      responses:\n"
            "        '200':\n          description: ok\nopenapi: 3.0.3\n")
    fmt, docs = _load(_write(tmp_path, "api.yaml", spec))
    assert fmt == "openapi" and any("List pets" in d.text for d in docs)
    assert detect_format("old.yml", b"info: {title: x}\nswagger: '2.0'\npaths: {}\n") == "openapi"


def test_other_yaml_is_text_not_refused_and_not_openapi(tmp_path: Path) -> None:
    workflow = ("# CI workflow: runs the tests\nname: ci\non: [push]\n"
                "jobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - run: pytest  # openapi: not a key\n")
    fmt, docs = _load(_write(tmp_path, "ci.yml", workflow))
    assert fmt == "yaml-text"
    doc = docs[0]
    assert doc.metadata["format"] == "yaml-text" and doc.metadata["json_kind"] == "json"
    assert "# CI workflow" in doc.text and "runs-on: ubuntu-latest" in doc.text  # as written, comments kept
    assert ("jobs",) in [b.heading_path for b in doc.blocks]
    multi = _load(_write(tmp_path, "k8s.yaml", "kind: Service\nmetadata:\n  name: a\n---\nkind: Pod\n"))[1][0]
    assert "kind: Pod" in multi.text and "yaml_error" in multi.metadata


# --------------------------------------------------------------------------- extension-less / unknown


def test_extensionless_and_unknown_extension_text(tmp_path: Path) -> None:
    fmt, docs = _load(_write(tmp_path, "NOTES", "Release notes\n\nThe café opens at 9.\n"))
    assert fmt == "text" and "café" in docs[0].text and "encoding" not in docs[0].metadata
    fmt, docs = _load(_write(tmp_path, "README", "# Project\n\nIntro.\n\n## Install\n\nRun it.\n"))
    assert fmt == "markdown" and docs[0].title == "Project"
    assert detect_format("notes/#ideas", b"#!/bin/sh\necho hi\n") == "text"  # a shebang is not a heading
    ru = ("Урок 1. Введение в язык\n\nЭтот учебник рассказывает, как писать программы. "
          "Каждая глава содержит примеры и упражнения для самостоятельной работы.\n")
    for enc in ("utf-8", "cp1251"):
        fmt, docs = _load(_write(tmp_path, "tutor1.ru", ru.encode(enc)))
        assert fmt == "text", enc
        assert docs[0].text.startswith("Урок 1. Введение"), enc
        assert docs[0].metadata.get("encoding", "utf-8") == enc.replace("utf-8", "utf-8"), enc


@pytest.mark.parametrize("payload, kind", [
    (b"\x89PNG\r\n\x1a\n" + bytes(200), "PNG image"),
    (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, "ELF executable"),
    (b"PK\x03\x04" + bytes(100), "ZIP archive"),
    (bytes(range(256)) * 8, "control bytes"),
])
def test_binary_unknown_files_are_refused_with_a_reason(payload: bytes, kind: str) -> None:
    with pytest.raises(QuarantineError) as err:
        detect_format("assets/logo", payload)
    assert err.value.reason.startswith("binary file (") and kind in err.value.reason


def test_pdf_and_docx_are_recognised_without_their_extension(tmp_path: Path) -> None:
    assert detect_format("downloads/report", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n") == "pdf"
    path = _make_docx(tmp_path / "x.docx")
    assert detect_format("downloads/manual", path.read_bytes()) == "docx"


# --------------------------------------------------------------------------- encodings


def test_latin1_and_cp1252_markdown_decode_and_record_the_encoding(tmp_path: Path) -> None:
    latin1 = "# Café für Anfänger\n\nDer Bär isst Müsli im Café; naïve façade, Größe ändern.\n"
    fmt, docs = _load(_write(tmp_path, "latin1.md", latin1.encode("latin-1")))
    assert fmt == "markdown" and docs[0].text == latin1.strip() and docs[0].title == "Café für Anfänger"
    assert docs[0].metadata["encoding"] in ("cp1252", "iso8859-1")
    cp1252 = "# Preise\n\n“Smart quotes” cost 5 € — naïve über café.\n"
    docs = _load(_write(tmp_path, "cp1252.md", cp1252.encode("cp1252")))[1]
    assert docs[0].text == cp1252.strip() and docs[0].metadata["encoding"] == "cp1252"
    utf8 = _load(_write(tmp_path, "utf8.md", cp1252))[1][0]
    assert "encoding" not in utf8.metadata  # the common case stays quiet


def test_utf16_le_without_bom(tmp_path: Path) -> None:
    body = "Grüße aus Köln\n\nPlain text stored as UTF-16 by a Windows editor.\n"
    fmt, docs = _load(_write(tmp_path, "windows.txt", body.encode("utf-16-le")))
    assert fmt == "text" and docs[0].text == body.strip() and docs[0].metadata["encoding"] == "utf-16-le"
    assert detect_format("WINDOWS_NOTES", body.encode("utf-16-le")) == "text"


def test_mixed_or_hopeless_bytes_are_still_refused() -> None:
    mixed = b"# Caf\xc3\xa9\n\n" + b"Some text. " * 50 + b"\nna\xefve \xc3\x28 text\n"
    with pytest.raises(QuarantineError, match="invalid UTF-8"):
        decode_text_with_encoding(mixed)
    assert decode_text_with_encoding("Ünïcödé".encode())[1] == "utf-8"


# --------------------------------------------------------------------------- Word


def _make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.core_properties.title = "Operator manual"
    document.add_heading("Operator manual", level=0)  # style "Title"
    document.add_paragraph("This manual explains the service.")
    document.add_heading("Installation", level=1)
    document.add_paragraph("Install the package first.")
    document.add_paragraph("# not a heading, just text", style="Normal")
    document.add_heading("Requirements", level=2)
    document.add_paragraph("A recent Linux", style="List Bullet")
    table = document.add_table(rows=2, cols=3)
    for cell, text in zip(table.rows[0].cells, ("Name", "Version", "Notes"), strict=True):
        cell.text = text
    for cell, text in zip(table.rows[1].cells, ("PostgreSQL", "16", "with pgvector"), strict=True):
        cell.text = text
    document.add_heading("Usage", level=1)
    document.add_paragraph("Run the pipeline.")
    document.save(str(path))
    return path


def test_docx_headings_paragraphs_and_tables(tmp_path: Path) -> None:
    fmt, docs = _load(_make_docx(tmp_path / "manual.docx"))
    assert fmt == "docx" and len(docs) == 1
    doc = docs[0]
    assert doc.title == "Operator manual" and doc.metadata["format"] == "docx" and doc.metadata["headings"] == 4
    paths = {b.text.splitlines()[-1]: b.heading_path for b in doc.blocks}
    assert paths["Install the package first."] == ("Operator manual", "Installation")
    assert paths["# not a heading, just text"] == ("Operator manual", "Installation")
    assert paths["- A recent Linux"] == ("Operator manual", "Installation", "Requirements")
    assert paths["Run the pipeline."] == ("Operator manual", "Usage")
    table = next(b for b in doc.blocks if b.kind == "table")
    assert table.text == "Name | Version | Notes\nPostgreSQL | 16 | with pgvector"
    assert table.heading_path == ("Operator manual", "Installation", "Requirements")
    assert "## Installation\n\nInstall the package first." in doc.text


@pytest.mark.parametrize("payload, reason", [
    (b"this is not a zip file at all", "not a ZIP archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "OLE file"),
    (b"PK\x03\x04" + bytes(100), "broken ZIP archive"),
])
def test_corrupt_docx_is_refused_naming_the_problem(payload: bytes, reason: str) -> None:
    with pytest.raises(QuarantineError) as err:
        get_parser("docx")(payload, ParseContext("bad.docx", "docs", "test", "docx"))
    assert reason in err.value.reason


def test_docx_without_a_document_part_or_truncated(tmp_path: Path) -> None:
    import zipfile

    other = tmp_path / "other.docx"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(QuarantineError, match="no word/document.xml"):
        get_parser("docx")(other.read_bytes(), ParseContext("o.docx", "docs", "test", "docx"))
    good = _make_docx(tmp_path / "good.docx").read_bytes()
    with pytest.raises(QuarantineError, match="corrupt .docx"):
        get_parser("docx")(good[: len(good) // 2], ParseContext("t.docx", "docs", "test", "docx"))


# --------------------------------------------------------------------------- hostile input


def _no_crash(path: Path, rel: str | None = None) -> list[ParsedDocument] | QuarantineError:
    try:
        return _load(path, rel)[1]
    except QuarantineError as exc:
        return exc


def test_truncated_and_deeply_nested_json_are_refused_with_a_reason(tmp_path: Path) -> None:
    truncated = _no_crash(_write(tmp_path, "cut.json", '{"openapi": "3.0.0", "info": {"title": "x"'))
    assert isinstance(truncated, QuarantineError) and "invalid JSON at line 1" in truncated.reason
    for name, payload in (("deep.json", "[" * 100_000 + "]" * 100_000), ("deep-obj.json", '{"a":' * 50_000 + "1" + "}" * 50_000),
                          ("deep.yaml", "a: " + "[" * 5_000 + "]" * 5_000)):
        result = _no_crash(_write(tmp_path, name, payload))
        assert isinstance(result, QuarantineError), name
        assert "nested" in result.reason, (name, result.reason)


def test_huge_single_line_files_load_as_text_quickly(tmp_path: Path) -> None:
    line = ("word " * 1_000_000).encode()  # 5 MB, no newline
    start = time.monotonic()
    for name in ("huge", "huge.txt", "huge.md"):
        docs = _no_crash(_write(tmp_path, name, line))
        assert isinstance(docs, list) and docs[0].text.startswith("word word"), name
    big_json = json.dumps({"data": ["x" * 100] * 50_000})  # 5 MB on one line
    docs = _no_crash(_write(tmp_path, "big.json", big_json))
    assert isinstance(docs, list) and docs[0].metadata["json_kind"] == "json"
    assert time.monotonic() - start < 30


def test_detection_raises_nothing_but_quarantine_errors(tmp_path: Path) -> None:
    import random

    rng = random.Random(15)
    names = ["a.json", "a.yaml", "a.yml", "README", "x.ru", "a.docx"]
    payloads = [b"", b"   \n", b"\xff\xfe", b"{", b"[", b"\x00" * 10, b"{\"content\": 5}", b"[{\"content\": null}]",
                b"openapi: [", b"- - - -", "é".encode("latin-1") * 3] + [rng.randbytes(rng.randint(1, 3000)) for _ in range(40)]
    for name in names:
        for payload in payloads:
            _no_crash(_write(tmp_path, "f", payload), rel=name)


# --------------------------------------------------------------------------- through the pipeline


def _job(path: Path) -> FileJob:
    return FileJob(source_name="test", doc_type="docs", rel_path=path.name, abs_path=str(path), fmt="auto",
                   refusal=None, default_metadata={}, options={}, chunking=ChunkingConfig(), limits=ParseLimits(),
                   dims=8, model="test-model")


def test_parse_file_records_the_encoding_in_row_metadata_and_never_reports_a_parser_error(tmp_path: Path) -> None:
    result = parse_file(_job(_write(tmp_path, "legacy.md", "# Résumé\n\nÉté à Zürich, “quoted”.\n".encode("cp1252"))))
    assert result.quarantine is None and result.rows
    metadata = result.rows[0][7]
    assert metadata["encoding"] == "cp1252" and "Été à Zürich" in result.rows[0][6]
    for name, payload in (("cut.json", b'{"components": {'), ("deep.json", b"[" * 50_000),
                          ("logo", b"\x89PNG\r\n\x1a\n" + bytes(64)), ("bad.docx", b"PK\x03\x04junk")):
        refused = parse_file(_job(_write(tmp_path, name, payload)))
        assert refused.quarantine is not None, name
        assert not refused.quarantine["reason"].startswith("parser error"), refused.quarantine


def test_svg_images_are_refused_as_images_not_loaded_as_text() -> None:
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0h24v24H0z"/></svg>'
    for name, data in (("logo.svg", svg), ("icon.svg", svg.split(b"\n", 1)[1])):
        with pytest.raises(QuarantineError) as exc:
            detect(f"img/{name}", data)
        assert exc.value.reason == f"image file (SVG): '{name}'" and "exclude" in exc.value.hint
    # XML that is not a picture is still text.
    assert detect("data/feed.xml", b'<?xml version="1.0"?><rss><channel>news</channel></rss>').fmt == "text"
