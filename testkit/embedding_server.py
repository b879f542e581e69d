"""A local OpenAI-compatible ``/v1/embeddings`` server for tests and benchmarks.

Why: the OpenAI API is not reachable from CI or the development machines, yet the embedder must
be proven against the real limits and failure modes. This server enforces what OpenAI enforces
(2048 inputs and 300,000 cl100k tokens per request, 8191 tokens per input, no empty input,
bearer-key auth, RPM/TPM over a rolling window with ``x-ratelimit-*`` / ``retry-after(-ms)``
headers on every response) with OpenAI-shaped error bodies, and can inject the failures a client
must survive: 500s, garbage bodies, slow answers, forced 429s and ``insufficient_quota``.

It also serves the Files and Batch APIs (``/v1/files``, ``/v1/batches``; see
:mod:`testkit.batch_api`): a batch answers each request with the same body this endpoint gives,
its states advance on a clock a test can move (:meth:`EmbeddingTestServer.advance`), and it can
expire, be cancelled, or fail some requests on demand.

Vectors are deterministic per input text (and seed), so a test can compare what a client
reassembled with :meth:`EmbeddingTestServer.vectors_for`. A vector is the concatenation of two
rotated, pre-normalised half-rows of a seeded Gaussian basis chosen by the text's sha256; at
full width and a width divisible by 6, the base64 answer is then assembled by slicing
pre-encoded strings, which lets one Python process answer dozens of 2048-input requests a second.
``dimensions`` truncates and re-normalises the full vector (as text-embedding-3 models do).

Run standalone for benchmarks::

    python -m testkit.embedding_server --port 8089 --tpm 1000000
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from doc_migration.tokens import count_tokens
from testkit.batch_api import BatchAPI

JSON_HEADERS = {"Content-Type": "application/json"}
RequestHeaders = Mapping[str, str] | Message
Payload = bytes | list[bytes | memoryview]
GARBAGE_MODES = ("invalid_json", "wrong_length", "nan", "wrong_count")


def format_duration(seconds: float) -> str:
    """Go-style duration as OpenAI writes it in ``x-ratelimit-reset-*`` (``6m0s``, ``1.5s``, ``20ms``)."""
    seconds = max(0.0, seconds)
    if seconds < 1.0:
        return f"{int(math.ceil(seconds * 1000))}ms"
    if seconds < 60.0:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(seconds, 60.0)
    if minutes < 60:
        return f"{int(minutes)}m{rest:.0f}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes)}m{rest:.0f}s"


# --------------------------------------------------------------------------------------------
# deterministic vectors
# --------------------------------------------------------------------------------------------
class VectorBank:
    """Deterministic unit vectors per text for one (dims, seed); see the module docstring."""

    def __init__(self, dims: int, seed: int = 0) -> None:
        if dims < 2:
            raise ValueError("dims must be at least 2")
        self.dims = dims
        self.seed = seed
        self.half1 = dims // 2
        self.half2 = dims - self.half1
        # enough rows that texts essentially never collide (>= 1024 rows x dims/6 rotations per
        # half, squared), capped at ~16 MB of floats (+ ~45 MB of base64 at 3072 dims)
        self.rows = int(max(1024, min(16384, (1 << 22) // dims)))
        rng = np.random.default_rng(seed)
        h1 = rng.standard_normal((self.rows, self.half1), dtype=np.float32)
        h2 = rng.standard_normal((self.rows, self.half2), dtype=np.float32)
        scale = np.float32(1.0 / math.sqrt(2.0))
        self.h1 = (h1 / np.linalg.norm(h1, axis=1, keepdims=True) * scale).astype("<f4")
        self.h2 = (h2 / np.linalg.norm(h2, axis=1, keepdims=True) * scale).astype("<f4")
        # Fast path: each half is a whole number of 3-float (12-byte = 16-char) base64 groups.
        self.fast = self.half1 == self.half2 and self.half1 % 3 == 0
        self._b64_1: list[bytes] = []
        self._b64_2: list[bytes] = []
        self._mv_1: list[memoryview] = []
        self._mv_2: list[memoryview] = []
        self._lock = threading.Lock()

    def _prepare_fast(self) -> None:
        with self._lock:
            if self._b64_1:
                return
            # Doubled rows: a rotation by r floats is the slice [16*r/3 : 16*r/3 + L].
            b1 = [base64.b64encode(row.tobytes() * 2) for row in self.h1]
            b2 = [base64.b64encode(row.tobytes() * 2) for row in self.h2]
            self._b64_1, self._b64_2 = b1, b2
            self._mv_1 = [memoryview(b) for b in b1]
            self._mv_2 = [memoryview(b) for b in b2]

    def _params(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 4) int64: row of half 1, row of half 2, rotation of half 1, rotation of half 2."""
        out = np.empty((len(texts), 4), dtype=np.int64)
        g1, g2 = self.half1 // 3, self.half2 // 3
        for i, text in enumerate(texts):
            d = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
            out[i, 0] = int.from_bytes(d[0:4], "little") % self.rows
            out[i, 1] = int.from_bytes(d[4:8], "little") % self.rows
            out[i, 2] = 3 * (int.from_bytes(d[8:12], "little") % g1) if g1 else 0
            out[i, 3] = 3 * (int.from_bytes(d[12:16], "little") % g2) if g2 else 0
        return out

    def vectors(self, texts: Sequence[str], dimensions: int | None = None) -> np.ndarray:
        """float32 (n, dimensions or dims): the full vectors, or their re-normalised prefixes."""
        p = self._params(texts)
        n = len(texts)
        out = np.empty((n, self.dims), dtype="<f4")
        if n:
            j1 = (np.arange(self.half1)[None, :] + p[:, 2:3]) % self.half1
            j2 = (np.arange(self.half2)[None, :] + p[:, 3:4]) % self.half2
            out[:, : self.half1] = self.h1[p[:, 0:1], j1]
            out[:, self.half1 :] = self.h2[p[:, 1:2], j2]
        if dimensions is None or dimensions == self.dims:
            return out
        cut = out[:, :dimensions].astype(np.float64)
        norms = np.linalg.norm(cut, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (cut / norms).astype("<f4")

    def base64_full(self, texts: Sequence[str]) -> list[list[bytes | memoryview]]:
        """Base64 of each full little-endian float32 vector, as zero-copy parts to concatenate.

        On the fast path the parts are views into pre-encoded strings, so answering costs no
        arithmetic and no copy of the (tens of MB) payload before the kernel's.
        """
        if not self.fast:
            return [[base64.b64encode(v.tobytes())] for v in self.vectors(texts)]
        self._prepare_fast()
        p = self._params(texts)
        length = self.half1 * 16 // 3  # 4 bytes a float, 4 chars per 3 bytes
        b1, b2 = self._mv_1, self._mv_2
        out: list[list[bytes | memoryview]] = []
        for a, b, r1, r2 in p.tolist():
            o1 = r1 * 16 // 3
            o2 = r2 * 16 // 3
            out.append([b1[a][o1 : o1 + length], b2[b][o2 : o2 + length]])
        return out


_BANKS: dict[tuple[int, int], VectorBank] = {}
_BANKS_LOCK = threading.Lock()


def vector_bank(dims: int, seed: int = 0) -> VectorBank:
    """Shared bank per (dims, seed): building one costs ~0.1 s and tens of MB."""
    with _BANKS_LOCK:
        bank = _BANKS.get((dims, seed))
        if bank is None:
            bank = _BANKS[(dims, seed)] = VectorBank(dims, seed)
        return bank


def expected_vectors(
    texts: Sequence[str], dims: int, seed: int = 0, dimensions: int | None = None
) -> np.ndarray:
    """The vectors a server of (``dims``, ``seed``) returns for ``texts``."""
    return vector_bank(dims, seed).vectors(texts, dimensions)


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------
@dataclass
class ServerStats:
    """What the server saw; times are seconds since the server started."""

    requests: int = 0
    ok: int = 0
    inputs: int = 0
    tokens: int = 0
    max_tokens_per_request: int = 0
    max_inputs_per_request: int = 0
    rate_limited: int = 0
    injected_500: int = 0
    garbage: int = 0
    slow: int = 0
    status_counts: Counter[int] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    text_counts: Counter[str] = field(default_factory=Counter)
    encoding_formats: Counter[str] = field(default_factory=Counter)  # as answered
    requested_formats: Counter[str] = field(default_factory=Counter)  # as asked by the client
    dimensions: Counter[int] = field(default_factory=Counter)
    admitted: list[tuple[float, int, int]] = field(default_factory=list)  # (t, tokens, inputs)
    log: list[tuple[float, int, int]] = field(default_factory=list)  # (arrival t, status, inputs)
    # Files / Batch API: what was uploaded and submitted, to prove each chunk went out once.
    files_uploaded: int = 0
    files_deleted: int = 0
    batches_created: int = 0
    batches_cancelled: int = 0  # cancel calls that moved a batch to ``cancelling``
    batch_requests_submitted: int = 0  # valid lines of the input files of created batches
    batch_inputs_submitted: int = 0  # embedding inputs in those lines
    batch_requests_completed: int = 0  # lines written to an output file
    batch_custom_ids: Counter[str] = field(default_factory=Counter)  # per custom_id, over created batches
    batch_text_counts: Counter[str] = field(default_factory=Counter)  # per input text, over created batches
    batch_embedded_text_counts: Counter[str] = field(default_factory=Counter)  # texts in output files
    batch_final_statuses: Counter[str] = field(default_factory=Counter)  # completed/failed/expired/cancelled

    def batch_duplicates(self) -> dict[str, int]:
        """Texts submitted in more than one batch request (or twice in one request)."""
        return {text: n for text, n in self.batch_text_counts.items() if n > 1}

    def duplicates(self) -> dict[str, int]:
        """Texts embedded (answered with a 200) more than once."""
        return {text: n for text, n in self.text_counts.items() if n > 1}

    def tokens_per_window(self, window_seconds: float) -> list[int]:
        """Tokens admitted per fixed window, windows aligned on the first admitted request."""
        if not self.admitted:
            return []
        t0 = self.admitted[0][0]
        out: list[int] = []
        for t, tokens, _ in self.admitted:
            k = int((t - t0) // window_seconds)
            while len(out) <= k:
                out.append(0)
            out[k] += tokens
        return out

    def max_tokens_in_window(self, window_seconds: float) -> int:
        """Most tokens admitted in any rolling window (what a strict limiter must keep <= TPM)."""
        best = 0
        total = 0
        q: deque[tuple[float, int]] = deque()
        for t, tokens, _ in self.admitted:
            q.append((t, tokens))
            total += tokens
            while q and q[0][0] <= t - window_seconds:
                total -= q.popleft()[1]
            best = max(best, total)
        return best


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------
class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    app: EmbeddingTestServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, TimeoutError, socket.timeout)):
            return  # the client gave up (e.g. its timeout): nothing to report
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.server.app.handle(method, self.path, self.headers, body)
        parts = [payload] if isinstance(payload, bytes) else payload
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(sum(len(p) for p in parts)))
        self.end_headers()
        _send_parts(self.connection, parts)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("POST")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("DELETE")


