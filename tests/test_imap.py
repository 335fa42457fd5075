"""IMAP intake against a real Dovecot: stored first, then flagged and moved, never doubled.

Every test talks to a private Dovecot (``tests/dovecot.py``) on 127.0.0.1 and
puts mail in with IMAP APPEND; nothing on the wire is mocked. The faults are
real too: a ``kill -9`` of the poller, a Dovecot restart, a proxy that cuts or
stalls the connection in the middle of a FETCH, a wrong password, an
untrusted certificate, servers without MOVE, UIDPLUS or IDLE.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from helpdesk import service
from helpdesk.clock import Clock
from helpdesk.config import load_config
from helpdesk.errors import ConfigError, StoreError
from helpdesk.models import Outbox, RawMessage, Ticket
from helpdesk.sources import imap, imap_state
from tests import dovecot as dc
from tests.conftest import START, Desk, mail, write_config

ROOT = Path(__file__).resolve().parent.parent
SEEN = b"\\Seen"


# --------------------------------------------------------------------- servers


def _server(name: str, **options) -> dc.Dovecot:
    if dc.find() is None:
        message = "Dovecot is not installed (apt-get install dovecot-imapd)"
        if os.environ.get("HELPDESK_TEST_REQUIRE_DOVECOT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return dc.Dovecot(name, **options).start()


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
    wait_for(lambda: loops or errors, 5)
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
    cursor = imap_state.load("support")
    assert cursor.source == app.config.mailbox("support").source and cursor.last_uid == 5
    # The next pass finds nothing and changes nothing.
    assert service.poll_imap(app) == 0
    assert RawMessage.select().count() == 5 and len(dovecot.messages(login, "Processed")) == 5


def test_a_fetch_does_not_mark_mail_read_before_it_is_stored(dovecot, tmp_path, desks, monkeypatch):
    """BODY.PEEK[]: if storing fails, the message stays in the folder, unread."""
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot, login)))
    app = desks[0].app
    dovecot.append(login, customer(1))

    def broken(batch):
        raise StoreError("database is locked")

    assert imap.poll_once(app.config.mailbox("support"), broken, 10) == 0
    [(flags, _)] = dovecot.messages(login)
    assert SEEN not in flags
    assert imap_state.load("support") is None
    service.run(app, once=True)
    assert Ticket.select().count() == 1 and ids(dovecot, login) == []


# --------------------------------------------------------------------- crashes and faults

KILLER = """
import os, signal, sys
from helpdesk import cli
from helpdesk.sources import imap, imap_state
config, point, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = []
def killer(real):
    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapped
if point == "acknowledge":
    imap.acknowledge = killer(imap.acknowledge)
else:
    imap_state.save = killer(imap_state.save)
sys.exit(cli.main(["--config", config, "run", "--once"]))
"""


@pytest.mark.parametrize("point", ["acknowledge", "save"])
def test_kill_9_after_storing_before_moving_makes_exactly_one_ticket(dovecot, tmp_path, desks, point):
    """The poller dies (SIGKILL) after the second batch is committed, before it is moved
    (or before its cursor is saved); the restarted poller moves it without doubling."""
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot, login), intake="batch_size = 2"))
    config = desks[0].config_path
    dovecot.append(login, *(customer(n) for n in range(1, 5)))

    killed = subprocess.run([sys.executable, "-c", KILLER, str(config), point, "2"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert RawMessage.select().count() == 4               # both batches committed
    assert ids(dovecot, login) == ["m3", "m4"]            # the second never moved
    assert all(SEEN not in flags for flags, _ in dovecot.messages(login))

    service.run(desks[0].app, once=True)                   # the restart
    assert RawMessage.select().count() == 4
    assert Ticket.select().count() == 4 and acks() == 4
    assert len([m for m in desks[0].outgoing() if "c3@example.com" in str(m["To"])]) == 1
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
    server = _server("noidle", capabilities=dc.WITHOUT_MOVE)
    try:
        login = user()
        desks.append(make_desk(tmp_path, imap_lines(server, login, extra='poll_interval = "1s"')))
        with running(desks[0].app, monkeypatch):
            time.sleep(0.3)
            server.append(login, customer(1))
            assert wait_for(lambda: Ticket.select().count() == 1, 5) < 5
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
        wait_for(lambda: all(w.idling.is_set() for w in watchers), 5)
        started = time.monotonic()
        dovecot.append(support, customer(1))
        dovecot.append(disputes, customer(2, to="disputes@shop.example"))
        wait_for(lambda: Ticket.select().count() == 1 and handled("disputes") == 1, 5)
        assert time.monotonic() - started < 5
        assert Ticket.get().mailbox == "support"
        wait_for(lambda: all(w.idling.is_set() for w in watchers), 5)   # back in IDLE
        dovecot.append(support, customer(3))
        assert wait_for(lambda: Ticket.select().count() == 2, 5) < 5
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
        wait_for(lambda: "mailbox disputes" in log.read_text(), 5)
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
        wait_for(lambda: watchers and all(w.idling.is_set() for w in watchers), 5)
        dovecot_tls.append(login, customer(1))
        assert wait_for(lambda: Ticket.select().count() == 1, 5) < 5


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
    old = imap_state.load("support")
    imap_state.save("support", imap_state.Cursor(old.source, old.uidvalidity, 10**6))
    dovecot.doveadm("mailbox", "update", "-u", login, "--uid-validity", "12345", "INBOX")
    with dovecot.client(login) as client:                 # someone moves the old mail back
        client.select_folder("Processed")
        client.move(client.search("ALL"), "INBOX")
    dovecot.append(login, customer(3))

    service.run(app, once=True)
    assert "UIDVALIDITY or source changed" in caplog.text
    assert Ticket.select().count() == 3 and acks() == 3 and RawMessage.select().count() == 3
    assert ids(dovecot, login) == []
    assert imap_state.load("support").uidvalidity == 12345


# --------------------------------------------------------------------- config


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
