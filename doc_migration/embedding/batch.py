"""The OpenAI Batch API for embeddings: request files, the Files/Batches calls, and output decoding.

Why: a bootstrap through the Batch API costs half and is not bound by the account's tokens per
minute. This module knows the wire format and the limits; the pipeline's bookkeeping (what was
submitted, adopting orphans after a crash) is in :mod:`doc_migration.pipeline.batch_embed`.

* A request file holds at most ``max_requests`` lines (50,000) and ``max_bytes`` (200 MB); a batch
  at most ``max_inputs`` embedding inputs (50,000); each request obeys the synchronous limits
  (2048 inputs, 300,000 tokens, 8191 tokens per input: :func:`.batching.plan_batches`); with an
  enqueued-token limit, no batch holds more tokens than it.
* ``custom_id`` is ``<token>-<request number>``; the token also names the file
  (``doc-migration-<token>.jsonl``) and sits in the batch's metadata, so a file or batch whose id a
  killed process never recorded can be found and adopted.
* ``batches.create`` is never retried blindly (a retry after a lost answer would pay twice): a
  failed create is followed by a lookup of the token among the server's batches.
* Errors carry status, type and code and the server's message scrubbed of secrets, raised ``from
  None``: never the API key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import openai

from ..config import ConfigError, env_int
from ..redaction import display_url, redact
from .base import EmbeddingError
from .batching import MAX_INPUTS_PER_REQUEST, MAX_TOKENS_PER_INPUT, MAX_TOKENS_PER_REQUEST, plan_batches

MAX_REQUESTS_PER_FILE = 50_000
MAX_INPUTS_PER_BATCH = 50_000
MAX_FILE_BYTES = 200_000_000
FILE_PREFIX = "doc-migration-"
TOKEN_KEY = "doc_migration_token"
ENDPOINT: Literal["/v1/embeddings"] = "/v1/embeddings"


class BatchError(EmbeddingError):
    """A Batch API failure the operator must act on (message never holds the API key)."""


@dataclass(frozen=True)
class BatchConfig:
    """Limits and timing of batch mode; every field has an environment variable (docs/operations.md)."""

    max_requests: int = MAX_REQUESTS_PER_FILE
    max_inputs: int = MAX_INPUTS_PER_BATCH
    max_bytes: int = MAX_FILE_BYTES
    token_limit: int | None = None  # the account's enqueued-token limit for the model, when known
    poll_seconds: float = 60.0  # longest wait between two polls (the first ones are shorter)
    retry: str = "batch"  # failed / expired requests: "batch" (a new batch) or "sync" (the synchronous endpoint)
    max_attempts: int = 4  # batches one text may be submitted in before the run gives up
    request_inputs: int = MAX_INPUTS_PER_REQUEST  # inputs per request line (MIGRATION_BATCH_SIZE caps it)

    @classmethod
    def from_env(cls) -> BatchConfig:
        retry = (os.environ.get("DOC_MIGRATION_BATCH_RETRY") or "batch").strip().lower()
        if retry not in ("batch", "sync"):
            raise ConfigError(f"DOC_MIGRATION_BATCH_RETRY must be 'batch' or 'sync', got {retry!r}")
        raw_poll = os.environ.get("DOC_MIGRATION_BATCH_POLL_SECONDS") or "60"
        try:
            poll = float(raw_poll)
        except ValueError:
            raise ConfigError(f"DOC_MIGRATION_BATCH_POLL_SECONDS must be a number, got {raw_poll!r}") from None
        cfg = cls(
            max_requests=min(env_int("DOC_MIGRATION_BATCH_MAX_REQUESTS", MAX_REQUESTS_PER_FILE), MAX_REQUESTS_PER_FILE),
            max_inputs=min(env_int("DOC_MIGRATION_BATCH_MAX_INPUTS", MAX_INPUTS_PER_BATCH), MAX_INPUTS_PER_BATCH),
            max_bytes=min(env_int("DOC_MIGRATION_BATCH_MAX_BYTES", MAX_FILE_BYTES), MAX_FILE_BYTES),
            token_limit=env_int("DOC_MIGRATION_BATCH_TOKEN_LIMIT", 0) or None,
            poll_seconds=poll, retry=retry,
            max_attempts=env_int("DOC_MIGRATION_BATCH_MAX_ATTEMPTS", 4),
        )
        if min(cfg.max_requests, cfg.max_inputs, cfg.max_bytes, cfg.max_attempts) < 1 or cfg.poll_seconds <= 0:
            raise ConfigError("DOC_MIGRATION_BATCH_MAX_REQUESTS, _MAX_INPUTS, _MAX_BYTES, _MAX_ATTEMPTS and "
                              "_POLL_SECONDS must be positive")
        return cfg


# ------------------------------------------------------------------------------------------
# request files
# ------------------------------------------------------------------------------------------
@dataclass
class RequestFile:
    """One input file: its token, its requests (indices into the texts it was built from), its bytes."""

    token: str
    requests: list[list[int]] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    inputs: int = 0
    tokens: int = 0
    size: int = 0

    @property
    def filename(self) -> str:
        return f"{FILE_PREFIX}{self.token}.jsonl"

    @property
    def data(self) -> bytes:
        return b"".join(self.lines)


def new_token() -> str:
    """Unique per file: names the file, prefixes its custom_ids and tags its batch."""
    return secrets.token_hex(8)


def request_line(custom_id: str, texts: Sequence[str], model: str, dims: int | None) -> bytes:
    body: dict[str, Any] = {"model": model, "input": list(texts), "encoding_format": "base64"}
    if dims is not None:
        body["dimensions"] = dims
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body},
                      ensure_ascii=False).encode("utf-8") + b"\n"


def build_files(texts: Sequence[str], counts: Sequence[int], model: str, dims: int | None,
                cfg: BatchConfig) -> list[RequestFile]:
    """Pack texts into request files within every limit (order kept; a text in exactly one request).

    ``dims`` is sent as ``dimensions`` (text-embedding-3 models only, as the synchronous client does).
    """
    per_request_tokens = MAX_TOKENS_PER_REQUEST
    if cfg.token_limit is not None:
        if cfg.token_limit < 1:
            raise ConfigError("DOC_MIGRATION_BATCH_TOKEN_LIMIT must be positive")
        per_request_tokens = min(per_request_tokens, cfg.token_limit)
    ranges = plan_batches(counts, max_inputs=max(1, min(MAX_INPUTS_PER_REQUEST, cfg.request_inputs, cfg.max_inputs)),
                          max_tokens=per_request_tokens, max_input_tokens=MAX_TOKENS_PER_INPUT)
    files: list[RequestFile] = []
    current = RequestFile(new_token())
    for rng in ranges:
        tokens = sum(counts[rng.start:rng.stop])
        n = len(rng)
        # the line's size with this file's token (every token has the same length)
        line = request_line(f"{current.token}-{len(current.requests)}", texts[rng.start:rng.stop], model, dims)
        if len(line) > cfg.max_bytes:
            raise BatchError(f"one request of {n} inputs is {len(line)} bytes, more than the "
                             f"{cfg.max_bytes} allowed per batch file; lower MIGRATION_BATCH_SIZE or raise "
                             "DOC_MIGRATION_BATCH_MAX_BYTES")
        full = current.requests and (
            len(current.requests) + 1 > cfg.max_requests or current.inputs + n > cfg.max_inputs
            or current.size + len(line) > cfg.max_bytes
            or (cfg.token_limit is not None and current.tokens + tokens > cfg.token_limit))
        if full:
            files.append(current)
            current = RequestFile(new_token())
            line = request_line(f"{current.token}-0", texts[rng.start:rng.stop], model, dims)
        current.requests.append(list(rng))
        current.lines.append(line)
        current.inputs += n
        current.tokens += tokens
        current.size += len(line)
    if current.requests:
        files.append(current)
    return files


def split_custom_id(custom_id: str) -> tuple[str, int] | None:
    token, sep, number = str(custom_id).rpartition("-")
    if not sep or not number.isdigit():
        return None
    return token, int(number)


def decode_body(body: Any, n: int, dims: int) -> np.ndarray:
    """An embeddings response body as n unit float32 vectors, normalised exactly as the synchronous
    client normalises them (so a batch run and a synchronous run store the same bits)."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or len(data) != n:
        raise BatchError(f"a batch output line has {len(data) if isinstance(data, list) else 'no'} embeddings "
                         f"for {n} inputs")
    out = np.empty((n, dims), dtype=np.float32)
    seen = np.zeros(n, dtype=bool)
    for pos, item in enumerate(data):
        idx = item.get("index", pos) if isinstance(item, dict) else None
        if not isinstance(idx, int) or not 0 <= idx < n or seen[idx]:
            raise BatchError(f"a batch output line has a bad or repeated index {idx!r}")
        seen[idx] = True
        emb = item.get("embedding")
        try:
            vec = (np.frombuffer(base64.b64decode(emb, validate=True), dtype="<f4") if isinstance(emb, str)
                   else np.asarray(emb, dtype=np.float32))
        except (binascii.Error, ValueError, TypeError):
            raise BatchError(f"a batch output line has an undecodable embedding at index {idx}") from None
        if vec.ndim != 1 or len(vec) != dims:
            raise BatchError(f"a batch output line has vectors of {len(vec)} dimensions, expected {dims}; set "
                             "DOC_MIGRATION_EMBEDDING_DIMS to the model's size")
        out[idx] = vec
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    if not np.isfinite(norms).all() or (norms == 0).any():
        raise BatchError("a batch output line has non-finite or zero vectors")
    out /= norms[:, None]
    return out


