"""A parser process pool with a hard per-file time limit.

Why not ProcessPoolExecutor.map: a parser stuck in C code (pdfium, libyaml) cannot be interrupted
by a Python signal, so a file over its time limit is handled by killing the pool, quarantining
that file and resubmitting the files that were in flight with it. A file's deadline counts from
when it has certainly started (see run_bounded). Pools outlive a partition (starting workers costs
about a second): each caller leases one, so partitions parsed at the same time never share one,
and all are shut down at interpreter exit.
"""

from __future__ import annotations

import atexit
import multiprocessing
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.pool import Pool
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")

PoolKey = tuple[int, Callable[[], None] | None, tuple[str, ...]]  # (processes, initializer, preload)
_idle: dict[PoolKey, list[Pool]] = {}  # warm pools not in use, by kind; one is leased per partition
_all: list[Pool] = []
_lock = threading.Lock()
# On top of the parser's own (soft, SIGALRM) limit, for IPC only: the pool is warm before any
# deadline starts counting. A stuck PDFium allocates ~400 MB/s, so every second here is memory.
GRACE_S = 1.0
QUEUED_PER_PROCESS = 3


def _init_worker(initializer: Callable[[], None] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent, between partitions
    if initializer is not None:
        initializer()


def _ready() -> bool:
    return True


def _new_pool(key: PoolKey) -> Pool:
    processes, initializer, preload = key
    ctx = multiprocessing.get_context("forkserver")
    # Workers fork from a server that has imported the caller's modules already: milliseconds, not seconds.
    ctx.set_forkserver_preload(list(preload))
    pool = ctx.Pool(processes=processes, initializer=_init_worker, initargs=(initializer,), maxtasksperchild=2000)
    pool.apply(_ready)  # start-up is not charged to the first file's deadline
    with _lock:
        _all.append(pool)
    return pool


def _lease(key: PoolKey) -> Pool:
    """A warm pool for one caller at a time: partitions parsed concurrently get one each, so killing
    a stuck worker's pool never touches another partition's files."""
    with _lock:
        idle = _idle.get(key)
        if idle:
            return idle.pop()
    return _new_pool(key)


def _release(key: PoolKey, pool: Pool) -> None:
    with _lock:
        _idle.setdefault(key, []).append(pool)


def _kill(pool: Pool) -> None:
    with _lock:
        if pool in _all:
            _all.remove(pool)
    pool.terminate()
    pool.join()


@atexit.register
def shutdown() -> None:
    with _lock:
        pools = list(_all)
        _all.clear()
        _idle.clear()
    for pool in pools:
        pool.terminate()
        pool.join()


def run_bounded(fn: Callable[[J], R], jobs: list[J], processes: int, timeout_s: Callable[[J], float],
                on_timeout: Callable[[J], R], *, initializer: Callable[[], None] | None = None,
                preload: tuple[str, ...] = ()) -> Iterator[R]:
    """Yield ``fn(job)`` for every job (in job order), or ``on_timeout(job)`` for jobs that exceed
    ``timeout_s(job) + GRACE_S`` seconds.

    Up to ``QUEUED_PER_PROCESS`` jobs per worker are submitted, so a worker never waits for the
    parent to take a result and hand it the next file. A job's clock starts once it is among the
    first ``processes`` unfinished ones (by then it has certainly started), not at submission.
    Workers run ``initializer`` once and fork from a server that imported ``preload`` (module-level
    names: they are pickled to the pool).
    """
    key: PoolKey = (processes, initializer, preload)
    pending = deque(jobs)
    in_flight: deque[list[Any]] = deque()  # [job, handle, deadline or None while possibly queued]
    pool = _lease(key)
    try:
        while pending or in_flight:
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
                _kill(pool)
                pool = _new_pool(key)
                pending.extendleft(reversed(survivors))
    finally:
        if in_flight:  # abandoned mid-way (an error or a stop): its queued files must not run on
            _kill(pool)
        else:
            _release(key, pool)
