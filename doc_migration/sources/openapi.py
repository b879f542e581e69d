"""OpenAPI 2 (Swagger) and 3.x specs, JSON or YAML, as one readable document per operation.

Search works on prose, so each operation is rendered as text a person would read: method and
path, summary, description, parameters, request body and responses, with local ``$ref`` schemas
inlined (bounded depth, cycle-safe) as indented field lists. The loaders are hardened: YAML goes
through a SafeLoader that counts aliases and expanded size (billion laughs), and JSON/YAML nesting
deeper than ``ParseLimits.max_json_depth`` is refused before anything recursive runs.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import yaml

from .base import Block, ParseContext, ParsedDocument, QuarantineError, decode_text

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace", "query")

# Rendering bounds: a single operation never renders more than this, whatever the schema does.
MAX_SCHEMA_DEPTH = 8
MAX_LINES_PER_OPERATION = 2000
MAX_ENUM_VALUES = 25
MAX_REF_HOPS = 32
_STRUCTURE_KEYS = ("properties", "items", "allOf", "oneOf", "anyOf", "additionalProperties", "prefixItems")
# Expanded YAML node count allowed (aliases counted at full size): stops "billion laughs" that stay
# under the alias-count limit by nesting a few aliases many levels deep.
MAX_YAML_EXPANDED_NODES = 2_000_000

# ---------------------------------------------------------------------------------------------
# Bounded loading (also used by the notebook and SQL-dump parsers)
# ---------------------------------------------------------------------------------------------

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_nesting_exceeds(text: str, max_depth: int) -> int | None:
    """Return the offending depth if ``text`` nests deeper than ``max_depth``, else None.

    Runs on the raw text (strings removed by regex) so hostile nesting is refused before the
    recursive ``json`` decoder sees it.
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            if depth > max_depth:
                return depth
        else:
            depth -= 1
    return None


def load_json_bounded(text: str, max_depth: int, what: str = "JSON") -> Any:
    """``json.loads`` with a nesting bound; errors become QuarantineErrors naming line/column."""
    too_deep = json_nesting_exceeds(text, max_depth)
    if too_deep is not None:
        raise QuarantineError(
            f"{what} nested deeper than {max_depth} levels",
            "hostile or generated input; raise limits.max_json_depth only if the file is trusted",
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise QuarantineError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            "fix the syntax error or exclude the file",
        ) from None
    except RecursionError:
        raise QuarantineError(
            f"{what} nested too deeply", "hostile or generated input; exclude the file"
        ) from None


_YAML12_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


def _yaml12_resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    """SafeLoader's implicit resolvers with YAML 1.2 booleans (only true/false), so keys such
    as ``on``/``off``/``yes`` stay text instead of turning into True/False."""
    table = {
        ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for ch in "tTfF":
        table.setdefault(ch, []).append(("tag:yaml.org,2002:bool", _YAML12_BOOL))
    return table


def _too_many_aliases(limit: int) -> QuarantineError:
    return QuarantineError(f"YAML uses more than {limit} aliases",
                           "possible billion-laughs bomb; raise limits.max_yaml_aliases only if trusted")


def _too_deep(limit: int) -> QuarantineError:
    return QuarantineError(f"YAML nested deeper than {limit} levels",
                           "hostile or generated input; raise limits.max_json_depth only if the file is trusted")


class _Limits(yaml.composer.Composer):
    """Composer that refuses alias floods, deep nesting and huge alias expansions."""

    _max_aliases = 1000
    _max_depth = 200
    _aliases = 0
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):  # type: ignore[attr-defined]
            self._aliases += 1
            if self._aliases > self._max_aliases:
                raise _too_many_aliases(self._max_aliases)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > self._max_depth:
            raise _too_deep(self._max_depth)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _check_expansion(node)
        return node


try:
    from yaml._yaml import CParser as _CParser  # type: ignore[import-not-found]
except ImportError:  # PyYAML built without libyaml: _PyLoader is used
    _CParser = object  # type: ignore[misc,assignment]


