"""Issue 9, part 5: libpq parameters in DATABASE_URL (sslmode, sslrootcert, application_name,
options, connect_timeout) reach libpq exactly as written; the pipeline's own session settings are
added without overriding them. A fake TCP listener records what libpq sends."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import psycopg

from doc_migration.storage.database import connect
from doc_migration_tests.helpers import SAMPLE_MANIFEST, CliResult, run_cli
from doc_migration_tests.security.support import FakePostgres

PASSWORD = "Tls-S3cret-pw-a9f1"


def _status(url: str, home: Path) -> CliResult:
    return run_cli(["--sources", str(SAMPLE_MANIFEST), "status"], database_url=url, home=home,
                   extra_env={"DOC_MIGRATION_EMBEDDER": "offline"}, timeout=120)


def test_database_url_parameters_reach_libpq_unchanged(tmp_path: Path) -> None:
    with FakePostgres() as server:
        url = (f"postgresql://migrator:{PASSWORD}@127.0.0.1:{server.port}/docs?sslmode=disable"
               "&application_name=x&options=-c%20search_path%3Ddocs%2Cpublic")
        r = _status(url, tmp_path)
    assert r.code != 0, r.stderr[-2000:]
    assert "fake server: no logins here" in r.stderr and PASSWORD not in r.stderr + r.stdout
    assert server.requests == ["startup"], "sslmode=disable: no SSLRequest"
    startup = server.startups[0]
    assert startup["user"] == "migrator" and startup["database"] == "docs"
    assert startup["application_name"] == "x", startup
    assert "search_path=docs,public" in startup["options"], f"the operator's options were dropped: {startup}"
    assert "lock_timeout=60000" in startup["options"], f"the pipeline's session limits were dropped: {startup}"


def test_sslmode_require_is_enforced(tmp_path: Path) -> None:
    with FakePostgres(ssl_answer=b"N") as server:
        r = _status(f"postgresql://migrator:{PASSWORD}@127.0.0.1:{server.port}/docs?sslmode=require", tmp_path)
    assert server.requests == ["ssl"] and not server.startups, "no plaintext fallback with sslmode=require"
    assert "server does not support SSL, but SSL was required" in r.stderr, r.stderr[-2000:]
    assert r.code == 2, "a TLS misconfiguration is not retryable"


def test_sslrootcert_reaches_libpq(tmp_path: Path) -> None:
    ca = tmp_path / "no-such-dir" / "ca.crt"
    with FakePostgres(ssl_answer=b"S") as server:
        url = f"postgresql://migrator:{PASSWORD}@127.0.0.1:{server.port}/docs?sslmode=verify-full&sslrootcert={ca}"
        r = _status(url, tmp_path)
    assert server.requests == ["ssl"]
    assert f'root certificate file "{ca}" does not exist' in r.stderr, r.stderr[-2000:]
    assert r.code == 2 and PASSWORD not in r.stderr


def test_connect_adds_session_limits_without_overriding(database_url: str) -> None:
    """Against the real server (unix socket): the operator's application_name, options and
    connect_timeout win; TLS parameters are kept (libpq does not use TLS on a unix socket)."""
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    base = f"postgresql://{params['user']}@/{params['dbname']}?host={quote(str(params['host']), safe='')}"
    url = (base + "&sslmode=verify-full&sslrootcert=%2Fetc%2Fssl%2Fdoc-migration%2Fca.crt&application_name=x"
           "&connect_timeout=7&options=-c%20search_path%3Dfoo%2Cpublic%20-c%20work_mem%3D7MB")
    with connect(url) as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("x",)
        assert conn.execute("SHOW search_path").fetchone() == ("foo,public",)
        assert conn.execute("SHOW work_mem").fetchone() == ("7MB",)
        assert conn.execute("SHOW lock_timeout").fetchone() == ("1min",)
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("10min",)
        dsn = psycopg.conninfo.conninfo_to_dict(conn.info.dsn)
    assert dsn["sslmode"] == "verify-full" and dsn["sslrootcert"] == "/etc/ssl/doc-migration/ca.crt"
    assert dsn["connect_timeout"] == "7"
    with connect(base) as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("doc_migration",)
        assert conn.execute("SHOW lock_timeout").fetchone() == ("1min",)
