"""``helpdesk run`` as independent stages, against a relay that accepts and never greets.

Real processes, real sockets: the service runs as ``python -m helpdesk run``, the relay is a
listening socket on 127.0.0.1 that counts the connections it accepts and never says a word.
A hung relay holds the deliver stage alone; new mail still becomes tickets at once, SIGTERM
still stops the service within seconds, and the mail it could not deliver stays queued.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import threading
import time

import pytest

from tests.conftest import mail, write_config
from tests.runtime.test_signals import Service, drop


class HungRelay:
    """Accepts TCP connections and never greets; holds them open until closed."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        return len(self.accepted)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def relay():
    hung = HungRelay()
    yield hung
    hung.close()


def relay_config(tmp_path, relay: HungRelay, timeout: str = "30s", extra: str = ""):
    config = write_config(tmp_path, outgoing=f'transport = "smtp+plain://127.0.0.1:{relay.port}"\n'
                                             f'timeout = "{timeout}"',
                          extra='\n[intake]\npoll_interval = "1s"\nparse_workers = 0\n' + extra)
    config.write_text(config.read_text().replace("[smtp_server]\n", "[smtp_server]\nenabled = false\n"))
    return config


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def outbox(tmp_path) -> list[tuple[str, int]]:
    with sqlite3.connect(tmp_path / "var" / "helpdesk.db") as db:
        return db.execute("SELECT status, attempts FROM outbox ORDER BY id").fetchall()


def test_a_hung_relay_does_not_delay_new_tickets(tmp_path, relay):
    service = Service(relay_config(tmp_path, relay))
    try:
        service.wait_for(r"helpdesk running")
        drop(tmp_path, mail(message_id="first"), "1.host")
        service.wait_for(r"message 1: new_ticket")
        wait_for(lambda: relay.connections >= 1)          # delivery now waits for a greeting (30 s)
        dropped = time.monotonic()
        drop(tmp_path, mail(message_id="second", frm="Eve <eve@example.com>"), "2.host")
        service.wait_for(r"message 2: new_ticket", timeout=20)
        took = time.monotonic() - dropped
    finally:
        service.stop()
    assert took < 3, f"the second mail became a ticket after {took:.1f} s"


def test_sigterm_with_a_hung_relay_stops_within_seconds_and_keeps_the_mail(tmp_path, relay):
    service = Service(relay_config(tmp_path, relay))
    try:
        service.wait_for(r"helpdesk running")
        drop(tmp_path, mail(message_id="first"), "1.host")
        wait_for(lambda: relay.connections >= 1)
        time.sleep(0.2)                                    # the transport waits for the greeting
        stopped = time.monotonic()
        service.signal(signal.SIGTERM)
        code = service.proc.wait(timeout=30)
        took = time.monotonic() - stopped
    finally:
        service.stop()
    assert code == 0, "\n".join(service.lines)
    assert took < 6, f"SIGTERM took {took:.1f} s"
    service.wait_for(r"helpdesk stopped")
    assert "Traceback" not in "\n".join(service.lines)
    rows = outbox(tmp_path)
    assert rows and {status for status, _ in rows} == {"queued"}, rows    # nothing sent, nothing lost
