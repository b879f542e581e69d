"""Fixtures of the security tests: password authentication on the embedded server, roles, and
collection of everything a run leaves behind (for the secret-leak checks)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

# Recognisable secrets. The database password holds characters a URL must percent-encode, so
# both of its spellings are searched for.
DB_PASSWORD = "Db-S3cret+pw/7f2c@Zq"
WRONG_DB_PASSWORD = "Wr0ng-Guess-91ab"
API_KEY = "sk-docmig-TESTKEY-5e1f0c9a77d4"
WRONG_API_KEY = "sk-docmig-WRONGKEY-0b2d4c6e8891"
SECRETS = (DB_PASSWORD, quote(DB_PASSWORD, safe=""), WRONG_DB_PASSWORD, API_KEY, WRONG_API_KEY)
# Any 8 consecutive characters of a secret count as a leak: libpq quotes *pieces* of a malformed
# URL, and a message cut at a length limit keeps a prefix.
FRAGMENT = 8
FRAGMENTS = tuple(sorted({s[i:i + FRAGMENT] for s in SECRETS for i in range(len(s) - FRAGMENT + 1)}
                         - {"sk-docmi", "k-docmig", "-docmig-", "docmig-T", "docmig-W"}))

PW_ROLE = "doc_sec_migrator"      # password-authenticated (scram-sha-256) role that owns its test database
NOPRIV_ROLE = "doc_sec_nopriv"    # password-authenticated role with CONNECT only
HBA_MARK = "# doc_migration_tests.security"


def conninfo_params(url: str) -> dict[str, str]:
    return {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(url).items() if v is not None}


def role_url(base_url: str, role: str, password: str) -> str:
    """A libpq URI (as operators write DATABASE_URL) for ``role`` on the test server's socket."""
    params = conninfo_params(base_url)
    host = quote(params["host"], safe="")
    return f"postgresql://{role}:{quote(password, safe='')}@/{params['dbname']}?host={host}"


@pytest.fixture(scope="session")
def password_auth(pg_server_url: str) -> Iterator[str]:
    """Enforce scram-sha-256 for the security tests' roles (only them: every other role keeps the
    server's ``trust``), by prepending lines to the server's pg_hba.conf; restored afterwards."""
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        row = conn.execute("SHOW hba_file").fetchone()
        assert row is not None
        hba = Path(row[0])
        for role, pw in ((PW_ROLE, DB_PASSWORD), (NOPRIV_ROLE, DB_PASSWORD)):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            # A utility statement cannot take a bound parameter: the password is a quoted literal.
            conn.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(pw)))
        original = hba.read_text(encoding="utf-8")
        lines = [HBA_MARK] + [f"{kind} all {role} {addr} scram-sha-256".replace("  ", " ")
                              for role in (PW_ROLE, NOPRIV_ROLE)
                              for kind, addr in (("local", ""), ("host", "127.0.0.1/32"), ("host", "::1/128"))]
        hba.write_text("\n".join(lines) + "\n" + original, encoding="utf-8")
        conn.execute("SELECT pg_reload_conf()")
        errors = conn.execute("SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL").fetchone()
        assert errors is not None and errors[0] == 0, "bad pg_hba.conf lines"
    try:
        yield pg_server_url
    finally:
        hba.write_text(original, encoding="utf-8")
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


@dataclass
class SecuredDatabase:
    superuser_url: str   # the test database as postgres (trust)
    url: str             # the test database as PW_ROLE with its password (a DATABASE_URL to test with)


@pytest.fixture()
def secured_db(password_auth: str, database_url: str) -> SecuredDatabase:
    """The per-test database, owned by the password role, pgvector already enabled by the superuser."""
    params = conninfo_params(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(params["dbname"]),
                                                                      sql.Identifier(PW_ROLE)))
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(PW_ROLE)))
    return SecuredDatabase(database_url, role_url(database_url, PW_ROLE, DB_PASSWORD))


# ----------------------------------------------------------------------------- leak collection


def collect_home(home: Path) -> dict[str, bytes]:
    """Every file a run left under DOC_MIGRATION_HOME (reports, Dagster's SQLite event log and
    run storage, compute logs), raw; SQLite databases also as a text dump."""
    out: dict[str, bytes] = {}
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path.name == "pgdata":
            continue
        out[str(path.relative_to(home))] = path.read_bytes()
        if path.suffix == ".db":
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                    out[f"{path.relative_to(home)} (dump)"] = "\n".join(db.iterdump()).encode()
            except sqlite3.Error:
                pass
    return out


def collect_dagster_events(home: Path) -> dict[str, bytes]:
    """The Dagster event log read back through DagsterInstance, every record serialized."""
    dagster_home = home / "dagster"
    if not (dagster_home / "dagster.yaml").exists():
        return {}
    from dagster import DagsterInstance
    from dagster._serdes import serialize_value

    out: dict[str, bytes] = {}
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        for run in instance.get_runs():
            events = instance.all_logs(run.run_id)
            out[f"dagster run {run.run_id}"] = "\n".join(
                [serialize_value(run)] + [serialize_value(e) for e in events]).encode()
    return out


def collect_database(superuser_url: str, schema: str = "doc_migration") -> dict[str, bytes]:
    """Every row of the pipeline's schema and of documents, as JSON text."""
    out: dict[str, bytes] = {}
    with psycopg.connect(superuser_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,))]
        for table in tables:
            rows = conn.execute(sql.SQL("SELECT coalesce(json_agg(t)::text, '') FROM {}.{} t").format(
                sql.Identifier(schema), sql.Identifier(table))).fetchone()
            out[f"table {schema}.{table}"] = (rows[0] if rows else "").encode()
        if conn.execute("SELECT to_regclass('public.documents')").fetchone() != (None,):
            rows = conn.execute("SELECT coalesce(json_agg(json_build_object('p', doc_path, 'c', content, "
                                "'m', metadata))::text, '') FROM documents").fetchone()
            out["table documents"] = (rows[0] if rows else "").encode()
    return out


def find_leaks(artifacts: dict[str, bytes], secrets: tuple[str, ...] = SECRETS + FRAGMENTS) -> list[str]:
    """Where a secret (or a fragment of one) occurs, with some context; one line per artifact."""
    found = []
    for where, blob in artifacts.items():
        for secret in secrets:
            i = blob.find(secret.encode())
            if i >= 0:
                context = blob[max(0, i - 120):i + len(secret) + 40].decode("utf-8", "replace")
                found.append(f"{where}: {secret!r} in ...{context}...")
                break
    return found
