"""Stage 3 in batch mode: the run's uncached texts go through the OpenAI Batch API (half price, no
tokens-per-minute ceiling), then the load stage reads their vectors from the cache as usual.

Exactly-once, whatever kills the process (the bookkeeping is in :mod:`..storage.batches`):

1. every live batch recorded by an earlier process is reconciled first: an intent whose file is on
   the server (found by its name) is adopted, one whose upload never happened is forgotten; a file
   with no recorded batch gets the batch found by its metadata token, or one is created from the
   file (never a new upload); a finished batch is downloaded and ingested into the cache;
2. only texts neither cached nor in a live batch are packed into new request files; each file is
   recorded (intent) before its upload, its file id before its batch is created, its batch id
   before any wait;
3. failed requests (the error file) and an expired batch's leftovers are submitted again in a new
   batch (or, with ``DOC_MIGRATION_BATCH_RETRY=sync``, through the synchronous endpoint), at most
   ``max_attempts`` batches per text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ..config import Settings
from ..embedding.base import Embedder, check_vectors
from ..embedding.batch import BatchClient, BatchConfig, BatchError, build_files, decode_body, split_custom_id
from ..faults import crash_point
from ..storage import batches as store
from ..storage import embedding_cache as cache
from ..storage import staging
from ..storage.database import connection
from . import interrupt, progress
from .embed import EmbedResult

STORE_CHUNK = 512  # vectors per cache commit while ingesting an output file
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")


class BatchesCancelled(BatchError):
    """Someone cancelled the run's batches (`doc-migrate batches cancel`): stop instead of resubmitting."""


@dataclass
class BatchRun:
    """What the batch step did for one run."""

    results: dict[str, EmbedResult] = field(default_factory=dict)
    submitted: int = 0  # batches created by this process
    adopted: int = 0  # batches (or files) of a killed process taken over
    ingested: int = 0
    vectors_stored: int = 0
    tokens: int = 0  # input tokens of the requests that succeeded (the batches' usage)
    synchronous: int = 0  # texts embedded through the synchronous endpoint (DOC_MIGRATION_BATCH_RETRY=sync)
    seconds: float = 0.0


def make_client(settings: Settings) -> BatchClient:
    import os

    return BatchClient(os.environ.get("OPENAI_API_KEY"), settings.openai_base_url)


def _status(batch: object) -> tuple[str, int, int, str | None, str | None]:
    counts = getattr(batch, "request_counts", None)
    return (str(getattr(batch, "status", "")), int(getattr(counts, "completed", 0) or 0),
            int(getattr(counts, "failed", 0) or 0), getattr(batch, "output_file_id", None),
            getattr(batch, "error_file_id", None))


def _errors(batch: object) -> str:
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    return "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "") for e in errors[:3])