class _PyLoader(
    yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, _Limits,
    yaml.constructor.SafeConstructor, yaml.resolver.Resolver,
):
    """Pure-Python fallback when PyYAML was built without libyaml."""

    yaml_implicit_resolvers = _yaml12_resolvers()

    def __init__(self, stream: str, max_aliases: int, max_depth: int) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _Limits.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._max_aliases, self._max_depth = max_aliases, max_depth


class _CLoader(_CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """libyaml scans, parses and composes (C, ~10x the Python composer); the limits are then
    checked on the composed node graph, before anything is constructed.

    Composing in C is safe to do first: libyaml refuses nesting beyond 1000 levels itself, and an
    alias is a reference to the already composed node, so the graph stays the size of the text
    (it is the *constructed* data, with aliases expanded, that a YAML bomb blows up).
    """

    yaml_implicit_resolvers = _yaml12_resolvers()

    def __init__(self, stream: str, max_aliases: int, max_depth: int) -> None:
        _CParser.__init__(self, stream)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._max_aliases, self._max_depth = max_aliases, max_depth

    def get_single_node(self) -> yaml.Node | None:
        node: yaml.Node | None = _CParser.get_single_node(self)
        if node is not None:
            _check_graph(node, self._max_aliases, self._max_depth)
            _check_expansion(node)
        return node


def _check_graph(root: yaml.Node, max_aliases: int, max_depth: int) -> None:
    """The composer's limits on a composed graph: a node reached again is an alias use, and the
    depth of a node is where it first appears (an anchor precedes its aliases). Walked in
    document order, without recursion, so the same limit fires as in the Python composer."""
    seen: set[int] = set()
    aliases = 0
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            aliases += 1
            if aliases > max_aliases:
                raise _too_many_aliases(max_aliases)
            continue
        seen.add(id(node))
        if depth > max_depth:
            raise _too_deep(max_depth)
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in reversed(node.value))
        elif isinstance(node, yaml.MappingNode):
            for key, value in reversed(node.value):
                stack.append((value, depth + 1))
                stack.append((key, depth + 1))


_Loader: type[_PyLoader] | type[_CLoader] = _CLoader if yaml.__with_libyaml__ else _PyLoader


