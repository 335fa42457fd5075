"""IMAP intake against a real Dovecot: stored first, then flagged and moved, never doubled.

Every test talks to a private Dovecot (``tests/flows/dovecot.py``) on 127.0.0.1 and
puts mail in with IMAP APPEND; nothing on the wire is mocked. The faults are
real too: a ``kill -9`` of the poller, a Dovecot restart, a proxy that cuts or
stalls the connection in the middle of a FETCH (or leaves one message's body or
size out of its answer), a wrong password, an untrusted certificate, a missing
folder, servers without MOVE, UIDPLUS or IDLE. ``.ci/run``'s Dovecot install
block is run with fake apt-get and systemctl.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from helpdesk import cli
from helpdesk.clock import Clock
from helpdesk.config.loader import load_config
from helpdesk.errors import ConfigError, StoreError
from helpdesk.intake import imap
from helpdesk.runtime import service
from helpdesk.store import imap_cursor
from helpdesk.store.schema import Outbox, RawMessage, Ticket
from tests.conftest import START, Desk, mail, write_config
from tests.flows import dovecot as dc

ROOT = Path(__file__).resolve().parents[2]
SEEN = b"\\Seen"


# --------------------------------------------------------------------- servers


def _server(name: str, **options) -> dc.Dovecot:
    return dc.started(name, **options)


@pytest.fixture(scope="module")
def dovecot():
    server = _server("plain")
    yield server
    server.close()


@pytest.fixture(scope="module")
def dovecot_tls():
    server = _server("tls", tls=True)
    yield server
    server.close()


@pytest.fixture
def own_dovecot():
    """A server of the test's own, for tests that stop it."""
    server = _server("own")
    yield server
    server.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(imap, "FIRST_RETRY", 0.2)


def user() -> str:
    """A fresh IMAP user: the static passdb takes any name, each has its own Maildir."""
    return "u" + uuid.uuid4().hex[:10]


# --------------------------------------------------------------------- helpers


def imap_lines(server: dc.Dovecot, login: str, scheme: str = "imap", *, password: str = "file",
               extra: str = "") -> str:
    """The ``[[mailboxes]]`` keys that read ``login``'s INBOX on ``server``."""
    secret = {"file": 'password_file = "imap.pw"', "wrong": 'password_env = "WRONG_IMAP_PW"'}[password]
    tls = f'ca_file = "{server.cert}"' if server.tls else "starttls = false"
    return f'source = "{server.source(login, scheme)}"\n{secret}\n{tls}\n{extra}\n'


def make_desk(folder: Path, support: str, disputes: str | None = None, *, db_url=None,
              intake: str = "") -> Desk:
    """A helpdesk whose support (and disputes) mailbox is read over IMAP."""
    path = write_config(folder, db_url=db_url, extra=f"\n[intake]\n{intake}\n")
    (folder / "imap.pw").write_text(dc.PASSWORD + "\n")
    text = path.read_text().replace('source = "maildir:mailboxes/support"\n', support)
    if disputes is not None:
        text = text.replace('source = "maildir:mailboxes/disputes"\n', disputes)
    path.write_text(text.replace("[smtp_server]\n", "[smtp_server]\nenabled = false\n"))
    return Desk(folder, path, Clock(START))


@pytest.fixture
def desks():
    made: list[Desk] = []
    yield made
    for desk in made:
        desk.app.close()


def ids(server: dc.Dovecot, login: str, folder: str = "INBOX") -> list[str]:
    """Message-IDs in a folder (the local part), in UID order."""
    found = []
    for _, raw in server.messages(login, folder):
        head = raw.split(b"\r\n\r\n", 1)[0].decode()
        found += [line.split("<")[1].split("@")[0] for line in head.splitlines()
                  if line.lower().startswith("message-id:")]
    return found


def acks() -> int:
    return Outbox.select().where(Outbox.kind == "ack").count()


def handled(mailbox: str) -> int:
    """Messages of a mailbox the pipeline is done with (whatever a dispute makes of them)."""
    return (RawMessage.select().where((RawMessage.mailbox == mailbox) & (RawMessage.status != "pending"))
            .count())


def customer(n: int, **kwargs) -> bytes:
    return mail(frm=f"Customer {n} <c{n}@example.com>", message_id=f"m{n}",
                subject=f"Order {n} key", body=f"Hello, order {n}: the key fails.\n" + "x" * 300 + "\n",
                **kwargs)