# ------------------------------------------------------------------------------------------
# the API
# ------------------------------------------------------------------------------------------
class BatchClient:
    """Files and Batches calls through the ``openai`` client; every error is one scrubbed line."""

    def __init__(self, api_key: str | None, base_url: str | None, timeout: float = 300.0) -> None:
        try:
            self._client = openai.OpenAI(api_key=api_key or "not-needed", base_url=base_url, max_retries=4,
                                         timeout=timeout)
        except openai.OpenAIError:
            raise BatchError("no OpenAI API key: set OPENAI_API_KEY") from None
        self._secrets = [s for s in (api_key,) if s and len(s) >= 4]
        self.base_url = str(self._client.base_url)

    def close(self) -> None:
        self._client.close()

    def _fail(self, what: str, exc: Exception) -> BatchError:
        if isinstance(exc, openai.APIStatusError):
            body: dict[str, Any] = exc.body if isinstance(exc.body, dict) else {}
            nested = body.get("error")
            inner: dict[str, Any] = nested if isinstance(nested, dict) else body
            message = str(inner.get("message") or "")[:300]
            detail = f"HTTP {exc.status_code}, code={inner.get('code')}: {message}"
            if exc.status_code == 401:
                detail += " (check OPENAI_API_KEY)"
        elif isinstance(exc, openai.APIConnectionError):
            detail = f"cannot reach {display_url(self.base_url)}"
        else:
            detail = type(exc).__name__
        return BatchError(redact(f"Batch API: {what} failed ({detail})", self._secrets + _env_secrets()))

    def upload(self, filename: str, data: bytes) -> str:
        try:
            return str(self._client.files.create(file=(filename, data), purpose="batch").id)
        except openai.OpenAIError as exc:
            raise self._fail(f"uploading {filename} ({len(data)} bytes)", exc) from None

    def find_file(self, filename: str) -> str | None:
        """The id of an uploaded batch file of this name (a killed run's upload), newest first."""
        try:
            for f in self._client.files.list(purpose="batch"):
                if f.filename == filename:
                    return str(f.id)
        except openai.OpenAIError as exc:
            raise self._fail("listing files", exc) from None
        return None

    def create(self, file_id: str, token: str, run_id: str) -> Any:
        """Create the batch; on a failed call, look the token up first (the server may have created it)."""
        metadata = {TOKEN_KEY: token, "doc_migration_run": run_id[:512]}
        try:
            return self._client.with_options(max_retries=0).batches.create(
                input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", metadata=metadata)
        except openai.APIStatusError as exc:
            if exc.status_code < 500 and exc.status_code not in (408, 409, 429):
                raise self._fail(f"creating the batch of {file_id}", exc) from None
            error: Exception = exc
        except openai.APIConnectionError as exc:
            error = exc
        found = self.find_batch(token)
        if found is not None:
            return found
        raise self._fail(f"creating the batch of {file_id}", error) from None

    def find_batch(self, token: str) -> Any | None:
        """The batch tagged with ``token`` (one a killed run created but did not record)."""
        try:
            for b in self._client.batches.list(limit=100):
                if (b.metadata or {}).get(TOKEN_KEY) == token:
                    return b
        except openai.OpenAIError as exc:
            raise self._fail("listing batches", exc) from None
        return None

    def retrieve(self, batch_id: str) -> Any:
        try:
            return self._client.batches.retrieve(batch_id)
        except openai.OpenAIError as exc:
            raise self._fail(f"reading batch {batch_id}", exc) from None

    def cancel(self, batch_id: str) -> Any:
        try:
            return self._client.batches.cancel(batch_id)
        except openai.BadRequestError:  # already finished or finishing: nothing to cancel
            return self.retrieve(batch_id)
        except openai.OpenAIError as exc:
            raise self._fail(f"cancelling batch {batch_id}", exc) from None

    def lines(self, file_id: str) -> Iterator[dict[str, Any]]:
        """The JSON lines of an output or error file, streamed (an output file can be GBs)."""
        try:
            with self._client.files.with_streaming_response.content(file_id) as response:
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except openai.OpenAIError as exc:
            raise self._fail(f"downloading {file_id}", exc) from None
        except ValueError:
            raise BatchError(f"Batch API: {file_id} holds a line that is not JSON") from None


def _env_secrets() -> list[str]:
    key = os.environ.get("OPENAI_API_KEY")
    return [key] if key and len(key) >= 4 else []