def _check_expansion(root: yaml.Node) -> None:
    """Size of the node tree with every alias expanded, computed in linear time (memoised)."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise QuarantineError("recursive YAML alias", "an anchor refers to itself; not valid OpenAPI")
        in_progress.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        in_progress.discard(key)
        if total > MAX_YAML_EXPANDED_NODES:
            raise QuarantineError(
                "YAML aliases expand to more than 2,000,000 nodes",
                "possible billion-laughs bomb; exclude the file",
            )
        sizes[key] = total
        return total

    size(root)


def load_yaml_bounded(text: str, max_aliases: int, max_depth: int) -> Any:
    """Load one YAML document safely; syntax errors become QuarantineErrors with line/column."""
    loader = _Loader(text, max_aliases, max_depth)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        if "nesting depth" in problem:  # libyaml's own bound (1000) fired before ours
            raise QuarantineError(
                f"YAML nested deeper than {max_depth} levels",
                "hostile or generated input; raise limits.max_json_depth only if the file is trusted",
            ) from None
        raise QuarantineError(f"invalid YAML{where}: {problem}", "fix the syntax error or exclude the file") from None
    except yaml.YAMLError as exc:
        raise QuarantineError(f"invalid YAML: {exc}", "fix the syntax error or exclude the file") from None
    except RecursionError:
        raise QuarantineError("YAML nested too deeply", "hostile or generated input; exclude the file") from None
    finally:
        loader.dispose()


def _load_spec(text: str, ctx: ParseContext) -> Any:
    lim = ctx.limits
    is_json = ctx.rel_path.lower().endswith(".json") or text.lstrip().startswith("{")
    if is_json:
        try:
            return load_json_bounded(text, lim.max_json_depth)
        except QuarantineError:
            if ctx.rel_path.lower().endswith(".json"):
                raise
        # A .yaml file that merely starts with "{": YAML flow syntax, try the YAML loader.
    return load_yaml_bounded(text, lim.max_yaml_aliases, lim.max_json_depth)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


@dataclass
class _Render:
    """Per-operation rendering state: the spec root, refs seen, and the output budget."""

    root: dict[str, Any]
    refs: set[str] = field(default_factory=set)
    unresolved: set[str] = field(default_factory=set)
    lines_left: int = MAX_LINES_PER_OPERATION
    truncated: bool = False

    def take(self, n: int = 1) -> bool:
        if self.lines_left < n:
            self.truncated = True
            return False
        self.lines_left -= n
        return True


def _pointer(root: Any, ref: str) -> Any:
    """Resolve a local JSON pointer (``#/a/b~1c``); raises KeyError when it does not exist."""
    node = root
    frag = ref[1:]
    if frag in ("", "/"):
        return root
    for raw in frag.lstrip("/").split("/"):
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and part.isdigit() and int(part) in node:
            node = node[int(part)]  # YAML keys such as response codes load as ints
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(ref)
    return node


def _ref_name(ref: str) -> str:
    return ref.rstrip("/").rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~") or ref


def _deref(obj: Any, r: _Render) -> tuple[Any, str | None]:
    """Follow ``$ref`` chains; returns (target, name of the last ref) or ({}, name) if unresolved."""
    name: str | None = None
    for _ in range(MAX_REF_HOPS):
        if not isinstance(obj, dict) or not isinstance(obj.get("$ref"), str):
            return obj, name
        ref = obj["$ref"]
        r.refs.add(ref)
        name = _ref_name(ref)
        if not ref.startswith("#"):
            r.unresolved.add(ref)
            return {"description": f"(external reference {ref})"}, name
        try:
            obj = _pointer(r.root, ref)
        except KeyError:
            r.unresolved.add(ref)
            return {"description": f"(unresolved reference {ref})"}, name
    return {}, name


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _fmt_value(value: Any, limit: int = 120) -> str:
    if isinstance(value, str):
        out = json.dumps(value, ensure_ascii=False)
    else:
        try:
            out = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
        except (ValueError, TypeError):
            out = str(value)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _type_label(schema: dict[str, Any], ref_name: str | None, r: _Render, depth: int = 0) -> str:
    t = schema.get("type")
    if isinstance(t, list):
        base = " | ".join(str(x) for x in t)
    elif t:
        base = str(t)
    elif "properties" in schema or "additionalProperties" in schema:
        base = "object"
    elif "items" in schema:
        base = "array"
    elif isinstance(schema.get("oneOf") or schema.get("anyOf"), list):
        variants: list[Any] = schema.get("oneOf") or schema.get("anyOf") or []
        labels: list[str] = []
        if depth < 3:
            for sub in variants[:5]:
                target, sub_ref = _deref(sub, r)
                if isinstance(target, dict):
                    label = _type_label(target, sub_ref, r, depth + 1)
                    if label not in labels:
                        labels.append(label)
        base = " | ".join(labels) if labels and len(variants) <= 5 else "one of"
        if len(labels) > 1 and depth > 0:
            base = f"({base})"
    elif "allOf" in schema:
        base = "object"
    elif "enum" in schema:
        base = "enum"
    elif "const" in schema:
        base = "const"
    else:
        base = "any"
    if "array" in base.split(" | ") and "items" in schema and depth < 3:
        items, item_ref = _deref(schema.get("items"), r)
        if isinstance(items, dict):
            base = base.replace("array", f"array of {_type_label(items, item_ref, r, depth + 1)}", 1)
    fmt = schema.get("format")
    if fmt:
        base += f" ({fmt})"
    if schema.get("nullable") is True:
        base += " | null"
    if ref_name and ref_name not in base:
        base = f"{ref_name}: {base}"
    return base


def _facts(schema: dict[str, Any]) -> str:
    """Enum/default/example/const/bounds as one short trailing clause."""
    parts: list[str] = []
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        shown = ", ".join(_fmt_value(v, 60) for v in enum[:MAX_ENUM_VALUES])
        more = f", … (+{len(enum) - MAX_ENUM_VALUES} more)" if len(enum) > MAX_ENUM_VALUES else ""
        parts.append(f"one of: {shown}{more}")
    if "const" in schema:
        parts.append(f"always {_fmt_value(schema['const'])}")
    if "default" in schema:
        parts.append(f"default {_fmt_value(schema['default'])}")
    if "example" in schema:
        parts.append(f"example {_fmt_value(schema['example'])}")
    elif isinstance(schema.get("examples"), list) and schema["examples"]:
        parts.append(f"example {_fmt_value(schema['examples'][0])}")
    for key, word in (("minimum", "min"), ("maximum", "max"), ("minLength", "min length"),
                      ("maxLength", "max length"), ("pattern", "pattern")):
        if key in schema and not isinstance(schema[key], dict | list):
            parts.append(f"{word} {_fmt_value(schema[key], 60)}")
    if schema.get("deprecated") is True:
        parts.append("deprecated")
    return "; ".join(parts)


def _with_description(line: str, desc: Any, facts: str, indent: int) -> str:
    """``line: first description line [facts]``; further description lines follow, indented,
    so markdown lists inside descriptions stay readable."""
    rest: list[str] = []
    if desc:
        desc_lines = str(desc).strip().splitlines()
        if desc_lines:
            line += f": {desc_lines[0].strip()}"
            rest = [ln.rstrip() for ln in textwrap.dedent("\n".join(desc_lines[1:])).splitlines() if ln.strip()]
    if facts:
        line += f" [{facts}]"
    pad = " " * (indent + 2)
    return "\n".join([line, *(pad + ln for ln in rest)])


def _field_line(
    name: str, schema: dict[str, Any], ref_name: str | None, required: bool, r: _Render, indent: int = 0
) -> str:
    label = _type_label(schema, ref_name, r)
    flags = ", required" if required else ""
    desc = schema.get("description") or schema.get("title")
    return _with_description(" " * indent + f"- {name} ({label}{flags})", desc, _facts(schema), indent)


def _schema_children(
    schema: dict[str, Any], indent: int, depth: int, stack: tuple[str, ...], r: _Render
) -> list[str]:
    """Lines for the structure under ``schema`` (properties, items, variants), indented."""
    out: list[str] = []
    if depth > MAX_SCHEMA_DEPTH:
        if any(k in schema for k in _STRUCTURE_KEYS) and r.take():
            out.append(" " * indent + "- … (nested deeper than shown)")
        return out
    pad = " " * indent

    def child(name: str, sub: Any, required: bool, ind: int = indent) -> None:
        target, ref_name = _deref(sub, r)
        ref = sub.get("$ref") if isinstance(sub, dict) else None
        if not isinstance(target, dict):
            target = {}
        if not r.take():
            return
        line = _field_line(name, target, ref_name, required, r, ind)
        items = target.get("items")
        item_ref = items.get("$ref") if isinstance(items, dict) else None
        if (isinstance(ref, str) and ref in stack) or (isinstance(item_ref, str) and item_ref in stack):
            out.append(line + " (recursive, see above)")
            return
        out.append(line)
        new_stack = stack + (ref,) if isinstance(ref, str) else stack
        out.extend(_schema_children(target, ind + 2, depth + 1, new_stack, r))

    # allOf merges: render each part's structure at this level.
    for part in schema.get("allOf") or []:
        target, _ = _deref(part, r)
        ref = part.get("$ref") if isinstance(part, dict) else None
        if isinstance(ref, str) and ref in stack:
            continue
        if isinstance(target, dict):
            new_stack = stack + (ref,) if isinstance(ref, str) else stack
            out.extend(_schema_children(target, indent, depth + 1, new_stack, r))

    props = schema.get("properties")
    if isinstance(props, dict):
        req = schema.get("required")
        required: list[Any] = req if isinstance(req, list) else []
        for name, sub in props.items():
            child(str(name), sub, name in required)

    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        child("<any key>", extra, False)

    items = schema.get("items")
    if isinstance(items, dict):
        target, _ = _deref(items, r)
        ref = items.get("$ref")
        if isinstance(target, dict) and not (isinstance(ref, str) and ref in stack):
            new_stack = stack + (ref,) if isinstance(ref, str) else stack
            out.extend(_schema_children(target, indent, depth + 1, new_stack, r))
    elif isinstance(items, list):  # tuple validation (JSON Schema draft 4 style)
        for i, sub in enumerate(items):
            child(f"[{i}]", sub, False)
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list):
        for i, sub in enumerate(prefix):
            child(f"[{i}]", sub, False)

    for key, word in (("oneOf", "one of"), ("anyOf", "any of")):
        variants = schema.get(key)
        if isinstance(variants, list) and variants:
            if not r.take():
                break
            out.append(f"{pad}- {word}:")
            for i, sub in enumerate(variants, 1):
                child(f"option {i}", sub, False, indent + 2)
    return out


