"""SQL dump parser: real doc-server export, tricky literals, COPY, and per-row problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from doc_migration.sources.base import ParseContext, QuarantineError
from doc_migration.sources.sqldump import DocumentList, RowProblem, parse, parse_dump

COLS = "(id, doc_type, source_name, doc_path, content, metadata, embedding, token_count, created_at, updated_at)"


def _ctx(doc_type: str = "jupiter", **options: object) -> ParseContext:
    return ParseContext(rel_path="exports/dump.sql", doc_type=doc_type, source_name="dump", fmt="sql-dump",
                        options=options)


def test_tricky_literals_multirow_values_and_vectors() -> None:
    # Dump text for the reader, never executed: f-strings here are not query construction.
    sql = f"""
-- header comment with a 'quote'
SET standard_conforming_strings = on;
/* block /* nested */ comment; with semicolon */
BEGIN;
INSERT INTO public.documents {COLS} VALUES
  (gen_random_uuid(), 'jupiter', 'jup-docs', 'a.md', 'It''s a line
and a second; line', '{{"embedding_model": "text-embedding-3-large", "k": [1, 2]}}'::jsonb,
   '[0.5,-1.25,3e-2]'::vector(3), 12, NOW(), NOW()),
  (gen_random_uuid(), 'other', 'jup-docs', 'b.md', E'tab\\there\\nnewline \\'q\\' caf\\303\\251 \\u00e9',
   '{{}}', '[1,2,3]', NULL, CURRENT_TIMESTAMP, NOW()),
  (DEFAULT, 'jupiter', NULL, 'c.md', $body$dollar 'quoted' text$body$, NULL, ARRAY[1, -2.5, 3]::vector,
   NULL, NOW(), NOW())
ON CONFLICT (doc_path) DO NOTHING;
INSERT INTO other_table (x) VALUES ('ignored');
COMMIT;
"""  # noqa: S608
    docs = parse(sql.encode(), _ctx())
    assert isinstance(docs, DocumentList) and docs.problems == []
    a, b, c = docs
    assert (a.path, a.source_name) == ("a.md", "jup-docs")
    assert a.text == "It's a line\nand a second; line"
    assert len(a.blocks) == 1 and a.blocks[0].kind == "text"
    assert a.embedding == [0.5, -1.25, 0.03]
    assert a.embedding_model == "text-embedding-3-large"
    assert a.metadata == {"embedding_model": "text-embedding-3-large", "k": [1, 2]}
    assert b.text == "tab\there\nnewline 'q' café é"
    assert b.metadata == {"doc_type_in_dump": "other"}
    assert b.embedding == [1.0, 2.0, 3.0] and b.embedding_model is None
    assert c.text == "dollar 'quoted' text" and c.source_name is None
    assert c.embedding == [1.0, -2.5, 3.0]


def test_bad_rows_are_skipped_and_reported_not_fatal() -> None:
    sql = f"""INSERT INTO documents {COLS} VALUES
  (gen_random_uuid(), 'jupiter', 's', 'good.md', 'fine', '{{}}', NULL, NULL, NOW(), NOW()),
  (gen_random_uuid(), 'jupiter', 's', 'empty.md', '   ', '{{}}', NULL, NULL, NOW(), NOW()),
  (gen_random_uuid(), 'jupiter', 's', 'nullc.md', NULL, '{{}}', NULL, NULL, NOW(), NOW()),
  (gen_random_uuid(), 'jupiter', 's', NULL, 'no path', '{{}}', NULL, NULL, NOW(), NOW()),
  (gen_random_uuid(), 'jupiter', 's', 'weird.md', 'x', '{{}}', NULL, NULL, NOW() + interval '1 day', NOW()),
  (gen_random_uuid(), 'jupiter', 's', 'vec.md', 'kept', '{{not json', '[1,nan]', NULL, NOW(), NOW()),
  (gen_random_uuid(), 'jupiter', 's', 'good.md', 'dupe', '{{}}', NULL, NULL, NOW(), NOW());
