"""A test-owned copy of the repository, a user's clean shell in it, and the ways to run doc commands.

The copy lives at ``<tmp>/parent/repo`` with ``<tmp>/parent/shared`` pointing at the real
``../shared`` (the examples' relative paths resolve) and ``.venv`` pointing at the real venv, so the
README's ``make run`` finds the project installed, as on a clone after its set-up.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .docs import REPO_ROOT, Command

SHARED = REPO_ROOT.parent / "shared"
SHARED_CORPUS = SHARED / "corpus"
STRIPPED_PREFIXES = ("DOC_MIGRATION_", "OPENAI_", "DAGSTER_")
STRIPPED = {"DATABASE_URL", "VIRTUAL_ENV", "PYTHONHOME"}
TRACEBACK = "Traceback (most recent call last)"
DEFAULT_TIMEOUT = 600.0


@dataclass
class Result:
    command: str
    code: int
    stdout: str
    stderr: str
    seconds: float

    def explain(self) -> str:
        """What a failure message shows: the command, its exit code and the end of its output."""
        return (f"$ {self.command}\n-> exit {self.code} after {self.seconds:.1f} s\n"
                f"--- stdout (last 3000 chars) ---\n{self.stdout[-3000:]}\n"
                f"--- stderr (last 3000 chars) ---\n{self.stderr[-3000:]}")

    def last_json(self) -> dict[str, Any]:
        """The JSON object on the last non-empty stdout line (the documented ``--json`` contract)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no stdout at all\n{self.explain()}"
        try:
            value = json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise AssertionError(f"the last stdout line is not JSON ({exc})\n{self.explain()}") from None
        assert isinstance(value, dict), f"the last stdout line is not a JSON object\n{self.explain()}"
        return value


def copy_repository(dest_parent: Path) -> Path:
    """Copy the files git knows (tracked and untracked-but-not-ignored, so uncommitted work is tested
    too), mtimes preserved, to ``dest_parent/repo``; link ``shared`` and ``.venv``."""
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                             capture_output=True, check=True).stdout.decode()
    repo = dest_parent / "repo"
    for rel in filter(None, listing.split("\0")):
        source = REPO_ROOT / rel
        if not source.is_file():  # deleted in the work tree but still in the index
            continue
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    if SHARED.exists():
        (dest_parent / "shared").symlink_to(SHARED.resolve())
    (repo / ".venv").symlink_to(REPO_ROOT / ".venv")
    _keep_make_from_reinstalling(repo)
    return repo


def _keep_make_from_reinstalling(repo: Path) -> None:
    """The Makefile reinstalls when pyproject.toml is newer than .venv/.installed. In the copy that
    would `pip install -e` the copy into the shared venv (repointing everyone's editable install), so
    the copy's pyproject.toml is dated just before the stamp when it is newer. The venv itself is the
    real repo's: a pending reinstall there is the real repo's business (`make` in /work/main)."""
    stamp = REPO_ROOT / ".venv" / ".installed"
    pyproject = repo / "pyproject.toml"
    if stamp.exists() and pyproject.stat().st_mtime >= stamp.stat().st_mtime:
        before = stamp.stat().st_mtime - 1
        os.utime(pyproject, (before, before))


def clean_environment(home: Path) -> dict[str, str]:
    """The test runner's environment without project configuration, with a fresh HOME."""
    env = {k: v for k, v in os.environ.items()
           if k not in STRIPPED and not k.startswith(STRIPPED_PREFIXES) and not k.startswith("PYTEST_")}
    env["HOME"] = str(home)
    return env


