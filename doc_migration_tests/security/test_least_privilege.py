"""Issue 9, part 4: the whole migrate -> validate -> rollback -> migrate cycle as the least-privilege
role of doc_migration/storage/roles.sql, and clear errors when a privilege is missing."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from doc_migration.config import PACKAGE_DIR
from doc_migration_tests.helpers import SAMPLE_MANIFEST, CliResult, run_cli

ROLES_SQL = PACKAGE_DIR / "storage" / "roles.sql"
LOGIN, OWNER, READER = "doc_migrator", "doc_migration_owner", "doc_server_reader"
SOURCES = ["--sources", str(SAMPLE_MANIFEST)]
OFFLINE = {"DOC_MIGRATION_EMBEDDER": "offline"}


def run_roles_sql(superuser_url: str) -> None:
    """What ``psql -f roles.sql`` does (psql meta-commands such as \\set are psql's, not SQL)."""
    script = "\n".join(line for line in ROLES_SQL.read_text(encoding="utf-8").splitlines()
                       if not line.lstrip().startswith("\\"))
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        conn.execute(script.encode())


def as_role(url: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(url, user=role)


def cli(args: list[str], url: str, home: Path) -> CliResult:
    return run_cli([*SOURCES, *args], database_url=url, home=home, extra_env=OFFLINE)


def test_roles_are_least_privilege(database_url: str) -> None:
    run_roles_sql(database_url)
    run_roles_sql(database_url)  # idempotent
    with psycopg.connect(database_url) as conn:
        roles = {r[0]: r[1:] for r in conn.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
            "FROM pg_roles WHERE rolname = ANY(%s)", ([LOGIN, OWNER, READER],))}
        assert set(roles) == {LOGIN, OWNER, READER}
        for name, (sup, createdb, createrole, repl, bypass, login) in roles.items():
            assert not (sup or createdb or createrole or repl or bypass), name
            assert login == (name == LOGIN), name
        for role in (LOGIN, OWNER, READER):
            row = conn.execute("SELECT has_database_privilege(%s, current_database(), 'CREATE')", (role,)).fetchone()
            assert row == (False,), f"{role} may create schemas in the database"
        members = {r[0] for r in conn.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s", (LOGIN,))}
        assert members == {OWNER}, members
        row = conn.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'doc_migration'").fetchone()
        assert row == (OWNER,)


def test_full_cycle_as_the_least_privilege_role(tmp_path: Path, database_url: str) -> None:
    run_roles_sql(database_url)
    url = as_role(database_url, LOGIN)

    first = cli(["full", "--json"], url, tmp_path)
    assert first.code == 0, first.stderr[-3000:]
    loaded = first.json
    assert loaded["failed_partitions"] == [] and loaded["documents_loaded"] >= 13

    validated = cli(["validate", "--json"], url, tmp_path)
    assert validated.code == 0, validated.stderr[-3000:] + validated.stdout[-3000:]
    assert validated.json["passed"]

    with psycopg.connect(database_url) as conn:
        before = conn.execute("SELECT count(*) FROM documents WHERE doc_type = 'rust'").fetchone()
    rolled = cli(["rollback", "rust-00", "rust-01", "--yes", "--json"], url, tmp_path)
    assert rolled.code == 0, rolled.stderr[-3000:]
    with psycopg.connect(database_url) as conn:
        after = conn.execute("SELECT count(*) FROM documents WHERE doc_type = 'rust'").fetchone()
    assert before is not None and before[0] > 0 and after == (0,)

    again = cli(["full", "--json"], url, tmp_path)
    assert again.code == 0, again.stderr[-3000:]
    assert again.json["failed_partitions"] == [] and again.json["documents_loaded"] > 0
    assert cli(["validate", "--json"], url, tmp_path).code == 0

    with psycopg.connect(database_url) as conn:
        owners: dict[str, str] = dict(conn.execute(
            "SELECT c.oid::regclass::text, c.relowner::regrole::text FROM pg_class c "
            "WHERE c.relname IN ('documents', 'document_sources', 'documents_embedding_hnsw') "
            "OR c.relnamespace = 'doc_migration'::regnamespace AND c.relkind = 'r'").fetchall())
        assert "documents_embedding_hnsw" in owners, "the HNSW index was built by the least-privilege role"
        assert set(owners.values()) == {OWNER}, owners
        # The doc-server's role reads and cannot write.
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(READER)))
        assert conn.execute("SELECT count(*) FROM documents").fetchone() != (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM documents")
        conn.rollback()
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(READER)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM doc_migration.loads")


def test_an_existing_installation_is_adopted(tmp_path: Path, database_url: str) -> None:
    """Tables made earlier by a superuser's migration are handed to the owner role."""
    assert cli(["full", "--json", "--doc-type", "rust"], database_url, tmp_path).code == 0
    run_roles_sql(database_url)
    url = as_role(database_url, LOGIN)
    result = cli(["full", "--json"], url, tmp_path)
    assert result.code == 0, result.stderr[-3000:]
    assert cli(["rollback", "rust-00", "--yes"], url, tmp_path).code == 0
    assert cli(["full"], url, tmp_path).code == 0
    validated = cli(["validate"], url, tmp_path)
    assert validated.code == 0, validated.stdout[-3000:]


@pytest.fixture()
def bare_role(database_url: str) -> str:
    """A login role with nothing but CONNECT (what PUBLIC has by default)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'doc_sec_bare'").fetchone():
            conn.execute("CREATE ROLE doc_sec_bare LOGIN")
    return as_role(database_url, "doc_sec_bare")


def test_no_create_on_the_database_is_explained(tmp_path: Path, bare_role: str) -> None:
    r = cli(["full", "--json"], bare_role, tmp_path)
    assert r.code == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    message = r.stderr.strip().splitlines()[-1]
    assert "CREATE on database" in message and "roles.sql" in message and "docs/security.md" in message, message


@pytest.mark.parametrize(("revoke", "expected"), [
    ("REVOKE INSERT ON documents FROM doc_migration_owner", "INSERT on table documents"),
    ("REVOKE UPDATE, DELETE ON doc_migration.loads FROM doc_migration_owner",
     "UPDATE, DELETE on table doc_migration.loads"),
    ("REVOKE TEMPORARY ON DATABASE {db} FROM doc_migration_owner, PUBLIC", "TEMPORARY on database"),
])
def test_a_missing_privilege_is_named(tmp_path: Path, database_url: str, revoke: str, expected: str) -> None:
    run_roles_sql(database_url)
    url = as_role(database_url, LOGIN)
    assert cli(["full", "--json", "--doc-type", "rust"], url, tmp_path).code == 0
    db = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL(revoke).format(db=sql.Identifier(str(db))))
    for command in (["full", "--json"], ["validate"], ["rollback", "rust-00", "--yes"]):
        r = cli(command, url, tmp_path)
        assert r.code == 2, (command, r.stderr[-3000:])
        message = r.stderr.strip().splitlines()[-1]
        assert expected in message and "docs/security.md" in message, (command, message)


def test_a_role_named_like_the_pipeline_schema_is_refused(tmp_path: Path, database_url: str) -> None:
    """With the default search_path ("$user", public), a login role named ``doc_migration`` (as in
    k8s/secret.example.yaml) would create documents inside the pipeline schema, out of the
    doc-server's sight. roles.sql sets search_path; without it the CLI must refuse, not misplace."""
    db = str(psycopg.conninfo.conninfo_to_dict(database_url)["dbname"])
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'doc_migration'").fetchone():
            conn.execute("CREATE ROLE doc_migration LOGIN")
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO doc_migration").format(sql.Identifier(db)))
        conn.execute("ALTER SCHEMA public OWNER TO doc_migration")
    r = cli(["full", "--json", "--doc-type", "rust"], as_role(database_url, "doc_migration"), tmp_path)
    assert r.code == 2, r.stderr[-3000:]
    message = r.stderr.strip().splitlines()[-1]
    assert "search_path" in message and "docs/security.md" in message, message
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('doc_migration.documents')").fetchone() == (None,)