def wait_for(condition, timeout: float = 10.0) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - started


@contextlib.contextmanager
def running(app, monkeypatch):
    """``service.run`` as in production, in a thread; yields its IMAP watchers."""
    loops, watchers, errors = [], [], []
    monkeypatch.setattr(service, "_stop_on_signals", loops.append)
    start = imap.start_watchers
    monkeypatch.setattr(imap, "start_watchers", lambda *a, **k: watchers.extend(start(*a, **k)) or watchers)

    def run():
        try:
            service.run(app, once=False)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    wait_for(lambda: loops or errors, 30)
    try:
        yield watchers
    finally:
        for loop in loops:
            loop.stop()
        runner.join(10)
    assert not runner.is_alive(), "service did not stop"
    assert errors == []


# --------------------------------------------------------------------- the main path


def test_appended_messages_become_tickets_replies_threaded_all_moved(dovecot, tmp_path, desks, db_url):
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot, login), db_url=db_url, intake="batch_size = 2"))
    app = desks[0].app
    first, second, third = customer(1), customer(2), customer(3)
    reply = mail(frm="Customer 1 <c1@example.com>", message_id="r1", subject="Re: Order 1 key",
                 body="Still broken.\n", headers={"In-Reply-To": "<m1@example.com>",
                                                  "References": "<m1@example.com>"})
    reply_to_reply = mail(frm="Customer 3 <c3@example.com>", message_id="r3", subject="Re: Order 3 key",
                          body="Any news?\n", headers={"In-Reply-To": "<m3@example.com>"})
    dovecot.append(login, reply, first, second, third, reply_to_reply)   # a reply before its parent

    service.run(app, once=True)

    assert RawMessage.select().where(RawMessage.source == "imap").count() == 5
    assert Ticket.select().count() == 3
    ticket_of = {r.message_id: r.ticket_id for r in RawMessage.select()}
    assert ticket_of["<r1@example.com>"] == ticket_of["<m1@example.com>"]
    assert ticket_of["<r3@example.com>"] == ticket_of["<m3@example.com>"]
    assert acks() == 3 and Outbox.select().where(Outbox.status == "sent").count() == Outbox.select().count()
    assert ids(dovecot, login) == []
    processed = dovecot.messages(login, "Processed")
    assert sorted(ids(dovecot, login, "Processed")) == ["m1", "m2", "m3", "r1", "r3"]
    assert all(SEEN in flags for flags, _ in processed)
    cursor = imap_cursor.load("support")
    assert cursor.source == app.config.mailbox("support").source and cursor.last_uid == 5
    # The next pass finds nothing and changes nothing.
    assert service.poll_imap(app) == imap.Polled(0, [])
    assert RawMessage.select().count() == 5 and len(dovecot.messages(login, "Processed")) == 5


def test_a_fetch_does_not_mark_mail_read_before_it_is_stored(dovecot, tmp_path, desks, monkeypatch):
    """BODY.PEEK[]: if storing fails, the message stays in the folder, unread."""
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot, login)))
    app = desks[0].app
    dovecot.append(login, customer(1))

    def broken(batch):
        raise StoreError("database is locked")

    assert imap.poll_once(app.config.mailbox("support"), broken, 10) == imap.Polled(0, ["support"])
    [(flags, _)] = dovecot.messages(login)
    assert SEEN not in flags
    assert imap_cursor.load("support") is None
    service.run(app, once=True)
    assert Ticket.select().count() == 1 and ids(dovecot, login) == []


# --------------------------------------------------------------------- crashes and faults

KILLER = """
import os, signal, sys, time
from helpdesk import cli
from helpdesk.intake import imap
from helpdesk.store import imap_cursor
from helpdesk.store.schema import RawMessage
config, point, at, now, before = sys.argv[1:6]
calls, wakes = [], []
def processed() -> bool:
    return RawMessage.select().where(RawMessage.status != "pending").count() == 2 * int(at)
def killer(real):
    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(at):
            if before == "processed":        # wake processing, let it make the tickets, then die
                wakes[0]()
                started = time.monotonic()
                while not processed() and time.monotonic() - started < 30:
                    time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapped
def noting_wake(real):
    def poll_once(mailbox, store, batch_size, on_stored=lambda: None, **kwargs):
        wakes.append(on_stored)
        return real(mailbox, store, batch_size, on_stored, **kwargs)
    return poll_once
imap.poll_once = noting_wake(imap.poll_once)
if point == "acknowledge":
    imap.acknowledge = killer(imap.acknowledge)
else:
    imap_cursor.save = killer(imap_cursor.save)
only = ["--only", "imap"] if before == "stored" else []
sys.exit(cli.main(["--config", config, "run", "--once", "--now", now, *only]))
"""


