"""The Dagster UI, driven by a real browser: the operator's path from "what is there" to "one
partition migrated".

``dagster-webserver -m doc_migration.definitions`` runs against a temporary Dagster instance and a
fresh database; Debian's headless Chromium, driven by Playwright, clicks through the catalog, an
asset's partitions, the lineage graph and the launch dialog, and follows the run it launched until
Dagster reports success. The database (``doc_migration.partition_state``) confirms the load.

Selectors are text and ARIA-role based (the production UI bundle strips ``data-testid``); each one
is explained where it is used. Tested against dagster-webserver 1.13.27.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from doc_migration.manifest import load_manifest
from doc_migration_tests.helpers import SAMPLE_MANIFEST

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
]
ASSETS = ("source_manifest", "parsed_docs", "embeddings", "loaded_rows", "validation_report")
PARTITION = "rust-00"
# The run has 17 steps (5 assets, 12 checks). Dagster's default executor starts a Python process per
# step: ~110 s on an idle 2-core machine, over 150 s under load; with the in-process executor ~10 s.
RUN_TIMEOUT_S = 240

# Runs launched from the UI go through the instance's run coordinator. Dagster 1.13's default is the
# QueuedRunCoordinator (dagster/_core/instance/ref.py), whose queue only the dagster-daemon drains:
# without a daemon the run would sit in QUEUED forever. The DefaultRunCoordinator hands the run
# straight to the DefaultRunLauncher (a subprocess of the code server). `nux: enabled: false` keeps
# the "Join the Dagster community" dialog from covering the page.
DAGSTER_YAML = """\
telemetry:
  enabled: false
nux:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(420),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium); "
                              "playwright install cannot download browsers here"),
]

playwright_sync = pytest.importorskip("playwright.sync_api", reason="python package playwright is not installed")


@dataclass
class Webserver:
    base_url: str
    log_path: Path
    dagster_home: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no webserver log)"

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Used for verification only; the test drives the UI itself."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.base_url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            result: dict[str, Any] = json.loads(response.read())
        return result


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_server_info(proc: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dagster-webserver exited with {proc.returncode}:\n"
                                 f"{log_path.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/server_info", timeout=5) as response:
                if response.status == 200 and b"dagster_webserver_version" in response.read():
                    return
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"dagster-webserver did not answer /server_info within {timeout} s ({last_error}):\n"
                         f"{log_path.read_text(errors='replace')[-4000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the webserver and everything it started (code server, run workers): its own process group."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture()
def webserver(database_url: str, tmp_path: Path) -> Iterator[Webserver]:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML, encoding="utf-8")
    home = tmp_path / "doc_migration_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DOC_MIGRATION_SHARDS", "DOC_MIGRATION_SCHEMA", "DOC_MIGRATION_EXECUTOR", "OPENAI_API_KEY",
                        "OPENAI_BASE_URL")}
    env.update({
        "DAGSTER_HOME": str(dagster_home),
        "DATABASE_URL": database_url,
        "DOC_MIGRATION_HOME": str(home),
        "DOC_MIGRATION_SOURCES": str(SAMPLE_MANIFEST),
        "DOC_MIGRATION_EMBEDDER": "offline",
    })
    executable = shutil.which("dagster-webserver", path=str(Path(sys.executable).parent)) or "dagster-webserver"
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "dagster-webserver.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [executable, "-m", "doc_migration.definitions", "-h", "127.0.0.1", "-p", str(port)],
            env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_server_info(proc, base_url, log_path, timeout=120)
        yield Webserver(base_url, log_path, dagster_home)
    finally:
        _stop(proc)


class UiFailure(AssertionError):
    pass


@contextmanager
def ui_step(page: Any, server: Webserver, shots: Path, name: str) -> Iterator[None]:
    """Screenshot after each step; on failure keep the page's HTML and screenshot and name them.
    Step durations go to ``timings.json`` next to the screenshots."""
    started = time.monotonic()
    try:
        yield
    except Exception as exc:
        png, html = shots / f"FAILED-{name}.png", shots / f"FAILED-{name}.html"
        try:
            page.screenshot(path=str(png), full_page=True)
            html.write_text(page.content(), encoding="utf-8")
        except Exception as capture_error:  # the browser itself may be gone
            png = html = Path(f"(not captured: {capture_error})")
        raise UiFailure(f"UI step {name!r} failed at {page.url}: {type(exc).__name__}: {exc}\n"
                        f"screenshot: {png}\npage HTML: {html}\n"
                        f"webserver log tail:\n{server.log_tail()}") from exc
    page.screenshot(path=str(shots / f"{name}.png"))
    timings_path = shots / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    timings[name] = round(time.monotonic() - started, 1)
    timings_path.write_text(json.dumps(timings, indent=1))


def _partition_state(database_url: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT partition_key, run_id, documents FROM doc_migration.partition_state "
                            "ORDER BY partition_key").fetchall()
    return [(r[0], r[1], int(r[2])) for r in rows]