def _schema_block(schema: Any, indent: int, r: _Render) -> list[str]:
    """A whole schema: its type line, description, then its fields."""
    target, ref_name = _deref(schema, r)
    if not isinstance(target, dict):
        return []
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    pad = " " * indent
    lines = [f"{pad}Schema: {_type_label(target, ref_name, r)}"]
    if target.get("description"):
        lines.append(f"{pad}{_one_line(target['description'])}")
    facts = _facts(target)
    if facts:
        lines.append(f"{pad}[{facts}]")
    r.take(len(lines))
    stack = (ref,) if isinstance(ref, str) else ()
    return lines + _schema_children(target, indent, 1, stack, r)


def _param_schema_v2(p: dict[str, Any]) -> dict[str, Any]:
    """Swagger 2 non-body parameters carry type/format/items/enum inline."""
    return {k: v for k, v in p.items() if k not in ("name", "in", "required", "description")}


def _collect_parameters(path_item: dict[str, Any], op: dict[str, Any], r: _Render) -> list[dict[str, Any]]:
    """Path-level then operation-level parameters; the operation's win on (name, in)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for source in (path_item.get("parameters"), op.get("parameters")):
        if not isinstance(source, list):
            continue
        for raw in source:
            p, ref_name = _deref(raw, r)
            if isinstance(p, dict) and "name" not in p and ref_name:
                p = {**p, "name": ref_name}  # unresolved reference: still say which one
            if isinstance(p, dict):
                merged[(str(p.get("name", "")), str(p.get("in", "")))] = p
    return list(merged.values())


def _render_parameters(params: list[dict[str, Any]], swagger2: bool, r: _Render) -> list[str]:
    lines: list[str] = []
    for p in params:
        where = str(p.get("in", ""))
        if swagger2 and where in ("body", "formData"):
            continue
        schema_raw = p.get("schema") if not swagger2 else _param_schema_v2(p)
        if schema_raw is None and isinstance(p.get("content"), dict):
            media = next(iter(p["content"].values()), None)
            schema_raw = media.get("schema") if isinstance(media, dict) else None
        schema, ref_name = _deref(schema_raw or {}, r)
        if not isinstance(schema, dict):
            schema = {}
        label = _type_label(schema, ref_name, r)
        flags = [where] if where else []
        if p.get("required"):
            flags.append("required")
        if p.get("deprecated"):
            flags.append("deprecated")
        flags.append(label)
        desc = p.get("description") or schema.get("description")
        line = _with_description(f"- {p.get('name', '?')} ({', '.join(flags)})", desc, _facts(schema), 0)
        if not r.take():
            break
        lines.append(line)
        lines.extend(_schema_children(schema, 2, 1, (), r))
    return lines


def _render_content(content: Any, indent: int, r: _Render) -> list[str]:
    """Media types of a request/response; identical schemas are rendered once."""
    if not isinstance(content, dict):
        return []
    groups: dict[str, tuple[list[str], Any]] = {}
    for media_type, media in content.items():
        schema = media.get("schema") if isinstance(media, dict) else None
        try:
            key = json.dumps(schema, sort_keys=True, default=str)
        except (ValueError, TypeError):
            key = str(id(schema))
        groups.setdefault(key, ([], schema))[0].append(str(media_type))
    lines: list[str] = []
    pad = " " * indent
    for media_types, schema in groups.values():
        lines.append(f"{pad}Content-Type: {', '.join(media_types)}")
        if schema is not None:
            lines.extend(_schema_block(schema, indent, r))
    return lines


def _jsonrpc_method(op: dict[str, Any], r: _Render) -> str | None:
    """The JSON-RPC method name when the request body pins ``method`` to one value."""
    body, _ = _deref(op.get("requestBody"), r)
    if not isinstance(body, dict) or not isinstance(body.get("content"), dict):
        return None
    for media in body["content"].values():
        schema, _ = _deref(media.get("schema") if isinstance(media, dict) else None, r)
        props = schema.get("properties") if isinstance(schema, dict) else None
        if not isinstance(props, dict) or "jsonrpc" not in props:
            continue
        method, _ = _deref(props.get("method"), r)
        if isinstance(method, dict):
            enum = method.get("enum")
            if isinstance(enum, list) and len(enum) == 1:
                return str(enum[0])
            if "const" in method:
                return str(method["const"])
            if isinstance(method.get("default"), str):
                return method["default"]
    return None


@dataclass(frozen=True)
class _Operation:
    method: str
    endpoint: str
    path_item: dict[str, Any]
    op: dict[str, Any]
    webhook: bool = False


def _operations(spec: dict[str, Any]) -> Iterator[_Operation]:
    for group, webhook in (("paths", False), ("webhooks", True)):
        items = spec.get(group)
        if not isinstance(items, dict):
            continue
        for endpoint, path_item in items.items():
            if not isinstance(path_item, dict):
                continue
            if isinstance(path_item.get("$ref"), str) and path_item["$ref"].startswith("#"):
                try:
                    target = _pointer(spec, path_item["$ref"])
                except KeyError:
                    target = None
                if isinstance(target, dict):
                    path_item = {**target, **{k: v for k, v in path_item.items() if k != "$ref"}}
            for method in HTTP_METHODS:
                op = path_item.get(method)
                if isinstance(op, dict):
                    yield _Operation(method.upper(), str(endpoint), path_item, op, webhook)
            extra = path_item.get("additionalOperations")  # OpenAPI 3.2
            if isinstance(extra, dict):
                for method, op in extra.items():
                    if isinstance(op, dict):
                        yield _Operation(str(method).upper(), str(endpoint), path_item, op, webhook)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def _operation_head(o: _Operation, spec: dict[str, Any], base_meta: dict[str, Any], opline: str, summary: str | None,
                    op_id: str | None, rpc: str | None, tags: list[str]) -> list[str]:
    """The operation's first block: what it is, in which API, its ids, tags, security and description."""
    op = o.op
    head = [opline + (f" — {summary}" if summary else "")]
    api = base_meta.get("api_title") or "API"
    if base_meta.get("api_version"):
        api += f" (version {base_meta['api_version']})"
    head.append(f"API: {api}")
    if summary:
        head.append(f"Summary: {_one_line(summary)}")
    if op_id:
        head.append(f"Operation ID: {op_id}")
    if rpc:
        head.append(f"JSON-RPC method: {rpc}")
    if tags:
        head.append(f"Tags: {', '.join(tags)}")
    if op.get("deprecated") is True:
        head.append("Deprecated: yes")
    security = op.get("security", spec.get("security"))
    if isinstance(security, list) and security:
        names = sorted({str(k) for req in security if isinstance(req, dict) for k in req})
        if names:
            head.append(f"Security: {', '.join(names)}")
    desc = _text(op.get("description")) or _text(o.path_item.get("description"))
    if desc:
        head.append("")
        head.append(desc)
    ext = op.get("externalDocs")
    if isinstance(ext, dict) and ext.get("url"):
        head.append(f"See also: {ext['url']}")
    return head


