"""The benchmark: generate (or reuse) the corpus, run ``doc-migrate`` in subprocesses against fresh
databases, measure, and hand the results to :mod:`.report`.

Scenarios (each on its own fresh database of one PostgreSQL server, so server start-up is not
timed and scenarios cannot see each other's rows):

``first``     the whole corpus, offline embedder: wall time, per-stage seconds (Dagster step events),
              MB/s, documents/min, chunks/min, rows/s, peak memory per process kind, CPU,
              database size, database statement profile, HNSW build time (from pg_stat_activity)
``copy``      raw psycopg binary COPY of as many vector rows (same content sizes) into a fresh table
              of the same database, plus the server-side INSERT ... SELECT of those rows
``rerun``     the unchanged re-run (same database)
``changed``   re-run after editing 1 % of the files: chunks embedded vs changed chunks (counted
              independently from the documents' content hashes)
``one_file``, ``changed10``, ``deleted``, ``chunker``
              the incremental re-runs after 1 file edited, 10 % of the files edited, 1 file deleted
              and the chunker's max_tokens changed: wall time as a ratio of the first run, files and
              chunks re-processed, chunks embedded, rows written (same database, in that order)
``dump``      the doc-server SQL dump with precomputed embeddings (carried over, not embedded)
``tpm``       a small corpus against the OpenAI-compatible test server with a TPM cap: utilisation
              and 429s, then an unchanged re-run (tokens must be 0)
``profile``   the first scenario again under py-spy (when available): top functions per stage
``scale4x``   a corpus 4x larger (memory flatness); off unless asked for
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from testkit import REPO_ROOT, with_repo_on_path

from .corpus import (
    DEFAULT_DUMP_DOCS,
    DEFAULT_SEED,
    DEFAULT_SIZE_MB,
    DUMP_DOC_TYPES,
    MB,
    SHARDS,
    CorpusInfo,
    change_chunker,
    delete_files,
    generate_corpus,
    modify_files,
    working_copy,
)
from .dagster_events import read_stage_times
from .monitor import DatabaseSampler, ProcessSampler, diff_counters, pg_counters, postmaster_pid
from .profile import find_py_spy, parse_raw

INCREMENTAL = ("one_file", "changed", "changed10", "deleted", "chunker")  # run in this order, after rerun
ALL_SCENARIOS = ("first", "copy", "rerun", *INCREMENTAL, "dump", "tpm", "profile", "scale4x")
DEFAULT_SCENARIOS = ("first", "copy", "rerun", *INCREMENTAL, "dump", "tpm", "profile")
DB_PREFIX = "docmig_bench_"


@dataclass
class BenchConfig:
    home: Path
    seed: int = DEFAULT_SEED
    size_mb: float = DEFAULT_SIZE_MB
    dump_docs: int = DEFAULT_DUMP_DOCS
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    changed_share: float = 0.01
    tpm_size_mb: float = 4.0
    tpm: int | None = None
    tpm_windows: float = 3.3
    profile_rate: int = 25
    doc_types: tuple[str, ...] | None = None  # a subset of the generator's doc types (tests)
    shards: int = SHARDS
    dump_doc_types: tuple[str, ...] = DUMP_DOC_TYPES
    parse_share: float = 0.1
    database_url: str | None = None
    keep: bool = False
    run_timeout_s: float = 4 * 3600.0
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))


# ---------------------------------------------------------------------------------------------
# the database server
# ---------------------------------------------------------------------------------------------
class Server:
    """One PostgreSQL server for the whole benchmark: DATABASE_URL's, or an embedded one under the
    bench home (started here, so the runs do not pay for its start-up)."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        if config.database_url:
            self.base_url = config.database_url
            self.embedded = False
        else:
            from doc_migration.storage.embedded_pg import embedded_database_url

            self.base_url = embedded_database_url(config.home / "pg", keep_running=False)
            self.embedded = True

    def fresh_database(self, name: str) -> str:
        db = DB_PREFIX + name
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        return psycopg.conninfo.make_conninfo(self.base_url, dbname=db)

    def drop_database(self, url: str) -> None:
        if self.config.keep:
            return
        db = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
        if not isinstance(db, str) or not db.startswith(DB_PREFIX):
            return
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"embedded": self.embedded}
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            out["version"] = row[0] if row else "?"
            vec = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
            out["pgvector"] = vec[0] if vec else None
            for name in ("shared_buffers", "work_mem", "maintenance_work_mem", "max_wal_size", "checkpoint_timeout",
                         "synchronous_commit", "fsync", "wal_level", "max_parallel_maintenance_workers",
                         "max_worker_processes", "io_method"):
                try:
                    r = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
                    out[name] = r[0] if r else None
                except psycopg.Error:
                    pass
        return out


