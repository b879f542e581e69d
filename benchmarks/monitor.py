"""Samplers that run beside a benchmarked command: memory and CPU of every process involved, and
what the database is busy with.

* :class:`ProcessSampler` walks the process trees of the command (the ``doc-migrate`` process,
  its forkserver and parser workers), of the PostgreSQL server (postmaster, client backends,
  parallel workers, background processes) and of helpers (the embedding test server) every
  0.2 s, recording RSS and PSS per process kind. PSS divides shared pages (PostgreSQL's shared
  buffers) between the processes mapping them, so the PSS total is the honest "memory used";
  the RSS total counts shared buffers once per backend and overstates it.
* :class:`DatabaseSampler` polls ``pg_stat_activity`` of the benchmark database every 0.2 s: the
  share of samples each statement was active is a statement-level profile of the database side,
  and the ``CREATE INDEX ... hnsw`` statement's first and last sighting time the index build.
* :func:`pg_counters` snapshots ``pg_stat_database`` / ``pg_stat_wal`` / ``pg_stat_checkpointer``
  so a run's sessions, database active time, WAL bytes and checkpoints can be differenced.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import psutil
import psycopg

INTERVAL = 0.2


def classify_postgres(cmdline: str, dbname: str) -> str:
    """Process kind of a PostgreSQL child from its process title."""
    if "parallel worker" in cmdline:
        return "postgres parallel workers"
    if dbname and f" {dbname} " in f" {cmdline} ":
        return "postgres client backends"
    return "postgres server (postmaster, bgwriter, walwriter, checkpointer, ...)"


@dataclass
class KindStats:
    peak_rss: int = 0
    peak_pss: int = 0
    processes: set[int] = field(default_factory=set)
    max_alive: int = 0


@dataclass
class ProcessReport:
    samples: int
    seconds: float
    peak_rss_total: int
    peak_pss_total: int
    peak_pss_total_excluding_index: int
    kinds: dict[str, dict[str, int]]
    timeline: list[tuple[float, dict[str, int]]]  # (t, {kind: pss}) about once a second
    cpu_seconds: dict[str, float]
    cpu_timeline: list[tuple[float, dict[str, float]]]
    start_wall: float
    machine_busy: float  # share of all cores busy (every process on the machine) during the run

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "seconds": round(self.seconds, 2), "peak_rss_total": self.peak_rss_total,
                "peak_pss_total": self.peak_pss_total,
                "peak_pss_total_excluding_index": self.peak_pss_total_excluding_index,
                "kinds": self.kinds, "timeline": self.timeline, "cpu_timeline": self.cpu_timeline,
                "start_wall": self.start_wall,
                "cpu_seconds": {k: round(v, 2) for k, v in self.cpu_seconds.items()},
                "machine_busy": round(self.machine_busy, 3)}


class ProcessSampler:
    """Samples the trees rooted at ``roots`` ({pid: kind of the root}); descendants of a root
    that is not PostgreSQL get ``child_kind`` (e.g. parser workers)."""

    def __init__(self, roots: dict[int, str], postmaster: int | None, dbname: str,
                 exclude: set[int] | None = None, child_kinds: dict[str, str] | None = None,
                 interval: float = INTERVAL) -> None:
        self.roots = dict(roots)
        self.postmaster = postmaster
        self.dbname = dbname
        self.exclude = exclude or set()
        self.child_kinds = child_kinds or {}
        self.interval = interval
        self.kinds: dict[str, KindStats] = defaultdict(KindStats)
        self.peak_rss_total = 0
        self.peak_pss_total = 0
        self.peak_pss_excl_index = 0
        self.samples = 0
        self.timeline: list[tuple[float, dict[str, int]]] = []
        self.cpu_timeline: list[tuple[float, dict[str, float]]] = []  # (t, cumulative CPU s per kind)
        self.start_wall = 0.0
        self.cpu_last: dict[int, tuple[str, float]] = {}
        self.cpu_first: dict[int, float] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-process-sampler", daemon=True)
        self._start = 0.0
        self._pg_cpu_start = self._postmaster_cpu()
        self._machine_start = psutil.cpu_times()
        self.in_index_build: threading.Event = threading.Event()

    def add_root(self, pid: int, kind: str) -> None:
        self.roots[pid] = kind

    def _proc(self, pid: int) -> psutil.Process | None:
        p = self._procs.get(pid)
        if p is None:
            try:
                p = psutil.Process(pid)
            except psutil.Error:
                return None
            self._procs[pid] = p
        return p

    def _postmaster_cpu(self) -> float:
        """CPU of the postmaster plus everything it has reaped (exited backends)."""
        if self.postmaster is None:
            return 0.0
        try:
            t = psutil.Process(self.postmaster).cpu_times()
        except psutil.Error:
            return 0.0
        return float(t.user + t.system + t.children_user + t.children_system)

    def _members(self) -> list[tuple[psutil.Process, str]]:
        out: list[tuple[psutil.Process, str]] = []
        for pid, kind in self.roots.items():
            root = self._proc(pid)
            if root is None:
                continue
            out.append((root, kind))
            try:
                children = root.children(recursive=True)
            except psutil.Error:
                children = []
            child_kind = self.child_kinds.get(kind, kind + " (children)")
            out.extend((c, child_kind) for c in children if c.pid not in self.exclude)
        if self.postmaster is not None:
            pm = self._proc(self.postmaster)
            if pm is not None:
                out.append((pm, "postgres server (postmaster, bgwriter, walwriter, checkpointer, ...)"))
                try:
                    children = pm.children()
                except psutil.Error:
                    children = []
                for c in children:
                    if c.pid in self.exclude:
                        continue
                    try:
                        cmd = " ".join(c.cmdline())
                    except psutil.Error:
                        continue
                    out.append((c, classify_postgres(cmd, self.dbname)))
        return out

    def sample(self) -> None:
        now = time.monotonic() - self._start
        per_kind_rss: Counter[str] = Counter()
        per_kind_pss: Counter[str] = Counter()
        alive: Counter[str] = Counter()
        pg_live = 0.0
        for proc, kind in self._members():
            try:
                with proc.oneshot():
                    mem = proc.memory_full_info()
                    cpu = proc.cpu_times()
            except psutil.Error:
                continue
            rss, pss = int(mem.rss), int(getattr(mem, "pss", mem.rss))
            per_kind_rss[kind] += rss
            per_kind_pss[kind] += pss
            alive[kind] += 1
            self.kinds[kind].processes.add(proc.pid)
            self.cpu_last[proc.pid] = (kind, float(cpu.user + cpu.system))
            if self.samples == 0:
                self.cpu_first[proc.pid] = float(cpu.user + cpu.system)
            if kind.startswith("postgres") and proc.pid != self.postmaster:
                pg_live += float(cpu.user + cpu.system) - self.cpu_first.get(proc.pid, 0.0)
        for kind in per_kind_rss:
            ks = self.kinds[kind]
            ks.peak_rss = max(ks.peak_rss, per_kind_rss[kind])
            ks.peak_pss = max(ks.peak_pss, per_kind_pss[kind])
            ks.max_alive = max(ks.max_alive, alive[kind])
        total_pss = sum(per_kind_pss.values())
        self.peak_rss_total = max(self.peak_rss_total, sum(per_kind_rss.values()))
        self.peak_pss_total = max(self.peak_pss_total, total_pss)
        if not self.in_index_build.is_set():
            self.peak_pss_excl_index = max(self.peak_pss_excl_index, total_pss)
        self.samples += 1
        if not self.timeline or now - self.timeline[-1][0] >= 1.0:
            self.timeline.append((round(now, 1), dict(per_kind_pss)))
            cum: dict[str, float] = defaultdict(float)
            for kind, seconds in self.cpu_last.values():
                if not kind.startswith("postgres"):
                    cum[kind] += seconds
            if self.postmaster is not None:
                cum["postgres"] = max(self._postmaster_cpu() - self._pg_cpu_start, 0.0) + pg_live
            self.cpu_timeline.append((round(now, 1), {k: round(v, 2) for k, v in cum.items()}))

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                self.sample()
            except Exception:  # a sampler must never take the benchmark down
                pass
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def start(self) -> ProcessSampler:
        self._start = time.monotonic()
        self.start_wall = time.time()
        self._thread.start()
        return self

    def stop(self) -> ProcessReport:
        self._stop.set()
        self._thread.join(timeout=5)
        cpu: dict[str, float] = defaultdict(float)
        pg_live = 0.0
        for pid, (kind, seconds) in self.cpu_last.items():
            if not kind.startswith("postgres"):
                cpu[kind] += seconds
                continue
            try:
                alive = psutil.Process(pid).is_running()
            except psutil.Error:
                alive = False
            if alive and pid != self.postmaster:  # not reaped yet: count what it spent since we first saw it
                pg_live += seconds - self.cpu_first.get(pid, 0.0)
        if self.postmaster is not None:
            # Backends come and go per connection: the postmaster's reaped-children times catch the exited ones.
            cpu["postgres (all processes)"] = max(self._postmaster_cpu() - self._pg_cpu_start, 0.0) + pg_live
        kinds = {k: {"peak_rss": v.peak_rss, "peak_pss": v.peak_pss, "processes": len(v.processes),
                     "max_alive": v.max_alive} for k, v in sorted(self.kinds.items())}
        end = psutil.cpu_times()
        total = sum(end) - sum(self._machine_start)
        idle = (end.idle + getattr(end, "iowait", 0.0)) - (self._machine_start.idle +
                                                           getattr(self._machine_start, "iowait", 0.0))
        busy = 1.0 - idle / total if total > 0 else 0.0
        return ProcessReport(self.samples, time.monotonic() - self._start, self.peak_rss_total, self.peak_pss_total,
                             self.peak_pss_excl_index, kinds, self.timeline, dict(cpu), self.cpu_timeline,
                             self.start_wall, busy)


_WS = re.compile(r"\s+")
_SCHEMA = re.compile(r'"?doc_migration"?\.')


def normalise_query(query: str) -> str:
    q = _SCHEMA.sub("", _WS.sub(" ", query).strip())
    return q[:110]


@dataclass
class DatabaseReport:
    samples: int
    interval: float
    statements: list[tuple[str, float, str]]  # (normalised statement, seconds active, main wait events)
    waits: list[tuple[str, float]]  # (wait event, seconds)
    index_build_seconds: float | None
    active_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "interval": self.interval,
                "statements": [(q, round(s, 1), w) for q, s, w in self.statements],
                "waits": [(w, round(s, 1)) for w, s in self.waits],
                "index_build_seconds": None if self.index_build_seconds is None else round(self.index_build_seconds, 2),
                "active_seconds": round(self.active_seconds, 1)}


class DatabaseSampler:
    """Statement-level sampling of the database's active sessions (other than its own)."""

    def __init__(self, url: str, on_index: threading.Event | None = None, interval: float = INTERVAL) -> None:
        self.url = url
        self.interval = interval
        self.statements: Counter[str] = Counter()
        self.statement_waits: dict[str, Counter[str]] = defaultdict(Counter)
        self.waits: Counter[str] = Counter()
        self.samples = 0
        self.index_first: float | None = None
        self.index_last: float | None = None
        self.on_index = on_index
        self.backend_pid: int | None = None
        self._stop = threading.Event()
        self._conn = psycopg.connect(url, autocommit=True, application_name="doc_migration_bench_monitor")
        row = self._conn.execute("SELECT pg_backend_pid()").fetchone()
        self.backend_pid = int(row[0]) if row else None
        self._thread = threading.Thread(target=self._run, name="bench-db-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                rows = self._conn.execute(
                    "SELECT query, coalesce(wait_event_type || ':' || wait_event, 'CPU'), "
                    "extract(epoch FROM clock_timestamp() - query_start) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active' "
                    "AND backend_type IN ('client backend', 'parallel worker')").fetchall()
            except psycopg.Error:
                rows = []
            now = time.monotonic()
            indexing = False
            for query, wait, age in rows:
                q = normalise_query(query or "")
                self.statements[q] += 1
                self.statement_waits[q][wait] += 1
                self.waits[wait] += 1
                if q.upper().startswith("CREATE INDEX") and "hnsw" in q.lower():
                    indexing = True
                    start = now - float(age or 0.0)
                    self.index_first = start if self.index_first is None else min(self.index_first, start)
                    self.index_last = now
            if self.on_index is not None:
                if indexing:
                    self.on_index.set()
                else:
                    self.on_index.clear()
            self.samples += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def _waits_of(self, query: str, n: int) -> str:
        return ", ".join(f"{w} {100 * c / n:.0f} %" for w, c in self.statement_waits[query].most_common(2))

    def start(self) -> DatabaseSampler:
        self._thread.start()
        return self

    def stop(self) -> DatabaseReport:
        self._stop.set()
        self._thread.join(timeout=5)
        self._conn.close()
        index = None
        if self.index_first is not None and self.index_last is not None:
            index = self.index_last - self.index_first + self.interval / 2
        active = sum(self.statements.values()) * self.interval
        return DatabaseReport(self.samples, self.interval,
                              [(q, n * self.interval, self._waits_of(q, n)) for q, n in self.statements.most_common(25)],
                              [(w, n * self.interval) for w, n in self.waits.most_common(12)], index, active)