def test_materialize_one_partition_from_the_ui(webserver: Webserver, database_url: str, tmp_path: Path) -> None:
    expect = playwright_sync.expect
    shots = tmp_path / "screenshots"
    shots.mkdir()
    partition_keys = load_manifest(SAMPLE_MANIFEST).partition_keys()
    assert PARTITION in partition_keys
    base = webserver.base_url

    with playwright_sync.sync_playwright() as pw:
        # launch() always starts from a fresh, throw-away profile directory of its own.
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        # Belt and braces with `nux: enabled: false`: the browser-side flag of the community dialog.
        context.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            # 1. Catalog (/assets): one row per asset; the asset name is a link to /assets/<name>
            #    whose accessible name starts with the asset name (the description follows it).
            with ui_step(page, webserver, shots, "01-catalog"):
                page.goto(f"{base}/assets")
                for asset in ASSETS:
                    link = page.get_by_role("link", name=re.compile(rf"^{asset}\b"))
                    expect(link.first).to_be_visible(timeout=60_000)  # the code location may still load
                    expect(link.first).to_have_attribute("href", f"/assets/{asset}")

            # 2. An asset's partitions: click through to source_manifest, then its "Partitions" tab
            #    (role=tab). Each partition key is a row of the list, with the key as its exact text.
            with ui_step(page, webserver, shots, "02-partitions"):
                page.get_by_role("link", name=re.compile(r"^source_manifest\b")).first.click()
                page.get_by_role("tab", name="Partitions").click()
                expect(page).to_have_url(re.compile(r"view=partitions"))
                for key in partition_keys:
                    expect(page.get_by_text(key, exact=True).first).to_be_visible()
                expect(page.get_by_text(f"Missing ({len(partition_keys)})")).to_be_visible()

            # 3. The asset graph: the "Lineage" link of the left navigation (role=navigation; the
            #    link's accessible name is "<icon name> Lineage", hence the anchored-at-end regex). Graph
            #    nodes are HTML inside the SVG canvas's <foreignObject>s, which tells them apart from
            #    the asset list on the left that repeats the names.
            with ui_step(page, webserver, shots, "03-lineage"):
                page.get_by_role("navigation").get_by_role("link", name=re.compile(r"\bLineage$")).click()
                expect(page.get_by_text("Global asset lineage")).to_be_visible()
                graph = page.locator("svg foreignObject")
                for asset in ASSETS:
                    expect(graph.get_by_text(asset, exact=True).first).to_be_visible()

            # 4. Launch: "Materialize all…" opens the partition dialog (role=dialog) for the 5 assets.
            #    (Buttons' accessible names start with their icon's name: match "Materialize all" anywhere.)
            #    Its partition picker shows a placeholder; clicking it opens a menu with a
            #    "Filter partitions" box and one role=menuitem (a checkbox plus the key) per key.
            #    With exactly one key chosen the button reads "Launch 1 run" (a plain run through
            #    the run coordinator) instead of "Launch backfill" (which would need the daemon).
            with ui_step(page, webserver, shots, "04-launch-dialog"):
                page.get_by_role("button", name=re.compile(r"Materialize all")).click()
                dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
                expect(dialog).to_be_visible()
                expect(dialog.get_by_text(f"Launch runs to materialize {len(ASSETS)} assets")).to_be_visible()
                dialog.get_by_text("Select a partition or create one").click()
                page.get_by_placeholder("Filter partitions").fill(PARTITION)
                page.get_by_role("menuitem", name=re.compile(rf"^{re.escape(PARTITION)}\b")).click()
                # Close the picker's menu by clicking the dialog's title (Escape would close the dialog).
                dialog.get_by_text("Launch runs to materialize").click()
                expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
                launch = dialog.get_by_role("button", name="Launch 1 run", exact=True)
                expect(launch).to_be_enabled()

            with ui_step(page, webserver, shots, "05-launched"):
                launch.click()
                # A toast "Launched run <short id>" with a "View" link to /runs/<full run id>.
                expect(page.get_by_text("Launched run")).to_be_visible(timeout=60_000)
                href = page.get_by_role("link", name="View", exact=True).first.get_attribute("href") or ""
                match = re.search(r"/runs/([0-9a-f-]{36})", href)
                assert match, f"no run link in the launch toast (href={href!r})"
                run_id = match.group(1)

            # 5. Follow the run on its page (/runs/<id>): the header shows a status tag whose exact
            #    text ends as "Success" or "Failure"/"Canceled". The page updates live over a
            #    websocket; it is reloaded now and then in case an update was missed.
            with ui_step(page, webserver, shots, "06-run"):
                page.goto(f"{base}/runs/{run_id}")
                expect(page.get_by_text(run_id[:8], exact=True).first).to_be_visible()
                final = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
                deadline = time.monotonic() + RUN_TIMEOUT_S
                last_reload = time.monotonic()
                while final.count() == 0 and time.monotonic() < deadline:
                    page.wait_for_timeout(2_000)
                    if time.monotonic() - last_reload > 30:
                        page.reload()
                        last_reload = time.monotonic()
                status = final.first.inner_text() if final.count() else f"(still running after {RUN_TIMEOUT_S} s)"
                assert status == "Success", f"run {run_id} ended as {status!r} in the UI"

            # 6. The partition shows as materialized on loaded_rows' partitions view.
            with ui_step(page, webserver, shots, "07-materialized"):
                page.goto(f"{base}/assets/loaded_rows?view=partitions")
                expect(page.get_by_text("Materialized (1)")).to_be_visible()
        finally:
            context.close()
            browser.close()

    # The database agrees: exactly the launched partition is loaded, by the run the UI launched.
    state = _partition_state(database_url)
    assert [(key, rid) for key, rid, _ in state] == [(PARTITION, run_id)], state
    assert state[0][2] > 0, state
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM documents WHERE doc_type = 'rust'").fetchone()
    assert row is not None and row[0] > 0

    # And Dagster's own record (GraphQL, verification only): the run succeeded for that partition.
    result = webserver.graphql(
        "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status tags { key value } } } }",
        {"id": run_id})
    run = result["data"]["runOrError"]
    assert run["__typename"] == "Run" and run["status"] == "SUCCESS", run
    assert {"key": "dagster/partition", "value": PARTITION} in run["tags"], run["tags"]