@pytest.mark.parametrize("before", ["stored", "processed"])
@pytest.mark.parametrize("point", ["acknowledge", "save"])
def test_kill_9_after_storing_before_moving_makes_exactly_one_ticket(dovecot, tmp_path, desks, point, before):
    """The poller dies (SIGKILL) after the second batch is committed, before it is moved
    (or before its cursor is saved), with the batch only stored or already made into
    tickets; the restarted poller moves it without doubling and every acknowledgement
    leaves once. The killed run keeps the desk's clock: with the real one, the mail it
    queued would be due only in the restart's future."""
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot, login), intake="batch_size = 2"))
    config = desks[0].config_path
    dovecot.append(login, *(customer(n) for n in range(1, 5)))

    killed = subprocess.run([sys.executable, "-c", KILLER, str(config), point, "2", START.isoformat(), before],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert RawMessage.select().count() == 4               # both batches committed
    assert Ticket.select().count() == (4 if before == "processed" else 0)
    assert ids(dovecot, login) == ["m3", "m4"]            # the second never moved
    assert all(SEEN not in flags for flags, _ in dovecot.messages(login))

    service.run(desks[0].app, once=True)                   # the restart
    assert RawMessage.select().count() == 4
    assert Ticket.select().count() == 4 and acks() == 4
    for n in range(1, 5):
        assert len(desks[0].to(f"c{n}@example.com")) == 1, n
    assert ids(dovecot, login) == []
    assert sorted(ids(dovecot, login, "Processed")) == ["m1", "m2", "m3", "m4"]


def test_dovecot_restart_mid_batch_every_message_one_ticket(own_dovecot, tmp_path, desks, monkeypatch, caplog):
    """The server goes down right after a batch is stored: its move fails, the watcher
    reconnects with backoff, moves what was stored and fetches the rest."""
    caplog.set_level(logging.INFO, logger="helpdesk.imap")
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(own_dovecot, login), intake="batch_size = 2"))
    app = desks[0].app
    own_dovecot.append(login, *(customer(n) for n in range(1, 6)))
    store, restarted = app.store, []

    def store_then_restart(batch):
        stored = store(batch)
        if not restarted:
            restarted.append(True)
            own_dovecot.restart()
        return stored

    app.store = store_then_restart
    with running(app, monkeypatch):
        wait_for(lambda: Ticket.select().count() == 5 and not ids(own_dovecot, login), 20)
    assert RawMessage.select().count() == 5 and acks() == 5
    assert sorted(ids(own_dovecot, login, "Processed")) == ["m1", "m2", "m3", "m4", "m5"]
    assert restarted and "mailbox support: reading" in caplog.text
    assert any("mailbox support:" in r.message and "retrying in" in r.message for r in caplog.records)


class CuttingProxy:
    """A TCP relay to Dovecot that, on its first connection only, cuts (or stalls) the
    server's answer after ``after`` bytes: a drop or a hang in the middle of a FETCH."""

    def __init__(self, port: int, after: int, mode: str) -> None:
        self.target, self.after, self.mode = port, after, mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(("127.0.0.1", self.target))
            limit = self.after if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, limit), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if limit is not None and sent + len(data) > limit:
                    sink.sendall(data[:limit - sent])
                    if self.mode == "stall":
                        self.held += [source, sink]   # open and silent: only a timeout helps
                        return
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for sock in self.held:
            sock.close()


@pytest.mark.parametrize("mode", ["cut", "stall"])
def test_connection_dropped_or_hung_mid_fetch_every_message_one_ticket(dovecot, tmp_path, desks,
                                                                        monkeypatch, mode):
    login = user()
    dovecot.append(login, *(customer(n, headers={"X-Pad": "p" * 900}) for n in range(1, 9)))
    proxy = CuttingProxy(dovecot.port, after=6000, mode=mode)   # past the login, inside the FETCH
    source = f'source = "imap://{login}@127.0.0.1:{proxy.port}/INBOX"\n'
    lines = source + 'password_file = "imap.pw"\nstarttls = false\ntimeout = "1s"\n'
    desks.append(make_desk(tmp_path, lines))
    try:
        with running(desks[0].app, monkeypatch):
            wait_for(lambda: Ticket.select().count() == 8 and not ids(dovecot, login), 20)
    finally:
        proxy.close()
    assert proxy.connections >= 2
    assert RawMessage.select().count() == 8 and acks() == 8
    assert len(ids(dovecot, login, "Processed")) == 8


