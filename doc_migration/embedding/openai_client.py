"""OpenAI-compatible embedder: batching, concurrency, rate limiting, retries, validation.

Why each piece exists:

* **Batching** (:mod:`.batching`): the API takes at most 2048 inputs / 300,000 tokens per request;
  fewer, fuller requests are cheaper in requests-per-minute and latency.
* **Concurrency**: one request takes seconds; a shared thread pool keeps ``max_concurrency``
  requests in flight. Pool and :class:`~.ratelimit.RateLimiter` are shared per
  ``(base_url, model)`` by every embedder of the process, so partitions running side by side
  share one budget instead of each spending the whole account's TPM.
* **Retries**: 408/409/429/5xx, timeouts, connection errors and malformed bodies (invalid JSON,
  wrong count, wrong length, NaN) are retried with full-jitter exponential backoff that honours
  ``retry-after-ms``/``retry-after``. ``insufficient_quota`` and 400/401/403/404/422 are terminal:
  retrying them only burns time.
* **Secrets**: terminal errors are built from status code, error type and code (plus, for a
  400, the server's message scrubbed of anything key-like) and raised ``from None``, so neither
  the message nor the traceback's chained exception can carry the API key.
* **base64**: asked by default (4x smaller bodies); servers that ignore ``encoding_format``
  (Ollama) answer float lists, which are accepted, and a server whose base64 decodes to garbage
  makes the embedder fall back to ``"float"`` for good.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import openai

from ..redaction import display_url
from ..tokens import count_tokens
from .base import EmbeddingError, EmbedStats
from .batching import MAX_INPUTS_PER_REQUEST, MAX_TOKENS_PER_INPUT, MAX_TOKENS_PER_REQUEST, plan_batches
from .breaker import UNREACHABLE, ConnectionBreaker
from .pricing import estimate_cost
from .ratelimit import RateLimiter, parse_retry_after

log = logging.getLogger(__name__)

#: USD per 1M input tokens (OpenAI list prices for the embedding models).
PREVIEW_CHARS = 80
_MIN_BATCH_INPUTS = 16
_KEYLIKE_RE = re.compile(r"(sk-|sess-|key-)[A-Za-z0-9_\-*.]{4,}")
_INDEX_RE = re.compile(r"input\[(\d+)\]")
_TERMINAL_STATUSES = {400: "bad request", 401: "authentication failed", 403: "permission denied",
                      404: "not found", 422: "unprocessable request"}


class OpenAIEmbeddingError(EmbeddingError):
    """A terminal API failure with its machine-readable parts (never the API key)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        error_type: str | None = None,
        index: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.error_type = error_type
        self.index = index
        self.request_id = request_id


# ------------------------------------------------------------------------------------------
# process-wide pools and limiters
# ------------------------------------------------------------------------------------------
@dataclass
class SharedResources:
    """One rate limiter and one request pool per (base_url, model) and process."""

    limiter: RateLimiter
    executor: ThreadPoolExecutor
    max_concurrency: int
    breaker: ConnectionBreaker = field(default_factory=ConnectionBreaker)


_REGISTRY: dict[tuple[str, str], SharedResources] = {}
_REGISTRY_LOCK = threading.Lock()


def shared_resources(
    base_url: str,
    model: str,
    *,
    max_concurrency: int = 4,
    rpm: int | None = None,
    tpm: int | None = None,
    window_seconds: float = 60.0,
    breaker: ConnectionBreaker | None = None,
) -> SharedResources:
    """The (base_url, model) pool and limiter, created by the first caller.

    Later callers share them as they are (the first caller's concurrency and window win); caps
    they pass explicitly are applied to the shared limiter, so the last configuration counts.
    """
    key = (base_url.rstrip("/"), model)
    with _REGISTRY_LOCK:
        shared = _REGISTRY.get(key)
        if shared is None:
            shared = SharedResources(
                limiter=RateLimiter(rpm=rpm, tpm=tpm, window_seconds=window_seconds),
                executor=ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix=f"embed-{model}"),
                max_concurrency=max_concurrency,
                breaker=breaker or ConnectionBreaker(),
            )
            _REGISTRY[key] = shared
        elif rpm is not None or tpm is not None:
            shared.limiter.configure(rpm=rpm, tpm=tpm)
        return shared


