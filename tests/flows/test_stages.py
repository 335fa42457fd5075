"""``helpdesk run`` as independent stages, against a relay that accepts and never greets.

Real processes, real sockets: the service runs as ``python -m helpdesk run``, the relay is a
listening socket on 127.0.0.1 that counts the connections it accepts and never says a word.
A hung relay holds the deliver stage alone; new mail still becomes tickets at once, SIGTERM
still stops the service within seconds, and the mail it could not deliver stays queued.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpdesk.clock import Clock
from helpdesk.errors import ConfigError, TemporaryDeliveryError
from helpdesk.intake.spool import Incoming
from helpdesk.outbound.transports import transport_from_url
from helpdesk.runtime.app import build
from tests.conftest import START, free_port, mail, write_config
from tests.runtime.test_pipe import helpdesk, raw_rows
from tests.runtime.test_signals import Service, drop, outgoing


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
    log = "\n".join(service.lines)
    assert "Traceback" not in log and "stopping without waiting" not in log, log
    service.wait_for(r"delivery interrupted \(the service is stopping\)")   # the hung one, aborted
    rows = outbox(tmp_path)
    assert rows and {status for status, _ in rows} == {"queued"}, rows    # nothing sent, nothing lost
    assert sorted(attempts for _, attempts in rows)[:-1] == [0] * (len(rows) - 1)   # the rest released


# ------------------------------------------------------------ a relay marked down

def test_a_relay_that_times_out_is_marked_down_and_its_other_mail_deferred_without_connecting(
        tmp_path, relay, db_url):
    config = write_config(tmp_path, db_url=db_url,
                          outgoing=f'transport = "smtp+plain://127.0.0.1:{relay.port}"\ntimeout = "1s"')
    clock = Clock(START)
    app = build(config, clock)
    try:
        app.store([Incoming(mail(message_id=f"m{n}", frm=f"C{n} <c{n}@example.com>"), "support", "file")
                   for n in range(3)])
        app.process()
        started = time.monotonic()
        first = app.deliver()
        took = time.monotonic() - started
        queued = len(app_outbox(app))
        assert queued >= 6                                          # 3 acks, 3 staff notices
        assert relay.connections == 1                               # the others never connected
        assert first.deferred == queued and first.sent == 0
        assert took < 5, took               # one 1 s time-out, not one per mail (six: over 6 s)
        errors = {row.last_error for row in app_outbox(app)}
        assert any("did not answer within 1 s; marked down for 1 minute" in e for e in errors), errors

        clock.advance(dt.timedelta(seconds=30))                     # still down: nothing is due yet
        assert app.deliver().handled == 0 and relay.connections == 1
        clock.advance(dt.timedelta(minutes=2))                      # due again, and no longer down
        again = app.deliver()
        assert relay.connections == 2                               # one try; marked down again
        assert again.deferred == queued
        assert {row.status for row in app_outbox(app)} == {"queued"}
    finally:
        app.close()


def app_outbox(app):
    from helpdesk.store import outbox as rows
    return rows.listing(("queued", "sent", "failed"), 100)


def test_destination_down_takes_a_duration(tmp_path):
    config = write_config(tmp_path, outgoing='transport = "maildir:mailboxes/outgoing"\ndestination_down = "soon"')
    with pytest.raises(ConfigError) as caught:
        build(config, Clock(START))
    assert str(caught.value) == (f'{config}: [outgoing] destination_down: "soon" is not a duration '
                                 'like "30m", "4h", "48h" or "3d"')


def test_abort_closes_a_connection_waiting_for_the_greeting(relay):
    smtp = transport_from_url(f"smtp+plain://127.0.0.1:{relay.port}", Path("."), timeout=30)
    outcome = []
    sender = threading.Thread(target=lambda: outcome.append(_try(smtp)), daemon=True)
    sender.start()
    wait_for(lambda: relay.connections == 1)
    time.sleep(0.1)
    aborted = time.monotonic()
    smtp.abort()
    sender.join(5)
    assert not sender.is_alive() and time.monotonic() - aborted < 2
    [error] = outcome
    assert isinstance(error, TemporaryDeliveryError)
    assert str(error) == f"relay 127.0.0.1:{relay.port}: delivery interrupted (the service is stopping)"


def _try(smtp):
    try:
        return smtp.send("support@shop.example", ["bob@example.com"], mail())
    except TemporaryDeliveryError as exc:
        return exc


# ------------------------------------------------------------ roles (run --only)

class Worker(Service):
    """``helpdesk run --only ROLES`` in its own process."""

    def __init__(self, config, roles: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "helpdesk", "--config", str(config), "run",
                                      "--only", roles], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()


def test_roles_split_smtp_intake_from_the_rest(tmp_path):
    port = free_port()
    config = write_config(tmp_path, smtp_port=port,
                          extra='\n[intake]\npoll_interval = "1s"\nparse_workers = 0\n')
    mx = Worker(config, "smtp")
    try:
        mx.wait_for(r"helpdesk running \(smtp\)")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("bob@example.com", ["support@shop.example"], mail(message_id="over-smtp"))
        drop(tmp_path, mail(message_id="in-maildir", frm="Eve <eve@example.com>"), "1.host")
        time.sleep(2.5)                                     # two poll intervals: nothing else runs
        assert raw_rows(config) == [("smtp", "pending")]    # stored, not processed; Maildir not read
    finally:
        assert mx.stop() == 0
    rest = Worker(config, "process,deliver")
    try:
        rest.wait_for(r"helpdesk running \(process, deliver\)")
        wait_for(lambda: len(outgoing(tmp_path)) == 2)      # the ack and the staff notice
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()   # not listening
        assert raw_rows(config) == [("smtp", "done")]
        assert (tmp_path / "mailboxes" / "support" / "new" / "1.host").exists()   # no maildir role
    finally:
        assert rest.stop() == 0


def test_an_unknown_role_is_one_line(tmp_path):
    config = write_config(tmp_path)
    result = helpdesk(config, "run", "--only", "smtp,pop3")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "helpdesk: --only: unknown role 'pop3'; choose from smtp,imap,maildir,process,deliver,tick"]


# ------------------------------------------------------------ the outgoing Maildir

def test_a_start_removes_stale_files_from_outgoing_tmp_and_keeps_fresh_ones(tmp_path):
    config = write_config(tmp_path)
    tmp = tmp_path / "mailboxes" / "outgoing" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "1700000000.M1P1Q1.crashed").write_bytes(b"half a mail")
    os.utime(tmp / "1700000000.M1P1Q1.crashed", (time.time() - 7200, time.time() - 7200))
    (tmp / "busy.another-worker").write_bytes(b"being written right now")
    result = helpdesk(config, "run", "--once")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp.iterdir()) == ["busy.another-worker"]
    assert "removed 1 stale file(s) from tmp/" in result.stderr.decode()


def test_a_group_is_synced_once_before_any_file_is_renamed_into_new(tmp_path, monkeypatch):
    from helpdesk.outbound import transports

    out = transports.MaildirTransport(tmp_path)
    real, seen = transports._syncfs(), []

    def syncfs(fd: int) -> None:
        seen.append((len(list((tmp_path / "tmp").iterdir())), len(list((tmp_path / "new").iterdir()))))
        real(fd)

    monkeypatch.setattr(transports, "_syncfs", lambda: syncfs)
    results = out.send_many([("a@x.test", ["b@x.test"], f"mail {n}\n".encode()) for n in range(50)])
    assert seen == [(50, 0)]                        # one sync, all written, none renamed yet
    assert len(list((tmp_path / "new").iterdir())) == 50 and not list((tmp_path / "tmp").iterdir())
    assert all(r.startswith("maildir new/") for r in results)


def test_without_syncfs_each_file_is_fsynced_before_its_rename(tmp_path, monkeypatch):
    from helpdesk.outbound import transports

    monkeypatch.setattr(transports, "_syncfs", lambda: None)
    synced, fsync = [], os.fsync

    def recording(fd: int) -> None:
        synced.append(len(list((tmp_path / "new").iterdir())))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    transports.MaildirTransport(tmp_path).send_many([("a@x.test", ["b@x.test"], b"x\n")] * 3)
    assert synced == [0, 0, 0, 3]                   # three files before any rename, then new/


def test_acknowledgements_leave_while_a_backlog_is_still_being_processed(tmp_path):
    config = write_config(tmp_path, outgoing='transport = "maildir:mailboxes/outgoing"\npoll_interval = "1h"',
                          extra='\n[intake]\nbatch_size = 20\nparse_workers = 0\n')
    config.write_text(config.read_text().replace("[smtp_server]\n", "[smtp_server]\nenabled = false\n"))
    total = 2000
    for n in range(total):
        drop(tmp_path, mail(message_id=f"m{n}", frm=f"C{n} <c{n}@example.com>"), f"{n:05d}.host")
    # The backlog is stored before processing starts: were the Maildir stage still storing, a
    # process stage that keeps up with it would run dry (and wake delivery) whatever it does.
    stored = helpdesk(config, "run", "--once", "--only", "maildir")
    assert stored.returncode == 0, stored.stderr
    assert [status for _, status in raw_rows(config)].count("pending") == total
    service = Service(config)
    try:
        service.wait_for(r"helpdesk running")
        new = tmp_path / "mailboxes" / "outgoing" / "new"
        wait_for(lambda: new.exists() and any(new.iterdir()), timeout=60)
        statuses = [status for _, status in raw_rows(config)]
    finally:
        assert service.stop() == 0
    # Mid-backlog: without the wake-up after each batch the first acknowledgement left after the
    # whole backlog (0 pending). How far it gets first depends on the machine's load (the group's
    # syncfs waits for every writer's dirty pages): a tenth still pending is mid-backlog.
    assert statuses.count("pending") > total // 10, statuses.count("pending")


def test_the_stages_take_sqlites_write_lock_in_turn(tmp_path):
    """A stage writing batch after batch (a backlog) must not keep another stage out."""
    from helpdesk.store import health
    from helpdesk.store.db import connect, write_transaction

    connect(f"sqlite:///{tmp_path / 'turns.db'}")
    started, stop = threading.Event(), threading.Event()

    def backlog() -> None:
        deadline = time.monotonic() + 5
        while not stop.is_set() and time.monotonic() < deadline:
            with write_transaction():
                started.set()
                time.sleep(0.02)            # a batch being applied
        health.release()

    writer = threading.Thread(target=backlog, daemon=True)
    writer.start()
    started.wait(5)
    asked = time.monotonic()
    with write_transaction():
        waited = time.monotonic() - asked
    stop.set()
    writer.join(10)
    health.release()
    assert waited < 0.5, f"waited {waited:.2f} s for the write lock"
