"""OpenAI Files and Batch API (``/v1/files``, ``/v1/batches``) for :class:`EmbeddingTestServer`.

Why: a first load of a large corpus is cheapest through the Batch API (half price, its own
enqueued-token budget instead of TPM), but the real service is not reachable from tests. This
module reproduces what a batch client depends on: multipart upload with the 200 MB limit,
``validating`` checks that fail the batch with ``errors`` (not an HTTP error), states that
advance with a clock the test controls, unordered output matched by ``custom_id``, partial
failures in the error file, ``batch_expired`` / ``batch_cancelled`` lines for what was never
run, and counters that prove each chunk was submitted once.

Each request of a batch is answered exactly as the synchronous endpoint answers it (same
validation, same vectors, same body), so a batch run and a synchronous run give identical rows.

Assumptions where OpenAI documents nothing precise: an injected failure is a 500 with a
``server_error`` body inside the line's ``response`` (top-level ``error`` null, as for any HTTP
failure); ``request_counts.failed`` counts requests that ran and failed, so an expired or
cancelled batch has ``completed + failed < total``; cancelling a batch that is finalizing or
finished is a 400; only ``/v1/embeddings`` batches are served.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from testkit.embedding_server import EmbeddingTestServer

Response = tuple[int, dict[str, str], bytes]

JSON_HEADERS = {"Content-Type": "application/json"}
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions",
                   "/v1/moderations")
ACTIVE = ("in_progress", "finalizing", "cancelling")
TERMINAL = ("failed", "completed", "expired", "cancelled")
FILE_TTL_SECONDS = 30 * 24 * 3600  # purpose=batch files expire after 30 days by default
MAX_LISTED_ERRORS = 100


def _error(status: int, message: str, param: str | None = None, code: str | None = None,
           type_: str = "invalid_request_error") -> Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return status, dict(JSON_HEADERS), json.dumps(body).encode()


def _ok(obj: Any) -> Response:
    return 200, dict(JSON_HEADERS), json.dumps(obj).encode()


def _ts(t: float | None) -> int | None:
    return None if t is None else int(t)


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``multipart/form-data`` fields as ``{name: (filename, data)}``; ``{}`` if not multipart."""
    head = Message()
    head["content-type"] = content_type
    boundary = head.get_param("boundary")
    if head.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        return {}
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        if part.startswith(b"\r\n"):
            part = part[2:]
        raw_headers, _, data = part.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        msg = Message()
        for line in raw_headers.decode("utf-8", "replace").split("\r\n"):
            key, sep, value = line.partition(":")
            if sep:
                msg[key.strip()] = value.strip()
        name = msg.get_param("name", header="content-disposition")
        if name is None:
            continue
        filename = msg.get_filename()
        fields[collapse_rfc2231_value(name)] = (filename, data)
    return fields


def count_inputs(raw: Any) -> int:
    """Embedding inputs in one request body's ``input`` (what the 50,000-per-batch limit counts)."""
    if isinstance(raw, list) and raw and not all(isinstance(x, int) for x in raw):
        return len(raw)
    return 1


# --------------------------------------------------------------------------------------------
# stored objects
# --------------------------------------------------------------------------------------------
@dataclass
class StoredFile:
    """An uploaded or generated file; ``data`` is kept in memory."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: float

    def to_json(self) -> dict[str, Any]:
        expires = self.created_at + FILE_TTL_SECONDS if self.purpose in ("batch", "batch_output") else None
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": int(self.created_at),
                "expires_at": _ts(expires), "filename": self.filename, "purpose": self.purpose,
                "status": "processed", "status_details": None}


@dataclass
class BatchRequest:
    """One valid line of an input file, checked as the synchronous endpoint checks it."""

    line: int  # 1-based line number in the input file
    custom_id: str
    body: dict[str, Any]
    parsed: bytes | tuple[list[str], list[int], str, str, int | None]  # error body or _validate's tuple

    @property
    def tokens(self) -> int:
        return 0 if isinstance(self.parsed, bytes) else sum(self.parsed[1])


@dataclass
class BatchRecord:
    """A batch and the plan it runs to; times are float Unix seconds (reported truncated)."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: float
    expires_at: float
    requests: list[BatchRequest] = field(default_factory=list)
    validation_errors: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    status: str = "validating"
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
    errors: list[dict[str, Any]] | None = None
    order: list[int] = field(default_factory=list)  # processing (and output) order
    injected: set[int] = field(default_factory=set)  # request indices that fail with a 500
    ran: int = 0  # requests executed when the batch stopped (expired / cancelled / completed)
    output_file_id: str | None = None
    error_file_id: str | None = None

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.requests)

    def succeeds(self, index: int) -> bool:
        return index not in self.injected and not isinstance(self.requests[index].parsed, bytes)