def pg_counters(url: str) -> dict[str, float]:
    """Cumulative server counters (differences between two snapshots describe a run)."""
    out: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute(
            "SELECT sessions, active_time, xact_commit, tup_inserted, tup_updated, tup_deleted, temp_bytes, "
            "blks_read, blks_hit FROM pg_stat_database WHERE datname = current_database()").fetchone()
        if row:
            for name, value in zip(("sessions", "active_time_ms", "xact_commit", "tup_inserted", "tup_updated",
                                    "tup_deleted", "temp_bytes", "blks_read", "blks_hit"), row, strict=True):
                out[name] = float(value or 0)
        try:
            wal = conn.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()
            if wal:
                out.update(wal_records=float(wal[0]), wal_fpi=float(wal[1]), wal_bytes=float(wal[2]))
        except psycopg.Error:
            pass
        try:
            cp = conn.execute("SELECT num_timed, num_requested, buffers_written FROM pg_stat_checkpointer").fetchone()
            if cp:
                out.update(checkpoints_timed=float(cp[0]), checkpoints_requested=float(cp[1]),
                           checkpoint_buffers=float(cp[2]))
        except psycopg.Error:
            pass
    return out


def diff_counters(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def postmaster_pid(url: str) -> tuple[int | None, bool]:
    """(postmaster pid, local?) of the server behind ``url``, found through a backend of ours."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    if not row:
        return None, False
    try:
        backend = psutil.Process(int(row[0]))
        if "postgres" not in " ".join(backend.cmdline()) and "postgres" not in backend.name():
            return None, False
        return backend.ppid(), True
    except psutil.Error:
        return None, False


def cpu_by_stage(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """CPU seconds per stage and process kind, from the sampler's cumulative CPU timeline and the Dagster
    step windows; ``outside steps`` is the rest (process start, imports, run setup, summary)."""
    from .dagster_events import stage_of

    procs = run.get("processes") or {}
    timeline = procs.get("cpu_timeline") or []
    start_wall = float(procs.get("start_wall") or 0.0)
    steps = (run.get("dagster") or {}).get("steps") or {}
    if not timeline or not start_wall or not steps:
        return {}

    def at(ts: float) -> dict[str, float]:
        rel = ts - start_wall
        last: dict[str, float] = {}
        for t, cum in timeline:
            if t > rel:
                break
            last = cum
        return last

    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for key, step in steps.items():
        if "start" not in step:
            continue
        a, b = at(float(step["start"])), at(float(step["end"]))
        for kind in b:
            out[stage_of(key)][kind] += max(0.0, b[kind] - a.get(kind, 0.0))
    total = timeline[-1][1]
    spent: dict[str, float] = defaultdict(float)
    for per in out.values():
        for kind, v in per.items():
            spent[kind] += v
    for kind, v in total.items():
        out["outside steps"][kind] += max(0.0, v - spent[kind])
    return {stage: {k: round(v, 1) for k, v in per.items()} for stage, per in out.items()}
