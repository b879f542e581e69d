"""Binary content behind a text extension is told apart from text that merely has a stray byte."""

from __future__ import annotations

import random
import zlib

from doc_migration.sources.base import looks_binary


def test_compressed_or_random_bytes_are_binary_every_time() -> None:
    # ~10.5 % of random bytes are control bytes: the ratio alone let 1 file in 30 through.
    for seed in range(500):
        payload = random.Random(seed).randbytes(16 * 1024)
        assert looks_binary(b"\x7fELF\x02\x01\x01\x00" + zlib.compress(payload)), seed


def test_text_with_a_stray_nul_or_escape_codes_is_not_binary() -> None:
    body = ("Plain text about HTTP caching. " * 40 + "\n\n") * 5
    assert not looks_binary(body.encode() + b"a stray \x00 byte\n" + body.encode())
    coloured = "\x1b[32mok\x1b[0m build step finished in 1.2 s\n" * 100  # ESC is 2 of ~45 bytes
    assert not looks_binary(coloured.encode())
    assert not looks_binary("Grüße, naïve café\n".encode("utf-16-le"))