def _request_body_lines(op: dict[str, Any], spec: dict[str, Any], params: list[dict[str, Any]], swagger2: bool,
                        r: _Render) -> list[str]:
    """The request body (OpenAPI 3 ``requestBody``, Swagger 2 ``body``/``formData`` parameters)."""
    body_lines: list[str] = []
    if swagger2:
        body = next((p for p in params if p.get("in") == "body"), None)
        form = [p for p in params if p.get("in") == "formData"]
        consumes = op.get("consumes") or spec.get("consumes") or []
        if body is not None:
            body_lines.append("Request body" + (" (required)" if body.get("required") else "") + ":")
            if body.get("description"):
                body_lines.append(_one_line(body["description"]))
            if isinstance(consumes, list) and consumes:
                body_lines.append(f"Content-Type: {', '.join(str(c) for c in consumes)}")
            body_lines.extend(_schema_block(body.get("schema") or {}, 0, r))
        if form:
            body_lines.append("Form fields:")
            body_lines.extend(_render_parameters([{**p, "in": "form"} for p in form], False, r))
    else:
        body, _ = _deref(op.get("requestBody"), r)
        if isinstance(body, dict) and body:
            body_lines.append("Request body" + (" (required)" if body.get("required") else "") + ":")
            if body.get("description"):
                body_lines.append(_one_line(body["description"]))
            body_lines.extend(_render_content(body.get("content"), 0, r))
    return body_lines