def clear_shared_state() -> None:
    """Forget every shared pool/limiter (tests; a process that changes accounts)."""
    with _REGISTRY_LOCK:
        items = list(_REGISTRY.values())
        _REGISTRY.clear()
    for shared in items:
        shared.executor.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------------------------------
# internal control flow
# ------------------------------------------------------------------------------------------
class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _BadRequest(Exception):
    def __init__(self, status: int, error_type: str | None, code: str | None, param: str | None,
                 message: str, request_id: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.code = code
        self.param = param
        self.message = message
        self.request_id = request_id


class _NeedsSplit(Exception):
    """The batch is larger than the TPM cap learned since it was planned."""


class _Cancelled(Exception):
    """Another batch of the same call failed terminally."""


@dataclass
class _Decoded:
    kind: Literal["ok", "glitch", "format", "dims"]
    vectors: np.ndarray | None = None
    detail: str = ""
    as_lists: bool = False


def _preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------
# the embedder
# ------------------------------------------------------------------------------------------
class OpenAIEmbedder:
    """:class:`~.base.Embedder` backed by an OpenAI-compatible ``/v1/embeddings`` endpoint.

    ``api_key``/``base_url``/``organization``/``project`` default as the ``openai`` SDK does
    (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``...). ``rpm``/``tpm`` cap the shared budget
    (``None``: learn the caps from response headers); ``rate_window_seconds`` is the budget's
    window (60 s at OpenAI; tests shorten it). ``send_dimensions=None`` sends ``dimensions`` only
    to text-embedding-3-* models, the only ones that accept it.
    """

    cacheable = True  # every vector is paid for: keep it

    def __init__(
        self,
        model: str = "text-embedding-3-large",
        dims: int = 3072,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        max_concurrency: int = 4,
        rpm: int | None = None,
        tpm: int | None = None,
        rate_window_seconds: float = 60.0,
        max_retries: int = 8,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 60.0,
        send_dimensions: bool | None = None,
        encoding_format: Literal["base64", "float"] = "base64",
        max_inputs_per_request: int = MAX_INPUTS_PER_REQUEST,
        max_tokens_per_request: int = MAX_TOKENS_PER_REQUEST,
        max_input_tokens: int = MAX_TOKENS_PER_INPUT,
        locate_bad_inputs: bool = True,
        share_limits: bool = True,
        breaker_failures: int = 6,
        breaker_seconds: float = 30.0,
    ) -> None:
        if dims < 1:
            raise ValueError("dims must be positive")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if encoding_format not in ("base64", "float"):
            raise ValueError("encoding_format must be 'base64' or 'float'")
        self.model = model
        self.dims = dims
        self.stats = EmbedStats()
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.send_dimensions = model.startswith("text-embedding-3") if send_dimensions is None else send_dimensions
        self.encoding_format: Literal["base64", "float"] = encoding_format
        self.max_inputs_per_request = min(max_inputs_per_request, MAX_INPUTS_PER_REQUEST)
        self.max_tokens_per_request = min(max_tokens_per_request, MAX_TOKENS_PER_REQUEST)
        self.max_input_tokens = min(max_input_tokens, MAX_TOKENS_PER_INPUT)
        self.locate_bad_inputs = locate_bad_inputs
        try:
            self._client = openai.OpenAI(
                api_key=api_key, base_url=base_url, organization=organization, project=project,
                max_retries=0, timeout=timeout,
            )
        except openai.OpenAIError:
            raise EmbeddingError(
                "no OpenAI API key: pass api_key or set OPENAI_API_KEY (any non-empty value for a "
                "local server that does not check keys)") from None
        key = getattr(self._client, "api_key", None)
        self._secrets = [s for s in (api_key, key if isinstance(key, str) else None) if s and len(s) >= 4]
        self.base_url = str(self._client.base_url)
        if share_limits:
            self._shared = shared_resources(
                self.base_url, model, max_concurrency=max_concurrency, rpm=rpm, tpm=tpm,
                window_seconds=rate_window_seconds, breaker=ConnectionBreaker(breaker_failures, breaker_seconds),
            )
            self._owns_shared = False
        else:
            self._shared = SharedResources(
                limiter=RateLimiter(rpm=rpm, tpm=tpm, window_seconds=rate_window_seconds),
                executor=ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix=f"embed-{model}"),
                max_concurrency=max_concurrency,
                breaker=ConnectionBreaker(breaker_failures, breaker_seconds),
            )
            self._owns_shared = True
        self._stats_lock = threading.Lock()
        self._rng = random.Random()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OpenAIEmbedder:
        """Build from a mapping of constructor arguments (e.g. a manifest's ``embedding`` section);
        ``None`` values mean "default", unknown keys are refused."""
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = set(config) - params
        if unknown:
            raise ValueError(f"unknown embedder settings: {sorted(unknown)}")
        return cls(**{k: v for k, v in config.items() if v is not None})

    @property
    def limiter(self) -> RateLimiter:
        return self._shared.limiter

    @property
    def shared(self) -> SharedResources:
        return self._shared

    def cost(self, prices: Mapping[str, float] | None = None) -> float:
        """USD spent so far by this embedder."""
        return estimate_cost(self.stats.tokens, self.model, prices)

    def close(self) -> None:
        self._client.close()
        if self._owns_shared:
            self._shared.executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> OpenAIEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- public API
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors for ``texts``, shape ``(len(texts), dims)``, float32, in input order."""
        start = time.perf_counter()
        try:
            return self._embed(texts)
        except EmbeddingError as exc:
            with self._stats_lock:
                self.stats.errors.append(str(exc))
            raise
        finally:
            with self._stats_lock:
                self.stats.seconds += time.perf_counter() - start

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not one string")
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        if not texts:
            return out
        counts = self._validate(texts)
        batches = self._plan(counts)
        cancel = threading.Event()
        futures: dict[Future[np.ndarray], range] = {}
        try:
            for rng in batches:
                futures[self._shared.executor.submit(self._run_batch, texts, counts, rng, cancel)] = rng
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = [(rng.start, f) for f, rng in futures.items() if f.done() and not f.cancelled()
                      and f.exception() is not None and not isinstance(f.exception(), _Cancelled)]
            if failed:
                cancel.set()
                for f in futures:
                    f.cancel()
                exc = min(failed, key=lambda item: item[0])[1].exception()
                assert exc is not None
                raise exc
            for f, rng in futures.items():
                out[rng.start : rng.stop] = f.result()
        except BaseException:
            cancel.set()
            for f in futures:
                f.cancel()
            raise
        return out

    # -------------------------------------------------------------- planning
    def _validate(self, texts: Sequence[str]) -> list[int]:
        counts: list[int] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise EmbeddingError(f"input {i} is a {type(text).__name__}, not a str")
            if not text.strip():
                raise EmbeddingError(f"input {i} is empty or whitespace-only; the API rejects empty inputs")
            n = count_tokens(text)
            if n > self.max_input_tokens:
                raise EmbeddingError(
                    f"input {i} has {n} tokens, more than the {self.max_input_tokens} allowed per input "
                    f"(chunk it first): {_preview(text)!r}")
            counts.append(n)
        return counts

    def _plan(self, counts: Sequence[int]) -> list[range]:
        """Full batches for big calls; small calls are spread over the workers so that they
        finish in one request's latency rather than several."""
        n, total = len(counts), sum(counts)
        max_tokens = self.max_tokens_per_request
        cap = self._shared.limiter.max_request_tokens()
        if cap is not None:
            max_tokens = min(max_tokens, cap)
        max_inputs = self.max_inputs_per_request
        workers = self._shared.max_concurrency
        if workers > 1:
            max_tokens = min(max_tokens, max(math.ceil(total / workers), MAX_TOKENS_PER_INPUT))
            max_inputs = min(max_inputs, max(math.ceil(n / workers), _MIN_BATCH_INPUTS))
        return plan_batches(counts, max_inputs=max_inputs, max_tokens=max_tokens,
                            max_input_tokens=self.max_input_tokens)

    # -------------------------------------------------------------- one batch
    def _run_batch(self, texts: Sequence[str], counts: Sequence[int], rng: range,
                   cancel: threading.Event) -> np.ndarray:
        tokens = sum(counts[rng.start : rng.stop])
        cap = self._shared.limiter.max_request_tokens()
        if cap is not None and tokens > cap and len(rng) > 1:
            return self._split(texts, counts, rng, cap, cancel)
        try:
            return self._request(texts, counts, rng, cancel)
        except _NeedsSplit:  # a 429 taught a TPM cap smaller than this batch: re-send it in parts
            with self._stats_lock:
                self.stats.retries += 1
            cap = self._shared.limiter.max_request_tokens() or max(1, tokens // 2)
            return self._split(texts, counts, rng, min(cap, max(1, tokens // 2)), cancel)
        except _BadRequest as bad:
            raise self._bad_request_error(texts, counts, rng, bad, cancel) from None

    def _split(self, texts: Sequence[str], counts: Sequence[int], rng: range, cap: int,
               cancel: threading.Event) -> np.ndarray:
        subs = plan_batches(counts[rng.start : rng.stop], max_inputs=self.max_inputs_per_request,
                            max_tokens=max(cap, max(counts[rng.start : rng.stop])),
                            max_input_tokens=self.max_input_tokens)
        if len(subs) == 1:  # cannot shrink by tokens: halve by inputs
            mid = len(rng) // 2
            subs = [range(0, mid), range(mid, len(rng))]
        parts = [self._run_batch(texts, counts, range(rng.start + s.start, rng.start + s.stop), cancel)
                 for s in subs]
        return np.concatenate(parts, axis=0)

    def _request(self, texts: Sequence[str], counts: Sequence[int], rng: range,
                 cancel: threading.Event, *, probe: bool = False) -> np.ndarray:
        """Send one batch until it succeeds; retryable failures are retried with backoff."""
        batch = list(texts[rng.start : rng.stop])
        tokens = sum(counts[rng.start : rng.stop])
        limiter = self._shared.limiter
        attempt = 0
        dims_strikes = 0
        fmt: Literal["base64", "float"] = self.encoding_format
        while True:
            if cancel.is_set():
                raise _Cancelled()
            self._fail_if_unreachable()
            retry_after: float | None = None
            try:
                try:
                    reservation = limiter.acquire(tokens, cancel=cancel)
                except InterruptedError:
                    raise _Cancelled() from None
                content = self._send(batch, tokens, fmt, reservation)
                decoded = self._decode(content, len(batch), fmt)
                if decoded.kind == "ok":
                    assert decoded.vectors is not None
                    if fmt == "base64" and decoded.as_lists and self.encoding_format == "base64":
                        log.info("%s answers float lists to encoding_format=base64; asking float from now on",
                                 display_url(self.base_url))
                        self.encoding_format = "float"
                    elif fmt == "float" and self.encoding_format == "base64":
                        log.warning("base64 embeddings from %s decode to garbage; falling back to float",
                                    display_url(self.base_url))
                        self.encoding_format = "float"
                    if not probe:
                        with self._stats_lock:
                            self.stats.inputs += len(batch)
                            self.stats.tokens += tokens
                    return decoded.vectors
                if decoded.kind == "format" and fmt == "base64":
                    fmt = "float"
                    raise _Retry(f"base64 answer undecodable ({decoded.detail}); retrying as float", 0.0)
                if decoded.kind == "dims":
                    dims_strikes += 1
                    if dims_strikes >= 2:
                        raise OpenAIEmbeddingError(
                            f"{self.model} at {display_url(self.base_url)} returns vectors of the wrong size "
                            f"({decoded.detail}); set dims to the model's size"
                            + ("" if self.send_dimensions else " or enable send_dimensions"))
                else:
                    dims_strikes = 0
                raise _Retry(f"malformed response: {decoded.detail}")
            except _Retry as r:
                reason, retry_after = r.reason, r.retry_after
            attempt += 1
            if attempt > self.max_retries:
                raise OpenAIEmbeddingError(
                    f"embedding batch of {len(batch)} inputs starting at input {rng.start} failed after "
                    f"{self.max_retries} retries; last error: {self._scrub(reason)}") from None
            self._fail_if_unreachable()
            with self._stats_lock:
                self.stats.retries += 1
            delay = self._backoff(attempt, retry_after)
            log.warning("embedding batch at input %d: %s; retry %d/%d in %.2fs", rng.start,
                        self._scrub(reason), attempt, self.max_retries, delay)
            if delay > 0 and cancel.wait(delay):
                raise _Cancelled()

    def _send(self, batch: list[str], tokens: int, fmt: str, reservation: Any) -> bytes:
        """One HTTP request; returns the body or raises _Retry/_BadRequest/_NeedsSplit/terminal."""
        limiter = self._shared.limiter
        consumed = True
        kwargs: dict[str, Any] = {"input": batch, "model": self.model, "encoding_format": fmt}
        if self.send_dimensions:
            kwargs["dimensions"] = self.dims
        with self._stats_lock:
            self.stats.requests += 1
        try:
            raw = self._client.embeddings.with_raw_response.create(**kwargs)
            self._shared.breaker.record_answer()
            limiter.update_from_headers(raw.headers)
            return raw.content
        except openai.APIStatusError as exc:
            self._shared.breaker.record_answer()  # an HTTP answer: the endpoint is there
            headers = exc.response.headers
            limiter.update_from_headers(headers)
            status = exc.status_code
            body = exc.body if isinstance(exc.body, dict) else {}
            code = body.get("code")
            code = str(code) if code is not None else None
            etype = body.get("type")
            etype = str(etype) if etype is not None else None
            param = body.get("param")
            param = str(param) if param is not None else None
            message = body.get("message")
            message = self._scrub(str(message))[:300] if message else ""
            request_id = headers.get("x-request-id")
            if status == 429:
                consumed = False  # a rejected request is not counted by the server
                if code == "insufficient_quota" or etype == "insufficient_quota":
                    raise OpenAIEmbeddingError(
                        f"quota exhausted (HTTP 429, type={etype}, code={code}): check the plan and billing "
                        "of this API key's project; not retried", status_code=429, code=code,
                        error_type=etype, request_id=request_id) from None
                retry_after = parse_retry_after(headers)
                if retry_after is not None and "x-ratelimit-remaining-tokens" not in headers \
                        and "x-ratelimit-remaining-requests" not in headers:
                    limiter.pause(retry_after)  # no budget state to adapt to: hold everyone back
                cap = limiter.max_request_tokens()
                if cap is not None and tokens > cap and len(batch) > 1:
                    raise _NeedsSplit() from None
                raise _Retry(f"HTTP 429 ({code or etype or 'rate limited'})", retry_after) from None
            if status in (408, 409) or status >= 500:
                raise _Retry(f"HTTP {status} ({code or etype or 'server error'})",
                             parse_retry_after(headers)) from None
            consumed = False
            if status in (400, 422):
                raise _BadRequest(status, etype, code, param, message, request_id) from None
            what = _TERMINAL_STATUSES.get(status, "request refused")
            hint = {
                401: "check the API key (api_key / OPENAI_API_KEY)",
                403: f"this key/organization/project may not use {self.model!r}",
                404: f"check the model name {self.model!r} and the base URL {display_url(self.base_url)}",
            }.get(status, "not retried")
            raise OpenAIEmbeddingError(
                f"{what} (HTTP {status}, type={etype}, code={code}): {hint}", status_code=status, code=code,
                error_type=etype, request_id=request_id) from None
        except openai.APITimeoutError:
            self._shared.breaker.record_failure(f"timeout after {self.timeout:g}s")
            raise _Retry(f"timeout after {self.timeout:g}s") from None
        except openai.APIConnectionError:
            self._shared.breaker.record_failure("connection error")
            raise _Retry(f"connection error to {display_url(self.base_url)}") from None
        finally:
            limiter.release(reservation, consumed=consumed)

    def _fail_if_unreachable(self) -> None:
        reason = self._shared.breaker.open_reason
        if reason is not None:
            raise OpenAIEmbeddingError(
                f"{UNREACHABLE}: {display_url(self.base_url)}: {reason}; stopped instead of retrying every batch "
                "(partitions embedded before are loaded, their vectors are cached): run again when it answers")

    def _decode(self, content: bytes, n: int, fmt: str) -> _Decoded:
        """Parse and check a 200 body: n finite, non-zero vectors of ``dims``, then L2-normalise.

        Rows are written into one preallocated float32 array and normalised in place: a full
        batch is 2048 x 3072 values, and every extra copy costs tens of milliseconds.
        """
        try:
            obj = json.loads(content)
        except (ValueError, UnicodeDecodeError):
            return _Decoded("glitch", detail="invalid JSON body")
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, list):
            return _Decoded("glitch", detail="no 'data' list in the body")
        if len(data) != n:
            return _Decoded("glitch", detail=f"{len(data)} embeddings for {n} inputs")
        out = np.empty((n, self.dims), dtype=np.float32)
        seen = np.zeros(n, dtype=bool)
        wrong: list[np.ndarray] = []  # decodable rows of the wrong length
        strings = bad_strings = 0
        for pos, item in enumerate(data):
            if not isinstance(item, dict):
                return _Decoded("glitch", detail="embedding item is not an object")
            idx = item.get("index", pos)
            if not isinstance(idx, int) or not 0 <= idx < n or seen[idx]:
                return _Decoded("glitch", detail=f"bad or repeated index {idx!r}")
            seen[idx] = True
            emb = item.get("embedding")
            vec: np.ndarray | None = None
            if isinstance(emb, str):
                strings += 1
                try:
                    raw = base64.b64decode(emb, validate=True)
                    if len(raw) % 4 == 0:
                        vec = np.frombuffer(raw, dtype="<f4")
                except (binascii.Error, ValueError):
                    vec = None
                if vec is None or len(vec) != self.dims:
                    bad_strings += 1
            elif isinstance(emb, list):
                try:
                    vec = np.asarray(emb, dtype=np.float32)
                except (TypeError, ValueError, OverflowError):
                    vec = None
                if vec is not None and vec.ndim != 1:
                    vec = None
            if vec is None:
                kind: Literal["format", "glitch"] = "format" if strings and bad_strings == strings else "glitch"
                return _Decoded(kind, detail=f"undecodable embedding at index {idx}")
            if len(vec) == self.dims:
                out[idx] = vec
            else:
                wrong.append(vec)
        if wrong:
            lengths = sorted({len(v) for v in wrong})
            if len(wrong) == n and len(lengths) == 1:
                unit = all(abs(float(np.linalg.norm(v.astype(np.float64))) - 1.0) < 1e-3 for v in wrong[:8])
                if unit or not strings:  # well-formed vectors, consistently of another size
                    return _Decoded("dims", detail=f"got {lengths[0]} dimensions, expected {self.dims}")
            if strings and bad_strings == strings:
                return _Decoded("format", detail=f"base64 decodes to lengths {lengths[:3]}, expected {self.dims}")
            return _Decoded("glitch", detail=f"vector lengths {lengths[:3]}, expected {self.dims}")
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.sqrt(np.einsum("ij,ij->i", out, out))
        if not np.isfinite(norms).all():  # NaN/inf anywhere in a row makes its norm non-finite
            return _Decoded("glitch", detail="non-finite values in vectors")
        if (norms == 0).any():
            return _Decoded("glitch", detail="zero vector")
        out /= norms[:, None]
        return _Decoded("ok", vectors=out, as_lists=strings == 0)

    # -------------------------------------------------------------- errors
    def _bad_request_error(self, texts: Sequence[str], counts: Sequence[int], rng: range, bad: _BadRequest,
                           cancel: threading.Event) -> OpenAIEmbeddingError:
        index = self._locate(texts, counts, rng, bad, cancel)
        where = ""
        if index is not None:
            where = f"; offending input {index}: {_preview(texts[index])!r} ({counts[index]} tokens)"
        else:
            where = f"; batch of inputs {rng.start}..{rng.stop - 1}"
        message = (f"{_TERMINAL_STATUSES.get(bad.status, 'request refused')} (HTTP {bad.status}, "
                   f"type={bad.error_type}, code={bad.code}, param={bad.param}): {bad.message or 'no message'}"
                   f"{where}; not retried")
        return OpenAIEmbeddingError(self._scrub(message), status_code=bad.status, code=bad.code,
                                    error_type=bad.error_type, index=index, request_id=bad.request_id)

    def _locate(self, texts: Sequence[str], counts: Sequence[int], rng: range, bad: _BadRequest,
                cancel: threading.Event) -> int | None:
        """Which input the server refuses: from the error, or by bisecting the batch (at most
        ~2*log2(n)+1 small requests; they are only sent once the call has already failed)."""
        for text in (bad.param or "", bad.message or ""):
            m = _INDEX_RE.search(text)
            if m and int(m.group(1)) < len(rng):
                return rng.start + int(m.group(1))
        if len(rng) == 1:
            return rng.start
        if not self.locate_bad_inputs or (bad.param not in (None, "input")):
            return None
        lo, hi = rng.start, rng.stop
        try:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self._refused(texts, counts, range(lo, mid), cancel):
                    hi = mid
                elif self._refused(texts, counts, range(mid, hi), cancel):
                    lo = mid
                else:
                    return None  # only the combination is refused (e.g. total size)
            # a request-level problem (bad parameter) fails every input alone: check another one
            others = [i for i in range(rng.start, rng.stop) if i != lo]
            other = min(others, key=lambda i: counts[i])
            if self._refused(texts, counts, range(other, other + 1), cancel):
                return None
            return lo
        except (EmbeddingError, _Cancelled):
            return None

    def _refused(self, texts: Sequence[str], counts: Sequence[int], rng: range, cancel: threading.Event) -> bool:
        try:
            self._request(texts, counts, rng, cancel, probe=True)
        except _BadRequest:
            return True
        except _NeedsSplit:
            return False
        return False

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _KEYLIKE_RE.sub(lambda m: m.group(1) + "***", text)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter (uniform in [0, min(max, base*2^(attempt-1))]); never less than the
        server's retry-after, which is capped so a bogus header cannot stall a run for hours."""
        jitter = self._rng.uniform(0.0, min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1))))
        if retry_after is None:
            return jitter
        return max(min(retry_after, max(self.backoff_max, 60.0)), jitter if retry_after > 0 else 0.0)