class RewritingProxy:
    """A TCP relay to Dovecot that reads the server's answers response by response
    (literals included) and rewrites the first one ``rewrite`` changes: a server that
    leaves something out of a FETCH answer."""

    def __init__(self, port: int, rewrite) -> None:
        self.target, self.rewrite, self.rewritten = port, rewrite, []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._responses, args=(server, client), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                server.sendall(data)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)

    def _responses(self, server: socket.socket, client: socket.socket) -> None:
        reader = server.makefile("rb")
        with contextlib.suppress(OSError, ValueError):
            while line := reader.readline():
                unit = line
                while literal := re.search(rb"\{(\d+)\}\r\n$", line):
                    unit += reader.read(int(literal.group(1)))
                    line = reader.readline()
                    unit += line
                if not self.rewritten and (changed := self.rewrite(unit)) != unit:
                    self.rewritten.append(unit)
                    unit = changed
                client.sendall(unit)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def without_body(unit: bytes) -> bytes:
    """UID 2's FETCH answer without its BODY[] item."""
    found = re.match(rb"(\* \d+ FETCH \(UID 2) BODY\[\] \{(\d+)\}\r\n", unit)
    return found.group(1) + unit[found.end() + int(found.group(2)):] if found else unit


def nil_body(unit: bytes) -> bytes:
    """UID 2's FETCH answer with ``BODY[] NIL``."""
    found = re.match(rb"(\* \d+ FETCH \(UID 2 BODY\[\]) \{(\d+)\}\r\n", unit)
    return found.group(1) + b" NIL" + unit[found.end() + int(found.group(2)):] if found else unit


def without_size(unit: bytes) -> bytes:
    """UID 2's FETCH answer without its RFC822.SIZE."""
    return re.sub(rb"^(\* \d+ FETCH \(UID 2) RFC822\.SIZE \d+\)", rb"\1)", unit)


@pytest.mark.parametrize("rewrite", [without_body, nil_body])
def test_a_message_sent_without_its_body_stays_and_is_read_at_the_next_pass(dovecot, tmp_path, desks,
                                                                              caplog, rewrite):
    """Never moved unstored: an ERROR naming mailbox and UID, the cursor stays below it."""
    login = user()
    dovecot.append(login, customer(1), customer(2), customer(3))
    proxy = RewritingProxy(dovecot.port, rewrite)
    lines = f'source = "imap://{login}@127.0.0.1:{proxy.port}/INBOX"\npassword_file = "imap.pw"\nstarttls = false\n'
    desks.append(make_desk(tmp_path, lines))
    mailbox = desks[0].app.config.mailbox("support")
    try:
        assert imap.poll_once(mailbox, desks[0].app.store, 10) == imap.Polled(2, ["support"])
        assert proxy.rewritten
        [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert error.getMessage().startswith("mailbox support: the server sent UID 2 of imap://")
        assert "without its body" in error.getMessage()
        assert ids(dovecot, login) == ["m2"] and imap_cursor.load("support").last_uid == 1
        assert imap.poll_once(mailbox, desks[0].app.store, 10) == imap.Polled(1, [])   # server fine again
    finally:
        proxy.close()
    assert RawMessage.select().count() == 3 and ids(dovecot, login) == []
    assert sorted(ids(dovecot, login, "Processed")) == ["m1", "m2", "m3"]
    assert imap_cursor.load("support").last_uid == 2   # the highest UID the second pass found


def test_a_message_sent_without_its_size_is_still_read(dovecot, tmp_path, desks, caplog):
    login = user()
    dovecot.append(login, customer(1), customer(2), customer(3))
    proxy = RewritingProxy(dovecot.port, without_size)
    lines = f'source = "imap://{login}@127.0.0.1:{proxy.port}/INBOX"\npassword_file = "imap.pw"\nstarttls = false\n'
    desks.append(make_desk(tmp_path, lines))
    try:
        assert imap.poll_once(desks[0].app.config.mailbox("support"), desks[0].app.store, 10) == imap.Polled(3, [])
        assert proxy.rewritten
    finally:
        proxy.close()
    assert RawMessage.select().count() == 3 and ids(dovecot, login) == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_mail_arriving_during_a_pass_is_read_before_idling(dovecot, tmp_path, desks, monkeypatch):
    """Dovecot announces it (EXISTS) in the reply to our own MOVE, and IDLE never repeats it."""
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot, login, extra='poll_interval = "1h"')))
    app = desks[0].app
    store = app.store

    def store_while_a_mail_arrives(batch):
        if not RawMessage.select().count():
            dovecot.append(login, customer(2))
        return store(batch)

    app.store = store_while_a_mail_arrives
    with running(app, monkeypatch) as watchers:
        wait_for(lambda: watchers and all(w.idling.is_set() for w in watchers), 30)
        dovecot.append(login, customer(1))
        assert wait_for(lambda: RawMessage.select().count() == 2 and Ticket.select().count() == 2, 15) < 15
    assert ids(dovecot, login) == []