def _response_blocks(op: dict[str, Any], spec: dict[str, Any], swagger2: bool, r: _Render,
                     opline: str) -> list[Block]:
    """One block per response code; a body repeated under another code is named, not re-rendered."""
    blocks: list[Block] = []
    responses = op.get("responses")
    if isinstance(responses, dict):
        produces = op.get("produces") or spec.get("produces") or []
        seen: dict[str, str] = {}
        for code, raw in responses.items():
            resp, _ = _deref(raw, r)
            if not isinstance(resp, dict):
                continue
            line = f"Response {code}"
            if resp.get("description"):
                line += f": {_one_line(resp['description'])}"
            lines = [line]
            body_raw = resp.get("schema") if swagger2 else resp.get("content")
            try:
                key = json.dumps(body_raw, sort_keys=True, default=str) if body_raw is not None else ""
            except (ValueError, TypeError):
                key = ""
            if key and key in seen:
                # Many specs repeat one error schema per status code; say so instead of re-rendering.
                lines.append(f"Body: same as response {seen[key]}")
            elif swagger2:
                if resp.get("schema") is not None:
                    if isinstance(produces, list) and produces:
                        lines.append(f"Content-Type: {', '.join(str(p) for p in produces)}")
                    lines.extend(_schema_block(resp["schema"], 0, r))
            else:
                lines.extend(_render_content(resp.get("content"), 0, r))
            if key and key not in seen:
                seen[key] = str(code)
            headers = resp.get("headers")
            if isinstance(headers, dict) and headers:
                lines.append("Headers: " + ", ".join(str(h) for h in headers))
            blocks.append(Block("\n".join(lines), (opline, "Responses", str(code))))
    return blocks


