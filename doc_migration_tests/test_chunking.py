from __future__ import annotations

from doc_migration.chunking import chunk_document
from doc_migration.manifest import ChunkingConfig
from doc_migration.sources.base import Block, ParsedDocument
from doc_migration.tokens import count_tokens


def _doc(blocks: list[Block]) -> ParsedDocument:
    return ParsedDocument(path="x.md", blocks=blocks)


def test_small_document_is_one_chunk_with_heading_path() -> None:
    doc = _doc([Block("# Title\n\nIntro text.", ("Title",)), Block("More text.", ("Title",))])
    chunks = chunk_document(doc, ChunkingConfig(max_tokens=200, overlap_tokens=0))
    assert len(chunks) == 1
    assert chunks[0].heading_path == ("Title",)
    assert "Intro text." in chunks[0].text and "More text." in chunks[0].text


def test_code_block_is_never_split_when_it_fits() -> None:
    code = "```rust\n" + "\n".join(f"let x{i} = {i};" for i in range(40)) + "\n```"
    prose = [Block("word " * 60, ("A",)) for _ in range(3)]
    doc = _doc([*prose, Block(code, ("A", "Code"), "code"), *prose])
    cfg = ChunkingConfig(max_tokens=count_tokens(code) + 20, overlap_tokens=0)
    chunks = chunk_document(doc, cfg)
    assert sum(1 for c in chunks if code in c.text) == 1
    assert all(c.token_count <= cfg.max_tokens for c in chunks)


def test_oversized_blocks_are_split_under_the_limit_and_nothing_is_lost() -> None:
    lines = [f"line {i} of a very long code block that goes on" for i in range(600)]
    doc = _doc([Block("\n".join(lines), ("Big",), "code")])
    cfg = ChunkingConfig(max_tokens=200, overlap_tokens=0)
    chunks = chunk_document(doc, cfg)
    assert len(chunks) > 5
    assert all(c.token_count <= 200 for c in chunks)
    joined = "\n".join(c.text for c in chunks)
    assert all(line in joined for line in lines)


def test_hard_limit_holds_for_a_single_enormous_line() -> None:
    doc = _doc([Block("x" * 200_000)])
    chunks = chunk_document(doc, ChunkingConfig(max_tokens=8191, overlap_tokens=0))
    assert all(c.token_count <= 8191 for c in chunks)
    assert sum(len(c.text) for c in chunks) >= 200_000


def test_overlap_repeats_the_tail_of_the_previous_chunk() -> None:
    paragraphs = [Block(f"Paragraph {i}. " + "alpha beta gamma " * 30, ("S",)) for i in range(6)]
    chunks = chunk_document(_doc(paragraphs), ChunkingConfig(max_tokens=150, overlap_tokens=20))
    assert len(chunks) >= 3
    tail = chunks[0].text[-40:].split()[-1]
    assert tail in chunks[1].text


def test_multibyte_text_is_split_without_breaking_characters() -> None:
    text = "快速傳輸協定的連線遷移與擁塞控制。" * 3000  # one enormous CJK line, no separators
    chunks = chunk_document(_doc([Block(text)]), ChunkingConfig(max_tokens=300, overlap_tokens=30))
    assert all(c.token_count <= 300 for c in chunks)
    assert all("\ufffd" not in c.text for c in chunks)
    assert chunks[0].text.startswith("快速傳輸") and text.endswith(chunks[-1].text[-20:])