def _cli(args: list[str], webserver: Webserver, database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI against the webserver's instance and database (its runs appear in the UI)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DOC_MIGRATION_SHARDS", "DOC_MIGRATION_SCHEMA", "DOC_MIGRATION_EXECUTOR", "OPENAI_API_KEY",
                        "OPENAI_BASE_URL")}
    env.update({"DAGSTER_HOME": str(webserver.dagster_home), "DATABASE_URL": database_url,
                "DOC_MIGRATION_HOME": str(tmp_path / "doc_migration_home"),
                "DOC_MIGRATION_SOURCES": str(SAMPLE_MANIFEST), "DOC_MIGRATION_EMBEDDER": "offline"})
    proc = subprocess.run([sys.executable, "-m", "doc_migration.cli", *args], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, f"doc-migrate {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def _rows_by_partition(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT partition_key, count(*) FROM doc_migration.partition_rows "
                                 "GROUP BY 1").fetchall())


def test_partition_metadata_and_rollback_in_the_ui(webserver: Webserver, database_url: str, tmp_path: Path) -> None:
    """A range run (the CLI: one run over every partition) gives each partition of loaded_rows its own
    metadata in the UI; after `doc-migrate rollback`, that partition is Failed, not Materialized."""
    expect = playwright_sync.expect
    shots = Path(os.environ.get("DOC_MIGRATION_UI_SHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    keys = load_manifest(SAMPLE_MANIFEST).partition_keys()
    _cli(["full", "--yes"], webserver, database_url, tmp_path)
    rows = _rows_by_partition(database_url)
    total = sum(rows.values())
    key = max(rows, key=rows.__getitem__)  # the partition with the most rows: its count is not a default
    assert 1 < rows[key] < total, rows
    materialized = len(keys)
    base = webserver.base_url

    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1100})
        context.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            # 1. loaded_rows' partitions view: every key of the range run is materialized. Clicking a key
            #    in the list opens its latest materialization on the right, with its metadata table
            #    (one row per entry: the key's name, then its value).
            with ui_step(page, webserver, shots, "11-partition-metadata"):
                page.goto(f"{base}/assets/loaded_rows?view=partitions")
                expect(page.get_by_text(f"Materialized ({materialized})")).to_be_visible(timeout=60_000)
                page.get_by_text(key, exact=True).first.click()
                expect(page).to_have_url(re.compile(rf"partition={re.escape(key)}"))
                for name in ("dagster/row_count", "rows_inserted"):
                    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=name, exact=True))
                    expect(row).to_have_count(1)
                    expect(row.get_by_role("cell").nth(1)).to_have_text(str(rows[key]))
                expect(page.get_by_role("row").filter(
                    has=page.get_by_text("partitions_loaded", exact=True))).to_have_count(0)  # no run totals

            # 2. Roll the partition back with the CLI: the UI shows it Failed, one fewer Materialized.
            _cli(["rollback", key, "--yes"], webserver, database_url, tmp_path)
            with ui_step(page, webserver, shots, "12-rolled-back"):
                page.goto(f"{base}/assets/loaded_rows?view=partitions")
                expect(page.get_by_text("Failed (1)")).to_be_visible(timeout=60_000)
                expect(page.get_by_text(f"Materialized ({materialized - 1})")).to_be_visible()
                # The partition's page leads with the failed attempt (the marker run of the rollback).
                page.get_by_text(key, exact=True).first.click()
                expect(page.get_by_text(re.compile(r"failed, and did not materialize this asset"))).to_be_visible()
        finally:
            context.close()
            browser.close()

    # Dagster's own record (GraphQL, verification only) agrees with the UI.
    statuses = webserver.graphql(
        '{ assetNodeOrError(assetKey: {path: ["loaded_rows"]}) { ... on AssetNode { assetPartitionStatuses { '
        "... on DefaultPartitionStatuses { materializedPartitions failedPartitions } } } } }")
    parts = statuses["data"]["assetNodeOrError"]["assetPartitionStatuses"]
    assert parts["failedPartitions"] == [key], parts
    assert key not in parts["materializedPartitions"] and len(parts["materializedPartitions"]) == len(keys) - 1