# ---------------------------------------------------------------------------------------------
# running doc-migrate
# ---------------------------------------------------------------------------------------------
def _child_env(home: Path, url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "DOC_MIGRATION_", "DAGSTER_")) and k != "DATABASE_URL"}
    env.update(DOC_MIGRATION_HOME=str(home), DATABASE_URL=url, DOC_MIGRATION_EMBEDDER="offline",
               PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
    env.update(extra or {})
    return env


def _cli() -> list[str]:
    return [sys.executable, "-m", "doc_migration.cli"]


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return {}


@dataclass
class Helper:
    """An extra process to sample with the run (e.g. the embedding test server)."""

    pid: int
    kind: str


def run_cli(name: str, args: list[str], home: Path, url: str, config: BenchConfig, *,
            extra_env: dict[str, str] | None = None, helpers: list[Helper] | None = None,
            wrap: list[str] | None = None, monitor: bool = True) -> dict[str, Any]:
    """Run ``doc-migrate <args>`` to completion, sampling processes and database; return the measurements."""
    logs = config.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
    cmd = [*(wrap or []), *_cli(), *args]
    env = _child_env(home, url, extra_env)
    before = pg_counters(url)
    index_flag = threading.Event()
    dbs = DatabaseSampler(url, on_index=index_flag).start() if monitor else None
    pm, local = postmaster_pid(url)
    exclude = {dbs.backend_pid} if dbs and dbs.backend_pid else set()
    config.log(f"[{name}] {' '.join(args)}")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=str(home))
        sampler = None
        if monitor:
            roots = {proc.pid: "doc-migrate"}
            roots.update({h.pid: h.kind for h in helpers or []})
            dbname = str(psycopg.conninfo.conninfo_to_dict(url).get("dbname") or "")
            sampler = ProcessSampler(roots, pm if local else None, dbname, exclude=exclude,
                                     child_kinds={"doc-migrate": "parse workers (forkserver + pool)"})
            sampler.in_index_build = index_flag
            sampler.start()
        timer = threading.Timer(config.run_timeout_s, lambda: proc.kill())
        timer.start()
        try:
            _, status, rusage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    procs = sampler.stop() if sampler else None
    db = dbs.stop() if dbs else None
    after = pg_counters(url)
    stdout = out_path.read_text(encoding="utf-8", errors="replace")
    summary = _last_json(stdout)
    result: dict[str, Any] = {
        "name": name,
        "command": "doc-migrate " + " ".join(args),
        "exit_code": proc.returncode,
        "wall_seconds": round(wall, 2),
        "summary": summary,
        "cpu_seconds_doc_migrate_tree": round(rusage.ru_utime + rusage.ru_stime, 2),
        "max_rss_single_process_doc_migrate_tree": int(rusage.ru_maxrss) * 1024,
        "pg_counters": diff_counters(before, after),
    }
    if procs is not None:
        result["processes"] = procs.as_dict()
    if db is not None:
        result["database"] = db.as_dict()
    if proc.returncode not in (0,):
        tail = err_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        result["stderr_tail"] = tail
        config.log(f"[{name}] exit code {proc.returncode}; stderr tail:\n{tail}")
    run_ids = summary.get("run_ids") or ([summary["run_id"]] if summary.get("run_id") else [])
    try:
        result["dagster"] = read_stage_times(home / "dagster", [str(r) for r in run_ids])
    except Exception as exc:  # the numbers above still stand
        result["dagster"] = {"error": f"{type(exc).__name__}: {exc}"}
    steps = (result.get("dagster") or {}).get("steps") or {}
    result["failed_steps"] = sorted(k for k, v in steps.items() if v.get("failed"))
    config.log(f"[{name}] done in {wall:.1f} s (exit {proc.returncode})")
    return result