class Journey:
    """One copy of the repository and one project home (the copy's ./.doc_migration)."""

    def __init__(self, name: str) -> None:
        # Outside pytest's private (0700) temp tree: as root, the embedded server runs as its own
        # user, which must traverse the path to the home (as conftest.pg_server_url explains).
        parent = Path(tempfile.mkdtemp(prefix=f"doc_migration_journey_{name}_")) / "parent"
        parent.parent.chmod(0o755)
        parent.mkdir()
        self.parent = parent
        self.repo = copy_repository(parent)
        (parent / "home").mkdir()
        self.env = clean_environment(parent / "home")
        self.log: list[Result] = []

    def close(self) -> None:
        """Stop what may still use the home, then remove the copy."""
        shutil.rmtree(self.parent.parent, ignore_errors=True)

    # ------------------------------------------------------------------ running
    def run(self, command: str, *, setup: tuple[str, ...] = (), answer_y: bool = False,
            timeout: float = DEFAULT_TIMEOUT, env: dict[str, str] | None = None) -> Result:
        """Run one line with ``bash -c`` from the copy's root, after the set-up lines (each checked)."""
        script = "".join(f"{line} || {{ echo 'journey: set-up line failed: {_q(line)}' >&2; exit 97; }}\n"
                         for line in setup) + command + "\n"
        started = time.monotonic()
        environ = {**self.env, **(env or {})}
        if answer_y:
            code, out, err = _run_on_terminal(script, self.repo, environ, timeout)
        else:
            proc = subprocess.run(["bash", "-c", script], cwd=self.repo, env=environ, capture_output=True,
                                  text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        result = Result(command, code, out, err, time.monotonic() - started)
        self.log.append(result)
        return result

    def doc_migrate(self, args: str, **kwargs: Any) -> Result:
        return self.run(f".venv/bin/doc-migrate {args}", **kwargs)

    def status(self, sources: str = "") -> dict[str, Any]:
        result = self.doc_migrate(f"{sources} status --json".strip())
        assert result.code == 0, result.explain()
        return result.last_json()

    def sql(self, statement: str) -> Result:
        """Run SQL against the home's database the way the CLI finds it (embedded server under the home)."""
        program = ("import sys, psycopg\n"
                   "from doc_migration.config import Settings\n"
                   "from doc_migration.storage.database import resolve_database_url\n"
                   "with psycopg.connect(resolve_database_url(Settings.from_env()), autocommit=True) as c:\n"
                   "    cur = c.execute(sys.argv[1])\n"
                   "    print(cur.rowcount)\n")
        return self.run(f".venv/bin/python -c {shlex.quote(program)} {shlex.quote(statement)}")

    # ------------------------------------------------------------------ placeholders
    def substitute(self, cmd: Command) -> str:
        """The command with its documented placeholders replaced by real values of this home."""
        from .docs import PLACEHOLDERS

        text = cmd.text
        for name in cmd.placeholders:
            text = PLACEHOLDERS[name].sub(self.value(name), text)
        return text

    def value(self, name: str) -> str:
        if name == "run_id":
            result = self.doc_migrate("history --json")
            assert result.code == 0, result.explain()
            loads = [e for e in result.last_json()["events"] if e.get("event") == "load"]
            assert loads, "no load in `doc-migrate history --json` to take a run id from"
            return str(loads[0]["run_id"])
        if name == "key":
            partitions = sorted(self.status()["partitions"])
            assert partitions, "no loaded partition in `doc-migrate status --json` to take a key from"
            return partitions[0]
        raise KeyError(name)

    # ------------------------------------------------------------------ servers
    def serve(self, command: str, *, setup: tuple[str, ...] = (), timeout: float = 180.0) -> Result:
        """Start a server line, wait until it answers HTTP on its port (and, for the Dagster UI,
        until the code location has loaded), then stop its whole process group."""
        port = server_port(command)
        _wait_port_free(port, 60)
        script = "".join(f"{line} || exit 97\n" for line in setup) + f"exec {command}\n"
        log = self.parent / f"server-{port}-{len(self.log)}.log"
        started = time.monotonic()
        with open(log, "w+") as out:
            proc = subprocess.Popen(["bash", "-c", script], cwd=self.repo, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            problem = ""
            try:
                problem = _wait_until_served(proc, port, timeout)
            finally:
                _stop_group(proc)
            out.seek(0)
            output = out.read()
        code = 0 if not problem else (proc.returncode if proc.returncode not in (None, 0) else 1)
        result = Result(command, code, output, problem, time.monotonic() - started)
        self.log.append(result)
        return result


def _q(text: str) -> str:
    return text.replace("'", "'\\''")


def _run_on_terminal(script: str, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    """stdin is a terminal on which the operator has typed ``y`` and Enter (stdout/stderr captured)."""
    master, slave = pty.openpty()
    try:
        os.write(master, b"y\n")
        proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, stdin=slave, capture_output=True,
                              text=True, timeout=timeout)
    finally:
        os.close(slave)
        os.close(master)
    return proc.returncode, proc.stdout, proc.stderr


def server_port(command: str) -> int:
    """The port a server command listens on: its -p/--port, else the tool's default (3000)."""
    m = re.search(r"(?:^|\s)(?:-p|--port)[ =](\d+)", command)
    return int(m.group(1)) if m else 3000


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_port_free(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _port_open(port):
        assert time.monotonic() < deadline, f"port {port} is taken by another process; the journey cannot tell servers apart"
        time.sleep(1)


WORKSPACE_QUERY = ("{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus "
                   "locationOrLoadError { __typename ... on PythonError { message } } } } } }")


def _wait_until_served(proc: subprocess.Popen[bytes], port: int, timeout: float) -> str:
    """'' once the server answers (and its code locations loaded), else why not."""
    deadline = time.monotonic() + timeout
    answered = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"the server exited with code {proc.returncode} before answering on :{port}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                answered = response.status == 200
        except (urllib.error.URLError, OSError):
            answered = False
        if answered:
            state = _workspace(port)
            if state is None:  # not the Dagster UI: answering HTTP is all there is to check
                return ""
            if state:
                if all(e["loadStatus"] == "LOADED" for e in state):
                    broken = [f"{e['name']}: {(e['locationOrLoadError'] or {}).get('message', '')[:500]}"
                              for e in state if (e["locationOrLoadError"] or {}).get("__typename") != "RepositoryLocation"]
                    return f"code location(s) failed to load: {broken}" if broken else ""
        time.sleep(1)
    return f"nothing answered HTTP on :{port} within {timeout:.0f} s" if not answered else \
        f"the code location on :{port} did not finish loading within {timeout:.0f} s"


def _workspace(port: int) -> list[dict[str, Any]] | None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", method="POST",
                                     data=json.dumps({"query": WORKSPACE_QUERY}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, json.JSONDecodeError):
        return None
    workspace = (body.get("data") or {}).get("workspaceOrError") or {}
    return list(workspace.get("locationEntries") or [])


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's whole process group; SIGKILL to whatever is left 30 s later."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