def _render_operation(
    o: _Operation, spec: dict[str, Any], base_meta: dict[str, Any], swagger2: bool, ctx: ParseContext
) -> ParsedDocument:
    r = _Render(root=spec)
    op = o.op
    endpoint = f"webhook {o.endpoint}" if o.webhook else o.endpoint
    opline = f"{o.method} {endpoint}"
    summary = _text(op.get("summary"))
    tags = [str(t) for t in op.get("tags") or [] if t is not None] if isinstance(op.get("tags"), list) else []
    op_id = _text(op.get("operationId"))
    rpc = _jsonrpc_method(op, r)

    head = _operation_head(o, spec, base_meta, opline, summary, op_id, rpc, tags)
    blocks = [Block("\n".join(head), (opline,))]

    params = _collect_parameters(o.path_item, op, r)
    param_lines = _render_parameters(params, swagger2, r)
    if param_lines:
        blocks.append(Block("Parameters:\n" + "\n".join(param_lines), (opline, "Parameters")))

    body_lines = _request_body_lines(op, spec, params, swagger2, r)
    if body_lines:
        blocks.append(Block("\n".join(body_lines), (opline, "Request body")))

    blocks.extend(_response_blocks(op, spec, swagger2, r, opline))
    if r.truncated:
        blocks.append(Block("… (schema output truncated)", (opline,)))

    meta = dict(base_meta)
    meta.update(
        method=o.method,
        endpoint=endpoint,
        tags=tags,
        operation_id=op_id,
        refs=sorted(r.refs),
    )
    if r.unresolved:
        meta["unresolved_refs"] = sorted(r.unresolved)
    if rpc:
        meta["jsonrpc_method"] = rpc
    if o.webhook:
        meta["webhook"] = True
    if op.get("deprecated") is True:
        meta["deprecated"] = True
    return ParsedDocument(
        path=f"{ctx.rel_path}#{o.method} {endpoint}",
        blocks=blocks,
        title=opline + (f" — {summary}" if summary else ""),
        metadata=meta,
    )


