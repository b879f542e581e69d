"""Row schema conformance with pandera: types, token limits, vector shape, required metadata per doc type.

Rows are sampled per partition (all of them when the partition is small) with a deterministic seed,
one DataFrameSchema per doc type (each doc type has its own required metadata), validated lazily
so every failure case becomes a finding instead of the first one raising.

Vectors are summarised in SQL (``vector_dims``, ``vector_norm``) rather than shipped as 3072 floats
per row: the dimension and the norm decide every property checked (NULL, NaN/Inf, zero, unit length).
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from psycopg import sql

from ..config import Settings
from ..storage import audit
from .common import ERROR, check_result, doc_type_of, plural, short
from .config import ValidationConfig

META = "metadata."


def _type_ok(kind: str) -> Any:
    """Element-wise predicate for a metadata type name (bool is not an int, ints are numbers)."""
    def ok(value: Any) -> bool:
        if kind == "str":
            return isinstance(value, str)
        if kind == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if kind == "float":
            return isinstance(value, int | float) and not isinstance(value, bool) and bool(np.isfinite(value))
        if kind == "bool":
            return isinstance(value, bool)
        if kind == "list":
            return isinstance(value, list)
        if kind == "list[str]":
            return isinstance(value, list) and all(isinstance(v, str) for v in value)
        if kind == "dict":
            return isinstance(value, dict)
        return False
    return ok


def row_schema(doc_type: str, settings: Settings, cfg: ValidationConfig) -> pa.DataFrameSchema:
    """The schema a sampled row of ``doc_type`` must satisfy; check ``error`` strings become findings."""
    tol = cfg.norm_tolerance
    units = list(cfg.unit_norm_models)
    columns: dict[str, pa.Column] = {
        "partition_key": pa.Column(str),
        "id": pa.Column(str, unique=True),
        "doc_type": pa.Column(str, pa.Check.isin([doc_type], error=f"doc_type must be {doc_type}")),
        "source_name": pa.Column(str, pa.Check.str_length(min_value=1, error="source_name is empty")),
        "doc_path": pa.Column(str, pa.Check.str_length(min_value=1, error="doc_path is empty")),
        "content_chars": pa.Column("Int64", pa.Check.gt(0, error="content is empty"), nullable=False),
        "content_has_text": pa.Column(bool, pa.Check.eq(True, error="content is only whitespace")),
        "token_count": pa.Column("Int64", pa.Check.in_range(1, cfg.max_tokens,
                                                            error=f"token_count must be 1..{cfg.max_tokens}"),
                                 nullable=False),
        "embedding_dims": pa.Column("Int64", pa.Check.eq(settings.embedding_dims,
                                                         error=f"embedding must have {settings.embedding_dims} dims"),
                                    nullable=False),
        "embedding_norm": pa.Column("float64", [
            pa.Check(lambda s: np.isfinite(s), error="embedding has NaN/Inf values"),
            pa.Check.gt(0, error="embedding is a zero vector"),
        ], nullable=True),  # NULL embeddings are reported once, by embedding_dims
    }
    for name, kind in cfg.required_for(doc_type).items():
        columns[META + name] = pa.Column(object, pa.Check(_type_ok(kind), element_wise=True,
                                                          error=f"metadata.{name} must be {kind}"),
                                         nullable=False)
    checks = [
        pa.Check(lambda df: ~df[META + "embedding_model"].isin(units) | ~np.isfinite(df["embedding_norm"])
                 | (df["embedding_norm"] <= 0) | ((df["embedding_norm"] - 1.0).abs() <= tol),  # zero: reported above
                 error=f"embedding norm must be 1 ± {tol:g} for a unit-vector model"),
        pa.Check(lambda df: (pd.to_numeric(df[META + "chunk_index"], errors="coerce")
                             < pd.to_numeric(df[META + "chunk_count"], errors="coerce"))
                 | df[META + "chunk_index"].isna() | df[META + "chunk_count"].isna(),
                 error="metadata.chunk_index must be below chunk_count"),
        pa.Check(lambda df: (df[META + "source_file"] == df["owner_source_file"]) | df[META + "source_file"].isna(),
                 error="metadata.source_file differs from the file the ledger says owns the row"),
    ]
    return pa.DataFrameSchema(columns, checks=checks, strict=False, name=f"documents[{doc_type}]")


def sample_rows(settings: Settings, url: str, keys: list[str], cfg: ValidationConfig,
                written_by: str | None = None) -> list[tuple[Any, ...]]:
    """Up to ``sample_per_partition`` rows per partition, the same ones on every run (seeded md5 order).
    Of the metadata only the fields some doc type requires are fetched (decoding it all cost more than
    the schema validation itself)."""
    fields = sorted({name for doc_type in {doc_type_of(k) for k in keys} for name in cfg.required_for(doc_type)})
    # A missing field and a JSON null both read as None: the same failure. 100 arguments at most.
    meta = (sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
        sql.SQL("{}, d.metadata -> {}").format(sql.Literal(f), sql.Literal(f)) for f in fields))
        if len(fields) <= 50 else sql.SQL("d.metadata"))
    return audit.schema_sample(settings, url, keys, str(cfg.seed), cfg.sample_per_partition, meta, written_by)


def frame(rows: list[tuple[Any, ...]], required: dict[str, str]) -> pd.DataFrame:
    """Rows as a DataFrame with nullable integer columns, so a NULL is a row-level failure, not a dtype one."""
    metas = [r[10] if isinstance(r[10], dict) else {} for r in rows]
    data: dict[str, Any] = {
        "partition_key": [r[0] for r in rows],
        "id": [r[1] for r in rows],
        "doc_type": [r[2] for r in rows],
        "source_name": [r[3] for r in rows],
        "doc_path": [r[4] for r in rows],
        "content_chars": pd.array([r[5] for r in rows], dtype="Int64"),
        "content_has_text": [bool(r[6]) for r in rows],
        "token_count": pd.array([r[7] for r in rows], dtype="Int64"),
        "embedding_dims": pd.array([r[8] for r in rows], dtype="Int64"),
        "embedding_norm": np.array([np.nan if r[9] is None else float(r[9]) for r in rows], dtype="float64"),
        "owner_source_file": [r[11] for r in rows],
    }
    for name in required:
        data[META + name] = pd.Series([m.get(name) for m in metas], dtype=object)
    return pd.DataFrame(data)


def check_schema(settings: Settings, url: str, keys: list[str], config: ValidationConfig | None = None,
                 written_by: str | None = None) -> dict[str, Any]:
    """Sampled rows (of those run ``written_by`` wrote, when given) conform to the row schema of their
    doc type: proves the doc-server can read every field it relies on (types, token limits, vector
    shape, required metadata)."""
    cfg = config or ValidationConfig()
    rows = sample_rows(settings, url, keys, cfg, written_by)
    by_type: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        by_type.setdefault(doc_type_of(r[0]), []).append(r)
    findings: list[dict[str, Any]] = []
    for doc_type, group in sorted(by_type.items()):
        required = cfg.required_for(doc_type)
        df = frame(group, required)
        try:
            with warnings.catch_warnings():  # pandera's own concat of failure cases warns under pandas 2.x
                warnings.simplefilter("ignore", FutureWarning)
                row_schema(doc_type, settings, cfg).validate(df, lazy=True)
            continue
        except pa.errors.SchemaErrors as exc:
            cases = exc.failure_cases
        seen: set[tuple[Any, str]] = set()
        for case in cases.itertuples(index=False):
            idx = case.index
            check = str(case.check)
            if check == "not_nullable" and case.column:
                check = f"{case.column} is missing or null"
            elif check.startswith("column_in_dataframe"):
                check = f"column {case.failure_case} is missing"
            key = (idx, check)
            if key in seen:  # a frame-level check lists each column of a failing row
                continue
            seen.add(key)
            if idx is None or (isinstance(idx, float) and np.isnan(idx)):
                findings.append({"doc_type": doc_type, "partition": None, "doc_path": None, "problem": check,
                                 "value": short(case.failure_case)})
                continue
            row = group[int(idx)]
            findings.append({"partition": row[0], "doc_type": doc_type, "source_name": row[3], "doc_path": row[4],
                             "id": row[1], "column": case.column, "problem": check,
                             "value": short(case.failure_case, 80)})
    by_check = Counter(f["problem"] for f in findings)
    parts = sorted({f["partition"] for f in findings if f.get("partition")})
    if findings:
        top = ", ".join(f"{p} ×{n}" for p, n in by_check.most_common(3))
        message = (f"{plural(len(findings), 'schema failure')} in {len(rows)} sampled rows ({top}): run "
                   f"`doc-migrate validate --repair` to reload {', '.join(parts[:5])}{'…' if len(parts) > 5 else ''}")
    else:
        message = (f"all {plural(len(rows), 'sampled row')} of {plural(len(by_type), 'doc type')} conform "
                   "(types, tokens, vectors, required metadata)")
    return check_result("schema", passed=not findings, severity=ERROR, message=message, findings=findings,
                        cap=cfg.max_findings, partitions=parts, rows_sampled=len(rows),
                        failures_by_check=dict(by_check))