# --------------------------------------------------------------------------------------------
# the API
# --------------------------------------------------------------------------------------------
class BatchAPI:
    """Files and batches of one :class:`EmbeddingTestServer`; knobs are read from the server.

    Batch states are advanced lazily (on every files/batches request and on :meth:`tick`) from
    :meth:`now`, the server's ``batch_clock`` plus the offset :meth:`advance` adds.
    """

    def __init__(self, server: EmbeddingTestServer) -> None:
        self.server = server
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, BatchRecord] = {}
        self._lock = threading.RLock()
        self._offset = 0.0
        self._ids = random.Random(f"ids-{server.seed}")

    # ------------------------------------------------------------------ clock
    def now(self) -> float:
        clock: Callable[[], float] = self.server.batch_clock or time.time
        return clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the batch clock forward (deterministic tests) and apply the transitions due."""
        with self._lock:
            self._offset += seconds
            self.tick()

    def tick(self) -> None:
        """Apply every state transition due at :meth:`now`, oldest batch first."""
        with self._lock:
            now = self.now()
            for batch in self.batches.values():
                self._advance_batch(batch, now)

    # ------------------------------------------------------------------ ids
    def _new_id(self, prefix: str, nbytes: int = 12) -> str:
        with self._lock:
            return f"{prefix}{self._ids.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    # ------------------------------------------------------------------ HTTP
    def handle(self, method: str, path: str, headers: Mapping[str, str] | Message, body: bytes) -> Response:
        """Answer one ``/v1/files*`` or ``/v1/batches*`` request."""
        split = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        parts = [p for p in split.path.split("/") if p]
        if parts and parts[0] == "v1":
            parts = parts[1:]
        with self._lock:
            self.tick()
            if parts[:1] == ["files"]:
                return self._files_route(method, parts[1:], query, headers, body)
            if parts[:1] == ["batches"]:
                return self._batches_route(method, parts[1:], query, body)
        return _error(404, f"Invalid URL ({method} {split.path})")

    def _files_route(self, method: str, rest: list[str], query: dict[str, str],
                     headers: Mapping[str, str] | Message, body: bytes) -> Response:
        if not rest:
            if method == "POST":
                return self._upload(headers, body)
            if method == "GET":
                return self._list_files(query)
        elif len(rest) == 1:
            if method == "GET":
                f = self.files.get(rest[0])
                return _ok(f.to_json()) if f else self._no_file(rest[0])
            if method == "DELETE":
                return self._delete_file(rest[0])
        elif len(rest) == 2 and rest[1] == "content" and method == "GET":
            f = self.files.get(rest[0])
            if f is None:
                return self._no_file(rest[0])
            return 200, {"Content-Type": "application/octet-stream"}, f.data
        return _error(404, f"Invalid URL ({method} /v1/files/{'/'.join(rest)})")

    def _batches_route(self, method: str, rest: list[str], query: dict[str, str], body: bytes) -> Response:
        if not rest:
            if method == "POST":
                return self._create_batch(body)
            if method == "GET":
                return self._list_batches(query)
        elif len(rest) == 1 and method == "GET":
            batch = self.batches.get(rest[0])
            return _ok(self.batch_json(batch)) if batch else self._no_batch(rest[0])
        elif len(rest) == 2 and rest[1] == "cancel" and method == "POST":
            return self._cancel(rest[0])
        return _error(404, f"Invalid URL ({method} /v1/batches/{'/'.join(rest)})")

    @staticmethod
    def _no_file(file_id: str) -> Response:
        return _error(404, f"No such File object: {file_id}", "id")

    @staticmethod
    def _no_batch(batch_id: str) -> Response:
        return _error(404, f"No batch found with id '{batch_id}'.", "batch_id")

    # ------------------------------------------------------------------ files
    def _upload(self, headers: Mapping[str, str] | Message, body: bytes) -> Response:
        fields = parse_multipart(str(headers.get("Content-Type") or headers.get("content-type") or ""), body)
        if not fields:
            return _error(400, "Invalid multipart/form-data body: expected the fields 'file' and 'purpose'.")
        if "purpose" not in fields:
            return _error(400, "Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
        if "file" not in fields:
            return _error(400, "Missing required parameter: 'file'.", "file", "missing_required_parameter")
        purpose = fields["purpose"][1].decode("utf-8", "replace")
        if purpose not in FILE_PURPOSES:
            return _error(400, f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'", "purpose")
        filename, data = fields["file"]
        if len(data) > self.server.max_file_bytes:
            return _error(400, "File is too large.")
        filename = filename or "upload"
        if purpose == "batch" and not filename.endswith(".jsonl"):
            return _error(400, "Invalid file format for Batch API. Must be .jsonl", "file")
        stored = self._store(filename, purpose, data)
        with self.server._lock:
            self.server.stats.files_uploaded += 1
        return _ok(stored.to_json())

    def _store(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        stored = StoredFile(self._new_id("file-"), filename, purpose, data, self.now())
        self.files[stored.id] = stored
        return stored

    def _list_files(self, query: dict[str, str]) -> Response:
        files = sorted(self.files.values(), key=lambda f: f.created_at, reverse=query.get("order", "desc") != "asc")
        if "purpose" in query:
            files = [f for f in files if f.purpose == query["purpose"]]
        page = self._page(files, query, default_limit=10_000, max_limit=10_000)
        return page if isinstance(page, tuple) else _ok(page)

    def _delete_file(self, file_id: str) -> Response:
        if self.files.pop(file_id, None) is None:
            return self._no_file(file_id)
        with self.server._lock:
            self.server.stats.files_deleted += 1
        return _ok({"id": file_id, "object": "file", "deleted": True})

    def _page(self, items: list[Any], query: dict[str, str], default_limit: int,
              max_limit: int) -> dict[str, Any] | Response:
        """A cursor page (``after`` = the last id the client saw) in the order given."""
        try:
            limit = int(query.get("limit", default_limit))
        except ValueError:
            return _error(400, f"Invalid 'limit': '{query['limit']}'. Expected an integer.", "limit")
        if not 1 <= limit <= max_limit:
            return _error(400, f"Invalid 'limit': integer below minimum value or above maximum value "
                               f"(1 to {max_limit}), got {limit}.", "limit", "integer_out_of_range")
        start = 0
        if "after" in query:
            ids = [item.id for item in items]
            if query["after"] in ids:
                start = ids.index(query["after"]) + 1
        chosen = items[start:start + limit]
        data = [item.to_json() if isinstance(item, StoredFile) else self.batch_json(item) for item in chosen]
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": start + limit < len(items)}

    # ------------------------------------------------------------------ batches: create
    def _create_batch(self, body: bytes) -> Response:
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(req.get(name), str):
                return _error(400, f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
        endpoint, window = req["endpoint"], req["completion_window"]
        if endpoint not in BATCH_ENDPOINTS:
            return _error(400, f"Invalid value: '{endpoint}'. Supported values are: "
                               f"{', '.join(repr(e) for e in BATCH_ENDPOINTS)}.", "endpoint", "invalid_value")
        if endpoint != "/v1/embeddings":
            return _error(400, f"This test server runs only /v1/embeddings batches, not '{endpoint}'.",
                          "endpoint", "invalid_value")
        if window != "24h":
            return _error(400, f"Invalid value: '{window}'. Supported values are: '24h'.",
                          "completion_window", "invalid_value")
        metadata = req.get("metadata")
        if metadata is not None:
            bad = self._metadata_error(metadata)
            if bad is not None:
                return bad
        source = self.files.get(req["input_file_id"])
        if source is None:
            return _error(400, f"Invalid 'input_file_id': '{req['input_file_id']}'. No such file object.",
                          "input_file_id", "invalid_value")
        if source.purpose != "batch":
            return _error(400, f"The file '{source.id}' has purpose '{source.purpose}'; a batch input file "
                               "must be uploaded with purpose 'batch'.", "input_file_id", "invalid_value")
        now = self.now()
        batch = BatchRecord(self._new_id("batch_"), source.id, endpoint, window, metadata, now,
                            now + self.server.batch_expiry_seconds)
        self._validate_file(batch, source.data)
        self.batches[batch.id] = batch
        st = self.server.stats
        with self.server._lock:
            st.batches_created += 1
            st.batch_requests_submitted += len(batch.requests)
            for r in batch.requests:
                st.batch_custom_ids[r.custom_id] += 1
                st.batch_inputs_submitted += count_inputs(r.body.get("input"))
                if self.server.record_texts and not isinstance(r.parsed, bytes):
                    st.batch_text_counts.update(r.parsed[0])
        return _ok(self.batch_json(batch))

    @staticmethod
    def _metadata_error(metadata: Any) -> Response | None:
        if not isinstance(metadata, dict) or len(metadata) > 16:
            return _error(400, "Invalid 'metadata': at most 16 key-value pairs are allowed.", "metadata")
        for key, value in metadata.items():
            if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
                return _error(400, "Invalid 'metadata': keys are strings of at most 64 characters, values "
                                   "strings of at most 512.", "metadata")
        return None

    def _validate_file(self, batch: BatchRecord, data: bytes) -> None:
        """What OpenAI checks while ``validating``; problems go to ``validation_errors``."""
        errors = batch.validation_errors

        def fail(code: str, message: str, line: int | None = None, param: str | None = None) -> None:
            if len(errors) < MAX_LISTED_ERRORS:
                errors.append({"code": code, "line": line, "message": message, "param": param})

        seen: set[str] = set()
        inputs = 0
        lines = data.decode("utf-8", "replace").splitlines()
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
            except ValueError:
                fail("invalid_json_line", "This line is not parseable as valid JSON.", number)
                continue
            missing = next((k for k in ("custom_id", "method", "url", "body") if k not in obj), None)
            if missing is not None:
                fail("missing_required_parameter", f"Missing required parameter: '{missing}'.", number, missing)
                continue
            custom_id, method, url, body = obj["custom_id"], obj["method"], obj["url"], obj["body"]
            if not isinstance(custom_id, str) or not custom_id:
                fail("invalid_value", "Invalid 'custom_id': expected a non-empty string.", number, "custom_id")
                continue
            if custom_id in seen:
                fail("duplicate_custom_id", f"The custom_id '{custom_id}' is a duplicate of another request. "
                     "The custom_id parameter must be unique for each request in a batch.", number, "custom_id")
                continue
            seen.add(custom_id)
            if method != "POST":
                fail("invalid_value", f"Invalid value: '{method}'. Supported values are: 'POST'.", number, "method")
                continue
            if url != batch.endpoint:
                fail("url_mismatch", f"The provided URL '{url}' does not match the batch endpoint "
                     f"'{batch.endpoint}'.", number, "url")
                continue
            if not isinstance(body, dict):
                fail("invalid_value", "Invalid 'body': expected an object.", number, "body")
                continue
            model = body.get("model")
            if not isinstance(model, str) or not model:
                fail("missing_required_parameter", "Missing required parameter: 'body.model'.", number, "body.model")
                continue
            if "input" not in body:
                fail("missing_required_parameter", "Missing required parameter: 'body.input'.", number, "body.input")
                continue
            if batch.model is None:
                batch.model = model
            elif model != batch.model:
                fail("model_mismatch", f"The provided model '{model}' does not match the model "
                     f"'{batch.model}' of the other requests; a batch may use only one model.", number, "body.model")
                continue
            inputs += count_inputs(body["input"])
            batch.requests.append(BatchRequest(number, custom_id, body, self.server._validate(body)))
        if not lines or (not errors and not batch.requests):
            fail("empty_file", "The batch input file is empty.")
        n = sum(1 for text in lines if text.strip())
        if n > self.server.batch_max_requests:
            fail("too_many_tasks", f"The batch input file contains {n} requests; the limit is "
                 f"{self.server.batch_max_requests} requests per batch.")
        if inputs > self.server.batch_max_inputs:
            fail("too_many_tasks", f"The batch contains {inputs} embedding inputs; /v1/embeddings batches are "
                 f"limited to {self.server.batch_max_inputs} inputs across all requests.")

    # ------------------------------------------------------------------ batches: state machine
    def _token_limit(self, model: str) -> int | None:
        limit = self.server.batch_enqueued_token_limit
        if isinstance(limit, Mapping):
            return limit.get(model)
        return limit

    def _enqueued_tokens(self, model: str, at: float, other_than: BatchRecord) -> int:
        """Tokens of the batches of ``model`` running (validated, not yet finished) at time ``at``."""
        total = 0
        for b in self.batches.values():
            if b is other_than or b.model != model or b.in_progress_at is None or b.in_progress_at > at:
                continue
            end = b.completed_at or b.expired_at or b.cancelled_at or b.failed_at
            if end is None or end > at:
                total += b.tokens
        return total

    def _ran_by(self, batch: BatchRecord, t: float) -> int:
        """Requests executed by time ``t`` (uniformly over ``batch_seconds``)."""
        if batch.in_progress_at is None:
            return 0
        n = len(batch.requests)
        seconds = self.server.batch_seconds
        if seconds <= 0 or t >= batch.in_progress_at + seconds:
            return n
        return max(0, min(n, int(n * (t - batch.in_progress_at) / seconds)))

    def _advance_batch(self, batch: BatchRecord, now: float) -> None:
        srv = self.server
        while True:
            status = batch.status
            if status == "validating":
                t = batch.created_at + srv.batch_validating_seconds
                if now < t:
                    return
                if t >= batch.expires_at:
                    self._finish(batch, "expired", batch.expires_at, 0)
                elif batch.validation_errors:
                    batch.status, batch.failed_at = "failed", t
                    batch.errors = list(batch.validation_errors)
                    self._record_final(batch)
                else:
                    assert batch.model is not None
                    limit = self._token_limit(batch.model)
                    enqueued = self._enqueued_tokens(batch.model, t, batch)
                    if limit is not None and enqueued + batch.tokens > limit:
                        batch.status, batch.failed_at = "failed", t
                        batch.errors = [{
                            "code": "token_limit_exceeded", "line": None, "param": None,
                            "message": f"Enqueued token limit reached for {batch.model} in organization "
                                       f"org-test. Limit: {limit:,} enqueued tokens. Please try again once "
                                       "some in_progress batches have been completed."}]
                        self._record_final(batch)
                    else:
                        self._start(batch, t)
            elif status == "in_progress":
                done_at = batch.in_progress_at + srv.batch_seconds if batch.in_progress_at is not None else now
                if batch.expires_at < done_at and now >= batch.expires_at:
                    self._finish(batch, "expired", batch.expires_at, self._ran_by(batch, batch.expires_at))
                elif now >= done_at:
                    batch.status, batch.finalizing_at = "finalizing", done_at
                else:
                    return
            elif status == "finalizing":
                assert batch.finalizing_at is not None
                t = batch.finalizing_at + srv.batch_finalizing_seconds
                if now < t:
                    return
                self._finish(batch, "completed", t, len(batch.requests))
            elif status == "cancelling":
                assert batch.cancelling_at is not None
                t = batch.cancelling_at + srv.batch_cancelling_seconds
                if now < t:
                    return
                self._finish(batch, "cancelled", t, self._ran_by(batch, batch.cancelling_at))
            else:
                return

    def _start(self, batch: BatchRecord, t: float) -> None:
        """``in_progress``: fix the (shuffled) order and which requests the injected faults hit."""
        srv = self.server
        rng = random.Random(f"{srv.seed}-{batch.id}")
        batch.order = list(range(len(batch.requests)))
        rng.shuffle(batch.order)
        fail_ids = set(srv.batch_fail_custom_ids)
        for i, r in enumerate(batch.requests):
            hit = srv.batch_fail_rate > 0 and rng.random() < srv.batch_fail_rate
            if hit or r.custom_id in fail_ids:
                batch.injected.add(i)
        batch.status, batch.in_progress_at = "in_progress", t

    def _finish(self, batch: BatchRecord, status: str, t: float, ran: int) -> None:
        """A terminal state with its output and error files (what ran, then what never ran)."""
        batch.status, batch.ran = status, ran
        setattr(batch, f"{status}_at", t)
        out: list[bytes | memoryview] = []  # parts of the file, joined once (the output can be GBs)
        err: list[bytes | memoryview] = []
        embedded: list[str] = []
        for pos, i in enumerate(batch.order):
            r = batch.requests[i]
            if pos >= ran:
                code = "batch_expired" if status == "expired" else "batch_cancelled"
                message = ("This request could not be executed before the completion window expired."
                           if status == "expired" else "This request was not executed because the batch was "
                           "cancelled.")
                err.extend(self._line(r, None, json.dumps({"code": code, "message": message}).encode()))
            elif i in batch.injected:
                err.extend(self._line(r, (500, [json.dumps({"error": {
                    "message": "The server had an error while processing your request. Sorry about that!",
                    "type": "server_error", "param": None, "code": None}}).encode()])))
            elif isinstance(r.parsed, bytes):
                err.extend(self._line(r, (400, [r.parsed])))
            else:
                texts, counts, model, fmt, dimensions = r.parsed
                payload = self.server._answer(texts, model, fmt, dimensions, sum(counts), None, 0)
                out.extend(self._line(r, (200, [payload] if isinstance(payload, bytes) else payload)))
                embedded.extend(texts)
        if out:
            batch.output_file_id = self._store(f"{batch.id}_output.jsonl", "batch_output", b"".join(out)).id
        if err:
            batch.error_file_id = self._store(f"{batch.id}_error.jsonl", "batch_output", b"".join(err)).id
        st = self.server.stats
        with self.server._lock:
            st.batch_requests_completed += sum(1 for i in batch.order[:ran] if batch.succeeds(i))
            if self.server.record_texts:
                st.batch_embedded_text_counts.update(embedded)
        self._record_final(batch)

    def _record_final(self, batch: BatchRecord) -> None:
        with self.server._lock:
            self.server.stats.batch_final_statuses[batch.status] += 1

    def _line(self, r: BatchRequest, response: tuple[int, list[bytes | memoryview]] | None,
              error: bytes | None = None) -> list[bytes | memoryview]:
        """One output/error file line as parts, the body spliced in as raw JSON (vectors not re-encoded)."""
        parts: list[bytes | memoryview] = [b'{"id":"%s","custom_id":%s,"response":' % (
            self._new_id("batch_req_", 16).encode(), json.dumps(r.custom_id).encode())]
        if response is None:
            parts.append(b"null")
        else:
            status, body = response
            parts.append(b'{"status_code":%d,"request_id":"%s","body":' % (status, self._new_id("req_", 16).encode()))
            parts.extend(body)
            parts.append(b"}")
        parts.append(b',"error":' + (error or b"null") + b"}\n")
        return parts

    # ------------------------------------------------------------------ batches: cancel, list, JSON
    def _cancel(self, batch_id: str) -> Response:
        batch = self.batches.get(batch_id)
        if batch is None:
            return self._no_batch(batch_id)
        if batch.status == "cancelling":
            return _ok(self.batch_json(batch))
        if batch.status not in ("validating", "in_progress"):
            # 400 (not 409, which clients retry): the state will not change by asking again
            return _error(400, f"Cannot cancel a batch with status '{batch.status}'.", "batch_id")
        now = self.now()
        if batch.status == "validating":
            batch.in_progress_at = None  # nothing ran
        batch.status, batch.cancelling_at = "cancelling", now
        with self.server._lock:
            self.server.stats.batches_cancelled += 1
        answer = self.batch_json(batch)  # the cancel call itself answers "cancelling", as OpenAI's does
        self._advance_batch(batch, now)
        return _ok(answer)

    def _list_batches(self, query: dict[str, str]) -> Response:
        batches = sorted(self.batches.values(), key=lambda b: b.created_at, reverse=True)
        page = self._page(batches, query, default_limit=20, max_limit=100)
        return page if isinstance(page, tuple) else _ok(page)

    def batch_json(self, batch: BatchRecord) -> dict[str, Any]:
        """The batch object as OpenAI returns it (every field present, ``null`` when unset)."""
        total = len(batch.requests) if batch.in_progress_at is not None else 0  # known once validated
        ran = batch.ran if batch.status in TERMINAL else self._ran_by(batch, self.now())
        if batch.status == "cancelling" and batch.cancelling_at is not None:
            ran = self._ran_by(batch, batch.cancelling_at)
        ran_ids = batch.order[:ran]
        completed = sum(1 for i in ran_ids if batch.succeeds(i))
        usage = None
        if batch.status in TERMINAL:
            tokens = sum(batch.requests[i].tokens for i in ran_ids if batch.succeeds(i))
            usage = {"input_tokens": tokens, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 0,
                     "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": tokens}
        return {
            "id": batch.id, "object": "batch", "endpoint": batch.endpoint, "model": batch.model,
            "errors": None if batch.errors is None else {"object": "list", "data": batch.errors},
            "input_file_id": batch.input_file_id, "completion_window": batch.completion_window,
            "status": batch.status, "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
            "created_at": int(batch.created_at), "in_progress_at": _ts(batch.in_progress_at),
            "expires_at": _ts(batch.expires_at), "finalizing_at": _ts(batch.finalizing_at),
            "completed_at": _ts(batch.completed_at), "failed_at": _ts(batch.failed_at),
            "expired_at": _ts(batch.expired_at), "cancelling_at": _ts(batch.cancelling_at),
            "cancelled_at": _ts(batch.cancelled_at),
            "request_counts": {"total": total, "completed": completed, "failed": len(ran_ids) - completed},
            "usage": usage, "metadata": batch.metadata,
        }