def test_mail_arriving_just_before_idle_is_read_at_once(dovecot, tmp_path, desks, monkeypatch):
    """Dovecot announces it right after "+ idling", in the same packet, so imaplib has it
    buffered before the watcher waits on the socket; poll_interval is an hour."""
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot, login, extra='poll_interval = "1h"')))
    real_idle, arrived = imap.IMAPClient.idle, []

    def idle(client):
        if not arrived:
            arrived.append(True)
            dovecot.append(login, customer(1))       # after the pass, before IDLE
        return real_idle(client)

    monkeypatch.setattr(imap.IMAPClient, "idle", idle)
    with running(desks[0].app, monkeypatch):
        assert wait_for(lambda: Ticket.select().count() == 1, 15) < 15
    assert arrived and ids(dovecot, login) == []


# --------------------------------------------------------------------- server variants


@pytest.mark.parametrize("capabilities", [dc.WITHOUT_MOVE, dc.WITHOUT_MOVE_OR_UIDPLUS],
                         ids=["no-move", "no-move-no-uidplus"])
def test_server_without_move_gets_copy_delete_expunge(tmp_path, desks, capabilities):
    server = _server("nomove", capabilities=capabilities)
    try:
        login = user()
        desks.append(make_desk(tmp_path, imap_lines(server, login)))
        with server.client(login) as probe:
            assert not probe.has_capability("MOVE")
        server.append(login, customer(1), customer(2))
        service.run(desks[0].app, once=True)
        assert Ticket.select().count() == 2
        assert server.messages(login) == []                  # copied, deleted, expunged
        processed = server.messages(login, "Processed")
        assert sorted(ids(server, login, "Processed")) == ["m1", "m2"]
        assert all(SEEN in flags and b"\\Deleted" not in flags for flags, _ in processed)
    finally:
        server.close()


def test_server_without_idle_is_polled_at_the_poll_interval(tmp_path, desks, monkeypatch):
    """Every poll_interval, and not more often: the IDLE renewal limit is not a poll cap."""
    monkeypatch.setattr(imap, "IDLE_RENEW", 0.3)
    server = _server("noidle", capabilities=dc.WITHOUT_MOVE)
    try:
        support, disputes = user(), user()
        desks.append(make_desk(tmp_path, imap_lines(server, support, extra='poll_interval = "1s"'),
                               imap_lines(server, disputes, extra='poll_interval = "1h"')))
        with running(desks[0].app, monkeypatch) as watchers:
            wait_for(lambda: watchers and all(w.idling.is_set() for w in watchers), 30)
            server.append(disputes, customer(2, to="disputes@shop.example"))
            server.append(support, customer(1))
            assert wait_for(lambda: Ticket.select().count() == 1, 15) < 15
            time.sleep(0.5)   # > IDLE_RENEW since the append
            assert handled("disputes") == 0 and ids(server, disputes) == ["m2"]
    finally:
        server.close()


