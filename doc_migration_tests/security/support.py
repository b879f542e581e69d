"""Helpers for the security tests: a hostile-file corpus generated on the fly (never committed as
binaries), and a CLI runner that measures the wall time and peak RSS of the whole process tree."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import psutil

from doc_migration_tests.helpers import SAMPLE_MANIFEST, CliResult

MiB = 1024 * 1024

# ------------------------------------------------------------------------------------ PDF bomb


def build_pdf(objects: list[bytes]) -> bytes:
    """A syntactically valid PDF: ``objects[i]`` is the body of object ``i + 1`` (1 = catalog)."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d%s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def pdf_form_bomb(levels: int = 26, fanout: int = 2) -> bytes:
    """A 5 KB PDF whose one page draws form XObject 1 twice, which draws form 2 twice, ... :
    ``fanout ** levels`` text objects. PDFium expands every use while loading the page, inside one
    C call (``FPDF_LoadPage``), so neither a Python-level timer nor a per-page check can stop it:
    time and memory grow without bound (2^18 leaves: 4 s and 730 MB here; 2^26 would need hours
    and ~190 GB)."""
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> "
        b"/XObject << /X0 6 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        _stream(b"BT /F1 12 Tf 72 720 Td (A PDF that never finishes loading) Tj ET /X0 Do"),
    ]
    for level in range(levels):
        number = 6 + level
        if level < levels - 1:
            content = b" ".join(b"q /X Do Q" for _ in range(fanout))
            res = b"/Resources << /Font << /F1 4 0 R >> /XObject << /X %d 0 R >> >>" % (number + 1)
        else:
            content = b"BT /F1 12 Tf 10 10 Td (leaf) Tj ET"
            res = b"/Resources << /Font << /F1 4 0 R >> >>"
        objs.append(_stream(content, b" /Type /XObject /Subtype /Form /BBox [0 0 612 792] " + res))
    return build_pdf(objs)


def pdf_ok(text: str) -> bytes:
    """A small, valid one-page PDF with a text layer (the control: PDFs still load)."""
    safe = text.replace("\\", "").replace("(", "").replace(")", "").encode("latin-1")
    return build_pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        _stream(b"BT /F1 12 Tf 72 720 Td (" + safe + b") Tj ET"),
    ])


# ------------------------------------------------------------------------------ the corpus


@dataclass(frozen=True)
class Hostile:
    """One hostile file and what must happen to it."""

    name: str
    expect: str  # "quarantine" | "load"
    reason: tuple[str, ...] = ()  # every substring must occur in the quarantine reason (case-insensitive)
    stage: str | None = None


HOSTILE: tuple[Hostile, ...] = (
    Hostile("escape.md", "quarantine", ("symlink escapes the source folder",), "scan"),
    Hostile("bomb.yaml", "quarantine", ("yaml", "alias"), "parse"),
    Hostile("deep-openapi.json", "quarantine", ("nested deeper than 200 levels",), "parse"),
    Hostile("deep-record.json", "quarantine", ("nested",), "parse"),
    Hostile("oversized.md", "quarantine", ("file too large",), "scan"),
    Hostile("never-ends.pdf", "quarantine", ("longer than 5 s",), "parse"),
    Hostile("nul.txt", "quarantine", ("nul byte",), "parse"),
    Hostile("invalid-utf8.md", "quarantine", ("invalid utf-8",), "parse"),
    Hostile("binary.md", "quarantine", ("binary content",), "parse"),
    # Bounded by construction, so they load (minus what is hostile in them): lexbor gets the
    # nesting flattened below 512 levels, and notebook outputs that are images or longer than
    # 1,000 characters are dropped.
    Hostile("nested-divs.html", "load"),
    Hostile("huge-output.ipynb", "load"),
)

HOSTILE_LIMITS = {"max_file_bytes": 40 * MiB, "parse_timeout_s": 5.0, "max_parse_memory_mb": 512}