def derive(result: dict[str, Any], corpus_bytes: int) -> dict[str, Any]:
    """Throughput figures of a run: MB/s, documents/min, chunks/min, rows/s of the load stage."""
    s = result.get("summary", {})
    wall = result["wall_seconds"]
    index = (result.get("database") or {}).get("index_build_seconds") or 0.0
    stages = (result.get("dagster") or {}).get("stages", {})
    work = (result.get("dagster") or {}).get("stage_work", {})
    chunks = int(s.get("chunks") or 0)
    rows = int(s.get("rows_written") or 0)
    load = float(work.get("load") or stages.get("load") or 0.0)
    load_excl = max(load - index, 1e-9)
    wall_excl = max(wall - index, 1e-9)
    return {
        "wall_seconds_excluding_index": round(wall_excl, 2),
        "index_build_seconds": round(index, 2),
        "mb_per_s": round(corpus_bytes / MB / wall_excl, 3),
        "documents_per_min": round(int(s.get("documents_loaded") or 0) / wall_excl * 60, 1),
        "chunks_per_min": round(chunks / wall_excl * 60, 1),
        "rows_per_s_end_to_end": round(rows / wall_excl, 1),
        "load_seconds_excluding_index": round(load_excl, 2) if load else None,
        "load_rows_per_s": round(rows / load_excl, 1) if load else None,
    }