def test_idle_turns_a_new_mail_into_a_ticket_within_seconds_on_two_mailboxes(dovecot, tmp_path, desks,
                                                                              monkeypatch):
    """poll_interval is an hour: only IDLE can bring the mail in this fast."""
    support, disputes = user(), user()
    hour = 'poll_interval = "1h"'
    desks.append(make_desk(tmp_path, imap_lines(dovecot, support, extra=hour),
                           imap_lines(dovecot, disputes, extra=hour)))
    with running(desks[0].app, monkeypatch) as watchers:
        assert [w.mailbox.name for w in watchers] == ["support", "disputes"]
        wait_for(lambda: all(w.idling.is_set() for w in watchers), 30)
        started = time.monotonic()
        dovecot.append(support, customer(1))
        dovecot.append(disputes, customer(2, to="disputes@shop.example"))
        wait_for(lambda: Ticket.select().count() == 1 and handled("disputes") == 1, 15)
        assert time.monotonic() - started < 15     # IDLE: poll_interval is an hour
        assert Ticket.get().mailbox == "support"
        wait_for(lambda: all(w.idling.is_set() for w in watchers), 30)   # back in IDLE
        dovecot.append(support, customer(3))
        assert wait_for(lambda: Ticket.select().count() == 2, 15) < 15
    assert ids(dovecot, support) == [] and ids(dovecot, disputes) == []


# --------------------------------------------------------------------- passwords and TLS


def test_wrong_password_is_one_line_naming_the_mailbox_and_the_other_is_read(dovecot, tmp_path, desks):
    """``helpdesk run`` as a process: it keeps running, and says what is wrong in one line."""
    good, bad = user(), user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot, good), imap_lines(dovecot, bad, password="wrong")))
    dovecot.append(good, customer(1))
    dovecot.append(bad, customer(2, to="disputes@shop.example"))
    env = {**os.environ, "WRONG_IMAP_PW": "guess"}
    command = [sys.executable, "-m", "helpdesk", "--config", str(desks[0].config_path), "run"]
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=stderr)
    try:
        wait_for(lambda: Ticket.select().count() == 1 and not ids(dovecot, good), 15)
        wait_for(lambda: "mailbox disputes" in log.read_text(), 30)
        assert proc.poll() is None, "helpdesk run died"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    stderr = log.read_text()
    assert proc.returncode == 0
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if "refused" in line]
    assert "mailbox disputes: login as " + bad in line and "password_env / password_file" in line
    assert "ERROR" in line
    assert Ticket.get().mailbox == "support"
    assert ids(dovecot, bad) == ["m2"]


def test_once_with_an_unreachable_mailbox_logs_and_still_processes_the_others(dovecot, tmp_path, desks,
                                                                              caplog):
    good = user()
    dead = f'source = "imap://x@127.0.0.1:{dc.free_port()}/INBOX"\npassword_file = "imap.pw"\nstarttls = false\n'
    desks.append(make_desk(tmp_path, imap_lines(dovecot, good), dead))
    dovecot.append(good, customer(1))
    service.run(desks[0].app, once=True)
    assert Ticket.select().count() == 1
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith("mailbox disputes: cannot connect to 127.0.0.1:")
    assert "connection refused" in record.getMessage() and record.exc_info is None


@pytest.mark.parametrize("scheme", ["imaps", "imap"], ids=["implicit-tls", "starttls"])
def test_tls_with_the_servers_ca_file(dovecot_tls, tmp_path, desks, scheme):
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot_tls, login, scheme)))
    mailbox = desks[0].app.config.mailbox("support")
    assert mailbox.starttls is (scheme == "imap")
    dovecot_tls.append(login, customer(1))
    service.run(desks[0].app, once=True)
    assert Ticket.select().count() == 1 and ids(dovecot_tls, login) == []


def test_idle_over_tls(dovecot_tls, tmp_path, desks, monkeypatch):
    """IDLE waits on the TLS socket: a new mail still comes in at once."""
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot_tls, login, "imaps", extra='poll_interval = "1h"')))
    with running(desks[0].app, monkeypatch) as watchers:
        wait_for(lambda: watchers and all(w.idling.is_set() for w in watchers), 30)
        dovecot_tls.append(login, customer(1))
        assert wait_for(lambda: Ticket.select().count() == 1, 15) < 15


def test_untrusted_certificate_is_refused_by_default(dovecot_tls, tmp_path, desks, caplog):
    login = user()
    lines = f'source = "{dovecot_tls.source(login, "imaps")}"\npassword_file = "imap.pw"\n'
    desks.append(make_desk(tmp_path, lines))
    dovecot_tls.append(login, customer(1))
    service.run(desks[0].app, once=True)
    assert RawMessage.select().count() == 0 and ids(dovecot_tls, login) == ["m1"]
    assert "mailbox support: the TLS certificate of 127.0.0.1:" in caplog.text
    assert "set ca_file" in caplog.text