class _Runner:
    def __init__(self, settings: Settings, url: str, run_id: str, client: BatchClient, cfg: BatchConfig,
                 say: Callable[[str], None], sync_embedder: Embedder | None) -> None:
        self.settings, self.url, self.run_id, self.client, self.cfg = settings, url, run_id, client, cfg
        self.say, self.sync_embedder = say, sync_embedder
        self.model, self.dims = settings.model_name, settings.embedding_dims
        self.send_dims = self.dims if self.model.startswith("text-embedding-3") else None
        self.out = BatchRun()
        self.cancelled: list[str] = []
        self.partitions: list[str] = []
        self.first_pass = True  # batches found cancelled before this process waited were cancelled earlier

    # ------------------------------------------------------------------ reconcile
    def reconcile(self) -> list[store.BatchRow]:
        """Bring every live batch of this model up to date (adopting orphans, ingesting finished ones);
        returns those still running."""
        running = []
        for recorded in store.batches(self.settings, self.url, live_only=True, model=self.model, dims=self.dims):
            row = self._adopt(recorded)
            if row is None:
                continue
            if row.status in ACTIVE:
                batch = self.client.retrieve(row.batch_id or "")
                status, completed, failed, out_id, err_id = _status(batch)
                with connection(self.url) as conn:
                    store.update(conn, self.settings, row.token, status=status, completed=completed, failed=failed,
                                 output_file_id=out_id, error_file_id=err_id, error=_errors(batch) or None)
                    conn.commit()
                row.status, row.completed, row.failed = status, completed, failed
                row.output_file_id, row.error_file_id = out_id, err_id
                if status == "failed":
                    row.error = _errors(batch)
            if row.status in ACTIVE:
                running.append(row)
            else:
                self._ingest(row)
        return running

    def _adopt(self, row: store.BatchRow) -> store.BatchRow | None:
        """Finish what a killed process left between two recorded steps."""
        filename = f"doc-migration-{row.token}.jsonl"
        if row.status == "intent":
            file_id = self.client.find_file(filename)
            with connection(self.url) as conn:
                if file_id is None:  # the upload never happened: nothing on the server, nothing paid
                    store.forget(conn, self.settings, row.token)
                    conn.commit()
                    return None
                store.update(conn, self.settings, row.token, status="uploaded", file_id=file_id)
                conn.commit()
            self.say(f"batch mode: adopted the uploaded file {file_id} of an interrupted run")
            self.out.adopted += 1
            row.status, row.file_id = "uploaded", file_id
        if row.status == "uploaded" or row.batch_id is None:
            batch = self.client.find_batch(row.token)
            if batch is not None:
                self.say(f"batch mode: adopted batch {batch.id} of an interrupted run")
                self.out.adopted += 1
            else:
                batch = self.client.create(row.file_id or "", row.token, self.run_id)
                self.out.submitted += 1
            self._record_batch(row, batch)
        return row

    def _record_batch(self, row: store.BatchRow, batch: object) -> None:
        status, completed, failed, out_id, err_id = _status(batch)
        with connection(self.url) as conn:
            store.update(conn, self.settings, row.token, batch_id=str(getattr(batch, "id", "")), status=status,
                         completed=completed, failed=failed, output_file_id=out_id, error_file_id=err_id)
            conn.commit()
        row.batch_id, row.status = str(getattr(batch, "id", "")), status
        row.output_file_id, row.error_file_id = out_id, err_id

    # ------------------------------------------------------------------ ingest
    def _ingest(self, row: store.BatchRow) -> None:
        """Store a finished batch's output in the cache (idempotent: a re-download after a kill rewrites
        nothing twice), then mark it ingested so that its missing texts may be submitted again."""
        with connection(self.url) as conn:
            mapping = store.request_texts(conn, self.settings, row.token)
            conn.rollback()
        stored = 0
        if row.output_file_id:
            shas: list[bytes] = []
            vecs: list[np.ndarray] = []

            def flush() -> None:
                nonlocal stored
                if not shas:
                    return
                vectors = np.concatenate(vecs, axis=0)
                check_vectors(vectors, len(shas), self.dims)
                with connection(self.url) as conn:
                    cache.store(conn, self.settings, self.model, self.dims, list(shas), vectors)
                    conn.commit()
                stored += len(shas)
                shas.clear()
                vecs.clear()
                crash_point("batch-download")

            for line in self.client.lines(row.output_file_id):
                parsed = split_custom_id(line.get("custom_id", ""))
                response = line.get("response") or {}
                if parsed is None or parsed[0] != row.token or parsed[1] not in mapping:
                    continue
                if response.get("status_code") != 200:
                    continue
                texts = mapping[parsed[1]]
                vecs.append(decode_body(response.get("body"), len(texts), self.dims))
                shas.extend(texts)
                if len(shas) >= STORE_CHUNK:
                    flush()
            flush()
        failed = row.failed
        if row.error_file_id:
            failed = sum(1 for _ in self.client.lines(row.error_file_id))
        with connection(self.url) as conn:
            store.update(conn, self.settings, row.token, ingested=True, stored=stored, failed=failed)
            conn.commit()
        self.out.ingested += 1
        self.out.vectors_stored += stored
        self.out.tokens += _tokens_of(row, stored)
        what = f"batch {row.batch_id} {row.status}: {stored} vectors stored"
        if failed:
            what += f", {failed} request(s) failed or not run (submitted again)"
        if row.status == "failed":
            what += f" ({row.error or 'no reason given'})"
        self.say(f"batch mode: {what}")
        if row.status == "cancelled" and not self.first_pass:
            self.cancelled.append(row.batch_id or row.token)

    # ------------------------------------------------------------------ submit
    def submit(self, todo: list[tuple[bytes, str, int]], running: list[store.BatchRow]) -> int:
        """New batches for ``todo`` (within the enqueued-token limit); returns how many were created."""
        files = build_files([t[1] for t in todo], [t[2] for t in todo], self.model, self.send_dims, self.cfg)
        enqueued = sum(r.tokens for r in running)
        created = 0
        for f in files:
            if self.cfg.token_limit is not None and enqueued + f.tokens > self.cfg.token_limit and (running or created):
                break  # the rest waits until running batches finish
            interrupt.check()
            requests = [[todo[i][0] for i in req] for req in f.requests]
            with connection(self.url) as conn:
                store.record_intent(conn, self.settings, f.token, self.run_id, self.model, self.dims,
                                    self.partitions, requests, f.tokens)
                conn.commit()
            crash_point("batch-before-upload")
            file_id = self.client.upload(f.filename, f.data)
            crash_point("batch-after-upload")
            with connection(self.url) as conn:
                store.update(conn, self.settings, f.token, status="uploaded", file_id=file_id)
                conn.commit()
            batch = self.client.create(file_id, f.token, self.run_id)
            crash_point("batch-after-create")
            row = store.BatchRow(f.token, self.run_id, self.model, self.dims, self.partitions, len(f.requests),
                                 f.inputs, f.tokens, "uploaded", file_id, None, None, None, 0, 0, 0, None, False,
                                 None, None)  # type: ignore[arg-type]
            self._record_batch(row, batch)
            self.say(f"batch mode: submitted batch {row.batch_id}: {len(f.requests)} requests, {f.inputs} inputs, "
                     f"{f.tokens} tokens ({f.size} bytes)")
            enqueued += f.tokens
            created += 1
            self.out.submitted += 1
        return created