def _send_parts(sock: socket.socket, parts: Sequence[bytes | memoryview]) -> None:
    """Write many buffers with ``sendmsg`` (writev): no join, no payload copy in Python."""
    bufs = [p if isinstance(p, memoryview) else memoryview(p) for p in parts if len(p)]
    i = 0
    while i < len(bufs):
        sent = sock.sendmsg(bufs[i : i + 512])
        while sent > 0:
            size = len(bufs[i])
            if sent >= size:
                sent -= size
                i += 1
            else:
                bufs[i] = bufs[i][sent:]
                sent = 0


def _error(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


class EmbeddingTestServer:
    """OpenAI-compatible embeddings server in a background thread; use as a context manager.

    Failure switches (``fail_rate_500``, ``garbage_rate``, ``slow_seconds``/``slow_rate``,
    ``force_429_every``, ``insufficient_quota``...) are plain attributes and may be changed while
    the server runs. ``window_seconds`` shortens the RPM/TPM window so tests finish in seconds.

    Batch API knobs (also plain attributes): ``batch_validating_seconds``, ``batch_seconds`` (time
    in ``in_progress``; requests run uniformly over it), ``batch_finalizing_seconds``,
    ``batch_cancelling_seconds``, ``batch_expiry_seconds`` (stand-in for the 24 h window),
    ``batch_max_requests`` / ``batch_max_inputs`` (50,000 each), ``max_file_bytes`` (200 MB),
    ``batch_enqueued_token_limit`` (int, or per model), ``batch_fail_rate`` and
    ``batch_fail_custom_ids`` (requests that fail with a 500 into the error file), and
    ``batch_clock`` (Unix seconds; default ``time.time``) to which :meth:`advance` adds.
    """

    def __init__(
        self,
        port: int = 0,
        dims: int = 3072,
        tpm: int | None = None,
        rpm: int | None = None,
        fail_rate_500: float = 0.0,
        garbage_rate: float = 0.0,
        slow_seconds: float = 0.0,
        force_429_every: int = 0,
        api_key: str | None = None,
        seed: int = 0,
        *,
        host: str = "127.0.0.1",
        window_seconds: float = 60.0,
        slow_rate: float = 1.0,
        retry_after_seconds: float = 1.0,
        insufficient_quota: bool = False,
        ignore_encoding_format: bool = False,
        base64_as_float64: bool = False,
        garbage_modes: Sequence[str] = GARBAGE_MODES,
        max_inputs: int = 2048,
        max_tokens_per_request: int = 300_000,
        max_input_tokens: int = 8191,
        record_texts: bool = True,
        batch_validating_seconds: float = 0.0,
        batch_seconds: float = 0.0,
        batch_finalizing_seconds: float = 0.0,
        batch_cancelling_seconds: float = 0.0,
        batch_expiry_seconds: float = 24 * 3600.0,
        batch_max_requests: int = 50_000,
        batch_max_inputs: int = 50_000,
        max_file_bytes: int = 200_000_000,
        batch_enqueued_token_limit: int | Mapping[str, int] | None = None,
        batch_fail_rate: float = 0.0,
        batch_fail_custom_ids: Collection[str] = (),
        batch_clock: Callable[[], float] | None = None,
    ) -> None:
        unknown = set(garbage_modes) - set(GARBAGE_MODES)
        if unknown:
            raise ValueError(f"unknown garbage modes {sorted(unknown)}; known: {GARBAGE_MODES}")
        self.host = host
        self.port = port
        self.dims = dims
        self.tpm = tpm
        self.rpm = rpm
        self.fail_rate_500 = fail_rate_500
        self.garbage_rate = garbage_rate
        self.slow_seconds = slow_seconds
        self.slow_rate = slow_rate
        self.force_429_every = force_429_every
        self.retry_after_seconds = retry_after_seconds
        self.api_key = api_key
        self.seed = seed
        self.window_seconds = window_seconds
        self.insufficient_quota = insufficient_quota
        self.ignore_encoding_format = ignore_encoding_format
        self.base64_as_float64 = base64_as_float64
        self.garbage_modes = tuple(garbage_modes)
        self.max_inputs = max_inputs
        self.max_tokens_per_request = max_tokens_per_request
        self.max_input_tokens = max_input_tokens
        self.record_texts = record_texts
        self.batch_validating_seconds = batch_validating_seconds
        self.batch_seconds = batch_seconds
        self.batch_finalizing_seconds = batch_finalizing_seconds
        self.batch_cancelling_seconds = batch_cancelling_seconds
        self.batch_expiry_seconds = batch_expiry_seconds
        self.batch_max_requests = batch_max_requests
        self.batch_max_inputs = batch_max_inputs
        self.max_file_bytes = max_file_bytes
        self.batch_enqueued_token_limit = batch_enqueued_token_limit
        self.batch_fail_rate = batch_fail_rate
        self.batch_fail_custom_ids = batch_fail_custom_ids
        self.batch_clock = batch_clock
        self.stats = ServerStats()
        self.bank = vector_bank(dims, seed)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._window_tokens: deque[tuple[float, int]] = deque()
        self._window_tokens_sum = 0
        self._window_requests: deque[float] = deque()
        self._counter = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.batch_api = BatchAPI(self)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EmbeddingTestServer:
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.app = self
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._t0 = time.monotonic()
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"embedding-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> EmbeddingTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def vectors_for(self, texts: Sequence[str], dimensions: int | None = None) -> np.ndarray:
        """What this server answers for ``texts`` (float32, unit norm)."""
        return self.bank.vectors(texts, dimensions)

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = ServerStats()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def advance(self, seconds: float) -> None:
        """Move the Batch API clock forward and apply the state transitions now due."""
        self.batch_api.advance(seconds)

    def batch_now(self) -> float:
        """The Batch API clock (Unix seconds): ``batch_clock`` plus what :meth:`advance` added."""
        return self.batch_api.now()

    # ------------------------------------------------------------------ rate limits
    def _expire(self, now: float) -> None:
        horizon = now - self.window_seconds
        while self._window_tokens and self._window_tokens[0][0] <= horizon:
            self._window_tokens_sum -= self._window_tokens.popleft()[1]
        while self._window_requests and self._window_requests[0] <= horizon:
            self._window_requests.popleft()

    def _rate_headers(self, now: float) -> dict[str, str]:
        """``x-ratelimit-*`` as OpenAI sends them; call with the lock held."""
        self._expire(now)
        headers: dict[str, str] = {}
        if self.rpm is not None:
            used = len(self._window_requests)
            reset = (self._window_requests[0] + self.window_seconds - now) if used else 0.0
            headers["x-ratelimit-limit-requests"] = str(self.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, self.rpm - used))
            headers["x-ratelimit-reset-requests"] = format_duration(reset)
        if self.tpm is not None:
            reset = (self._window_tokens[-1][0] + self.window_seconds - now) if self._window_tokens else 0.0
            headers["x-ratelimit-limit-tokens"] = str(self.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, self.tpm - self._window_tokens_sum))
            headers["x-ratelimit-reset-tokens"] = format_duration(reset)
        return headers

    def _wait_for_tokens(self, tokens: int, now: float) -> float:
        assert self.tpm is not None
        excess = self._window_tokens_sum + tokens - self.tpm
        if excess <= 0:
            return 0.0
        freed = 0
        for t, n in self._window_tokens:
            freed += n
            if freed >= excess:
                return t + self.window_seconds - now
        return self.window_seconds

    def _too_many(self, message: str, wait: float, now: float, code: str = "rate_limit_exceeded") -> tuple[
        int, dict[str, str], bytes
    ]:
        headers = {**JSON_HEADERS, **self._rate_headers(now)}
        headers["retry-after-ms"] = str(int(math.ceil(wait * 1000)))
        headers["retry-after"] = str(max(1, int(math.ceil(wait))))
        return 429, headers, _error(message, "requests" if code == "rate_limit_exceeded" else code, code)

    # ------------------------------------------------------------------ request handling
    def handle(
        self, method: str, path: str, headers: RequestHeaders, body: bytes
    ) -> tuple[int, dict[str, str], Payload]:
        """Answer one HTTP request: ``(status, headers, body)``; the body may be a list of parts
        to concatenate (see :meth:`response_bytes`)."""
        arrival = self.now()
        status, out_headers, payload, n_inputs = self._handle(method, path, headers, body, arrival)
        with self._lock:
            if path.rstrip("/").endswith("/embeddings"):
                self.stats.requests += 1
                self.stats.status_counts[status] += 1
                self.stats.log.append((arrival, status, n_inputs))
                if status == 429:
                    self.stats.rate_limited += 1
        return status, out_headers, payload

    def _plain(self, status: int, body: bytes) -> tuple[int, dict[str, str], bytes, int]:
        with self._lock:
            rate = self._rate_headers(self.now())
        if status >= 400:
            try:
                code = json.loads(body)["error"].get("code") or json.loads(body)["error"].get("type")
            except (ValueError, KeyError, AttributeError):
                code = None
            with self._lock:
                self.stats.error_codes[str(code)] += 1
        return status, {**JSON_HEADERS, **rate}, body, 0

    def _handle(
        self, method: str, path: str, headers: RequestHeaders, body: bytes, arrival: float
    ) -> tuple[int, dict[str, str], Payload, int]:
        route = path.split("?", 1)[0].rstrip("/")
        if method == "GET" and route in ("", "/health", "/v1/health"):
            return 200, dict(JSON_HEADERS), b'{"status":"ok"}', 0
        if route.removeprefix("/v1").split("/")[1:2] in (["files"], ["batches"]):
            denied = self._auth_error(headers)
            if denied is not None:
                return denied
            return (*self.batch_api.handle(method, path, headers, body), 0)
        if route not in ("/v1/embeddings", "/embeddings"):
            return self._plain(404, _error(f"Invalid URL ({method} {route})", "invalid_request_error"))
        if method != "POST":
            return self._plain(405, _error("Method not allowed", "invalid_request_error"))
        denied = self._auth_error(headers)
        if denied is not None:
            return denied
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._plain(400, _error(
                "We could not parse the JSON body of your request.", "invalid_request_error"))
        parsed = self._validate(req)
        if isinstance(parsed, bytes):
            return self._plain(400, parsed)
        texts, counts, model, fmt, dimensions = parsed
        total = sum(counts)
        n = len(texts)
        with self._lock:
            self.stats.requested_formats[str(req.get("encoding_format") or "float")] += 1

        with self._lock:
            now = self.now()
            self._counter += 1
            if self.insufficient_quota:
                self.stats.error_codes["insufficient_quota"] += 1
                headers_ = {**JSON_HEADERS, **self._rate_headers(now)}
                return 429, headers_, _error(
                    "You exceeded your current quota, please check your plan and billing details.",
                    "insufficient_quota", "insufficient_quota"), n
            if self.force_429_every and self._counter % self.force_429_every == 0:
                self.stats.error_codes["forced_429"] += 1
                return (*self._too_many(
                    f"Rate limit reached for {model}. Please try again in {self.retry_after_seconds:g}s.",
                    self.retry_after_seconds, now), n)
            self._expire(now)
            if self.rpm is not None and len(self._window_requests) + 1 > self.rpm:
                wait = self._window_requests[0] + self.window_seconds - now
                self.stats.error_codes["rpm"] += 1
                return (*self._too_many(
                    f"Rate limit reached for {model} on requests per min (RPM): Limit {self.rpm}, "
                    f"Used {len(self._window_requests)}, Requested 1. Please try again in {wait:.3f}s.",
                    wait, now), n)
            if self.tpm is not None and self._window_tokens_sum + total > self.tpm:
                if total > self.tpm:
                    wait = self.window_seconds
                    message = (f"Request too large for {model} on tokens per min (TPM): Limit {self.tpm}, "
                               f"Requested {total}. The input or output tokens must be reduced.")
                else:
                    wait = self._wait_for_tokens(total, now)
                    message = (f"Rate limit reached for {model} on tokens per min (TPM): Limit {self.tpm}, "
                               f"Used {self._window_tokens_sum}, Requested {total}. "
                               f"Please try again in {wait:.3f}s.")
                self.stats.error_codes["tpm"] += 1
                return (*self._too_many(message, wait, now), n)
            self._window_requests.append(now)
            self._window_tokens.append((now, total))
            self._window_tokens_sum += total
            self.stats.admitted.append((now, total, n))
            rate = self._rate_headers(now)
            fail = self.fail_rate_500 > 0 and self._rng.random() < self.fail_rate_500
            slow = self.slow_seconds > 0 and self._rng.random() < self.slow_rate
            garbage_mode: str | None = None
            if self.garbage_rate > 0 and self._rng.random() < self.garbage_rate:
                garbage_mode = self._rng.choice(self.garbage_modes)
            pick = self._rng.randrange(max(1, n))
            if fail:
                self.stats.injected_500 += 1
            if slow:
                self.stats.slow += 1
        if slow:
            time.sleep(self.slow_seconds)
        if fail:
            return 500, {**JSON_HEADERS, **rate}, _error(
                "The server had an error while processing your request. Sorry about that!", "server_error"), n

        payload = self._answer(texts, model, fmt, dimensions, total, garbage_mode, pick)
        with self._lock:
            st = self.stats
            st.ok += 1
            st.inputs += n
            st.tokens += total
            st.max_tokens_per_request = max(st.max_tokens_per_request, total)
            st.max_inputs_per_request = max(st.max_inputs_per_request, n)
            st.encoding_formats[fmt] += 1
            if dimensions is not None:
                st.dimensions[dimensions] += 1
            if garbage_mode is not None:
                st.garbage += 1
            if self.record_texts:
                st.text_counts.update(texts)
        return 200, {**JSON_HEADERS, **rate}, payload, n

    def _auth_error(self, headers: RequestHeaders) -> tuple[int, dict[str, str], bytes, int] | None:
        """The 401 for a missing or wrong bearer key, or None."""
        if self.api_key is None:
            return None
        auth = headers.get("Authorization") or headers.get("authorization") or ""
        if auth == f"Bearer {self.api_key}":
            return None
        # Never echo the presented token, not even masked.
        return self._plain(401, _error(
            "Incorrect API key provided. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error", "invalid_api_key"))

    def _validate(self, req: dict[str, Any]) -> bytes | tuple[list[str], list[int], str, str, int | None]:
        """Check a request as OpenAI does; an error body, or (texts, counts, model, format, dims)."""
        model = req.get("model")
        if not isinstance(model, str) or not model:
            return _error("you must provide a model parameter", "invalid_request_error", None, "model")
        raw = req.get("input")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw)):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            return _error("'$.input' is invalid. Please check the API reference: "
                          "https://platform.openai.com/docs/api-reference.", "invalid_request_error", None, "input")
        if len(raw) > self.max_inputs:
            return _error(f"'$.input' is invalid: at most {self.max_inputs} inputs are allowed per request, "
                          f"got {len(raw)}.", "invalid_request_error", "invalid_value", "input")
        texts: list[str] = []
        counts: list[int] = []
        for item in raw:
            if isinstance(item, str):
                if item == "":
                    return _error("'$.input' is invalid. Please check the API reference: "
                                  "https://platform.openai.com/docs/api-reference.",
                                  "invalid_request_error", None, "input")
                texts.append(item)
                counts.append(count_tokens(item))
            elif isinstance(item, list) and item and all(isinstance(x, int) for x in item):
                texts.append(json.dumps(item))
                counts.append(len(item))
            else:
                return _error("'$.input' is invalid. Please check the API reference: "
                              "https://platform.openai.com/docs/api-reference.",
                              "invalid_request_error", None, "input")
        longest = max(counts)
        if longest > self.max_input_tokens:
            return _error(
                f"This model's maximum context length is {self.max_input_tokens + 1} tokens, however you "
                f"requested {longest} tokens ({longest} in your prompt; 0 for the completion). "
                "Please reduce your prompt; or completion length.", "invalid_request_error", None, None)
        total = sum(counts)
        if total > self.max_tokens_per_request:
            return _error(f"Requested {total} tokens, max {self.max_tokens_per_request} tokens per request",
                          "invalid_request_error", "max_tokens_per_request", "input")
        fmt = req.get("encoding_format", "float")
        if fmt is None:
            fmt = "float"
        if fmt not in ("float", "base64"):
            return _error(f"'{fmt}' is not one of ['float', 'base64'] - 'encoding_format'",
                          "invalid_request_error", None, "encoding_format")
        dimensions = req.get("dimensions")
        if dimensions is not None and not self.ignore_encoding_format:
            if not model.startswith("text-embedding-3"):
                return _error("This model does not support specifying dimensions.",
                              "invalid_request_error", None, "dimensions")
            if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= self.dims:
                return _error(f"Invalid value for 'dimensions' = {dimensions}. Must be between 1 and {self.dims}.",
                              "invalid_request_error", None, "dimensions")
        if self.ignore_encoding_format:
            fmt, dimensions = "float", None
        return texts, counts, model, str(fmt), dimensions

    def _answer(
        self, texts: list[str], model: str, fmt: str, dimensions: int | None, total: int,
        garbage_mode: str | None, pick: int,
    ) -> Payload:
        n = len(texts)
        parts: list[bytes | memoryview] = [b'{"object":"list","data":[']
        full = dimensions is None or dimensions == self.dims
        if fmt == "base64" and full and garbage_mode is None and not self.base64_as_float64:
            for i, pieces in enumerate(self.bank.base64_full(texts)):
                parts.append(b'%s{"object":"embedding","index":%d,"embedding":"' % (b"," if i else b"", i))
                parts.extend(pieces)
                parts.append(b'"}')
        else:
            vecs = self.bank.vectors(texts, dimensions)
            rows: list[np.ndarray] = list(vecs)
            if garbage_mode == "wrong_length":
                rows[pick] = rows[pick][: max(1, len(rows[pick]) // 2)]
            elif garbage_mode == "nan":
                rows[pick] = rows[pick].copy()
                rows[pick][0] = np.nan
            if garbage_mode == "wrong_count" and n:
                rows.pop()
            for i, row in enumerate(rows):
                if fmt == "base64":
                    data = row.astype("<f8") if self.base64_as_float64 else row
                    emb = b'"' + base64.b64encode(data.tobytes()) + b'"'
                else:
                    emb = json.dumps([float(x) for x in row.tolist()]).encode()
                parts.append(b'%s{"object":"embedding","index":%d,"embedding":%s}' % (b"," if i else b"", i, emb))
        parts.append(b'],"model":%s,"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (
            json.dumps(model).encode(), total, total))
        if garbage_mode == "invalid_json":
            whole = b"".join(parts)
            return whole[: max(1, len(whole) // 2)]
        return parts

    @staticmethod
    def response_bytes(payload: Payload) -> bytes:
        """A payload from :meth:`handle` as one bytes object."""
        return payload if isinstance(payload, bytes) else b"".join(payload)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted; print the statistics as JSON on exit."""
    p = argparse.ArgumentParser(description="Local OpenAI-compatible /v1/embeddings server (tests, benchmarks).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089, help="0 picks a free port")
    p.add_argument("--dims", type=int, default=3072)
    p.add_argument("--tpm", type=int, default=None, help="tokens per window (default: unlimited)")
    p.add_argument("--rpm", type=int, default=None, help="requests per window (default: unlimited)")
    p.add_argument("--window-seconds", type=float, default=60.0)
    p.add_argument("--fail-rate-500", type=float, default=0.0)
    p.add_argument("--garbage-rate", type=float, default=0.0)
    p.add_argument("--slow-seconds", type=float, default=0.0)
    p.add_argument("--slow-rate", type=float, default=1.0)
    p.add_argument("--force-429-every", type=int, default=0)
    p.add_argument("--api-key", default=None, help="require this bearer key (default: accept any)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ignore-encoding-format", action="store_true", help="answer float lists like Ollama")
    p.add_argument("--record-texts", action="store_true", help="keep every text for duplicate checks")
    p.add_argument("--batch-seconds", type=float, default=0.0, help="time a batch spends in_progress")
    p.add_argument("--batch-expiry-seconds", type=float, default=24 * 3600.0, help="stand-in for the 24h window")
    args = p.parse_args(argv)
    server = EmbeddingTestServer(
        port=args.port, dims=args.dims, tpm=args.tpm, rpm=args.rpm, fail_rate_500=args.fail_rate_500,
        garbage_rate=args.garbage_rate, slow_seconds=args.slow_seconds, force_429_every=args.force_429_every,
        api_key=args.api_key, seed=args.seed, host=args.host, window_seconds=args.window_seconds,
        slow_rate=args.slow_rate, ignore_encoding_format=args.ignore_encoding_format,
        record_texts=args.record_texts, batch_seconds=args.batch_seconds,
        batch_expiry_seconds=args.batch_expiry_seconds,
    )
    stop = threading.Event()
    with contextlib.suppress(ValueError):  # not the main thread (embedded use): rely on Ctrl-C
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(f"embedding test server listening on {server.base_url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        st = server.stats
        print(json.dumps({
            "requests": st.requests, "ok": st.ok, "inputs": st.inputs, "tokens": st.tokens,
            "rate_limited": st.rate_limited, "max_tokens_per_request": st.max_tokens_per_request,
            "max_inputs_per_request": st.max_inputs_per_request,
            "status_counts": {str(k): v for k, v in st.status_counts.items()},
            "tokens_per_window": st.tokens_per_window(server.window_seconds),
            "files_uploaded": st.files_uploaded, "batches_created": st.batches_created,
            "batch_requests_submitted": st.batch_requests_submitted,
        }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
