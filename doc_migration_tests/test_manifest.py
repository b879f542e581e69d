from __future__ import annotations

from pathlib import Path

import pytest

from doc_migration.config import ConfigError
from doc_migration.manifest import discover, glob_regex, load_manifest, shard_of, split_partition_key


def test_globs_follow_gitignore_semantics() -> None:
    assert glob_regex("**/*.md").match("a.md")
    assert glob_regex("**/*.md").match("x/y/a.md")
    assert not glob_regex("*.md").match("x/a.md")
    assert glob_regex("*/*.json").match("cilium/a.json")
    assert not glob_regex("*/*.json").match("a.json")
    assert not glob_regex("docs/*.md").match("docs/sub/a.md")


def test_shard_is_stable_and_in_range() -> None:
    assert shard_of("src", "a/b.md", 8) == shard_of("src", "a/b.md", 8)
    assert {shard_of("src", f"f{i}.md", 4) for i in range(200)} == {0, 1, 2, 3}


def test_partition_key_roundtrip() -> None:
    assert split_partition_key("rust_best_practices-07") == ("rust_best_practices", 7)
    with pytest.raises(ConfigError):
        split_partition_key("nonsense")


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "sources.yaml"
    path.write_text(text)
    return path


def test_folder_doc_types_and_partitions(tmp_path: Path) -> None:
    for folder in ("cilium", "Jupiter-Docs"):
        (tmp_path / "corpus" / folder).mkdir(parents=True)
        (tmp_path / "corpus" / folder / "a.md").write_text("# A\n\ntext")
    (tmp_path / "corpus" / "top.md").write_text("# top")
    manifest = load_manifest(_write(tmp_path, """
shards: 3
sources:
  - {source_name: "{doc_type}-docs", doc_type: "{folder}", path: corpus, include: ["**/*.md"]}
"""))
    assert manifest.doc_types() == ["cilium", "jupiter_docs"]
    assert len(manifest.partition_keys()) == 6
    items = list(discover(manifest))
    assert sorted((i.doc_type, i.source_name, i.rel_path) for i in items) == [
        ("cilium", "cilium-docs", "cilium/a.md"), ("jupiter_docs", "jupiter_docs-docs", "Jupiter-Docs/a.md")]


@pytest.mark.parametrize("body, message", [
    ("sources: []", "non-empty 'sources:'"),
    ("sources:\n  - {source_name: a, doc_type: 'Bad Type', path: x}", "'doc_type' must be"),
    ("sources:\n  - {source_name: a, doc_type: rust, path: x, format: rtf}", "unknown format"),
    ("sources:\n  - {source_name: a, doc_type: rust, path: x, colour: red}", "unknown key"),
    ("shards: 0\nsources:\n  - {source_name: a, doc_type: rust, path: x}", "'shards' must be between"),
    ("sources: [: bad", "not valid YAML"),
])
def test_bad_manifests_name_the_file_and_problem(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_symlink_escaping_the_source_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    secret = tmp_path / "secret.md"
    secret.write_text("# secret")
    (root / "escape.md").symlink_to(secret)
    (root / "ok.md").write_text("# ok")
    manifest = load_manifest(_write(tmp_path, "sources:\n  - {source_name: s, doc_type: rust, path: corpus}\n"))
    items = {i.rel_path: i for i in discover(manifest)}
    assert items["escape.md"].refusal == "symlink escapes the source folder"
    assert items["ok.md"].refusal is None