def test_no_password_in_clear_unless_starttls_is_turned_off(dovecot, tmp_path, desks, caplog):
    """``imap://`` means STARTTLS unless ``starttls = false``: a server without it is refused."""
    login = user()
    lines = f'source = "{dovecot.source(login)}"\npassword_file = "imap.pw"\n'
    desks.append(make_desk(tmp_path, lines))
    dovecot.append(login, customer(1))
    logged = len((dovecot.root / "dovecot.log").read_text())
    service.run(desks[0].app, once=True)
    assert f"user=<{login}>" not in (dovecot.root / "dovecot.log").read_text()[logged:]   # no login
    assert "does not offer STARTTLS, and the password is not sent in clear" in caplog.text
    assert RawMessage.select().count() == 0 and ids(dovecot, login) == ["m1"]


# --------------------------------------------------------------------- UIDVALIDITY


def test_uidvalidity_change_reads_the_folder_again_without_doubling(dovecot, tmp_path, desks, caplog):
    """A saved UID means nothing under a new UIDVALIDITY: mail below it must still be read,
    and messages already stored (moved back into the folder) are skipped."""
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot, login)))
    app = desks[0].app
    dovecot.append(login, customer(1), customer(2))
    service.run(app, once=True)
    old = imap_cursor.load("support")
    imap_cursor.save("support", imap_cursor.Cursor(old.source, old.uidvalidity, 10**6))
    dovecot.doveadm("mailbox", "update", "-u", login, "--uid-validity", "12345", "INBOX")
    with dovecot.client(login) as client:                 # someone moves the old mail back
        client.select_folder("Processed")
        client.move(client.search("ALL"), "INBOX")
    dovecot.append(login, customer(3))

    service.run(app, once=True)
    assert caplog.text.count("UIDVALIDITY or source changed") == 1
    assert Ticket.select().count() == 3 and acks() == 3 and RawMessage.select().count() == 3
    assert ids(dovecot, login) == []
    assert imap_cursor.load("support").uidvalidity == 12345

    # Another change, on the now empty folder: saved at once, so warned about once.
    dovecot.doveadm("mailbox", "update", "-u", login, "--uid-validity", "777", "INBOX")
    for _ in range(3):
        assert service.poll_imap(app) == imap.Polled(0, [])
    assert caplog.text.count("UIDVALIDITY or source changed") == 2
    assert imap_cursor.load("support") == imap_cursor.Cursor(old.source, 777, 0)


# --------------------------------------------------------------------- folders and exit status


def test_a_missing_folder_is_a_config_error_logged_once(dovecot, tmp_path, desks, monkeypatch, caplog):
    """Not a network fault retried every few seconds: an ERROR naming mailbox and folder,
    tried again at the slow pace, repeated at DEBUG (Dovecot's timings are not news)."""
    caplog.set_level(logging.DEBUG, logger="helpdesk.imap")
    monkeypatch.setattr(imap, "SLOW_RETRY", 0.4)
    login = user()
    lines = f'source = "{dovecot.source(login, folder="Nope")}"\npassword_file = "imap.pw"\nstarttls = false\n'
    desks.append(make_desk(tmp_path, lines))

    def retries():
        return [r for r in caplog.records if r.name == "helpdesk.imap" and "retrying in" in r.getMessage()]

    with running(desks[0].app, monkeypatch):
        wait_for(lambda: len(retries()) >= 2, 30)
    first, again = retries()[:2]
    assert first.levelno == logging.ERROR and again.levelno == logging.DEBUG   # ERROR: a lasting fault
    assert first.getMessage() == again.getMessage()
    assert first.getMessage().startswith('mailbox support: cannot select folder "Nope" at 127.0.0.1:')
    assert "doesn't exist" in first.getMessage() and "check the folder" in first.getMessage()
    assert "secs)" not in caplog.text


def test_run_once_exits_1_when_an_imap_mailbox_failed_and_reads_the_others(dovecot, tmp_path, desks, caplog):
    """A processed_folder the server refuses to create: one ERROR line, exit status 1 for
    cron, and the other mailbox is read all the same."""
    good, bad = user(), user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot, good),
                           imap_lines(dovecot, bad, extra='processed_folder = "Done/Old"')))
    config = str(desks[0].config_path)
    dovecot.append(good, customer(1))
    dovecot.append(bad, customer(2, to="disputes@shop.example"))

    assert cli.main(["--config", config, "run", "--once"]) == 1
    assert Ticket.select().count() == 1 and ids(dovecot, good) == [] and ids(dovecot, bad) == ["m2"]
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error.startswith('mailbox disputes: cannot create processed_folder "Done/Old" at 127.0.0.1:')
    assert "check processed_folder" in error and "secs)" not in error

    path = desks[0].config_path
    path.write_text(path.read_text().replace('processed_folder = "Done/Old"', 'processed_folder = "Done"'))
    assert cli.main(["--config", config, "run", "--once"]) == 0
    assert ids(dovecot, bad) == [] and handled("disputes") == 1


