"""OpenAPI parser: one readable document per operation, $ref resolution, hostile input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doc_migration.sources.base import ParseContext, ParseLimits, QuarantineError
from doc_migration.sources.openapi import parse

PETSTORE_V3 = """
openapi: 3.0.3
info:
  title: Petstore
  version: 1.2.0
  description: Pets for everyone.
paths:
  /pets/{petId}:
    parameters:
      - name: petId
        in: path
        required: true
        description: Id of the pet.
        schema: {type: string}
    get:
      tags: [pets]
      summary: Get a pet
      operationId: getPet
      description: Returns one pet, with its owner.
      parameters:
        - $ref: '#/components/parameters/Verbose'
      responses:
        '200':
          description: The pet.
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Pet'}
        '404':
          $ref: '#/components/responses/NotFound'
    post:
      summary: Update a pet
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Pet'}
      responses:
        '204': {description: Updated.}
components:
  parameters:
    Verbose:
      name: verbose
      in: query
      schema: {type: boolean, default: false}
      description: Include everything.
  responses:
    NotFound:
      description: No such pet.
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Error'}
  schemas:
    Pet:
      type: object
      required: [name]
      properties:
        name: {type: string, description: The pet's name.}
        species: {type: string, enum: [cat, dog]}
        owner: {$ref: '#/components/schemas/Person'}
        on: {type: boolean, description: YAML 1.1 would turn this key into True.}
    Person:
      type: object
      properties:
        fullName: {type: string, description: Owner's full name.}
        pets:
          type: array
          items: {$ref: '#/components/schemas/Pet'}
    Error:
      type: object
      properties:
        message: {type: string}
"""

SWAGGER_V2 = {
    "swagger": "2.0",
    "info": {"title": "Legacy API", "version": "0.9"},
    "produces": ["application/json"],
    "paths": {
        "/users": {
            "post": {
                "summary": "Create user",
                "operationId": "createUser",
                "parameters": [
                    {"name": "body", "in": "body", "required": True, "schema": {"$ref": "#/definitions/User"}},
                    {"name": "X-Trace", "in": "header", "type": "string", "description": "Trace id."},
                ],
                "responses": {"201": {"description": "Created", "schema": {"$ref": "#/definitions/User"}}},
            }
        }
    },
    "definitions": {
        "User": {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}
    },
}


def _ctx(rel_path: str = "api/petstore.yaml", limits: ParseLimits | None = None) -> ParseContext:
    return ParseContext(rel_path=rel_path, doc_type="api", source_name="apis", fmt="openapi",
                        limits=limits or ParseLimits())


def test_one_document_per_operation_with_resolved_refs() -> None:
    docs = parse(PETSTORE_V3.encode(), _ctx())
    assert [d.path for d in docs] == ["api/petstore.yaml#GET /pets/{petId}", "api/petstore.yaml#POST /pets/{petId}"]
    get = docs[0]
    assert get.title == "GET /pets/{petId} — Get a pet"
    assert get.metadata == {
        "api_title": "Petstore", "api_version": "1.2.0", "openapi_version": "3.0.3",
        "method": "GET", "endpoint": "/pets/{petId}", "tags": ["pets"], "operation_id": "getPet",
        "refs": ["#/components/parameters/Verbose", "#/components/responses/NotFound",
                 "#/components/schemas/Error", "#/components/schemas/Person", "#/components/schemas/Pet"],
    }
    text = get.text
    assert text.startswith("GET /pets/{petId} — Get a pet\nAPI: Petstore (version 1.2.0)")
    assert "Returns one pet, with its owner." in text
    # Path-level and referenced parameters, with location, requiredness and type.
    assert "- petId (path, required, string): Id of the pet." in text
    assert "- verbose (query, boolean): Include everything. [default false]" in text
    # $ref-resolved schema fields, nested, with enum; the Pet -> Person -> Pet cycle is cut.
    assert "- name (string, required): The pet's name." in text
    assert '- species (string) [one of: "cat", "dog"]' in text
    assert "  - fullName (string): Owner's full name." in text
    assert "  - pets (array of Pet: object) (recursive, see above)" in text
    assert "- on (boolean)" in text  # YAML 1.2 booleans: the key stays "on"
    # Referenced response and its schema.
    assert "Response 404: No such pet." in text and "- message (string)" in text
    assert [b.heading_path for b in get.blocks][:3] == [
        ("GET /pets/{petId}",), ("GET /pets/{petId}", "Parameters"), ("GET /pets/{petId}", "Responses", "200")
    ]
    post = docs[1]
    assert "Request body (required):" in post.text and "- name (string, required)" in post.text
    assert post.metadata["operation_id"] is None and post.metadata["tags"] == []


def test_swagger2_json_body_and_definitions() -> None:
    (doc,) = parse(json.dumps(SWAGGER_V2).encode(), _ctx("legacy/swagger.json"))
    assert doc.path == "legacy/swagger.json#POST /users"
    assert doc.metadata["openapi_version"] == "2.0"
    assert doc.metadata["refs"] == ["#/definitions/User"]
    assert "- X-Trace (header, string): Trace id." in doc.text
    assert "Request body (required):\nSchema: User: object" in doc.text
    assert "- email (string (email))" in doc.text
    assert "Response 201: Created" in doc.text


def test_unresolved_and_external_refs_are_reported_not_fatal() -> None:
    spec = {
        "openapi": "3.1.0", "info": {"title": "T", "version": "1"},
        "paths": {"/x": {"get": {
            "parameters": [{"$ref": "#/components/parameters/missing"}],
            "responses": {"200": {"description": "ok", "content": {"application/json": {
                "schema": {"$ref": "other.yaml#/Thing"}}}}}}}},
    }
    (doc,) = parse(json.dumps(spec).encode(), _ctx("t.json"))
    assert doc.metadata["unresolved_refs"] == ["#/components/parameters/missing", "other.yaml#/Thing"]
    assert "missing" in doc.text and "external reference other.yaml#/Thing" in doc.text


def test_jsonrpc_style_single_post() -> None:
    spec = {
        "openapi": "3.1.0", "info": {"title": "RPC", "version": "1"},
        "paths": {"/": {"post": {"summary": "getSlot", "requestBody": {"content": {"application/json": {
            "schema": {"type": "object", "properties": {
                "jsonrpc": {"type": "string", "enum": ["2.0"]},
                "method": {"type": "string", "enum": ["getSlot"]}}}}}},
            "responses": {"200": {"description": "ok"}}}}},
    }
    (doc,) = parse(json.dumps(spec).encode(), _ctx("rpc/getSlot.json"))
    assert doc.path == "rpc/getSlot.json#POST /"
    assert doc.metadata["jsonrpc_method"] == "getSlot"
    assert "JSON-RPC method: getSlot" in doc.text


def test_spec_without_operations() -> None:
    spec = "openapi: 3.0.0\ninfo:\n  title: Shapes\n  version: '1'\n  description: Only schemas here.\npaths: {}\n"
    (doc,) = parse(spec.encode(), _ctx("shapes.yaml"))
    assert doc.path == "shapes.yaml"
    assert "Only schemas here." in doc.text
    assert doc.metadata["operations"] == 0
    with pytest.raises(QuarantineError, match="no operations and no description"):
        parse(b"openapi: 3.0.0\ninfo: {title: Empty, version: '1'}\npaths: {}\n", _ctx("empty.yaml"))


def test_not_openapi() -> None:
    with pytest.raises(QuarantineError) as exc:
        parse(b"name: my-chart\nversion: 1.0\n", _ctx("chart.yaml"))
    assert exc.value.reason == "not an OpenAPI document"
    assert exc.value.hint
    with pytest.raises(QuarantineError, match="not an OpenAPI document"):
        parse(b"- just\n- a list\n", _ctx("list.yaml"))


def test_invalid_json_and_yaml_name_line_and_column() -> None:
    with pytest.raises(QuarantineError) as exc:
        parse(b'{\n  "openapi": "3.0.0",\n  "info": {"title": }\n}', _ctx("bad.json"))
    assert exc.value.reason.startswith("invalid JSON at line 3 column 21")
    with pytest.raises(QuarantineError) as exc:
        parse(b"openapi: 3.0.0\ninfo:\n  title: [unclosed\n  version: 1\n", _ctx("bad.yaml"))
    assert exc.value.reason.startswith("invalid YAML at line")


def test_yaml_billion_laughs_is_refused() -> None:
    # Nine levels of nine aliases: only 81 aliases, but 9**9 nodes once expanded.
    lines = ["openapi: 3.0.0", 'a0: &a0 ["lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    with pytest.raises(QuarantineError, match="expand to more than"):
        parse("\n".join(lines).encode(), _ctx("bomb.yaml"))


def test_yaml_alias_count_limit() -> None:
    doc = "openapi: 3.0.0\nx: &x 1\nys: [" + ", ".join(["*x"] * 1001) + "]\n"
    with pytest.raises(QuarantineError, match="more than 1000 aliases"):
        parse(doc.encode(), _ctx("aliases.yaml"))
    with pytest.raises(QuarantineError, match="no operations"):  # within a raised limit it loads
        parse(doc.encode(), _ctx("aliases.yaml", ParseLimits(max_yaml_aliases=5000)))


def test_recursive_yaml_anchor_is_refused() -> None:
    with pytest.raises(QuarantineError, match="recursive YAML alias"):
        parse(b"openapi: 3.0.0\nloop: &l\n  self: *l\n", _ctx("loop.yaml"))


def test_deep_nesting_is_refused_before_parsing() -> None:
    deep_json = b'{"openapi": "3.0.0", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    with pytest.raises(QuarantineError, match="nested deeper than 200"):
        parse(deep_json, _ctx("deep.json"))
    deep_yaml = b"openapi: 3.0.0\nx: " + b"[" * 10_000 + b"]" * 10_000 + b"\n"
    with pytest.raises(QuarantineError, match="nested deeper than 200"):
        parse(deep_yaml, _ctx("deep.yaml"))


def test_deeply_nested_schema_renders_bounded() -> None:
    schema: dict[str, object] = {"type": "string"}
    for i in range(60):
        schema = {"type": "object", "properties": {f"level{i}": schema}}
    spec = {"openapi": "3.0.0", "info": {"title": "D", "version": "1"},
            "paths": {"/d": {"get": {"responses": {"200": {"description": "ok", "content": {
                "application/json": {"schema": schema}}}}}}}}
    (doc,) = parse(json.dumps(spec).encode(), _ctx("d.json"))
    assert "nested deeper than shown" in doc.text
    assert len(doc.text.splitlines()) < 40


@pytest.mark.shared_corpus
def test_real_helius_jsonrpc_yaml(shared_corpus: Path) -> None:
    path = shared_corpus / "real-formats/solana/helius-labs__docs/openapi/rpc-http/getBalance.yaml"
    (doc,) = parse(path.read_bytes(), _ctx("openapi/rpc-http/getBalance.yaml"))
    assert doc.path == "openapi/rpc-http/getBalance.yaml#POST /"
    assert (doc.metadata["method"], doc.metadata["endpoint"], doc.metadata["operation_id"]) == ("POST", "/", "getBalance")
    assert doc.metadata["openapi_version"] == "3.1.0" and doc.metadata["api_title"] == "Solana RPC API"
    assert "Summary: getBalance" in doc.text
    assert "- commitment (string): The commitment level for the request." in doc.text
    # 400 response's schema is $ref ErrorResponse, resolved into its fields
    assert "#/components/schemas/ErrorResponse" in doc.metadata["refs"]
    assert "Response 400" in doc.text and "Schema: ErrorResponse: object" in doc.text


@pytest.mark.shared_corpus
def test_real_crlf_chinese_yaml(shared_corpus: Path) -> None:
    path = shared_corpus / "real-formats/solana/helius-labs__docs/zh/openapi/rpc-http/getBlockTime.yaml"
    assert b"\r\n" in path.read_bytes()
    (doc,) = parse(path.read_bytes(), _ctx("zh/getBlockTime.yaml"))
    assert "\r" not in doc.text
    assert "将Solana区块槽号转换为其对应的现实世界时间戳" in doc.text


@pytest.mark.shared_corpus
def test_real_raydium_json_parameters(shared_corpus: Path) -> None:
    path = shared_corpus / "real-formats/raydium/zoidz123__raydium-docs-v2/api-reference/specs/trade-api-openapi.json"
    docs = parse(path.read_bytes(), _ctx("specs/trade-api-openapi.json"))
    quote = next(d for d in docs if d.metadata["endpoint"] == "/compute/swap-base-in")
    assert quote.metadata["method"] == "GET"
    assert "Summary: Get swap quote" in quote.text
    assert "- inputMint (query, required, string): Token mint address to swap from." in quote.text
    assert "  - routePlan (array of object)" in quote.text


@pytest.mark.shared_corpus
def test_all_real_openapi_notebook_and_pdf_files(shared_corpus: Path) -> None:
    """Every real OpenAPI/notebook/PDF file parses or is quarantined; nothing else may escape.

    Prints which files were quarantined and why, and the time per format (run with ``-s``).
    """
    import csv
    import time

    from doc_migration.sources import notebook, pdf

    parsers = {"openapi-yaml": parse, "openapi-json": parse, "ipynb": notebook.parse, "pdf": pdf.parse}
    root = shared_corpus / "real-formats"
    with (root / "MANIFEST.tsv").open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["format"] in parsers]
    quarantined: dict[str, str] = {}
    seconds: dict[str, float] = {}
    sizes: dict[str, int] = {}
    docs_per_format: dict[str, int] = {}
    for row in rows:
        fmt, rel = row["format"], row["out_path"]
        data = (root / rel).read_bytes()
        ctx = ParseContext(rel_path=rel, doc_type=row["doc_type"], source_name="real", fmt=fmt)
        started = time.perf_counter()
        try:
            docs = parsers[fmt](data, ctx)
        except QuarantineError as exc:
            quarantined[rel] = str(exc)
            docs = []
        seconds[fmt] = seconds.get(fmt, 0.0) + time.perf_counter() - started
        sizes[fmt] = sizes.get(fmt, 0) + len(data)
        docs_per_format[fmt] = docs_per_format.get(fmt, 0) + len(docs)
        for d in docs:
            assert d.text.strip() and "\x00" not in d.text
            assert d.path.startswith(rel)
    for fmt in sorted(seconds):
        print(f"{fmt}: {docs_per_format[fmt]} documents, {sizes[fmt] / 1e6:.2f} MB in {seconds[fmt]:.2f}s "
              f"({sizes[fmt] / 1e6 / max(seconds[fmt], 1e-9):.1f} MB/s)")
    for rel, why in quarantined.items():
        print(f"quarantined: {rel}: {why}")
    assert len(rows) == 98
    assert set(quarantined) == {"jupyter/jupyter__notebook/ui-tests/test/notebooks/empty.ipynb"}
    assert quarantined["jupyter/jupyter__notebook/ui-tests/test/notebooks/empty.ipynb"].startswith(
        "notebook has no text")