def _yaml_bomb() -> str:
    lines = ["openapi: 3.0.0", "info: {title: lol, version: '1'}", "paths: {}", 'l0: &l0 ["lol", "lol", "lol", '
             '"lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        refs = ", ".join(f"*l{i - 1}" for _ in range(9))
        lines.append(f"l{i}: &l{i} [{refs}]")
    return "\n".join(lines) + "\n"


def _notebook_with_huge_output(payload_bytes: int) -> bytes:
    png = base64.b64encode(os.urandom(payload_bytes * 3 // 4)).decode("ascii")
    nb = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Plotting the latency histogram\n",
                                                                "The figure below is 30 MB of base64."]},
            {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": ["plot_latency()"],
             "outputs": [{"output_type": "display_data", "metadata": {},
                          "data": {"image/png": png, "text/plain": ["<Figure size 640x480 with 1 Axes>"]}},
                         {"output_type": "stream", "name": "stdout", "text": png[: 2 * MiB]}]},
        ],
    }
    return json.dumps(nb).encode()


def write_hostile_corpus(root: Path, outside: Path) -> Path:
    """Write the hostile files into ``root`` (and the symlink target into ``outside``); return a
    manifest that migrates them beside the packaged sample corpus."""
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "host-secret.md"
    secret.write_text("# not yours\n\nroot:x:0:0:root:/root:/bin/bash\n", encoding="utf-8")
    (root / "escape.md").symlink_to(secret)
    (root / "bomb.yaml").write_text(_yaml_bomb(), encoding="utf-8")
    deep = "[" * 10_000 + "]" * 10_000
    (root / "deep-openapi.json").write_text('{"openapi": "3.0.0", "x": ' + deep + "}", encoding="utf-8")
    (root / "deep-record.json").write_text('{"url": "x.md", "content": "hi", "extra": ' + deep + "}",
                                           encoding="utf-8")
    with open(root / "oversized.md", "wb") as fh:  # sparse: 64 MiB on paper, nothing on disk
        fh.truncate(64 * MiB)
    (root / "never-ends.pdf").write_bytes(pdf_form_bomb())
    body = ("Plain text about HTTP caching. " * 40 + "\n\n") * 5
    (root / "nul.txt").write_bytes(body.encode() + b"a stray \x00 byte\n" + body.encode())
    (root / "invalid-utf8.md").write_bytes(b"# Caf\xc3\xa9\n\n" + body.encode() + b"\nna\xefve \xc3\x28 text\n")
    rng = zlib.compress(os.urandom(16 * 1024))  # incompressible bytes, full of control characters
    (root / "binary.md").write_bytes(b"\x7fELF\x02\x01\x01\x00" + rng)
    depth = 100_000
    (root / "nested-divs.html").write_text(
        "<!doctype html><html><head><title>Nested divs</title></head><body><main><h1>Deep page</h1>"
        "<p>Text before the nesting survives.</p>" + "<div>" * depth + "deep text"
        + "</div>" * depth + "<p>Text after the nesting survives.</p></main></body></html>", encoding="utf-8")
    (root / "huge-output.ipynb").write_bytes(_notebook_with_huge_output(30 * MiB))
    # Controls in the same folder: well-formed files of the same formats must still load.
    (root / "fine.md").write_text("# Fine\n\nA perfectly ordinary markdown file next to hostile ones.\n",
                                  encoding="utf-8")
    (root / "fine.pdf").write_bytes(pdf_ok("An ordinary PDF next to a PDF bomb."))
    return write_manifest(root.parent / "hostile-sources.yaml", root, HOSTILE_LIMITS)


