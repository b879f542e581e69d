"""The package's shape (issue 16): no import circles, public Dagster API only, and the pipeline
schema's SQL in storage/ alone. Read from the source, so a new offender fails here, not in review."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from doc_migration_tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "doc_migration"
# Every table of the pipeline's own schema (storage/migrations/0002+).
PIPELINE_TABLES = ("partition_files", "partition_scans", "staged_partitions", "staged_chunks", "embedding_cache",
                   "partition_rows", "partition_state", "loads", "quarantine", "partition_failures",
                   "embedding_spend", "rollbacks", "maintenance", "check_results", "schema_migrations",
                   "file_state", "staged_files", "load_undo", "text_fingerprints", "embedding_batches",
                   "embedding_batch_texts")
PIPELINE_SQL = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE|TRUNCATE|COPY|USING)\s+(?:ONLY\s+)?\{[^}]*\}\.(?:"
                          + "|".join(PIPELINE_TABLES) + r")\b", re.I)

def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of the package that ``name`` imports, at top level or inside a function."""
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles_even_through_function_level_imports() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["doc_migration.dagster_defs.checks"] >= {"doc_migration.dagster_defs.assets"}  # the graph sees edges
    assert _cycles(graph) == []


def test_public_dagster_api_only() -> None:
    """No import of Dagster's private modules (the CLI's instance YAML may still name a class Dagster
    only offers there, e.g. NoOpComputeLogManager: configuration, not an import)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} {n}" for n in names
                          if re.match(r"dagster(_\w+)?\._", n)]
    assert offenders == []


def test_pipeline_schema_sql_lives_in_storage() -> None:
    holders = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
               if PIPELINE_SQL.search(p.read_text())}
    assert {h for h in holders if h.startswith("storage/")}, "the pattern must find storage/'s own SQL"
    outside = sorted(h for h in holders if not h.startswith("storage/"))
    assert outside == [], "pipeline-schema SQL outside storage/: move it into a storage module"
    # ...nor by the schema's default name spelled out in a string.
    spelled = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                     if not p.relative_to(PACKAGE).as_posix().startswith("storage/")
                     and re.search(r"\bdoc_migration\.(?:" + "|".join(PIPELINE_TABLES) + r")\b", p.read_text()))
    assert spelled == []


def test_stages_cli_and_dagster_definitions_hold_no_sql() -> None:
    """They call storage/ (and validation/ judges what storage/audit.py answers)."""
    statement = re.compile(r"\bsql\.SQL\(|\.execute\(|\.copy\(")
    holders = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                     if p.relative_to(PACKAGE).as_posix().startswith(("pipeline/", "dagster_defs/", "cli.py"))
                     and statement.search(p.read_text()))
    assert holders == []


def test_storage_depends_on_no_stage_check_or_command() -> None:
    """storage/ is the bottom layer: it may use config, faults, embedding and redaction, never the
    stages, validation, Dagster definitions or the CLI (type-only imports aside)."""
    modules = _modules()
    upper = ("doc_migration.pipeline", "doc_migration.validation", "doc_migration.dagster_defs", "doc_migration.cli")
    offenders = []
    for name, path in modules.items():
        if not name.startswith("doc_migration.storage"):
            continue
        tree = ast.parse(path.read_text())
        type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                     and "TYPE_CHECKING" in ast.dump(node.test) for n in ast.walk(node)}
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(tree):
            if id(node) in type_only or not isinstance(node, ast.ImportFrom | ast.Import):
                continue
            targets = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [".".join([*(package[:len(package) - node.level + 1] if node.level else []),
                                  *([node.module] if node.module else [])])])
            offenders += [f"{name} -> {t}" for t in targets if t.startswith(upper)]
    assert offenders == []


def test_the_table_list_above_names_every_pipeline_table_the_migrations_create() -> None:
    created = {m.group(1) for path in (PACKAGE / "storage" / "migrations").glob("*.sql") if path.name >= "0002"
               for m in re.finditer(r"CREATE TABLE @SCHEMA@\.(\w+)", path.read_text(encoding="utf-8"))}
    assert created and created | {"schema_migrations"} == set(PIPELINE_TABLES)