def _tokens_of(row: store.BatchRow, stored: int) -> int:
    """The tokens of what a batch embedded, pro rata when part of it failed or expired."""
    return row.tokens if stored >= row.inputs else round(row.tokens * stored / max(1, row.inputs))


def embed_with_batches(settings: Settings, url: str, keys: list[str], run_id: str, *, client: BatchClient | None = None,
                       cfg: BatchConfig | None = None, say: Callable[[str], None] = lambda _: None,
                       sync_embedder: Embedder | None = None) -> BatchRun:
    """Embed the uncached texts of ``keys`` through the Batch API and wait for them (blocking)."""
    from ..storage.locks import acquire_batch_lock

    start = time.perf_counter()
    cfg = cfg or replace(BatchConfig.from_env(), request_inputs=max(1, settings.batch_size))
    own_client = client is None
    client = client or make_client(settings)
    model, dims = settings.model_name, settings.embedding_dims
    runner = _Runner(settings, url, run_id, client, cfg, say, sync_embedder)
    runner.partitions = list(keys)
    need: dict[bytes, tuple[str, int]] = {}
    per_key: dict[str, list[bytes]] = {}
    with connection(url) as conn:
        for key in keys:
            result = EmbedResult(key)
            result.chunks, result.carried = staging.staged_counts(conn, settings, key)
            uncached = cache.uncached_texts(conn, settings, key, model, dims)
            per_key[key] = [bytes(u[0]) for u in uncached]
            for u in uncached:
                need.setdefault(bytes(u[0]), (u[1], int(u[2])))
            result.cache_hits = result.chunks - result.carried - len(uncached)
            runner.out.results[key] = result
        conn.rollback()
    lock = acquire_batch_lock(url)
    try:
        delay = min(1.0, cfg.poll_seconds)
        total = len(need)
        while True:
            running = runner.reconcile()
            runner.first_pass = False
            if runner.cancelled:
                raise BatchesCancelled(
                    f"batch(es) {', '.join(runner.cancelled[:5])} were cancelled; what they embedded is cached. "
                    "Run `doc-migrate full --embed-mode batch` again to submit the rest")
            with connection(url) as conn:
                cached = cache.cached(settings, url, model, dims, list(need)) if need else set()
                live = store.live_texts(conn, settings, model, dims)
                todo_shas = [s for s in need if s not in cached and s not in live]
                tried = store.attempts(conn, settings, todo_shas, model, dims) if todo_shas else {}
                conn.rollback()
            progress.report("embed", total - len([s for s in need if s not in cached]), total, "chunks")
            if todo_shas:
                spent = [s for s in todo_shas if tried.get(s, 0) >= cfg.max_attempts]
                if spent:
                    raise BatchError(f"{len(spent)} text(s) failed in {cfg.max_attempts} batches each; see "
                                     "`doc-migrate batches` for the errors (DOC_MIGRATION_BATCH_RETRY=sync sends "
                                     "the rest through the synchronous endpoint)")
                retry = any(tried.get(s, 0) for s in todo_shas)
                if retry and cfg.retry == "sync" and sync_embedder is not None:
                    runner.out.synchronous += _embed_sync(settings, url, todo_shas, need, sync_embedder)
                    continue
                if runner.submit([(s, *need[s]) for s in todo_shas], running):
                    delay = min(1.0, cfg.poll_seconds)
                    continue
            if not running:
                if not todo_shas:
                    break
                continue
            states = ", ".join(f"{r.batch_id} {r.status} {r.completed + r.failed}/{r.requests}" for r in running[:4])
            say(f"batch mode: waiting for {len(running)} batch(es): {states}" + (" …" if len(running) > 4 else ""))
            crash_point("batch-wait")
            if interrupt.wait(delay):
                interrupt.check()
            delay = min(cfg.poll_seconds, delay * 2)
    finally:
        lock.close()
        if own_client:
            client.close()
    # what each partition got: its texts' share of the batch tokens (a text shared by two partitions
    # is counted for the first)
    counted: set[bytes] = set()
    for key in keys:
        mine = [s for s in per_key[key] if s not in counted]
        counted.update(mine)
        res = runner.out.results[key]
        res.embedded = len(mine)
        res.tokens = sum(need[s][1] for s in mine)
        res.seconds = time.perf_counter() - start
        with connection(url) as conn:
            cache.record_spend(conn, settings, run_id, key, model, inputs=res.embedded, cache_hits=res.cache_hits,
                               tokens=res.tokens, requests=0, seconds=res.seconds,
                               batch_tokens=0 if runner.out.synchronous else res.tokens)
            conn.commit()
    runner.out.seconds = time.perf_counter() - start
    return runner.out


