"""Connections and schema migrations for the target database.

Every connection sets timeouts so a crashed or stuck client never leaves a lock or an idle
transaction behind, and every error message that leaves this module is scrubbed of passwords.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import re
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import psycopg
from pgvector.psycopg import register_vector
from pgvector.psycopg.bit import register_bit_info
from pgvector.psycopg.halfvec import register_halfvec_info
from pgvector.psycopg.sparsevec import register_sparsevec_info
from pgvector.psycopg.vector import register_vector_info
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types import TypeInfo

from ..config import ConfigError, Settings
from ..redaction import redact
from .embedded_pg import embedded_database_url

EMBEDDED_DBNAME = "doc_server"
MIN_PGVECTOR = (0, 7, 0)


class DatabaseError(Exception):
    """A database problem described for an operator, with secrets removed."""

    retryable = False


class DatabaseUnavailable(DatabaseError):
    """The server could not be reached: worth retrying later (CLI exit code 5)."""

    retryable = True


def lost_connection(exc: BaseException) -> DatabaseUnavailable | None:
    """A psycopg error that means the session itself is gone (the server crashed, restarted or
    closed it, SQLSTATE class 08 / 57P, or none: libpq saw the socket close), described for an
    operator; None for any other error (a statement that failed is not worth a retry)."""
    if not isinstance(exc, psycopg.OperationalError):
        return None
    state = exc.sqlstate
    if state is not None and not state.startswith(("08", "57P")):
        return None
    return DatabaseUnavailable(f"the connection to the target database was lost ({describe_error(exc)}): the "
                               "server crashed, restarted or closed it; committed work is kept, run the same "
                               "command again")


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL, or the embedded server's ``doc_server`` database (created on first use)."""
    if settings.database_url:
        return settings.database_url
    server_url = embedded_database_url(settings.home)
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DBNAME,)).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DBNAME)))
            except psycopg.errors.DuplicateDatabase:
                pass
    return psycopg.conninfo.make_conninfo(server_url, dbname=EMBEDDED_DBNAME)


