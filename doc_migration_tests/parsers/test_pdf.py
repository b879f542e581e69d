"""PDF parser: page blocks with page numbers, and refusal of encrypted, scanned and broken files.

Test PDFs are written by hand (``_make_pdf``), including a real RC4 (standard security handler,
revision 2) encryption, so no binary fixtures or extra libraries are needed.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from doc_migration.sources.base import ParseContext, ParseLimits, QuarantineError
from doc_migration.sources.pdf import parse

_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def _padded(pw: str) -> bytes:
    return (pw.encode("latin-1") + _PAD)[:32]


def _make_pdf(pages: list[str], user_password: str | None = None, title: str | None = None) -> bytes:
    """A minimal valid PDF with Helvetica text, one page per entry; optionally RC4-encrypted."""
    n_pages = len(pages)
    objects: dict[int, bytes] = {}
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n_pages))
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[2] = f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode()
    objects[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    streams: dict[int, bytes] = {}
    for i, text in enumerate(pages):
        page_obj, content_obj = 4 + 2 * i, 5 + 2 * i
        objects[page_obj] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_obj} 0 R >>"
        ).encode()
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in text.split("\n"):
            esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({esc}) Tj T*")
        ops.append("ET")
        streams[content_obj] = ("\n".join(ops) if text else "").encode("latin-1")
        objects[content_obj] = b""  # written as a stream below
    info_obj = None
    if title:
        info_obj = 4 + 2 * n_pages
        objects[info_obj] = f"<< /Title ({title}) >>".encode("latin-1")

    file_id = hashlib.md5(b"doc-migration-test").digest()
    key = None
    encrypt_obj = None
    if user_password is not None:
        owner_key = hashlib.md5(_padded("owner-" + user_password)).digest()[:5]
        o_value = _rc4(owner_key, _padded(user_password))
        p_value = -44
        key = hashlib.md5(
            _padded(user_password) + o_value + p_value.to_bytes(4, "little", signed=True) + file_id
        ).digest()[:5]
        u_value = _rc4(key, _PAD)
        encrypt_obj = max(objects) + 1
        objects[encrypt_obj] = (
            f"<< /Filter /Standard /V 1 /R 2 /O <{o_value.hex()}> /U <{u_value.hex()}> /P {p_value} >>"
        ).encode()

    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        offsets[num] = out.tell()
        body = objects[num]
        if num in streams:
            data = streams[num]
            if key is not None:
                obj_key = hashlib.md5(key + num.to_bytes(3, "little") + b"\x00\x00").digest()[:10]
                data = _rc4(obj_key, data)
            out.write(f"{num} 0 obj\n<< /Length {len(data)} >>\nstream\n".encode() + data + b"\nendstream\nendobj\n")
        else:
            out.write(f"{num} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    count = max(objects) + 1
    out.write(f"xref\n0 {count}\n0000000000 65535 f \n".encode())
    for num in range(1, count):
        out.write(f"{offsets[num]:010d} 00000 n \n".encode())
    trailer = f"<< /Size {count} /Root 1 0 R /ID [<{file_id.hex()}> <{file_id.hex()}>]"
    if info_obj:
        trailer += f" /Info {info_obj} 0 R"
    if encrypt_obj:
        trailer += f" /Encrypt {encrypt_obj} 0 R"
    out.write(f"trailer\n{trailer} >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def _ctx(limits: ParseLimits | None = None) -> ParseContext:
    return ParseContext(
        rel_path="papers/test.pdf", doc_type="solana", source_name="papers", fmt="pdf",
        limits=limits or ParseLimits(),
    )


def test_pages_become_blocks_with_page_numbers() -> None:
    data = _make_pdf(["Proof of History (PoH) intro", "", "Tower BFT consensus details"], title="Whitepaper")
    (doc,) = parse(data, _ctx())
    assert doc.path == "papers/test.pdf"
    assert doc.title == "Whitepaper"
    assert [b.heading_path for b in doc.blocks] == [("page 1",), ("page 3",)]
    assert "Proof of History (PoH) intro" in doc.blocks[0].text
    assert "Tower BFT" in doc.blocks[1].text
    assert doc.metadata["page_count"] == 3
    assert doc.metadata["pages"] == [1, 3]
    assert doc.metadata["pages_without_text"] == [2]


def test_max_pdf_pages_stops_reading() -> None:
    data = _make_pdf(["one", "two", "three"])
    (doc,) = parse(data, _ctx(ParseLimits(max_pdf_pages=2)))
    assert [b.heading_path for b in doc.blocks] == [("page 1",), ("page 2",)]
    assert doc.metadata["pages_truncated"] is True
    assert doc.metadata["page_count"] == 3


def test_timeout_between_pages_quarantines() -> None:
    data = _make_pdf(["one", "two"])
    with pytest.raises(QuarantineError, match="timed out"):
        parse(data, _ctx(ParseLimits(parse_timeout_s=-1)))


def test_password_protected_pdf_is_quarantined() -> None:
    data = _make_pdf(["secret text"], user_password="hunter2")
    with pytest.raises(QuarantineError) as exc:
        parse(data, _ctx())
    assert exc.value.reason == "encrypted PDF"
    assert "hunter2" not in str(exc.value)


def test_encrypted_pdf_with_empty_user_password_is_read() -> None:
    """Owner-password-only encryption (print/copy restrictions) opens without a password."""
    data = _make_pdf(["restricted but readable"], user_password="")
    assert b"/Encrypt" in data and b"restricted" not in data  # really encrypted on disk
    (doc,) = parse(data, _ctx())
    assert "restricted but readable" in doc.text


def test_blank_pdf_has_no_text_layer() -> None:
    pdf = pdfium.PdfDocument.new()
    pdf.new_page(612, 792)
    pdf.new_page(612, 792)
    buf = io.BytesIO()
    pdf.save(buf)
    pdf.close()
    with pytest.raises(QuarantineError) as exc:
        parse(buf.getvalue(), _ctx())
    assert exc.value.reason == "PDF has no text layer (scanned?)"
    assert "OCR" in exc.value.hint


def test_truncated_pdf_is_broken() -> None:
    data = _make_pdf(["some text " * 50, "more text " * 50])
    with pytest.raises(QuarantineError, match=r"^broken PDF: truncated"):
        parse(data[: len(data) * 2 // 3], _ctx())


def test_garbage_and_non_pdf_are_broken() -> None:
    with pytest.raises(QuarantineError, match=r"^broken PDF"):
        parse(b"%PDF-1.7\nthis is not really a pdf at all\n%%EOF\n", _ctx())
    with pytest.raises(QuarantineError, match=r"^broken PDF: no %PDF- header"):
        parse(b"<html>not a pdf</html>", _ctx())
    with pytest.raises(QuarantineError, match="empty file"):
        parse(b"", _ctx())


def test_nul_and_control_chars_are_stripped() -> None:
    # PDFium maps undefined glyphs to control characters; none may reach PostgreSQL text.
    data = _make_pdf(["before\x00after\x01x"])
    (doc,) = parse(data, _ctx())
    assert "\x00" not in doc.text and "\x01" not in doc.text
    assert "before" in doc.text


@pytest.mark.shared_corpus
def test_real_whitepaper_page_text(shared_corpus: Path) -> None:
    path = shared_corpus / "real-formats/solana/solana-labs__whitepaper/solana-whitepaper-en.pdf"
    (doc,) = parse(path.read_bytes(), _ctx())
    assert doc.metadata["page_count"] == 32
    assert doc.title == "Solana: A new architecture for a high performance blockchain"
    page1 = doc.blocks[0]
    assert page1.heading_path == ("page 1",)
    assert "Anatoly Yakovenko" in page1.text
    poh = [b for b in doc.blocks if "Proof of History sequence" in b.text]
    assert poh and all(b.heading_path[0].startswith("page ") for b in poh)
