"""Fidelity report: run the pipeline over documentation folders and tabulate, per format, what was
loaded and what was refused and why (issue 15).

    .venv/bin/python scripts/fidelity_report.py                 # ../shared/corpus, writes docs/fidelity.md
    .venv/bin/python scripts/fidelity_report.py ~/docs-tree     # any folder(s); prints the report

Every folder gets its own throw-away state (an embedded PostgreSQL under a temporary
``DOC_MIGRATION_HOME``; ``DATABASE_URL`` is ignored, so a production database is never touched) and the manifest
a new user would write: doc type = first folder level, files directly in the folder under the
folder's own name, every file included, format detected from the content. The folder is loaded
twice: the second run must write 0 rows (detection is deterministic). Exit status: 0, or 1 when a
run fails or the re-run writes rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED_CORPUS = REPO.parent / "shared" / "corpus"
DEFAULT_OUTPUT = REPO / "docs" / "fidelity.md"
MAX_LISTED_REFUSALS = 60


@dataclass
class FolderReport:
    folder: Path
    seconds: float
    rerun_rows_written: int
    rerun_chunks_embedded: int
    failed_partitions: list[str]
    formats: dict[str, dict[str, Any]]
    refused: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed_partitions and self.rerun_rows_written == 0


def manifest_for(folder: Path) -> str:
    """The manifest a user would write for a tree of doc types (JSON is YAML)."""
    own_type = re.sub(r"[^a-z0-9_]+", "_", folder.name.lower()).strip("_") or "docs"
    skip = [".git/**", "**/.git/**", "**/.DS_Store"]
    return json.dumps({"shards": 4, "sources": [
        {"source_name": "{doc_type}-docs", "doc_type": "{folder}", "path": str(folder), "include": ["**/*"],
         "exclude": skip, "format": "auto"},
        {"source_name": f"{own_type}-docs", "doc_type": own_type, "path": str(folder), "include": ["*"],
         "exclude": skip, "format": "auto"},
    ]}, indent=2)


def _cli(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "doc_migration.cli", *args, "--json"], env=env, cwd=REPO,
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        value: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(f"doc-migrate {' '.join(args)} exited {proc.returncode} without a JSON summary:\n"
                         f"{proc.stderr[-3000:]}") from None
    if proc.returncode not in (0, 3):  # 3: a blocking check failed; the load itself is still reported
        raise SystemExit(f"doc-migrate {' '.join(args)} exited {proc.returncode}: {value.get('error', value)}")
    return value


def measure(folder: Path) -> FolderReport:
    folder = Path(os.path.abspath(folder))  # not resolved: ../shared may be a symlink, named as such
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not a folder")
    with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
        manifest = Path(tmp) / "sources.yaml"
        manifest.write_text(manifest_for(folder))
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOC_MIGRATION_") and k != "DATABASE_URL"}
        env.update(DOC_MIGRATION_HOME=str(Path(tmp) / "home"), DOC_MIGRATION_SOURCES=str(manifest))
        start = time.perf_counter()
        first = _cli(["full", "--yes"], env)
        seconds = time.perf_counter() - start
        again = _cli(["full", "--yes"], env)
        status = _cli(["status", "--files"], env)
    refused = [f for f in status["file_details"] if f["outcome"] != "loaded"]
    return FolderReport(folder, seconds, int(again["rows_written"]), int(again["chunks_embedded"]),
                        list(first["failed_partitions"]) + list(again["failed_partitions"]), status["formats"],
                        refused)


def _shown(folder: Path) -> str:
    """Relative to the repository where it can be (the report must not name anyone's home)."""
    for base, prefix in ((REPO, ""), (REPO.parent, "../")):
        if folder.is_relative_to(base):
            return f"`{prefix}{folder.relative_to(base).as_posix()}`"
    return f"`{folder}`"


def render(reports: list[FolderReport], argv: list[str]) -> str:
    out = ["# Fidelity: what a real documentation tree loads as", "",
           f"Written by `scripts/fidelity_report.py{(' ' + ' '.join(argv)) if argv else ''}` on "
           f"{datetime.now(UTC).isoformat(timespec='seconds')}. Each folder is loaded into an empty database "
           "with the manifest a new user would write (every file included, `format: auto`), then loaded "
           "again. *Refused* files are named, with their reason, in `doc-migrate status` and below; "
           "`doc-migrate status --files` shows, for every file, the format it was read as and the evidence "
           "(the extension, the top-level key, the sniffed content).", "",
           "What is refused, and why: an empty file (or a notebook or PDF without text: nothing to search), "
           "a binary file or an SVG picture (image, archive, executable: not a document), text in no encoding that decodes "
           "with confidence, and a file over `limits.max_file_bytes`. Everything else a person would call "
           "readable is loaded: unknown extensions and extension-less files are sniffed and read as text, "
           "JSON that is neither an OpenAPI spec nor a doc-server record (a JSON Schema, an Anchor IDL) is "
           "loaded as one structured text document per file (`metadata.json_kind` says which).", ""]
    for r in reports:
        files = sum(a["files"] for a in r.formats.values())
        loaded = sum(a["loaded"] for a in r.formats.values())
        rows = sum(a["rows"] for a in r.formats.values())
        out += [f"## {_shown(r.folder)}", "",
                f"{files:,} files, {loaded:,} loaded ({rows:,} rows), {files - loaded:,} refused; first load "
                f"{r.seconds:.1f} s; unchanged re-run wrote **{r.rerun_rows_written} rows** and embedded "
                f"{r.rerun_chunks_embedded} chunks"
                + (f"; **failed partitions: {', '.join(r.failed_partitions)}**" if r.failed_partitions else "")
                + ".", "",
                "| format | files | loaded | rows | refused | refused by reason |", "|---|---:|---:|---:|---:|---|"]
        for fmt, agg in r.formats.items():
            reasons = ", ".join(f"{k} ({n})" for k, n in sorted(agg["refused_by_reason"].items(), key=lambda kv: (-kv[1], kv[0])))
            out.append(f"| {fmt} | {agg['files']:,} | {agg['loaded']:,} | {agg['rows']:,} | {agg['refused']:,} | "
                       f"{reasons or '–'} |")
        if r.refused:
            out += ["", "Refused files:", ""]
            for f in r.refused[:MAX_LISTED_REFUSALS]:
                why = f.get("reason", f["outcome"]).replace("|", "\\|")
                out.append(f"- `{f['path']}` ({f['format']}): {why}")
            if len(r.refused) > MAX_LISTED_REFUSALS:
                out.append(f"- … and {len(r.refused) - MAX_LISTED_REFUSALS} more (`doc-migrate status --files`)")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path,
                        help="documentation folders (default: every folder of ../shared/corpus)")
    parser.add_argument("--output", type=Path, default=None,
                        help="write the report here (default: docs/fidelity.md for ../shared/corpus, "
                             "standard output for folders given)")
    args = parser.parse_args(argv)
    folders: list[Path] = args.folders
    output: Path | None = args.output
    if not folders:
        if not SHARED_CORPUS.is_dir():
            parser.error(f"no folder given and {SHARED_CORPUS} does not exist")
        folders = sorted(p for p in SHARED_CORPUS.iterdir() if p.is_dir())
        output = output or DEFAULT_OUTPUT
    reports = []
    for folder in folders:
        print(f"loading {folder} ...", file=sys.stderr, flush=True)
        reports.append(measure(folder))
    text = render(reports, [str(a) for a in (argv if argv is not None else sys.argv[1:])])
    if output is None:
        print(text)
    else:
        output.write_text(text)
        print(f"wrote {output}", file=sys.stderr)
    bad = [r for r in reports if not r.ok]
    for r in bad:
        print(f"{r.folder}: failed partitions {r.failed_partitions}, re-run wrote {r.rerun_rows_written} rows",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
