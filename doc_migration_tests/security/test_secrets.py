"""Issue 9, part 2: neither the database password nor the API key shows up anywhere a failing
migration leaves traces: stdout/stderr, Dagster's event log and compute logs, the JSON reports,
the pipeline's tables (partition_failures.error, quarantine) and ``doc-migrate config``.

Every stage is made to fail once: connecting (bad host, wrong password, malformed URL), the
embedding API (401), SQL (a role without privileges, a revoked INSERT) and a parser (an exception
that quotes the secrets, as a library echoing its connection string would)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from doc_migration_tests.helpers import SAMPLE_MANIFEST, CliResult, run_cli
from doc_migration_tests.security.conftest import (
    API_KEY,
    DB_PASSWORD,
    NOPRIV_ROLE,
    PW_ROLE,
    SECRETS,
    WRONG_API_KEY,
    WRONG_DB_PASSWORD,
    SecuredDatabase,
    collect_dagster_events,
    collect_database,
    collect_home,
    conninfo_params,
    find_leaks,
    role_url,
)
from doc_migration_tests.security.support import finish_cli, start_cli
from testkit.embedding_server import EmbeddingTestServer

OFFLINE = {"DOC_MIGRATION_EMBEDDER": "offline", "OPENAI_API_KEY": API_KEY}
SOURCES = ["--sources", str(SAMPLE_MANIFEST)]


def _artifacts(results: list[CliResult], home: Path, superuser_url: str | None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i, r in enumerate(results):
        out[f"run {i} stdout"] = r.stdout.encode()
        out[f"run {i} stderr"] = r.stderr.encode()
    out.update(collect_home(home))
    out.update(collect_dagster_events(home))
    if superuser_url is not None:
        out.update(collect_database(superuser_url))
    return out


def _assert_no_leak(results: list[CliResult], home: Path, superuser_url: str | None) -> dict[str, bytes]:
    artifacts = _artifacts(results, home, superuser_url)
    leaks = find_leaks(artifacts)
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)
    return artifacts


def test_the_secrets_are_real(secured_db: SecuredDatabase) -> None:
    """Password authentication is enforced for the role (else the wrong-password case proves nothing)."""
    with psycopg.connect(secured_db.url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (PW_ROLE,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(role_url(secured_db.superuser_url, PW_ROLE, WRONG_DB_PASSWORD)).close()
    no_password = role_url(secured_db.superuser_url, PW_ROLE, "").replace(f"{PW_ROLE}:@", f"{PW_ROLE}@")
    with pytest.raises(psycopg.OperationalError, match="no password supplied|password authentication failed"):
        psycopg.connect(no_password, connect_timeout=5).close()


def test_unreachable_host(tmp_path: Path) -> None:
    url = f"postgresql://{PW_ROLE}:{DB_PASSWORD.replace('/', '%2F').replace('@', '%40')}@db.invalid:5432/docs"
    r = run_cli([*SOURCES, "full", "--json"], database_url=url, home=tmp_path, extra_env=OFFLINE, timeout=120)
    assert r.code == 5, r.stderr[-2000:]
    assert "cannot connect" in r.stderr and "db.invalid" in r.stderr
    _assert_no_leak([r], tmp_path, None)


def test_wrong_password(tmp_path: Path, secured_db: SecuredDatabase) -> None:
    url = role_url(secured_db.superuser_url, PW_ROLE, WRONG_DB_PASSWORD)
    results = [run_cli([*SOURCES, "full", "--json"], database_url=url, home=tmp_path, extra_env=OFFLINE),
               run_cli([*SOURCES, "status", "--json"], database_url=url, home=tmp_path, extra_env=OFFLINE)]
    for r in results:
        assert r.code == 2, r.stderr[-2000:]
        assert "password authentication failed" in r.stderr
    _assert_no_leak(results, tmp_path, secured_db.superuser_url)


def test_malformed_database_url(tmp_path: Path, secured_db: SecuredDatabase) -> None:
    """libpq quotes the offending token of a malformed URL, which can be the password itself."""
    params = conninfo_params(secured_db.superuser_url)
    url = f"postgresql://{PW_ROLE}:{DB_PASSWORD}%zz@/{params['dbname']}?host={params['host']}"
    r = run_cli([*SOURCES, "full", "--json"], database_url=url, home=tmp_path, extra_env=OFFLINE)
    _assert_no_leak([r], tmp_path, None)
    assert r.code == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_embedding_api_401(tmp_path: Path, secured_db: SecuredDatabase) -> None:
    with EmbeddingTestServer(api_key=API_KEY) as server:
        env = {"DOC_MIGRATION_EMBEDDER": "openai", "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": WRONG_API_KEY}
        r = run_cli([*SOURCES, "--log-level", "DEBUG", "full", "--json", "--partition", "rust-00"],
                    database_url=secured_db.url, home=tmp_path, extra_env=env)
    assert r.code == 1, r.stderr[-2000:]
    failures = r.json["failures"]
    assert failures and all(f["stage"] == "embed" and "401" in f["error"] for f in failures), failures
    artifacts = _assert_no_leak([r], tmp_path, secured_db.superuser_url)
    assert any(b"401" in blob for where, blob in artifacts.items() if where.startswith("dagster run")), \
        "the failure must be in the Dagster event log (else this test checks nothing)"
    assert b"401" in artifacts["table doc_migration.partition_failures"]


def test_sql_errors(tmp_path: Path, secured_db: SecuredDatabase) -> None:
    """A role without privileges (refused before any run), then a privilege revoked while a run is
    under way (the load stage fails with a SQL error, recorded in partition_failures)."""
    nopriv = role_url(secured_db.superuser_url, NOPRIV_ROLE, DB_PASSWORD)
    first = run_cli([*SOURCES, "full", "--json"], database_url=nopriv, home=tmp_path / "a", extra_env=OFFLINE)
    assert first.code == 2, first.stderr[-2000:]
    assert "CREATE on database" in first.stderr and "docs/security.md" in first.stderr, first.stderr[-2000:]

    home = tmp_path / "b"
    home.mkdir()
    # Parsing pauses 3 s per partition: time to take INSERT away after the pre-flight check.
    proc = start_cli([*SOURCES, "full", "--json", "--doc-type", "rust"], database_url=secured_db.url, home=home,
                     extra_env={**OFFLINE, "DOC_MIGRATION_PAUSE_AT": "parse-before-commit:3"})
    deadline = time.monotonic() + 120
    with psycopg.connect(secured_db.superuser_url, autocommit=True) as conn:
        while time.monotonic() < deadline and proc.poll() is None:
            scanned = conn.execute("SELECT to_regclass('doc_migration.partition_scans') IS NOT NULL AND "
                                   "EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'doc_migration' "
                                   "AND usename = %s)", (PW_ROLE,)).fetchone()
            if scanned and scanned[0] and conn.execute("SELECT count(*) FROM doc_migration.partition_scans"
                                                       ).fetchone() != (0,):
                break
            time.sleep(0.05)
        conn.execute(sql.SQL("REVOKE INSERT, UPDATE ON documents FROM {}").format(sql.Identifier(PW_ROLE)))
    failed = finish_cli(proc)
    assert failed.code == 1, failed.stderr[-2000:]
    errors = [f["error"] for f in failed.json["failures"] if f["stage"] == "load"]
    assert errors and all("permission denied" in e for e in errors), failed.json["failures"]
    assert all("INSERT, UPDATE on table documents" in e and "docs/security.md" in e for e in errors), errors
    _assert_no_leak([first], tmp_path / "a", None)
    _assert_no_leak([failed], home, secured_db.superuser_url)


BUGGY_PARSER = '''
import os


def parse(data, ctx):
    # A parser (or a library under it) whose exception quotes its configuration.
    raise RuntimeError("cannot parse " + ctx.rel_path + " with " + os.environ["DATABASE_URL"]
                       + " key=" + os.environ["OPENAI_API_KEY"] + " Authorization: Bearer "
                       + os.environ["OPENAI_API_KEY"] + " raw password " + os.environ["DOC_SEC_RAW_PASSWORD"])
'''

SITECUSTOMIZE = '''
import os

if os.environ.get("DOC_SEC_INJECT_PARSER_BUG"):
    from doc_migration.sources import registry

    registry.PARSERS["text"] = "doc_sec_buggy_parser:parse"
'''


def test_parser_exception(tmp_path: Path, secured_db: SecuredDatabase) -> None:
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "doc_sec_buggy_parser.py").write_text(BUGGY_PARSER, encoding="utf-8")
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    import os

    pythonpath = os.pathsep.join(p for p in (str(inject), os.environ.get("PYTHONPATH", "")) if p)
    env = {**OFFLINE, "PYTHONPATH": pythonpath, "DOC_SEC_INJECT_PARSER_BUG": "1", "DOC_SEC_RAW_PASSWORD": DB_PASSWORD}
    home = tmp_path / "home"
    home.mkdir()
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE_MANIFEST.parent, corpus)
    rfc = next((corpus / "ietf_rfc").glob("*.txt"))
    results = []
    for parallel in ("1", "2"):
        results.append(run_cli(["--sources", str(corpus / "sources.yaml"), "--log-level", "DEBUG", "full", "--json",
                                "--doc-type", "ietf_rfc", "--parallel", parallel],
                               database_url=secured_db.url, home=home, extra_env=env))
        rfc.write_text(rfc.read_text(encoding="utf-8") + "\nchanged\n", encoding="utf-8")  # parsed again next time
    for r in results:
        assert r.code == 0, r.stderr[-2000:]
        reasons = [q["reason"] for q in r.json["quarantined_files"]]
        assert reasons and all(q.startswith("parser error: RuntimeError") for q in reasons), reasons
    _assert_no_leak(results, home, secured_db.superuser_url)


def test_config_and_reports(tmp_path: Path, secured_db: SecuredDatabase) -> None:
    """``doc-migrate config`` in every output form, URLs in both spellings, a base URL with
    credentials; then a successful run, validate and status (reports on disk)."""
    params = conninfo_params(secured_db.superuser_url)
    keyword = f"host={params['host']} dbname={params['dbname']} user={PW_ROLE} password='{DB_PASSWORD}'"
    query = f"postgresql:///{params['dbname']}?host={params['host']}&user={PW_ROLE}&password={DB_PASSWORD}"
    results = []
    for url in (secured_db.url, keyword, query):
        env = {"DOC_MIGRATION_EMBEDDER": "openai", "OPENAI_API_KEY": API_KEY,
               "OPENAI_BASE_URL": f"https://proxy-user:{WRONG_API_KEY}@llm-proxy.internal/v1"}
        for args in (["config"], ["config", "--json"]):
            r = run_cli([*SOURCES, *args], database_url=url, home=tmp_path, extra_env=env)
            assert r.code == 0, r.stderr[-2000:]
            results.append(r)
    shown = json.loads(results[1].stdout.strip().splitlines()[-1])
    assert shown["openai_api_key"] == "***" and "***" in shown["database_url"]
    assert shown["openai_base_url"] == "https://proxy-user:***@llm-proxy.internal/v1"
    for url in (secured_db.url, keyword):
        for args in (["full", "--json"], ["validate", "--json"], ["status", "--json"], ["history"]):
            r = run_cli([*SOURCES, *args], database_url=url, home=tmp_path, extra_env=OFFLINE)
            assert r.code == 0, r.stderr[-2000:]
            results.append(r)
    assert list((tmp_path / "reports").glob("*.json")), "the validation report was written"
    _assert_no_leak(results, tmp_path, secured_db.superuser_url)


def test_secrets_constants_are_distinct() -> None:
    assert len(set(SECRETS)) == len(SECRETS)
