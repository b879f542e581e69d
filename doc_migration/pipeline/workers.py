"""A parser process pool with a hard per-file time limit.

Why not ProcessPoolExecutor.map: a parser stuck in C code (pdfium, libyaml) cannot be interrupted
by a Python signal, so a file over its time limit is handled by killing the pool, quarantining
that file and resubmitting the files that were in flight with it. At most ``processes`` files are
in flight, so a file's deadline can be counted from its submission. The pool outlives a
partition (starting workers costs about a second) and is shut down at interpreter exit.
"""

from __future__ import annotations

import atexit
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.pool import Pool
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")

_pools: dict[int, Pool] = {}
# On top of the parser's own (soft, SIGALRM) limit, for IPC only: the pool is warm before any
# deadline starts counting. A stuck PDFium allocates ~400 MB/s, so every second here is memory.
GRACE_S = 1.0
PRELOAD = ["doc_migration.pipeline.parse", "doc_migration.sources.registry"]
QUEUED_PER_PROCESS = 3


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent, between partitions
    from . import parse

    parse.worker_init()


def _ready() -> bool:
    return True


def _pool(processes: int) -> Pool:
    pool = _pools.get(processes)
    if pool is None:
        ctx = multiprocessing.get_context("forkserver")
        # Workers fork from a server that has imported the parsers already: milliseconds, not seconds.
        ctx.set_forkserver_preload(PRELOAD)
        pool = ctx.Pool(processes=processes, initializer=_init_worker, maxtasksperchild=2000)
        pool.apply(_ready)  # start-up is not charged to the first file's deadline
        _pools[processes] = pool
    return pool


def _kill(processes: int) -> None:
    pool = _pools.pop(processes, None)
    if pool is not None:
        pool.terminate()
        pool.join()


@atexit.register
def shutdown() -> None:
    for processes in list(_pools):
        pool = _pools.pop(processes)
        pool.terminate()
        pool.join()


def run_bounded(fn: Callable[[J], R], jobs: list[J], processes: int, timeout_s: Callable[[J], float],
                on_timeout: Callable[[J], R]) -> Iterator[R]:
    """Yield ``fn(job)`` for every job (in job order), or ``on_timeout(job)`` for jobs that exceed
    ``timeout_s(job) + GRACE_S`` seconds.

    Up to ``QUEUED_PER_PROCESS`` jobs per worker are submitted, so a worker never waits for the
    parent to take a result and hand it the next file. A job's clock starts once it is among the
    first ``processes`` unfinished ones (by then it has certainly started), not at submission.
    """
    pending = deque(jobs)
    in_flight: deque[list[Any]] = deque()  # [job, handle, deadline or None while possibly queued]
    while pending or in_flight:
        pool = _pool(processes)
        while pending and len(in_flight) < processes * QUEUED_PER_PROCESS:
            job = pending.popleft()
            in_flight.append([job, pool.apply_async(fn, (job,)), None])
        now = time.monotonic()
        for entry in list(in_flight)[:processes]:
            if entry[2] is None:
                entry[2] = now + timeout_s(entry[0]) + GRACE_S
        job, handle, deadline = in_flight.popleft()
        try:
            yield handle.get(timeout=max(0.0, deadline - time.monotonic()))
        except multiprocessing.TimeoutError:
            yield on_timeout(job)
            # The worker is stuck: kill the pool and resubmit the files that were in flight with it.
            survivors = [j for j, h, _ in in_flight if not h.ready()]
            done = [(j, h) for j, h, _ in in_flight if h.ready()]
            in_flight.clear()
            for _, h in done:
                yield h.get()
            _kill(processes)
            pending.extendleft(reversed(survivors))