# ---------------------------------------------------------------------------------------------
# database measurements
# ---------------------------------------------------------------------------------------------
def database_sizes(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        total = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        docs = conn.execute(
            "SELECT pg_total_relation_size('documents'), pg_relation_size('documents'), pg_indexes_size('documents'), "
            "(SELECT count(*) FROM documents)").fetchone()
        hnsw = conn.execute("SELECT coalesce((SELECT pg_relation_size(c.oid) FROM pg_class c "
                            "WHERE c.relname = 'documents_embedding_hnsw'), 0)").fetchone()
        top = conn.execute(
            "SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 2 DESC LIMIT 8").fetchall()
    assert total is not None and docs is not None and hnsw is not None
    return {"database_bytes": int(total[0]), "documents_total_bytes": int(docs[0]), "documents_heap_bytes": int(docs[1]),
            "documents_index_bytes": int(docs[2]), "documents_rows": int(docs[3]), "hnsw_index_bytes": int(hnsw[0]),
            "largest_relations": [(r[0], int(r[1])) for r in top]}


def copy_baseline(url: str, dims: int, log: Callable[[str], None]) -> dict[str, Any]:
    """psycopg binary COPY of as many vector(dims) rows as ``documents`` holds, with the same content
    lengths, into a fresh table of the same database; then the same rows server-side with
    INSERT ... SELECT (what the load stage does between its temporary tables and ``documents``)."""
    from pgvector.psycopg import register_vector

    with psycopg.connect(url) as conn:
        register_vector(conn)
        lengths = [int(r[0]) for r in conn.execute("SELECT length(content) FROM documents ORDER BY id")]
        base_row = conn.execute("SELECT string_agg(content, E'\\n\\n') FROM (SELECT content FROM documents "
                                "ORDER BY id LIMIT 400) x").fetchone()
        meta_row = conn.execute("SELECT metadata FROM documents ORDER BY id LIMIT 1").fetchone()
        conn.rollback()
        n = len(lengths)
        if n == 0:
            return {"rows": 0}
        base = str(base_row[0] if base_row and base_row[0] else "text ")
        longest = max(lengths)
        if len(base) < longest * 2:
            base = base * (longest * 2 // max(1, len(base)) + 1)
        meta: dict[str, Any] = dict(meta_row[0]) if meta_row and isinstance(meta_row[0], dict) else {}
        rng = np.random.default_rng(7)
        pool = rng.standard_normal((64, dims)).astype(np.float32)
        pool /= np.linalg.norm(pool, axis=1, keepdims=True)
        ddl = ("CREATE TABLE {} (id uuid PRIMARY KEY, doc_type text NOT NULL, source_name text NOT NULL, "
               "doc_path text NOT NULL, content text NOT NULL, metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb, "
               f"embedding vector({int(dims)}), token_count integer, created_at timestamptz NOT NULL DEFAULT now(), "
               "updated_at timestamptz NOT NULL DEFAULT now(), UNIQUE (doc_type, source_name, doc_path))")
        for table in ("bench_copy_baseline", "bench_insert_select"):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
            conn.execute(sql.SQL(ddl).format(sql.Identifier(table)))  # type: ignore[arg-type]
        conn.commit()
        content_bytes = 0
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(
                "COPY bench_copy_baseline (id, doc_type, source_name, doc_path, content, metadata, embedding, "
                "token_count) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["uuid", "text", "text", "text", "text", "jsonb", "vector", "int4"])
            span = len(base) - longest
            for i, length in enumerate(lengths):
                off = (i * 7919) % max(1, span)
                content = base[off:off + length]
                content_bytes += len(content)
                copy.write_row((uuid.UUID(int=i + 1), "bench", "bench-docs", f"bench/{i:07d}.md#chunk0000", content,
                                Jsonb({**meta, "chunk_index": i % 17}), pool[i % 64], max(1, length // 4)))
        conn.commit()
        copy_seconds = time.perf_counter() - started
        log(f"[copy] binary COPY {n} rows in {copy_seconds:.1f} s")
        started = time.perf_counter()
        conn.execute("INSERT INTO bench_insert_select SELECT * FROM bench_copy_baseline")
        conn.commit()
        insert_seconds = time.perf_counter() - started
        log(f"[copy] INSERT ... SELECT {n} rows in {insert_seconds:.1f} s")
        for table in ("bench_copy_baseline", "bench_insert_select"):
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        conn.commit()
    return {"rows": n, "content_mb": round(content_bytes / MB, 1), "copy_seconds": round(copy_seconds, 2),
            "copy_rows_per_s": round(n / copy_seconds, 1), "insert_select_seconds": round(insert_seconds, 2),
            "insert_select_rows_per_s": round(n / insert_seconds, 1)}


# ---------------------------------------------------------------------------------------------
# the embedding test server
# ---------------------------------------------------------------------------------------------
class EmbeddingServer:
    def __init__(self, tpm: int, log_dir: Path, name: str) -> None:
        self.out_path = log_dir / f"{name}-embedding-server.stdout"
        self._out = open(self.out_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "testkit.embedding_server", "--port", "0", "--tpm", str(tpm)],
            stdout=self._out, stderr=subprocess.STDOUT, env=with_repo_on_path({**os.environ, "PYTHONUNBUFFERED": "1"}))
        self.base_url = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.out_path.read_text(encoding="utf-8", errors="replace")
            if "listening on" in text:
                self.base_url = text.split("listening on", 1)[1].split()[0].strip()
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if not self.base_url:
            self.stop()
            raise RuntimeError(f"embedding test server did not start: {self.out_path.read_text()[-2000:]}")

    def stop(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return _last_json(self.out_path.read_text(encoding="utf-8", errors="replace"))


# ---------------------------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import dagster

    git: dict[str, Any] = {}
    try:
        root = REPO_ROOT
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            git = {"commit": head.stdout.strip(), "modified_files": len(dirty.stdout.splitlines())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"git": git, "cores": os.cpu_count(), "cpu_model": cpu_model, "ram_gb": round(vm.total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(), "dagster": dagster.__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def _corpus_root(config: BenchConfig, seed: int, size_mb: float, dump_docs: int) -> Path:
    name = f"seed{seed}-{size_mb:g}mb-dump{dump_docs}"
    if config.doc_types or config.shards != SHARDS:
        name += f"-{'-'.join(config.doc_types or ())}-shards{config.shards}"
    return config.home / "corpus" / name


def _generate(config: BenchConfig, seed: int, size_mb: float, dump_docs: int) -> CorpusInfo:
    return generate_corpus(_corpus_root(config, seed, size_mb, dump_docs), seed, size_mb, dump_docs, log=config.log,
                           doc_types=config.doc_types, shards=config.shards, dump_doc_types=config.dump_doc_types)


def run_benchmark(config: BenchConfig) -> dict[str, Any]:
    """Run the configured scenarios; return every measurement (also written as JSON under the home)."""
    config.home.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {"seed": config.seed, "size_mb": config.size_mb, "dump_docs": config.dump_docs,
                   "scenarios": list(config.scenarios), "changed_share": config.changed_share,
                   "tpm_size_mb": config.tpm_size_mb},
        "machine": machine_info(),
        "scenarios": {},
    }
    started = time.perf_counter()
    t = time.perf_counter()
    info = _generate(config, config.seed, config.size_mb, config.dump_docs)
    results["corpus"] = {**info.as_dict(), "generate_seconds": round(time.perf_counter() - t, 2)}
    server = Server(config)
    results["postgres"] = server.describe()
    sc: dict[str, Any] = results["scenarios"]
    dims = 3072
    steps: list[tuple[str, Callable[[], None]]] = []
    if {"first", "copy", "rerun", *INCREMENTAL} & set(config.scenarios):
        steps.append(("first", lambda: sc.update(_main_scenarios(config, server, info, dims))))
    if "dump" in config.scenarios:
        steps.append(("dump", lambda: sc.__setitem__("dump", _dump_scenario(config, server, info))))
    if "tpm" in config.scenarios:
        steps.append(("tpm", lambda: sc.__setitem__("tpm", _tpm_scenario(config, server))))
    if "profile" in config.scenarios:
        steps.append(("profile", lambda: sc.__setitem__("profile", _profile_scenario(config, server, info))))
    if "scale4x" in config.scenarios:
        steps.append(("scale4x", lambda: sc.__setitem__("scale4x", _scale_scenario(config, server))))
    errors: dict[str, str] = results.setdefault("errors", {})
    try:
        for name, step in steps:
            try:
                step()
            except Exception as exc:  # record it and go on with the other scenarios
                import traceback

                errors[name] = f"{type(exc).__name__}: {exc}"
                config.log(f"[{name}] FAILED: {traceback.format_exc()}")
            save_results(config, results)
    finally:
        results["total_seconds"] = round(time.perf_counter() - started, 1)
        results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        save_results(config, results)
    return results


def save_results(config: BenchConfig, results: dict[str, Any]) -> None:
    out = config.home / "results"
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1, default=str)
    (out / f"results-{results['started_at'].replace(':', '')}.json").write_text(text, encoding="utf-8")
    (out / "latest.json").write_text(text, encoding="utf-8")


def _fresh_home(config: BenchConfig, name: str) -> Path:
    home = config.home / "runs" / name
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    return home


def _main_scenarios(config: BenchConfig, server: Server, info: CorpusInfo, dims: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    home = _fresh_home(config, "main")
    copy_root = working_copy(info, home / "corpus")
    manifest = copy_root / "sources.yaml"
    url = server.fresh_database("main")
    try:
        first = run_cli("first", ["--sources", str(manifest), "full", "--json"], home, url, config)
        first["derived"] = derive(first, info.bytes)
        first["sizes"] = database_sizes(url)
        out["first"] = first
        if "copy" in config.scenarios:
            out["copy"] = copy_baseline(url, dims, config.log)
        if "rerun" in config.scenarios:
            rerun = run_cli("rerun", ["--sources", str(manifest), "full", "--json"], home, url, config)
            rerun["derived"] = derive(rerun, info.bytes)
            out["rerun"] = rerun
        docs = copy_root / "docs"
        edits: dict[str, Callable[[], list[str]]] = {
            "one_file": lambda: modify_files(docs, 0.0, config.seed + 1),  # max(1, ...) = one file
            "changed": lambda: modify_files(docs, config.changed_share, config.seed),
            "changed10": lambda: modify_files(docs, 0.10, config.seed + 2),
            "deleted": lambda: delete_files(docs, 1, config.seed + 3),
            "chunker": lambda: change_chunker(manifest),
        }
        for name in INCREMENTAL:
            if name in config.scenarios:
                out[name] = _incremental_run(name, edits[name], manifest, home, url, config, info, first)
    finally:
        server.drop_database(url)
    return out


def _incremental_run(name: str, edit: Callable[[], list[str]], manifest: Path, home: Path, url: str,
                     config: BenchConfig, info: CorpusInfo, first: dict[str, Any]) -> dict[str, Any]:
    """Edit, re-run, and count independently (from content hashes) how many chunk texts are new."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_prev_sha")
        conn.execute("CREATE TABLE bench_prev_sha AS SELECT DISTINCT sha256(convert_to(content, 'UTF8')) AS h "
                     "FROM documents")
    edited = edit()
    result = run_cli(name, ["--sources", str(manifest), "full", "--json"], home, url, config)
    result["derived"] = derive(result, info.bytes)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT h) FROM (SELECT sha256(convert_to(content, 'UTF8')) AS h FROM documents) d "
            "WHERE NOT EXISTS (SELECT 1 FROM bench_prev_sha p WHERE p.h = d.h)").fetchone()
        conn.execute("DROP TABLE bench_prev_sha")
    s = result.get("summary", {})
    result["files_edited"] = len(edited)
    result["new_distinct_texts"] = int(row[0]) if row else None
    # The first run's basis excludes its HNSW index build (an incremental run has none to pay).
    basis = (first.get("derived") or {}).get("wall_seconds_excluding_index") or first["wall_seconds"]
    result["incremental"] = {
        "wall_ratio_to_first": round(result["wall_seconds"] / basis, 4),
        "first_run_basis_seconds": basis,
        "files_parsed": s.get("files_parsed"), "chunks_reprocessed": s.get("chunks_parsed"),
        "chunks_embedded": s.get("chunks_embedded"), "rows_written": s.get("rows_written"),
    }
    return result


def _dump_scenario(config: BenchConfig, server: Server, info: CorpusInfo) -> dict[str, Any]:
    home = _fresh_home(config, "dump")
    url = server.fresh_database("dump")
    try:
        result = run_cli("dump", ["--sources", str(info.dump_manifest), "full", "--json"], home, url, config)
        result["derived"] = derive(result, info.dump_bytes)
        result["sizes"] = database_sizes(url)
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*), count(*) FILTER (WHERE embedding IS NOT NULL) FROM documents").fetchone()
        result["rows_with_embedding"] = int(row[1]) if row else None
        result["dump_documents"] = info.dump_docs
        result["dump_mb"] = round(info.dump_bytes / MB, 1)
    finally:
        server.drop_database(url)
    return result


def _tpm_scenario(config: BenchConfig, server: Server) -> dict[str, Any]:
    info = _generate(config, config.seed + 1, config.tpm_size_mb, 0)
    home = _fresh_home(config, "tpm")
    url = server.fresh_database("tpm")
    out: dict[str, Any] = {"corpus_mb": round(info.bytes / MB, 2), "files": info.files}
    try:
        plan = run_cli("tpm-plan", ["--sources", str(info.manifest), "plan", "--json"], home, url, config, monitor=False)
        tokens = int(plan["summary"].get("tokens_to_embed") or 0)
        tpm = config.tpm or max(10_000, int(tokens / max(config.tpm_windows, 1.0)))
        out.update(tokens_planned=tokens, tpm=tpm)
        config.log(f"[tpm] {tokens} tokens to embed; cap {tpm} TPM (about {tokens / tpm:.1f} minutes)")
        logs = config.home / "logs"
        emb = EmbeddingServer(tpm, logs, "tpm")
        env = {"DOC_MIGRATION_EMBEDDER": "openai", "OPENAI_BASE_URL": emb.base_url, "OPENAI_API_KEY": "test",
               "DOC_MIGRATION_OPENAI_TPM": str(tpm)}
        try:
            run = run_cli("tpm", ["--sources", str(info.manifest), "full", "--json"], home, url, config,
                          extra_env=env, helpers=[Helper(emb.proc.pid, "embedding test server")])
        finally:
            stats = emb.stop()
        run["derived"] = derive(run, info.bytes)
        run["server_stats"] = stats
        out["run"] = run
        embed_s = ((run.get("dagster") or {}).get("stage_work") or {}).get("embed")
        windows = list(stats.get("tokens_per_window") or [])
        full = windows[:-1] if len(windows) > 1 else []
        out["utilisation_full_windows"] = [round(w / tpm, 3) for w in full]
        out["utilisation_mean_full_windows"] = round(sum(full) / (len(full) * tpm), 3) if full else None
        pipeline_tokens = int(run.get("summary", {}).get("tokens_sent") or 0)
        out["pipeline_tokens"] = pipeline_tokens
        out["server_tokens"] = int(stats.get("tokens") or 0)
        out["utilisation_over_embed_stage"] = (round(pipeline_tokens / (tpm * float(embed_s) / 60.0), 3)
                                               if embed_s else None)
        out["requests_429"] = int(stats.get("rate_limited") or 0)
        out["status_counts"] = stats.get("status_counts")
        emb2 = EmbeddingServer(tpm, logs, "tpm-rerun")
        env["OPENAI_BASE_URL"] = emb2.base_url
        try:
            rerun = run_cli("tpm-rerun", ["--sources", str(info.manifest), "full", "--json"], home, url, config,
                            extra_env=env, helpers=[Helper(emb2.proc.pid, "embedding test server")])
        finally:
            stats2 = emb2.stop()
        rerun["server_stats"] = stats2
        out["rerun"] = rerun
        out["rerun_tokens_at_server"] = int(stats2.get("tokens") or 0)
    finally:
        server.drop_database(url)
    return out


def _profile_scenario(config: BenchConfig, server: Server, info: CorpusInfo) -> dict[str, Any]:
    from .parseprof import profile_parse

    config.log(f"[profile] parse_file in-process on {100 * config.parse_share:g} % of the files (timed, then cProfile)")
    parse = profile_parse(info.manifest, share=config.parse_share)
    py_spy = find_py_spy()
    if py_spy is None:
        return {"parse": parse, "skipped": "py-spy not found (pip install py-spy, or put it in /tmp/pyspy-venv)"}
    home = _fresh_home(config, "profile")
    url = server.fresh_database("profile")
    raw = config.home / "logs" / "profile.pyspy.txt"
    wrap = [py_spy, "record", "--subprocesses", "--nonblocking", "--rate", str(config.profile_rate), "--format", "raw",
            "-o", str(raw), "--"]
    try:
        run = run_cli("profile", ["--sources", str(info.manifest), "full", "--json"], home, url, config, wrap=wrap)
    finally:
        server.drop_database(url)
    out: dict[str, Any] = {"wall_seconds": run["wall_seconds"], "exit_code": run["exit_code"],
                           "database": run.get("database"), "parse": parse}
    if raw.exists():
        out["profile"] = parse_raw(raw, config.profile_rate)
        out["raw_file"] = str(raw)
    return out


def _scale_scenario(config: BenchConfig, server: Server) -> dict[str, Any]:
    size = config.size_mb * 4
    info = _generate(config, config.seed, size, 0)
    home = _fresh_home(config, "scale4x")
    url = server.fresh_database("scale4x")
    try:
        # The index build is deferred: its memory is maintenance_work_mem (fixed), its time is
        # measured at 184 MB; this scenario compares the pipeline's own memory at 4x the data.
        run = run_cli("scale4x", ["--sources", str(info.manifest), "full", "--json"], home, url, config,
                      extra_env={"DOC_MIGRATION_VECTOR_INDEX": "defer"})
        run["derived"] = derive(run, info.bytes)
        run["sizes"] = database_sizes(url)
        run["corpus_mb"] = round(info.bytes / MB, 1)
    finally:
        server.drop_database(url)
    return run