def describe_error(exc: BaseException) -> str:
    """One line for an operator; libpq messages can echo conninfo, so redact."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact(text)


def session_parameters(url: str, statement_timeout_ms: int = 0) -> dict[str, str]:
    """Connection parameters added to DATABASE_URL's, without overriding any the operator set.

    libpq gives keyword arguments precedence over the URL, so ``options``, ``application_name``
    and ``connect_timeout`` are only added when neither the URL nor PGOPTIONS/PGAPPNAME/
    PGCONNECT_TIMEOUT sets them, and the pipeline's session limits are prepended to the
    operator's own ``options`` (a later ``-c`` wins). TLS parameters (sslmode, sslrootcert,
    sslcert, ...) are never touched: they reach libpq exactly as written.
    """
    try:
        given = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        given = {}  # connect() reports the malformed URL
    ours = (f"-c statement_timeout={statement_timeout_ms} -c lock_timeout=60000 "
            "-c idle_in_transaction_session_timeout=600000")
    theirs = str(given.get("options") or os.environ.get("PGOPTIONS") or "").strip()
    params = {"options": f"{ours} {theirs}".strip()}
    if not given.get("application_name") and not os.environ.get("PGAPPNAME"):
        params["application_name"] = "doc_migration"
    if not given.get("connect_timeout") and not os.environ.get("PGCONNECT_TIMEOUT"):
        params["connect_timeout"] = "30"
    return params


def connect(url: str, *, autocommit: bool = False, statement_timeout_ms: int = 0) -> psycopg.Connection:
    """Open a connection with the session limits every pipeline connection runs under."""
    try:
        conninfo = psycopg.conninfo.make_conninfo(url, **session_parameters(url, statement_timeout_ms))
        conn = psycopg.connect(conninfo, autocommit=autocommit)
    except psycopg.ProgrammingError as exc:
        # libpq could not parse DATABASE_URL; its message quotes the offending piece, which may be
        # (part of) the password, so only the kind of error is kept.
        detail = re.sub(r'"[^"]*"', '"..."', describe_error(exc))
        raise DatabaseError(
            f"DATABASE_URL is not a valid libpq connection string ({detail}): percent-encode special "
            "characters of the user name and password (see docs/security.md#database-url-and-tls)") from None
    except psycopg.OperationalError as exc:
        message = describe_error(exc)
        # A retry cannot fix these (exit 2); anything else (refused, timeout, starting up, an SSL
        # connection reset) may be transient (DatabaseUnavailable, exit 5).
        permanent = ("password authentication failed", "does not exist", "no pg_hba.conf entry",
                     "certificate verify failed", "server does not support SSL", "invalid sslmode value",
                     "invalid connection option", "permission denied")
        cls = DatabaseError if any(p in message for p in permanent) else DatabaseUnavailable
        raise cls(f"cannot connect to the target database: {message}") from None
    _register_vector_types(conn)
    return conn


def _register_vector_types(conn: psycopg.Connection) -> None:
    """What ``pgvector.psycopg.register_vector`` does, in one round trip instead of four: every
    pipeline connection pays this, and a run opens hundreds. A no-op before migrate() creates the
    extension."""
    rows = conn.execute(
        "SELECT t.typname, t.oid::int, t.typarray::int, format_type(t.oid, NULL) FROM pg_type t "
        "WHERE t.oid IN (to_regtype('vector'), to_regtype('bit'), to_regtype('halfvec'), to_regtype('sparsevec'))"
    ).fetchall()
    if not conn.autocommit:
        conn.rollback()  # leave no transaction open: callers may set session options first
    found = {name: TypeInfo(name, oid, array_oid, regtype=regtype) for name, oid, array_oid, regtype in rows}
    if "vector" not in found:
        return
    register_vector_info(conn, found["vector"])
    if "bit" in found:
        register_bit_info(conn, found["bit"])
    if "halfvec" in found:
        register_halfvec_info(conn, found["halfvec"])
    if "sparsevec" in found:
        register_sparsevec_info(conn, found["sparsevec"])


class ConnectionPool:
    """Idle connections kept per process for the short units of work in storage/.

    A run asks for a connection hundreds of times (one per question a check or stage asks);
    opening each costs a backend fork, authentication and the vector type lookup. A connection
    goes back only clean: its transaction rolled back, then session settings, temporary tables,
    cursors, listeners and session advisory locks reset, so the next borrower sees a fresh
    session. (Not ``DISCARD ALL``: it also drops the statements psycopg has prepared and still
    believes exist, and the next borrower's query fails on a missing ``_pg3_N``.) Connections that hold state on purpose (run locks, the staging COPY)
    call connect() and never come here. A child process never reuses its parent's sockets.
    """

    MAX_IDLE_PER_KEY = 4
    MAX_IDLE = 8
    MAX_IDLE_AGE_S = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[int, str, bool, int], list[tuple[float, psycopg.Connection]]] = {}
        self._atexit_registered = False

    @contextmanager
    def connection(self, url: str, *, autocommit: bool = False,
                   statement_timeout_ms: int = 0) -> Iterator[psycopg.Connection]:
        key = (os.getpid(), url, autocommit, statement_timeout_ms)
        conn = self._borrow(key) or connect(url, autocommit=autocommit, statement_timeout_ms=statement_timeout_ms)
        try:
            yield conn
        finally:
            self._give_back(key, conn)

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        pid = os.getpid()
        for (owner, *_), conns in idle.items():
            if owner == pid:  # a forked child must not close (and so send Terminate on) its parent's sockets
                for _, conn in conns:
                    conn.close()

    def _borrow(self, key: tuple[int, str, bool, int]) -> psycopg.Connection | None:
        now = time.monotonic()
        while True:
            with self._lock:
                conns = self._idle.get(key)
                if not conns:
                    return None
                since, conn = conns.pop()
            if now - since <= self.MAX_IDLE_AGE_S and _alive(conn):
                return conn
            conn.close()

    def _give_back(self, key: tuple[int, str, bool, int], conn: psycopg.Connection) -> None:
        if conn.closed or conn.broken or key[0] != os.getpid() or not _reset(conn):
            conn.close()
            return
        evicted: list[psycopg.Connection] = []
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < self.MAX_IDLE_PER_KEY:
                conns.append((time.monotonic(), conn))
            else:
                evicted.append(conn)
            evicted += self._evict_oldest()
            if not self._atexit_registered:
                # Registered after the embedded server's own exit hook, so it runs before it.
                atexit.register(self.close_all)
                self._atexit_registered = True
        for old in evicted:
            old.close()

    def _evict_oldest(self) -> list[psycopg.Connection]:
        """Keep at most MAX_IDLE connections across all databases (a process that visits many
        databases, like the test suite, must not hoard sockets to each)."""
        out: list[psycopg.Connection] = []
        while sum(len(v) for v in self._idle.values()) > self.MAX_IDLE:
            key = min((k for k, v in self._idle.items() if v), key=lambda k: self._idle[k][0][0])
            out.append(self._idle[key].pop(0)[1])
            if not self._idle[key]:
                del self._idle[key]
        return out


def _reset(conn: psycopg.Connection) -> bool:
    """Return the session to a fresh one's state; False if it cannot be trusted to be."""
    if conn.adapters.types.get("vector") is None:
        return False  # opened before migrate() created the extension: it lacks the vector adapters
    try:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.rollback()
        with conn.transaction():
            conn.execute("CLOSE ALL; RESET ALL; SELECT pg_advisory_unlock_all(); DISCARD TEMP; UNLISTEN *")
    except psycopg.Error:
        return False
    return True


def _alive(conn: psycopg.Connection) -> bool:
    """Whether an idle connection can be trusted, without a round trip. An idle session receives
    nothing; if its socket is readable the server has said something (a terminated backend after
    DROP DATABASE ... WITH (FORCE), a restart, an idle timeout), so it is not reused."""
    if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


POOL = ConnectionPool()


def connection(url: str, *, autocommit: bool = False,
               statement_timeout_ms: int = 0) -> contextlib.AbstractContextManager[psycopg.Connection]:
    """A clean session for one unit of work, from this process's pool."""
    return POOL.connection(url, autocommit=autocommit, statement_timeout_ms=statement_timeout_ms)


def _migration_files() -> list[tuple[int, str, str]]:
    pkg = resources.files("doc_migration.storage") / "migrations"
    out = []
    for entry in pkg.iterdir():
        m = re.match(r"^(\d{4})_(.+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(out)


def _pgvector_version(conn: psycopg.Connection) -> tuple[int, ...] | None:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        return None
    return tuple(int(p) for p in re.findall(r"\d+", row[0])[:3])


def ensure_pgvector(conn: psycopg.Connection) -> str:
    version = _pgvector_version(conn)
    if version is None:
        available = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        if available is None:
            raise DatabaseError(
                "pgvector is not installed on this PostgreSQL server: install the 'vector' extension "
                "(package postgresql-NN-pgvector) or use the embedded database (unset DATABASE_URL)"
            )
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege:
            conn.rollback()
            raise DatabaseError(
                "pgvector is available but not enabled in this database, and this role may not enable it: "
                "ask a superuser (or the database owner) to run CREATE EXTENSION vector; once"
            ) from None
        version = _pgvector_version(conn)
    assert version is not None
    if version < MIN_PGVECTOR:
        raise DatabaseError(
            f"pgvector {'.'.join(map(str, version))} is too old: 0.7.0 or newer is needed for halfvec indexes "
            "of 3072-dimensional vectors (ALTER EXTENSION vector UPDATE)"
        )
    return ".".join(map(str, version))


def existing_embedding_dims(conn: psycopg.Connection) -> int | None:
    row = conn.execute(
        """SELECT a.atttypmod FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relname = 'documents' AND n.nspname = current_schema() AND a.attname = 'embedding'
             AND NOT a.attisdropped"""
    ).fetchone()
    if row is None:
        return None
    return int(row[0]) if row[0] and row[0] > 0 else -1


def migrate(settings: Settings, url: str) -> dict[str, object]:
    """Apply pending migrations, each once, in order; refuse incompatible databases clearly."""
    schema = settings.pipeline_schema
    applied_now: list[int] = []
    with connection(url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('doc_migration:schema'))")
        pgvector = ensure_pgvector(conn)
        register_vector(conn)
        dims = existing_embedding_dims(conn)
        if dims is not None and dims != settings.embedding_dims:
            raise ConfigError(
                f"documents.embedding is vector({dims}) in the target database but the configured dimension is "
                f"{settings.embedding_dims}: set DOC_MIGRATION_EMBEDDING_DIMS={dims} or migrate into a new database"
            )
        # Only when absent: CREATE SCHEMA IF NOT EXISTS checks the database's CREATE privilege first,
        # which a least-privilege migration role does not have (docs/operations.md#least-privilege-role).
        try:
            if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            if conn.execute("SELECT to_regclass(%s)", (f"{schema}.schema_migrations",)).fetchone() == (None,):
                conn.execute(sql.SQL(
                    "CREATE TABLE {}.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                    "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(sql.Identifier(schema)))
        except psycopg.errors.InsufficientPrivilege as exc:
            conn.rollback()
            raise DatabaseError(
                f"cannot create the pipeline schema {schema!r} ({describe_error(exc)}): {privilege_advice(conn, schema)}"
            ) from None
        # With the default search_path ("$user", public) a login role named like the pipeline
        # schema would create the doc-server's tables inside it, where the doc-server never looks.
        current = conn.execute("SELECT current_schema()").fetchone()
        if current is not None and current[0] == schema:
            raise ConfigError(
                f"unqualified table names resolve to the pipeline schema {schema} (search_path is "
                f"{_search_path(conn)} and the role is named {_current_user(conn)}): documents must not be "
                "created there. Set the role's search_path to the doc-server's schema (ALTER ROLE ... SET "
                "search_path = public, as doc_migration/storage/roles.sql does) or use another role name; "
                "see docs/security.md#least-privilege-role")
        done = {r[0]: r[1] for r in conn.execute(
            sql.SQL("SELECT version, checksum FROM {}.schema_migrations").format(sql.Identifier(schema)))}
        for version, name, body in _migration_files():
            checksum = hashlib.sha256(body.encode()).hexdigest()[:16]
            if version in done:
                continue
            # Placeholders are validated values: the schema matches IDENTIFIER_RE and dims is an int.
            text = body.replace("@SCHEMA@", sql.Identifier(schema).as_string(conn)).replace(
                "@DIMS@", str(int(settings.embedding_dims)))
            try:
                conn.execute(text.encode())
            except psycopg.errors.InsufficientPrivilege as exc:
                conn.rollback()
                raise DatabaseError(
                    f"migration {version:04d}_{name} needs a privilege the role lacks ({describe_error(exc)}); "
                    f"{privilege_advice(conn, schema)}") from None
            conn.execute(
                sql.SQL("INSERT INTO {}.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)").format(
                    sql.Identifier(schema)), (version, name, checksum))
            applied_now.append(version)
        conn.commit()
        missing = missing_privileges(conn, schema)
        if missing:
            raise DatabaseError(f"role {_current_user(conn)} lacks {'; '.join(missing)}: "
                                f"{privilege_advice(conn, schema, missing)}")
    return {"pgvector": pgvector, "applied": applied_now}


def _search_path(conn: psycopg.Connection) -> str:
    row = conn.execute("SHOW search_path").fetchone()
    return str(row[0]) if row else "?"


def _current_user(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else "?"


def missing_privileges(conn: psycopg.Connection, schema: str) -> list[str]:
    """What the connected role lacks for full/validate/rollback, one entry per object (e.g.
    ``INSERT, UPDATE on table documents``); empty when nothing is missing. Building the HNSW index
    (ownership of documents) is not required: ensure_vector_index() warns instead."""
    rows = conn.execute(
        """
        WITH objs(kind, name, privs) AS (
          SELECT 'database', current_database()::text, ARRAY['CONNECT', 'TEMPORARY']
            || CASE WHEN to_regnamespace(%(schema)s) IS NULL THEN ARRAY['CREATE'] ELSE ARRAY[]::text[] END
          UNION ALL SELECT 'schema', %(schema)s, ARRAY['USAGE']
          UNION ALL SELECT 'schema', current_schema()::text, ARRAY['USAGE']
            || CASE WHEN to_regclass('documents') IS NULL THEN ARRAY['CREATE'] ELSE ARRAY[]::text[] END
          UNION ALL SELECT 'table', c.oid::regclass::text,
                 CASE WHEN c.relname = 'document_sources' THEN ARRAY['SELECT', 'INSERT', 'UPDATE']
                      ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'] END
            FROM pg_class c
           WHERE c.relkind IN ('r', 'p') AND (c.oid = to_regclass('documents') OR c.oid = to_regclass('document_sources')
                 OR c.relnamespace = to_regnamespace(%(schema)s))
          UNION ALL SELECT 'sequence', c.oid::regclass::text, ARRAY['USAGE']
            FROM pg_class c WHERE c.relkind = 'S' AND c.relnamespace = to_regnamespace(%(schema)s)
        )
        SELECT kind, name, array_agg(p ORDER BY ord) FILTER (WHERE NOT CASE kind
                 WHEN 'database' THEN has_database_privilege(name, p)
                 WHEN 'schema' THEN to_regnamespace(name) IS NULL OR has_schema_privilege(name, p)
                 WHEN 'table' THEN has_table_privilege(name, p)
                 ELSE has_sequence_privilege(name, p) END)
          FROM objs, unnest(privs) WITH ORDINALITY AS u(p, ord)
         GROUP BY kind, name ORDER BY min(ord), kind, name
        """, {"schema": schema}).fetchall()
    return [f"{', '.join(r[2])} on {r[0]} {r[1]}" for r in rows if r[2]]


def privilege_advice(conn: psycopg.Connection, schema: str, missing: list[str] | None = None) -> str:
    """What to do about missing privileges: the roles.sql script and the security guide."""
    if missing is None:
        try:
            missing = missing_privileges(conn, schema)
        except psycopg.Error:
            conn.rollback()
            missing = []
    lacking = f"the role lacks {'; '.join(missing)}; " if missing else ""
    return (f"{lacking}grant them as doc_migration/storage/roles.sql does (run it once as a superuser) - see "
            "docs/security.md#least-privilege-role")


def explain_error(exc: BaseException, settings: Settings, url: str) -> str:
    """One redacted line for a failed partition; a missing privilege names itself and the fix."""
    message = redact(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        try:
            with connection(url) as conn:
                advice = privilege_advice(conn, settings.pipeline_schema)
        except (DatabaseError, psycopg.Error):
            advice = "see docs/security.md#least-privilege-role"
        message = f"{message.strip()} ({advice})"
    return message


def vector_index_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'documents_embedding_hnsw'"
    ).fetchone()
    return row is not None


REWRITE_SHARE = 0.3  # a run that writes new text into this share of the rows rebuilds the index instead


def drop_vector_index_for_rewrite(url: str, schema: str, keys: list[str],
                                  min_rows: int = 20_000) -> tuple[int, int] | None:
    """Before a load that writes new text into a large share of the rows (a chunker change, a new
    parser version), drop the HNSW index: maintaining it row by row costs several times a rebuild
    (546 s against 168 s for a whole first load in docs/benchmarks.md). ``ensure_vector_index``
    builds it again after the load; meanwhile the doc-server's queries are exact scans, slower
    but correct. Only from ``min_rows`` rows with new text up. Returns (rows with new text, rows)
    when it dropped the index."""
    s = sql.Identifier(schema)
    with connection(url, autocommit=True) as conn:
        if not vector_index_exists(conn):
            return None
        staged = conn.execute(sql.SQL("SELECT count(*) FROM {}.staged_chunks WHERE partition_key = ANY(%s)")
                              .format(s), (keys,)).fetchone()
        if staged is None or staged[0] < min_rows:
            return None
        row = conn.execute(sql.SQL(
            "SELECT (SELECT count(*) FROM {s}.staged_chunks st WHERE st.partition_key = ANY(%s) AND NOT EXISTS ("
            "  SELECT 1 FROM {s}.partition_rows pr WHERE pr.doc_type = st.doc_type AND pr.source_name = st.source_name "
            "  AND pr.doc_path = st.doc_path AND pr.text_sha = st.text_sha)), (SELECT count(*) FROM documents)"
        ).format(s=s), (keys,)).fetchone()
        assert row is not None
        rewritten, total = int(row[0]), int(row[1])
        if rewritten < max(min_rows, REWRITE_SHARE * total):
            return None
        try:
            conn.execute("DROP INDEX IF EXISTS documents_embedding_hnsw")
        except psycopg.errors.InsufficientPrivilege:  # not the table owner: keep maintaining it
            return None
    return rewritten, total


def ensure_vector_index(url: str, dims: int, maintenance_work_mem: str = "1GB") -> bool:
    """Build the HNSW index after bulk loads (an index present during COPY slows it 100x).

    pgvector indexes ``vector`` only up to 2000 dimensions, so 3072-dimensional data is indexed
    through a ``halfvec`` expression; the doc-server must query with the same cast to hit it:
    ``ORDER BY embedding::halfvec(3072) <=> $1::halfvec(3072)``.
    """
    if not re.match(r"^\d+(MB|GB|kB)$", maintenance_work_mem):
        raise ConfigError(f"maintenance_work_mem {maintenance_work_mem!r} must look like 512MB or 2GB")
    with connection(url, autocommit=True) as conn:
        if vector_index_exists(conn):
            return False
        if conn.execute("SELECT NOT EXISTS (SELECT 1 FROM documents)").fetchone() == (True,):
            return False  # an index on an empty table would slow the bulk load that follows 100x
        conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        opclass = "halfvec_cosine_ops" if dims > 2000 else "vector_cosine_ops"
        expr = f"(embedding::halfvec({int(dims)}))" if dims > 2000 else "(embedding)"
        try:
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS documents_embedding_hnsw ON documents USING hnsw ({expr} {opclass})"
            )
        except psycopg.errors.InsufficientPrivilege as exc:  # a least-privilege role does not own documents
            logging.getLogger(__name__).warning(
                "HNSW index documents_embedding_hnsw not built: %s; build it as the table owner "
                "(docs/operations.md#hnsw-index)", describe_error(exc))
            return False
        return True
