"""A private PostgreSQL cluster for a test that restarts its database server.

The machine's PostgreSQL on 5432 is shared with other suites running at the same time, so
it is never restarted: ``PrivatePostgres`` runs ``initdb`` into a temporary folder and
``pg_ctl start`` on a free port of 127.0.0.1 (trust auth, its unix socket in that folder),
as the ``postgres`` OS user when we are root (``initdb`` refuses root). ``restart()`` is
``pg_ctl restart -m fast``: what a server restart or failover does to its clients.

Without the PostgreSQL binaries the test is skipped, or fails when
``HELPDESK_TEST_REQUIRE_PG=1`` says PostgreSQL must be there.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import _pg_missing, free_port


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="helpdesk-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> PrivatePostgres:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c fsync=off -c max_connections=100")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
                  "-w", "-t", "30", "start")
        return self

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-m", "fast", "-w", "-t", "30",
                  "restart")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except RuntimeError:
            pass

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_pg():
    """A started private cluster; stopped and removed afterwards."""
    bin_dir = binaries()
    if bin_dir is None:
        _pg_missing("the PostgreSQL server binaries are not installed (/usr/lib/postgresql/*/bin)")
    server = PrivatePostgres(bin_dir).start()
    yield server
    server.close()
