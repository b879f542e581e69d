"""The validation report's HTML page renders in a real headless Chromium with its key numbers."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from doc_migration_tests.helpers import SAMPLE_MANIFEST, run_cli

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_html_report_renders_with_key_numbers(tmp_path: Path, database_url: str) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    assert run_cli(["--sources", str(SAMPLE_MANIFEST), "full"], database_url=database_url, home=tmp_path).code == 0
    result = run_cli(["--sources", str(SAMPLE_MANIFEST), "validate"], database_url=database_url, home=tmp_path)
    assert result.code == 0, result.stderr[-2000:]
    match = re.search(r"report (\S+\.html)", result.stdout)
    assert match, result.stdout
    page_path = Path(match.group(1))
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM documents").fetchone()
    rows = int(row[0]) if row else -1
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(page_path.as_uri())
        page.screenshot(path=str(tmp_path / "validation-report.png"), full_page=True)
        total_rows = page.locator("#total-rows").inner_text()
        status = page.locator("#overall-status").inner_text()
        recall = page.locator("#recall-at-1").inner_text()
        charts = page.locator("svg").count()
        browser.close()
    assert int(re.sub(r"[^\d]", "", total_rows)) == rows
    assert "pass" in status.lower()
    assert recall.strip().startswith("1")
    assert charts >= 1
    assert (tmp_path / "validation-report.png").stat().st_size > 10_000