INSERT INTO documents (doc_path, content) VALUES ('short.md');
INSERT INTO documents (doc_path, content) VALUES ('late.md', 'still read');
"""  # noqa: S608
    docs = parse(sql.encode(), _ctx())
    assert [d.path for d in docs] == ["good.md", "vec.md", "late.md"]
    vec = docs[1]
    assert vec.embedding is None and "embedding_dropped" in vec.metadata
    problems = {(p.doc_path, p.skipped): p for p in docs.problems}
    assert all(isinstance(p, RowProblem) for p in docs.problems)
    assert problems[("empty.md", True)].reason == "empty content"
    assert problems[("nullc.md", True)].reason == "content is NULL"
    assert problems[(None, True)].row in (4, 5, 8)
    assert "duplicate doc_path" in problems[("good.md", True)].reason
    assert problems[("good.md", True)].line == 8
    assert any("unreadable value" in p.reason for p in docs.problems)  # NOW() + interval
    assert any("1 values for 2 columns" in p.reason for p in docs.problems)
    assert {p.reason.split(":")[0] for p in docs.problems if not p.skipped} == {
        "metadata dropped", "embedding dropped (vector has NaN or infinite components); the row will be re-embedded"
    }
    with pytest.raises(QuarantineError, match="bad rows in SQL dump"):
        parse(sql.encode(), _ctx(on_row_error="quarantine"))


def test_copy_from_stdin_block() -> None:
    sql = (
        "SET client_encoding = 'UTF8';\n"
        "COPY public.documents (doc_type, source_name, doc_path, content, metadata, embedding) FROM stdin;\n"
        "jupiter\tsrc\tp1.md\tline one\\nline two\\twith tab \\\\ backslash\t{\"a\": 1}\t[0.1,0.2]\n"
        "jupiter\t\\N\tp2.md\tcaf\\303\\251\t\\N\t\\N\n"
        "\\.\n"
        "SELECT pg_catalog.setval('x', 1, true);\n"
    )
    p1, p2 = parse(sql.encode(), _ctx())
    assert p1.text == "line one\nline two\twith tab \\ backslash"
    assert p1.metadata == {"a": 1} and p1.embedding == [0.1, 0.2] and p1.source_name == "src"
    assert p2.text == "café" and p2.source_name is None and p2.embedding is None


def test_standard_conforming_strings_off() -> None:
    sql = "SET standard_conforming_strings = off;\nINSERT INTO documents (doc_path, content) VALUES ('x.md', 'a\\nb \\'q\\'');"
    (doc,) = parse(sql.encode(), _ctx())
    assert doc.text == "a\nb 'q'"


def test_file_level_failures() -> None:
    with pytest.raises(QuarantineError, match=r"SQL syntax error at line 2: unterminated string"):
        parse(b"BEGIN;\nINSERT INTO documents (doc_path, content) VALUES ('a.md', 'never closed);\n", _ctx())
    with pytest.raises(QuarantineError, match="no INSERT or COPY rows"):
        parse(b"BEGIN;\nCREATE TABLE documents (id int);\nCOMMIT;\n", _ctx())
    with pytest.raises(QuarantineError, match="no usable rows"):
        parse(b"INSERT INTO documents (doc_path, content) VALUES ('a.md', '');", _ctx())
    with pytest.raises(QuarantineError, match="empty file"):
        parse(b"", _ctx())


def test_sql_is_never_executed_only_read() -> None:
    sql = "INSERT INTO documents (doc_path, content) VALUES ('x.md', 'DROP TABLE documents; --');"
    (doc,) = parse(sql.encode(), _ctx())
    assert doc.text == "DROP TABLE documents; --"


@pytest.mark.shared_corpus
def test_real_jupiter_export(shared_corpus: Path) -> None:
    data = (shared_corpus / "doc-server-exports/jupiter-documents.sql").read_bytes()
    result = parse_dump(data, _ctx())
    assert result.problems == [] and result.rows_seen == 242
    docs = parse(data, _ctx())
    assert len(docs) == 242
    assert len({d.path for d in docs}) == 242
    first = docs[0]
    assert first.path == "temp_jupiter_docs/docs/misc/13-integrator-guidelines.md"
    assert first.source_name == "jupiter-docs"
    assert first.metadata == {} and first.embedding is None
    assert first.text.startswith('sidebar_label: "Integrator Guidelines"\ndescription:')
    assert docs[-1].path == "temp_jupiter_docs/src/pages/blog-redirect.md"
    license_doc = next(d for d in docs if "LICENSEE'S PRODUCT" in d.text)
    assert "SUCH TRANSACTING PARTY'S SOLE RESPONSIBILITY" in license_doc.text and "\n" in license_doc.text
    assert all(d.source_name == "jupiter-docs" for d in docs)