def _overview(spec: dict[str, Any], base_meta: dict[str, Any], ctx: ParseContext) -> ParsedDocument:
    """A spec with no operations: its info, tags and schema names, or quarantine if none."""
    raw_info = spec.get("info")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    lines: list[str] = []
    title = _text(info.get("title"))
    if title:
        lines.append(title + (f" (version {base_meta['api_version']})" if base_meta.get("api_version") else ""))
    desc = _text(info.get("description")) or _text(info.get("summary"))
    if desc:
        lines += ["", desc]
    tags = spec.get("tags")
    tag_lines = [
        f"- {t.get('name')}" + (f": {_one_line(t['description'])}" if t.get("description") else "")
        for t in (tags if isinstance(tags, list) else [])
        if isinstance(t, dict) and t.get("name")
    ]
    if tag_lines:
        lines += ["", "Tags:", *tag_lines]
    raw_comps = spec.get("components")
    comps: dict[str, Any] = raw_comps if isinstance(raw_comps, dict) else {}
    schemas = comps.get("schemas") if isinstance(comps.get("schemas"), dict) else spec.get("definitions")
    has_schemas = isinstance(schemas, dict) and bool(schemas)
    if isinstance(schemas, dict) and schemas:
        lines += ["", "Schemas:"]
        for name, sch in list(schemas.items())[:500]:
            d = sch.get("description") if isinstance(sch, dict) else None
            lines.append(f"- {name}" + (f": {_one_line(d)}" if d else ""))
    if not (desc or tag_lines or has_schemas):
        raise QuarantineError(
            "OpenAPI document has no operations and no description",
            "nothing to index; add paths or exclude the file",
        )
    meta = dict(base_meta)
    meta["operations"] = 0
    return ParsedDocument(path=ctx.rel_path, blocks=[Block("\n".join(lines), (title or ctx.rel_path,))],
                          title=title, metadata=meta)


def parse(data: bytes, ctx: ParseContext) -> list[ParsedDocument]:
    """One document per operation of an OpenAPI 2/3 spec (JSON or YAML)."""
    started = time.monotonic()
    text = decode_text(data)
    spec = _load_spec(text, ctx)
    if not isinstance(spec, dict) or not ("openapi" in spec or "swagger" in spec):
        raise QuarantineError(
            "not an OpenAPI document",
            "the file has no top-level 'openapi' or 'swagger' key; set another format in the manifest or exclude it",
        )
    version = str(spec.get("openapi") or spec.get("swagger"))
    swagger2 = "swagger" in spec and "openapi" not in spec
    raw_info = spec.get("info")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    base_meta: dict[str, Any] = {
        "api_title": _text(info.get("title")),
        "api_version": _text(info.get("version")),
        "openapi_version": version,
    }
    docs: list[ParsedDocument] = []
    for o in _operations(spec):
        if time.monotonic() - started > ctx.limits.parse_timeout_s:
            raise QuarantineError(
                f"OpenAPI rendering exceeded {ctx.limits.parse_timeout_s:.0f}s after {len(docs)} operations",
                "split the spec or raise limits.parse_timeout_s",
            )
        docs.append(_render_operation(o, spec, base_meta, swagger2, ctx))
    if not docs:
        return [_overview(spec, base_meta, ctx)]
    return docs
