"""``helpdesk run`` as systemd runs it: a real process, real signals, a real notify socket.

SIGTERM finishes the batch in hand and stops within seconds; SIGHUP reloads the config
(live keys at once, fixed keys said and kept, a broken file refused) and never kills it.
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
import tempfile
import threading
import time

import pytest

from tests.conftest import free_port, mail, write_config
from tests.runtime.test_pipe import helpdesk, raw_rows, tickets


class Service:
    """``helpdesk run`` in its own process, its stderr read line by line as it comes."""

    def __init__(self, config, notify_socket: str | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if notify_socket:
            env["NOTIFY_SOCKET"] = notify_socket
        self.proc = subprocess.Popen([sys.executable, "-m", "helpdesk", "--config", str(config), "run"],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.decode().rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 20, after: int = 0) -> int:
        """Index of the first line from ``after`` on that matches ``pattern``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in range(after, len(self.lines)):
                if re.search(pattern, self.lines[n]):
                    return n
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r}; the log:\n" + "\n".join(self.lines))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.reader.join(timeout=5)
        return code


class NotifySocket:
    """What systemd listens on: a datagram socket whose path goes in $NOTIFY_SOCKET."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="hd-notify-")   # short: socket paths are limited to 108 bytes
        self.path = os.path.join(self.folder, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def next(self, timeout: float = 20) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def notify():
    sock = NotifySocket()
    yield sock
    sock.close()


def drop(folder, raw: bytes, name: str) -> None:
    new = folder / "mailboxes" / "support" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new.parent / "tmp").mkdir(exist_ok=True)
    tmp = new.parent / "tmp" / name
    tmp.write_bytes(raw)
    os.replace(tmp, new / name)                 # as a delivery agent does: complete, or not there


def outgoing(folder) -> list[str]:
    new = folder / "mailboxes" / "outgoing" / "new"
    return sorted(p.read_text() for p in new.iterdir()) if new.exists() else []


def tickets_in(config) -> int:
    from helpdesk.config.loader import load_config
    from helpdesk.store.db import connect
    from helpdesk.store.schema import Ticket, db
    connect(load_config(config).database.url)
    try:
        return Ticket.select().count()
    finally:
        db.close()


def wait_until(condition, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_sigterm_finishes_the_batch_in_hand_and_stops_within_seconds(tmp_path, notify):
    batch, total = 20, 2000
    config = write_config(tmp_path, extra=f'\n[intake]\nbatch_size = {batch}\nparse_workers = 0\n')
    for n in range(total):
        drop(tmp_path, mail(message_id=f"m{n}", body=f"mail {n}\n"), f"{n:05d}.host")
    service = Service(config, notify.path)
    try:
        assert notify.next()["READY"] == "1"
        service.wait_for(r"message 1: new_ticket")
        stopped = time.monotonic()
        service.signal(signal.SIGTERM)
        code = service.stop()
        took = time.monotonic() - stopped
    finally:
        service.stop()
    assert code == 0, "\n".join(service.lines)
    assert took < 5, took
    assert notify.next()["STOPPING"] == "1"
    service.wait_for(r"SIGTERM: stopping after the batch in hand")
    service.wait_for(r"helpdesk stopped")
    statuses = [status for _, status in raw_rows(config)]
    done = statuses.count("done")
    # The Maildir stage stores while processing runs (independent stages): SIGTERM may come
    # before every file is stored; those wait in new/ for the next start. Nothing is lost.
    left = len(list((tmp_path / "mailboxes" / "support" / "new").iterdir()))
    assert len(statuses) + left == total, (len(statuses), left)
    assert 0 < done < total, done                               # stopped in the middle...
    assert statuses.count("pending") == len(statuses) - done
    assert tickets_in(config) == done                           # ...between two batches: none half applied
    assert helpdesk(config, "run", "--once").returncode == 0    # the next start finishes the rest
    assert len(tickets(config)) == total                        # nothing lost, nothing doubled


def test_sighup_reloads_live_keys_keeps_fixed_ones_and_survives_a_broken_file(tmp_path, notify):
    smtp_port = free_port()
    config = write_config(tmp_path, smtp_port=smtp_port,
                          extra='\n[intake]\npoll_interval = "1s"\nparse_workers = 0\n')
    config.write_text(config.read_text().replace('retry_delay = "1m"', 'retry_delay = "1m"\npoll_interval = "1s"'))
    original = config.read_text()
    service = Service(config, notify.path)
    try:
        assert notify.next()["READY"] == "1"
        other_port = free_port()
        config.write_text(
            original.replace('first_response = "4h"', 'first_response = "2h"')
                    .replace('name = "Difmark Support"', 'name = "Acme Help"\nlog_format = "json"')
                    .replace(f"127.0.0.1:{smtp_port}", f"127.0.0.1:{other_port}")
                    .replace('url = "sqlite:///var/helpdesk.db"', 'url = "sqlite:///var/elsewhere.db"')
            + '\n[[staff]]\naddress = "dave@shop.example"\nname = "Dave"\nrole = "agent"\n')
        seen = len(service.lines)
        service.signal(signal.SIGHUP)
        assert notify.next()["RELOADING"] == "1"
        assert notify.next()["READY"] == "1"
        done = service.wait_for(r"configuration reloaded", after=seen)
        said = service.lines[seen:done + 1]
        assert len([line for line in said if "[database] url changed" in line]) == 1, said
        assert len([line for line in said if "[smtp_server] listen changed" in line]) == 1, said
        assert all("the old value stays until a restart" in line for line in said if " changed, " in line)
        reloaded = json.loads(service.lines[done])              # log_format is live: JSON from here on
        assert (reloaded["level"], reloaded["logger"]) == ("INFO", "helpdesk.reload")

        drop(tmp_path, mail(message_id="after-reload"), "1.host")
        sent = wait_until(lambda: len(outgoing(tmp_path)) == 3 and outgoing(tmp_path))
        [ack] = [m for m in sent if "To: Bob Buyer <bob@example.com>" in m]
        assert "within 2 hours" in ack
        assert re.search(r"^From: \"?Acme Help\"? <support@shop.example>$", ack, re.MULTILINE), ack
        assert sum("To: Dave <dave@shop.example>" in m for m in sent) == 1   # a new agent: told too
        assert (tmp_path / "var" / "helpdesk.db").exists() and not (tmp_path / "var" / "elsewhere.db").exists()
        with socket.create_connection(("127.0.0.1", smtp_port), timeout=5) as smtp:
            assert smtp.recv(100).startswith(b"220")          # still listening where it started
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", other_port), timeout=2).close()

        broken = config.read_text().replace('first_response = "2h"', 'first_response = "soon"')
        config.write_text(broken)
        seen = len(service.lines)
        service.signal(signal.SIGHUP)
        refused = service.wait_for(r"keeping the running configuration", after=seen)
        line = json.loads(service.lines[refused])
        assert line["level"] == "ERROR"
        assert line["message"].startswith(f"{config}: [tickets] first_response: ")
        assert "Traceback" not in "\n".join(service.lines)
        assert notify.next()["RELOADING"] == "1" and notify.next()["READY"] == "1"
        assert service.proc.poll() is None                      # SIGHUP no longer kills it

        drop(tmp_path, mail(message_id="after-broken", frm="Eve <eve@example.com>"), "2.host")
        sent = wait_until(lambda: len(outgoing(tmp_path)) == 6 and outgoing(tmp_path))
        [ack] = [m for m in sent if "To: Eve <eve@example.com>" in m]
        assert "within 2 hours" in ack                          # the running config stayed
    finally:
        code = service.stop()
    assert code == 0
