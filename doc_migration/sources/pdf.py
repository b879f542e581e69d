"""PDF files via pypdfium2: one document per file, one text block per page.

Each page is a block whose ``heading_path`` is ``("page N",)``, so every chunk the chunker packs
keeps the page number it came from. PDFs are where hostile or broken input is most common, so
the parser refuses (quarantines) rather than guesses: password-protected, truncated, unreadable
or image-only (scanned) files are reported with what to do about them.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from .base import Block, ParseContext, ParsedDocument, QuarantineError

# PDFium keeps global state and is not thread-safe: one document at a time per process.
_PDFIUM_LOCK = threading.Lock()

# Control characters PDFium emits (e.g. U+0002 for soft hyphens) that are not text; keep \t \n.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_MANY_BLANKS = re.compile(r"\n{3,}")
MAX_PAGES_WITHOUT_TEXT_LISTED = 200


def _clean_page_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\x02", "")  # PDFium's marker for a hyphen at a line break
    text = _CONTROL.sub("", text)
    # Lone surrogates from broken font maps would fail UTF-8 encoding in the database.
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = _TRAILING_SPACE.sub("\n", text)
    return _MANY_BLANKS.sub("\n\n", text).strip()


def _open(data: bytes) -> pdfium.PdfDocument:
    if b"%PDF-" not in data[:1024]:
        raise QuarantineError("broken PDF: no %PDF- header", "the file is not a PDF or is damaged; re-export it")
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise QuarantineError(
                "encrypted PDF", "it needs a password to open; provide a decrypted copy (e.g. `qpdf --decrypt`)"
            ) from None
        detail = {
            pdfium_c.FPDF_ERR_FORMAT: "not a PDF or corrupted",
            pdfium_c.FPDF_ERR_FILE: "file not readable",
        }.get(code, str(exc) or "PDFium could not load it")
        raise QuarantineError(f"broken PDF: {detail}", "re-export or repair the file (e.g. `qpdf`)") from None


def _looks_truncated(data: bytes) -> bool:
    """Every complete PDF ends with ``%%EOF`` (allowing trailing junk); PDFium would otherwise
    silently recover what it can, and a half document would be indexed as if whole."""
    return b"%%EOF" not in data[-4096:]


def parse(data: bytes, ctx: ParseContext) -> list[ParsedDocument]:
    """One document per PDF; pages beyond ``max_pdf_pages`` are not read."""
    started = time.monotonic()
    limits = ctx.limits
    if not data.strip():
        raise QuarantineError("empty file", "the file has no content; remove it or exclude it in the manifest")
    if b"%PDF-" in data[:1024] and _looks_truncated(data):
        raise QuarantineError("broken PDF: truncated (no %%EOF marker at the end)", "download or export the file again")
    with _PDFIUM_LOCK:
        pdf = _open(data)
        try:
            page_count = len(pdf)
            if page_count == 0:
                raise QuarantineError("broken PDF: it has no pages", "re-export the file")
            to_read = min(page_count, limits.max_pdf_pages)
            blocks: list[Block] = []
            text_pages: list[int] = []
            empty_pages: list[int] = []
            for index in range(to_read):
                elapsed = time.monotonic() - started
                if elapsed > limits.parse_timeout_s:
                    raise QuarantineError(
                        f"PDF parse timed out after {elapsed:.0f}s at page {index + 1} of {page_count}",
                        "split the PDF or raise limits.parse_timeout_s",
                    )
                try:
                    page = pdf[index]
                    try:
                        textpage = page.get_textpage()
                        try:
                            raw = textpage.get_text_bounded()
                        finally:
                            textpage.close()
                    finally:
                        page.close()
                except pdfium.PdfiumError as exc:
                    raise QuarantineError(
                        f"broken PDF: page {index + 1} cannot be read ({exc})", "re-export or repair the file"
                    ) from None
                text = _clean_page_text(raw)
                n = index + 1
                if text:
                    blocks.append(Block(text, (f"page {n}",)))
                    text_pages.append(n)
                else:
                    empty_pages.append(n)
            title = _metadata_title(pdf)
        finally:
            pdf.close()
    if not blocks:
        raise QuarantineError(
            "PDF has no text layer (scanned?)",
            "run OCR first (e.g. `ocrmypdf in.pdf out.pdf`) and migrate the OCRed file",
        )
    metadata: dict[str, Any] = {
        "page_count": page_count,
        "pages": text_pages,
        "pages_read": to_read,
    }
    if to_read < page_count:
        metadata["pages_truncated"] = True
    if empty_pages:
        metadata["pages_without_text"] = empty_pages[:MAX_PAGES_WITHOUT_TEXT_LISTED]
    return [ParsedDocument(path=ctx.rel_path, blocks=blocks, title=title, metadata=metadata)]


def _metadata_title(pdf: pdfium.PdfDocument) -> str | None:
    try:
        title = pdf.get_metadata_value("Title")
    except (pdfium.PdfiumError, KeyError, ValueError):
        return None
    title = _CONTROL.sub("", title or "").strip()
    return title or None
