"""Validation settings from the manifest: thresholds, sampling, duplicate strategy, required metadata.

They live in the manifest (not in environment variables) because they describe the corpus: which
metadata a doc type must carry, how similar two pages may be, how good search must stay.

```yaml
validation:
  max_findings: 50                  # findings kept per check (totals are always exact)
  seed: 1                           # deterministic sampling
  schema: {sample_per_partition: 500, norm_tolerance: 0.001, max_tokens: 8191,
           unit_norm_models: [offline-ngram-hash-v2, text-embedding-3-large]}
  retrieval: {per_partition: 5, top_k: 5, min_recall_at_1: 0.99}
  duplicates: {strategy: keep_all, simhash_bits: 3, shingle_words: 3, min_words: 24, merge_near: false,
               near: true}
  orphans: {severity: WARN}         # or ERROR
  links: {enabled: true}
doc_types:
  rust: {required_metadata: {category: str, complexity: str}}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import OFFLINE_MODEL, ConfigError

DUPLICATE_STRATEGIES = ("keep_all", "canonical", "drop")
SEVERITIES = ("WARN", "ERROR")
# Metadata every pipeline row carries, whatever its doc type.
BASE_REQUIRED: dict[str, str] = {"source_file": "str", "chunk_index": "int", "chunk_count": "int",
                                 "embedding_model": "str"}
TYPE_NAMES: dict[str, str] = {
    "str": "str", "string": "str", "text": "str",
    "int": "int", "integer": "int",
    "float": "float", "number": "float",
    "bool": "bool", "boolean": "bool",
    "list": "list", "array": "list", "list[str]": "list[str]",
    "dict": "dict", "object": "dict", "mapping": "dict",
}
UNIT_NORM_MODELS = (OFFLINE_MODEL, "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002")


@dataclass(frozen=True)
class DuplicateConfig:
    strategy: str = "keep_all"
    simhash_bits: int = 3
    shingle_words: int = 3
    min_words: int = 24  # SimHash of a handful of words is noise: shorter chunks get exact matching only
    merge_near: bool = False  # apply the strategy to near-duplicates too (exact ones always)
    near: bool = True  # SimHash costs ~0.25 ms per row in Python: turn off for very large corpora


@dataclass(frozen=True)
class ValidationConfig:
    max_findings: int = 50
    seed: int = 1
    sample_per_partition: int = 500
    norm_tolerance: float = 1e-3
    max_tokens: int = 8191
    unit_norm_models: tuple[str, ...] = UNIT_NORM_MODELS
    retrieval_per_partition: int = 5
    retrieval_top_k: int = 5
    min_recall_at_1: float = 0.99
    duplicates: DuplicateConfig = DuplicateConfig()
    orphans_severity: str = "WARN"
    links_enabled: bool = True
    required_metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # doc_type -> field -> type

    def required_for(self, doc_type: str) -> dict[str, str]:
        """The fields (and type names) a row of ``doc_type`` must carry."""
        return {**BASE_REQUIRED, **self.required_metadata.get(doc_type, {})}


def _section(raw: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return raw


def _num(raw: dict[str, Any], key: str, default: Any, where: str, lo: float, hi: float) -> Any:
    value = raw.get(key, default)
    kind = type(default)
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{where}.{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{where}.{key} must be between {lo:g} and {hi:g}, got {value!r}")
    return kind(value)


def parse_validation_config(raw: dict[str, Any], where: str = "manifest") -> ValidationConfig:
    """Validate the raw ``validation:`` and ``doc_types:`` sections; every error names the key."""
    v = _section(raw.get("validation"), f"{where}: validation",
                 {"max_findings", "seed", "schema", "retrieval", "duplicates", "orphans", "links"})
    w = f"{where}: validation"
    schema = _section(v.get("schema"), f"{w}.schema",
                      {"sample_per_partition", "norm_tolerance", "max_tokens", "unit_norm_models"})
    retr = _section(v.get("retrieval"), f"{w}.retrieval", {"per_partition", "top_k", "min_recall_at_1"})
    dup = _section(v.get("duplicates"), f"{w}.duplicates",
                   {"strategy", "simhash_bits", "shingle_words", "min_words", "merge_near", "near"})
    orph = _section(v.get("orphans"), f"{w}.orphans", {"severity"})
    links = _section(v.get("links"), f"{w}.links", {"enabled"})
    d = ValidationConfig()
    strategy = dup.get("strategy", d.duplicates.strategy)
    if strategy not in DUPLICATE_STRATEGIES:
        raise ConfigError(f"{w}.duplicates.strategy must be one of {list(DUPLICATE_STRATEGIES)}, got {strategy!r}")
    severity = str(orph.get("severity", d.orphans_severity)).upper()
    if severity not in SEVERITIES:
        raise ConfigError(f"{w}.orphans.severity must be WARN or ERROR, got {orph.get('severity')!r}")
    models = schema.get("unit_norm_models", list(d.unit_norm_models))
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{w}.schema.unit_norm_models must be a list of model names")
    for key, section in (("merge_near", dup), ("near", dup), ("enabled", links)):
        if key in section and not isinstance(section[key], bool):
            raise ConfigError(f"{w}: '{key}' must be true or false")

    required: dict[str, dict[str, str]] = {}
    doc_types = raw.get("doc_types") or {}
    if not isinstance(doc_types, dict):
        raise ConfigError(f"{where}: 'doc_types' must be a mapping of doc type to settings")
    for doc_type, conf in doc_types.items():
        fields = (conf or {}).get("required_metadata") if isinstance(conf, dict) else None
        if fields is None:
            continue
        if not isinstance(fields, dict):
            raise ConfigError(f"{where}: doc_types.{doc_type}.required_metadata must map field names to type names")
        out: dict[str, str] = {}
        for name, type_name in fields.items():
            canon = TYPE_NAMES.get(str(type_name).strip().lower())
            if canon is None:
                raise ConfigError(f"{where}: doc_types.{doc_type}.required_metadata.{name}: unknown type "
                                  f"{type_name!r}; use one of {sorted(set(TYPE_NAMES))}")
            out[str(name)] = canon
        required[str(doc_type)] = out

    return ValidationConfig(
        max_findings=_num(v, "max_findings", d.max_findings, w, 1, 100_000),
        seed=_num(v, "seed", d.seed, w, 0, 2**31 - 1),
        sample_per_partition=_num(schema, "sample_per_partition", d.sample_per_partition, f"{w}.schema", 1, 10**7),
        norm_tolerance=_num(schema, "norm_tolerance", d.norm_tolerance, f"{w}.schema", 0.0, 1.0),
        max_tokens=_num(schema, "max_tokens", d.max_tokens, f"{w}.schema", 1, 10**6),
        unit_norm_models=tuple(models),
        retrieval_per_partition=_num(retr, "per_partition", d.retrieval_per_partition, f"{w}.retrieval", 0, 10**6),
        retrieval_top_k=_num(retr, "top_k", d.retrieval_top_k, f"{w}.retrieval", 1, 1000),
        min_recall_at_1=_num(retr, "min_recall_at_1", d.min_recall_at_1, f"{w}.retrieval", 0.0, 1.0),
        duplicates=DuplicateConfig(
            strategy=strategy,
            simhash_bits=_num(dup, "simhash_bits", d.duplicates.simhash_bits, f"{w}.duplicates", 0, 15),
            shingle_words=_num(dup, "shingle_words", d.duplicates.shingle_words, f"{w}.duplicates", 1, 16),
            min_words=_num(dup, "min_words", d.duplicates.min_words, f"{w}.duplicates", 1, 100_000),
            merge_near=bool(dup.get("merge_near", d.duplicates.merge_near)),
            near=bool(dup.get("near", d.duplicates.near)),
        ),
        orphans_severity=severity,
        links_enabled=bool(links.get("enabled", d.links_enabled)),
        required_metadata=required,
    )
