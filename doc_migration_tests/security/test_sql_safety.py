"""Issue 9, part 3: no SQL text built from values.

Every statement the package sends must be a literal, or a psycopg ``sql.SQL("literal").format(...)``
composition whose pieces are ``sql.Identifier``/``sql.Literal``/``sql.SQL(literal)``/placeholders;
values travel as bound parameters or COPY data. This test walks the AST of every module and fails
on a statement built with an f-string, ``str.format``, ``%`` or ``+`` of non-literals (also inside
``sql.SQL(...)``, which would splice text unquoted). The few reviewed exceptions are listed in
``REVIEWED`` with the reason they are safe; a new one must be reviewed and added there.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import doc_migration

PACKAGE = Path(doc_migration.__file__).resolve().parent
# Methods whose first argument is SQL text (psycopg connections and cursors, and copy).
SQL_METHODS = {"execute", "executemany", "copy", "stream"}

# (module, function, line text fragment) -> why it is safe. Reviewed by hand; keep this short.
REVIEWED: dict[tuple[str, str, str], str] = {
    ("storage/database.py", "migrate", "conn.execute(text.encode())"):
        "a packaged migration file; its placeholders are sql.Identifier(schema).as_string() of a schema "
        "name validated by IDENTIFIER_RE and int(dims)",
    ("storage/database.py", "ensure_vector_index", "SET maintenance_work_mem"):
        "maintenance_work_mem is checked against ^\\d+(MB|GB|kB)$ just above; SET takes no parameters",
    ("storage/database.py", "ensure_vector_index", "CREATE INDEX IF NOT EXISTS documents_embedding_hnsw"):
        "opclass is one of two constants and expr embeds int(dims): no input reaches the text",
}


@dataclass(frozen=True)
class Finding:
    module: str
    function: str
    line: int
    source: str
    why: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} in {self.function}(): {self.why}: {self.source}"


def _is_sql_call(node: ast.AST) -> bool:
    """``sql.SQL(...)`` / ``SQL(...)``."""
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr == "SQL")
        or (isinstance(node.func, ast.Name) and node.func.id == "SQL"))


_COMPOSABLES = {"Identifier", "Literal", "Placeholder", "SQL", "Composed"}


class _Scope:
    """Assignments of one function, to follow a statement held in a local variable."""

    def __init__(self, func: ast.AST | None, module: ast.Module | None = None) -> None:
        self.assigned: dict[str, list[ast.expr]] = {}
        # Module-level functions, to follow a composable returned by a helper.
        self.helpers: dict[str, ast.FunctionDef] = {
            n.name: n for n in (module.body if module else []) if isinstance(n, ast.FunctionDef)}
        if func is None:
            return
        for node in ast.walk(func):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.assigned.setdefault(target.id, []).append(node.value)
            elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name) \
                    and node.value is not None:
                self.assigned.setdefault(node.target.id, []).append(node.value)


def unsafe_reason(expr: ast.expr, scope: _Scope, seen: frozenset[str] = frozenset()) -> str | None:
    """Why ``expr`` (SQL text passed to execute/copy) may carry unquoted values, or None if it cannot."""
    if isinstance(expr, ast.Constant):
        return None if isinstance(expr.value, str | bytes) else f"not SQL text: {type(expr.value).__name__}"
    if isinstance(expr, ast.JoinedStr):
        if any(isinstance(v, ast.FormattedValue) for v in expr.values):
            return "f-string with interpolated values"
        return None
    if isinstance(expr, ast.BinOp):
        if isinstance(expr.op, ast.Mod):
            return "%-formatting"
        if isinstance(expr.op, ast.Add):
            return unsafe_reason(expr.left, scope, seen) or unsafe_reason(expr.right, scope, seen)
        return f"{type(expr.op).__name__} on SQL text"
    if isinstance(expr, ast.Call):
        func = expr.func
        if _is_sql_call(expr):
            if not expr.args:
                return None
            inner = unsafe_reason(expr.args[0], scope, seen)
            return f"sql.SQL() around {inner}" if inner else None
        if isinstance(func, ast.Attribute) and func.attr in ("format", "join"):
            base = func.value
            if _is_sql_call(base) or (isinstance(base, ast.Attribute | ast.Name) and unsafe_reason(base, scope, seen)
                                      is None and _composable(base, scope)):
                base_reason = unsafe_reason(base, scope, seen)
                if base_reason:
                    return base_reason
                for arg in [*expr.args, *(k.value for k in expr.keywords)]:
                    reason = _composable_reason(arg, scope, seen)
                    if reason:
                        return reason
                return None
            return f"str.{func.attr}() builds the statement"
        if isinstance(func, ast.Attribute) and func.attr == "encode":
            return unsafe_reason(func.value, scope, seen)
        if isinstance(func, ast.Attribute) and func.attr in _COMPOSABLES:
            return None
        return f"statement returned by {ast.unparse(func)}()"
    if isinstance(expr, ast.Name):
        if expr.id in seen:
            return None
        values = scope.assigned.get(expr.id)
        if not values:
            return f"{expr.id} is not assigned in this function"
        for value in values:
            reason = unsafe_reason(value, scope, seen | {expr.id})
            if reason:
                return f"{expr.id} = {reason}"
        return None
    if isinstance(expr, ast.Attribute):
        return None if expr.attr.isupper() else f"statement read from {ast.unparse(expr)}"
    return f"{type(expr).__name__} expression"


def _composable(node: ast.expr, scope: _Scope) -> bool:
    if isinstance(node, ast.Name):
        return any(_is_sql_call(v) or (isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute)
                                       and v.func.attr in ("format", "join") and _is_sql_call(v.func.value))
                   for v in scope.assigned.get(node.id, []))
    return False


def _composable_reason(arg: ast.expr, scope: _Scope, seen: frozenset[str]) -> str | None:
    """Arguments of ``sql.SQL(...).format()``: composables, variables holding them, a choice between
    them, or a module helper that returns only composables."""
    if isinstance(arg, ast.IfExp):
        return _composable_reason(arg.body, scope, seen) or _composable_reason(arg.orelse, scope, seen)
    if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute | ast.Name):
        name = arg.func.attr if isinstance(arg.func, ast.Attribute) else arg.func.id
        if name in ("Identifier", "Literal", "Placeholder"):
            return None
        if name == "SQL" or name in ("format", "join"):
            return unsafe_reason(arg, scope, seen)
        helper = scope.helpers.get(name) if isinstance(arg.func, ast.Name) and name not in seen else None
        if helper is not None:
            returns = [n.value for n in ast.walk(helper) if isinstance(n, ast.Return) and n.value is not None]
            inner = _Scope(helper)
            inner.helpers = scope.helpers
            reasons = [_composable_reason(r, inner, seen | {name}) for r in returns]
            return next((f"{name}() returns {r}" for r in reasons if r), None) if returns else f"{name}() returns None"
        return None if name in _COMPOSABLES else f"format() argument {ast.unparse(arg)} is not a composable"
    if isinstance(arg, ast.Name | ast.Attribute):
        return None  # a variable holding a composable (sql.Identifier(schema) and the like)
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return "a plain str passed to sql.SQL().format() is quoted as a literal (use sql.Literal explicitly)"
    return f"format() argument {ast.unparse(arg)}"


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.AST | None, ast.AST]]:
    """(enclosing function name, function node, call) for every call in the module."""
    owner: dict[ast.AST, ast.AST] = {}
    # Outer functions first, so a nested function's own nodes end up mapped to it.
    for func in sorted((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)),
                       key=lambda n: n.lineno):
        for node in ast.walk(func):
            if node is not func:
                owner[node] = func
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            enclosing = owner.get(node)
            yield getattr(enclosing, "name", "<module>"), enclosing, node


def scan(path: Path) -> list[Finding]:
    module = str(path.relative_to(PACKAGE))
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    findings = []
    scopes: dict[int, _Scope] = {}
    for name, func, call in _functions(tree):
        assert isinstance(call, ast.Call)
        if not (isinstance(call.func, ast.Attribute) and call.func.attr in SQL_METHODS and call.args):
            continue
        if call.func.attr == "copy" and isinstance(call.func.value, ast.Name) and call.func.value.id in (
                "shutil", "copy"):
            continue
        scope = scopes.setdefault(id(func), _Scope(func, tree))
        reason = unsafe_reason(call.args[0], scope)
        if reason:
            text = ast.get_source_segment(source, call) or ast.unparse(call)
            findings.append(Finding(module, name, call.lineno, " ".join(text.split())[:160], reason))
    return findings


def _reviewed(f: Finding) -> bool:
    return any(m == f.module and fn == f.function and frag in f.source for (m, fn, frag) in REVIEWED)


def package_findings() -> list[Finding]:
    out: list[Finding] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        out.extend(scan(path))
    return out


def test_no_sql_built_from_values() -> None:
    findings = package_findings()
    new = [f for f in findings if not _reviewed(f)]
    assert not new, ("SQL text built from values (use bound parameters, COPY, or sql.SQL().format() with "
                     "sql.Identifier; if it is provably safe, review it and add it to REVIEWED):\n"
                     + "\n".join(map(str, new)))


def test_reviewed_exceptions_still_exist() -> None:
    """An allow-list entry whose code is gone must be removed (it would silently allow a new one)."""
    findings = package_findings()
    stale = [key for key in REVIEWED if not any(
        f.module == key[0] and f.function == key[1] and key[2] in f.source for f in findings)]
    assert not stale, f"stale REVIEWED entries: {stale}"


def _findings_of(code: str) -> list[str]:
    tree = ast.parse(code)
    scopes: dict[int, _Scope] = {}
    out = []
    for _, func, call in _functions(tree):
        assert isinstance(call, ast.Call)
        if isinstance(call.func, ast.Attribute) and call.func.attr in SQL_METHODS and call.args:
            reason = unsafe_reason(call.args[0], scopes.setdefault(id(func), _Scope(func, tree)))
            if reason:
                out.append(reason)
    return out


def test_the_scanner_catches_what_it_must() -> None:
    bad = {
        "f-string": 'def f(c, t):\n    c.execute(f"SELECT * FROM {t}")',
        "format": 'def f(c, t):\n    c.execute("SELECT * FROM {}".format(t))',
        "percent": 'def f(c, t):\n    c.execute("SELECT * FROM %s" % t)',
        "concat": 'def f(c, t):\n    c.execute("SELECT * FROM " + t)',
        "variable": 'def f(c, t):\n    q = f"DELETE FROM {t}"\n    c.execute(q)',
        "sql.SQL(f-string)": 'def f(c, t):\n    c.execute(sql.SQL(f"SELECT {t}"))',
        "format arg": 'def f(c, t):\n    c.execute(sql.SQL("SELECT {}").format(sql.SQL(f"{t}")))',
        "copy": 'def f(cur, t):\n    cur.copy(f"COPY {t} FROM STDIN")',
        "parameter": 'def f(c, q):\n    c.execute(q)',
        "helper returning text": 'def h(t):\n    return sql.SQL(t)\ndef f(c, t):\n    c.execute(sql.SQL("SELECT {}")'
                                 '.format(h(t)))',
    }
    for name, code in bad.items():
        assert _findings_of(code), f"not caught: {name}"
    good = {
        "literal": 'def f(c, v):\n    c.execute("SELECT %s", (v,))',
        "composition": 'def f(c, s, v):\n    c.execute(sql.SQL("SELECT * FROM {}.t WHERE a = %s").format('
                       'sql.Identifier(s)), (v,))',
        "held composable": 'def f(c, s):\n    i = sql.Identifier(s)\n    q = sql.SQL("SELECT * FROM {}.t").format(i)'
                           '\n    c.execute(q)',
        "implicit concat": 'def f(c):\n    c.execute("SELECT 1 "\n              "FROM t")',
        "literal concat": 'def f(c):\n    c.execute("SELECT 1 " + "FROM t")',
        "choice": 'def f(c, x):\n    c.execute(sql.SQL("SELECT {}").format(sql.SQL("a") if x else sql.SQL("b")))',
        "helper": 'def h(x):\n    return sql.SQL("a") if x else sql.Identifier(x)\ndef f(c, x):\n'
                  '    c.execute(sql.SQL("SELECT {}").format(h(x)))',
    }
    for name, code in good.items():
        assert not _findings_of(code), f"false alarm: {name}: {_findings_of(code)}"