def write_manifest(path: Path, hostile_root: Path | None, limits: dict[str, float] | None = None,
                   extra_sources: list[dict[str, object]] | None = None) -> Path:
    """The packaged sample manifest with absolute paths, plus a ``hostile`` source."""
    import yaml

    sample = yaml.safe_load(SAMPLE_MANIFEST.read_text(encoding="utf-8"))
    for src in sample["sources"]:
        src["path"] = str((SAMPLE_MANIFEST.parent / src["path"]).resolve())
    if hostile_root is not None:
        sample["sources"].append({"source_name": "hostile-files", "doc_type": "hostile", "path": str(hostile_root),
                                  "include": ["**/*"]})
    sample["sources"].extend(extra_sources or [])
    if limits:
        sample["limits"] = limits
    path.write_text(yaml.safe_dump(sample, sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- measured CLI run


@dataclass
class MeasuredResult(CliResult):
    seconds: float = 0.0
    peak_rss: int = 0  # bytes, summed over the CLI process and all its descendants
    killed: str | None = None  # why the watchdog killed the run, if it did


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def _kill_tree(proc: psutil.Process) -> None:
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        procs = [proc]
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def run_cli_measured(args: list[str], *, database_url: str, home: Path, extra_env: dict[str, str] | None = None,
                     timeout: float = 180, kill_rss: int = 3 * 1024 * MiB) -> MeasuredResult:
    """Like ``helpers.run_cli`` but polls the process tree every 50 ms for its summed RSS. A
    watchdog kills the tree past ``timeout`` or ``kill_rss`` so a regression fails the test
    instead of exhausting the machine."""
    env = {**os.environ, "DATABASE_URL": database_url, "DOC_MIGRATION_HOME": str(home), "DAGSTER_HOME": "",
           **(extra_env or {})}
    env.pop("DOC_MIGRATION_SOURCES", None)
    started = time.monotonic()
    popen = subprocess.Popen([sys.executable, "-m", "doc_migration.cli", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=str(home))
    proc = psutil.Process(popen.pid)
    peak = 0
    killed: list[str] = []
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            rss = _tree_rss(proc)
            peak = max(peak, rss)
            if rss > kill_rss:
                killed.append(f"RSS {rss / MiB:.0f} MiB over {kill_rss / MiB:.0f} MiB")
                _kill_tree(proc)
                return
            if time.monotonic() - started > timeout:
                killed.append(f"still running after {timeout:g} s")
                _kill_tree(proc)
                return
            done.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        stdout, stderr = popen.communicate()
    finally:
        done.set()
        watcher.join()
    return MeasuredResult(popen.returncode, stdout, stderr, seconds=time.monotonic() - started, peak_rss=peak,
                          killed=killed[0] if killed else None)


def start_cli(args: list[str], *, database_url: str, home: Path,
              extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start the CLI without waiting (for tests that act on the database while it runs)."""
    env = {**os.environ, "DATABASE_URL": database_url, "DOC_MIGRATION_HOME": str(home), "DAGSTER_HOME": "",
           **(extra_env or {})}
    env.pop("DOC_MIGRATION_SOURCES", None)
    return subprocess.Popen([sys.executable, "-m", "doc_migration.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(home))


def finish_cli(proc: subprocess.Popen[str], timeout: float = 600) -> CliResult:
    stdout, stderr = proc.communicate(timeout=timeout)
    return CliResult(proc.returncode, stdout, stderr)


# ------------------------------------------------------------------ a fake PostgreSQL listener

SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104


class FakePostgres:
    """A TCP listener speaking just enough of the PostgreSQL protocol to record what libpq sends
    (TLS negotiation requests and the startup parameters), then refusing with a FATAL error.

    ``ssl_answer`` is the reply to an SSLRequest: ``b"N"`` (no TLS here) or ``b"S"`` (TLS is
    offered, so libpq goes on to load its certificates: a missing ``sslrootcert`` fails there).
    """

    def __init__(self, ssl_answer: bytes = b"N") -> None:
        import socket

        self.ssl_answer = ssl_answer
        self.requests: list[str] = []
        self.startups: list[dict[str, str]] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop = threading.Event()

    def __enter__(self) -> FakePostgres:
        self._sock.settimeout(0.1)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    self._session(conn)
                except OSError:
                    pass

    @staticmethod
    def _read(conn: object, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))  # type: ignore[attr-defined]
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _session(self, conn: object) -> None:
        import struct

        while True:
            length, code = struct.unpack("!II", self._read(conn, 8))
            if length == 8 and code == SSL_REQUEST:
                self.requests.append("ssl")
                conn.sendall(self.ssl_answer)  # type: ignore[attr-defined]
                if self.ssl_answer == b"S":
                    return  # libpq now starts (or gives up before) a TLS handshake
                continue
            if length == 8 and code == GSSENC_REQUEST:
                self.requests.append("gssenc")
                conn.sendall(b"N")  # type: ignore[attr-defined]
                continue
            body = self._read(conn, length - 8).split(b"\x00")
            self.requests.append("startup")
            self.startups.append({k.decode(): v.decode() for k, v in zip(body[0::2], body[1::2], strict=False) if k})
            fields = b"SFATAL\x00VFATAL\x00C28000\x00Mfake server: no logins here\x00\x00"
            conn.sendall(b"E" + struct.pack("!I", len(fields) + 4) + fields)  # type: ignore[attr-defined]
            return
