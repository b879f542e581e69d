"""The wheel ships the product only (issue 16): no benchmark, no test server, no tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from doc_migration_tests.helpers import REPO_ROOT


def test_wheel_holds_the_product_and_nothing_else(tmp_path: Path) -> None:
    # Built from a copy of what git tracks, so the build's debris never lands in the work tree.
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                             capture_output=True, check=True).stdout.decode()
    src = tmp_path / "src"
    for rel in filter(None, listing.split("\0")):
        if (REPO_ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / rel, src / rel)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"),
                           str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"doc_migration", "doc_migration-0.1.0.dist-info"}, tops
    assert not [n for n in names if "/bench" in n or "embedding_server" in n or "testkit" in n]
    # ...and the product is complete: migrations, the sample corpus, the Dagster definitions.
    for needed in ("doc_migration/storage/migrations/0001_docserver_schema.sql", "doc_migration/sample_corpus/sources.yaml",
                   "doc_migration/definitions.py", "doc_migration/py.typed"):
        assert needed in names