# --------------------------------------------------------------------- config


def ci_dovecot_block(tmp_path: Path, calls: Path):
    """``.ci/run``'s Dovecot block, run with fake apt-get, systemctl & co. that log their
    calls (and whether policy-rc.d lets a service start) and its paths under ``tmp_path``."""
    text = (ROOT / ".ci" / "run").read_text()
    block = text[text.index("# Dovecot for the IMAP tests"):text.index("export HELPDESK_TEST_REQUIRE_DOVECOT=1")]
    policy, systemd, fakes = tmp_path / "policy-rc.d", tmp_path / "systemd", tmp_path / "bin"
    for old, new in [("policy=/usr/sbin/policy-rc.d", f"policy={policy}"),
                     ("systemd=/run/systemd/system", f"systemd={systemd}"),
                     ("[ ! -x /usr/sbin/dovecot ]", f"[ ! -x {tmp_path}/dovecot ]")]:
        assert old in block
        block = block.replace(old, new)
    systemd.mkdir(exist_ok=True)
    fakes.mkdir(exist_ok=True)
    scripts = {"id": "echo 0",
               "apt-get": f'if [ -x {policy} ]; then {policy} start; echo "apt-get $* policy=$?"; '
                          f'else echo "apt-get $* policy=none"; fi >> {calls}',
               "systemctl": f'echo "systemctl $*" >> {calls}',
               "update-rc.d": f'echo "update-rc.d $*" >> {calls}',
               "service": f'echo "service $*" >> {calls}'}
    for name, body in scripts.items():
        (fakes / name).write_text(f"#!/bin/sh\n{body}\n")
        (fakes / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{fakes}:/usr/bin:/bin"}   # no real dovecot (/usr/sbin) on it
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], env=env, capture_output=True,
                          text=True, timeout=30, check=False)


def test_ci_installs_dovecot_without_starting_the_system_service(tmp_path):
    calls, policy = tmp_path / "calls.log", tmp_path / "policy-rc.d"
    done = ci_dovecot_block(tmp_path, calls)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert calls.read_text().splitlines() == [
        "apt-get install -y -qq dovecot-imapd policy=101",       # no service starts while installing
        "systemctl disable --now --quiet dovecot.socket",
        "systemctl disable --now --quiet dovecot.service"]
    assert not policy.exists()                                   # ours: removed again

    calls.unlink()
    policy.write_text("#!/bin/sh\nexit 0\n")                     # the machine's own: left alone
    policy.chmod(0o755)
    assert ci_dovecot_block(tmp_path, calls).returncode == 0
    assert calls.read_text().splitlines()[0] == "apt-get install -y -qq dovecot-imapd policy=0"
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"

    calls.unlink()
    (tmp_path / "dovecot").write_text("")                         # installed: nothing to do
    (tmp_path / "dovecot").chmod(0o755)
    assert ci_dovecot_block(tmp_path, calls).returncode == 0 and not calls.exists()



def test_imap_config_keys(tmp_path):
    path = write_config(tmp_path)
    (tmp_path / "pw").write_text("x\n")
    text = path.read_text().replace(
        'source = "maildir:mailboxes/support"\n',
        'source = "imaps://support%40shop.example@mail.shop.example/INBOX"\npassword_file = "pw"\n'
        'timeout = "20s"\n')
    path.write_text(text)
    mailbox = load_config(path).mailbox("support")
    assert (mailbox.imap_user, mailbox.imap_port, mailbox.timeout.total_seconds()) == (
        "support@shop.example", 993, 20)
    assert imap.where(mailbox) == "imaps://mail.shop.example:993/INBOX"
    path.write_text(text.replace('password_file = "pw"', 'password_file = "pw"\nprocessed_folder = "INBOX"'))
    with pytest.raises(ConfigError, match=r'processed_folder: "INBOX" is the folder that is read'):
        load_config(path)