def _embed_sync(settings: Settings, url: str, shas: list[bytes], need: dict[bytes, tuple[str, int]],
                embedder: Embedder) -> int:
    """What the batches did not embed, through the synchronous endpoint (DOC_MIGRATION_BATCH_RETRY=sync)."""
    step = max(1, settings.batch_size)
    for i in range(0, len(shas), step):
        part = shas[i:i + step]
        vectors = embedder.embed([need[s][0] for s in part])
        check_vectors(vectors, len(part), settings.embedding_dims)
        with connection(url) as conn:
            cache.store(conn, settings, settings.model_name, settings.embedding_dims, part, vectors)
            conn.commit()
    return len(shas)


def cancel_batches(settings: Settings, url: str, client: BatchClient | None = None) -> list[str]:
    """Cancel every live batch on the server (`doc-migrate batches cancel`); what they embedded before the
    cancel is stored by the next run. Works while a `full` waits for them (it then stops)."""
    from ..storage.locks import PartitionBusy, acquire_batch_lock

    own = client is None
    client = client or make_client(settings)
    cancelled: list[str] = []
    try:
        try:
            lock = acquire_batch_lock(url)  # free: no process is between two steps of a submission
        except PartitionBusy:
            lock = None
        try:
            for row in store.batches(settings, url, live_only=True):
                batch_id = row.batch_id
                if batch_id is None:
                    found = client.find_batch(row.token)
                    if found is None:
                        if lock is not None:  # uploaded (or not) but never a batch: nothing runs, nothing to pay
                            with connection(url) as conn:
                                store.update(conn, settings, row.token, status="cancelled", ingested=True,
                                             error="cancelled before its batch was created")
                                conn.commit()
                        continue
                    batch_id = str(found.id)
                if row.status not in ACTIVE and row.status not in ("uploaded", "intent"):
                    continue
                batch = client.cancel(batch_id)
                status, completed, failed, out_id, err_id = _status(batch)
                with connection(url) as conn:
                    store.update(conn, settings, row.token, batch_id=batch_id, status=status, completed=completed,
                                 failed=failed, output_file_id=out_id, error_file_id=err_id)
                    conn.commit()
                if status in ("cancelling", "cancelled"):
                    cancelled.append(batch_id)
        finally:
            if lock is not None:
                lock.close()
    finally:
        if own:
            client.close()
    return cancelled
