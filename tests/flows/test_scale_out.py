"""The proof of issue 14: three ``helpdesk run`` workers on one PostgreSQL, through faults.

Real parts only: three worker processes (``python -m helpdesk run``, one config each that
differs only in the SMTP port) on a private PostgreSQL cluster (tests/flows/private_pg.py:
the shared server is never restarted), a real Dovecot whose one IMAP mailbox every worker
has in its config, and a capture relay (aiosmtpd) behind a switch that can make it hang
(accept TCP, never greet). ``HELPDESK_SCALE_N`` messages (default 2,000: about 55 s on the
2-core development machine) go in through the three SMTP servers (several client threads,
each retrying 4xx and refused connections as an MTA does) and the IMAP mailbox. Meanwhile
the worker reading the IMAP mailbox is killed with SIGKILL and started again (the mailbox is
taken over), PostgreSQL is restarted, and the relay hangs for a while.

Afterwards every message is in exactly one ticket, every notification reached the relay
(counted by Message-ID) and at most one delivery group (50) was repeated,
every deadline (``first_response`` of 15 s and its reminder) fired exactly once, the IMAP
mailbox was read by one worker at a time, no process of the workers is left over, and no
worker logged an ERROR or a traceback.
"""

from __future__ import annotations

import contextlib
import email.parser
import itertools
import os
import re
import smtplib
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
from aiosmtpd.controller import Controller

from tests.conftest import free_port, mail, write_config
from tests.flows import dovecot as dc
from tests.flows.private_pg import private_pg  # noqa: F401 - the fixture
from tests.flows.tcp_proxy import _pump
from tests.flows.test_imap import imap_lines, user
from tests.runtime.test_signals import Service

N = int(os.environ.get("HELPDESK_SCALE_N", "2000"))
WORKERS = 3
SENDERS = 4
GROUP = 50                      # outgoing mail claimed per delivery group


class Worker(Service):
    """A ``helpdesk run`` process whose log lines carry the time they arrived."""

    def __init__(self, config: Path) -> None:
        self.stamped: list[tuple[float, str]] = []
        self.started = time.monotonic()
        super().__init__(config)

    def _read(self) -> None:
        for line in self.proc.stderr:
            text = line.decode().rstrip("\n")
            self.stamped.append((time.monotonic(), text))
            self.lines.append(text)


class Capture:
    """What the relay received, counted by Message-ID."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        headers = email.parser.BytesHeaderParser().parsebytes(envelope.content)
        with self.lock:
            key = str(headers["Message-ID"]).strip().strip("<>")
            self.seen[key] += 1
            self.times.setdefault(key, []).append(time.monotonic())
        return "250 OK"


class Switch:
    """In front of the capture relay: passes connections on, or, while hung, accepts them
    and never says a word (a relay that hangs); ``back()`` drops those held."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.hung = False
        self.held: list[socket.socket] = []
        self.passed: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.hung:
                self.held.append(client)
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            self.passed += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def hang(self) -> None:
        """From now on the relay hangs; the sessions it had are gone (it was restarted)."""
        self.hung = True
        passed, self.passed = self.passed, []
        for sock in passed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def back(self) -> None:
        self.hung = False
        held, self.held = self.held, []
        for sock in held:
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.back()


def repeats_by_fault(times: dict[str, list[float]], faults: dict[str, float]) -> Counter:
    """Each repeated copy, named after the latest fault between the first copy and it (the
    relay may read a mail a dying worker wrote a moment after the test killed it: 0.5 s)."""
    found: Counter = Counter({"none": 0, **dict.fromkeys(faults, 0)})
    for copies in times.values():
        for later in copies[1:]:
            between = [(at, name) for name, at in faults.items() if copies[0] - 0.5 <= at <= later]
            found[max(between)[1] if between else "none"] += 1
    return found


def customer(n: int) -> bytes:
    return mail(frm=f"Customer {n} <c{n}@example.com>", message_id=f"scale{n}",
                subject=f"Order {n} key", body=f"Hello, order {n}: the key fails.\n")


def send(port: int, raw: bytes, deadline: float) -> None:
    """Deliver ``raw`` as a sending MTA would: retry 4xx and refused connections."""
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail("c@example.com", ["support@shop.example"], raw)
            return
        except (OSError, smtplib.SMTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def configs(folder: Path, db_url: str, login: str, dovecot: dc.Dovecot, relay_port: int) -> list[Path]:
    """One config per worker, the same but for the SMTP port (one folder: one secret key)."""
    base = write_config(folder, db_url=db_url,
                        outgoing=f'transport = "smtp+plain://127.0.0.1:{relay_port}"\ntimeout = "3s"\n'
                                 'destination_down = "2s"',
                        extra='[intake]\npoll_interval = "1s"\nworker_timeout = "3s"\n')
    (folder / "imap.pw").write_text(dc.PASSWORD + "\n")
    text = base.read_text()
    text = text.replace('source = "maildir:mailboxes/support"\n', imap_lines(dovecot, login))
    text = text.replace('retry_delay = "1m"', 'retry_delay = "2s"\nretry_max_delay = "4s"')
    text = text.replace('first_response = "4h"', 'first_response = "15s"\ntick_interval = "1s"')
    paths = []
    for n in range(WORKERS):
        path = folder / f"worker{n}.toml"
        path.write_text(re.sub(r'listen = "127\.0\.0\.1:\d+"', f'listen = "127.0.0.1:{free_port()}"', text))
        paths.append(path)
    return paths


def smtp_port(config: Path) -> int:
    return int(re.search(r'listen = "127\.0\.0\.1:(\d+)"', config.read_text())[1])


def descendants(pids: set[int]) -> set[int]:
    """Every process whose ancestry (through the parent pid) reaches ``pids``."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, grown = set(), True
    while grown:
        new = {pid for pid, parent in parents.items() if (parent in pids or parent in found) and pid not in found}
        found |= new
        grown = bool(new)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def reading_periods(workers: list[Worker], killed: dict[int, float], end: float) -> list[tuple[float, float, int]]:
    """(start, end, worker) of each time a worker held the IMAP mailbox, from its log.

    A worker that found the lease free reads from its start (it logs nothing then); one that
    found it held logs ``read by worker N`` and reads from ``this worker (M) reads it now``."""
    periods = []
    for n, worker in enumerate(workers):
        start = worker.started
        for at, line in worker.stamped:
            if "mailbox support: read by worker" in line:
                start = None
            elif "mailbox support: this worker" in line and "reads it now" in line:
                start = at
            elif start is not None and ("another worker took over reading it" in line
                                                    or "SIGTERM: stopping" in line):
                periods.append((start, at, n))
                start = None
        if start is not None:
            # A line is stamped when the test reads it, a moment after it was written: what a
            # killed worker wrote before its death may be stamped just after the kill.
            last = max((at for at, _ in worker.stamped), default=start)
            periods.append((start, max(killed[n], last) if n in killed else end, n))
    return sorted(periods)


def reader(db_url: str, workers: list[Worker]) -> int:
    """The index of the worker holding the IMAP mailbox's lease."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        pid = conn.execute("SELECT w.pid FROM lease l JOIN worker w ON w.id = l.holder "
                           "WHERE l.name = 'imap:support'").fetchone()[0]
    return next(n for n, worker in enumerate(workers) if worker.proc.pid == pid)


def imap_log(workers: list[Worker]) -> str:
    return "\n".join(f"{at:.2f} worker {n}: {line}" for n, worker in enumerate(workers) for at, line in worker.stamped
                     if "mailbox support" in line or "SIGTERM: " in line or "helpdesk running" in line)


def stored_from_imap(workers: list[Worker]) -> list[tuple[float, int]]:
    """(time, worker) of each IMAP pass that stored mail."""
    return [(at, n) for n, worker in enumerate(workers) for at, line in worker.stamped
            if "mailbox support: stored" in line]


def test_three_workers_one_database_through_faults(private_pg, tmp_path):  # noqa: F811
    admin = psycopg.connect(private_pg.url, autocommit=True)
    admin.execute("CREATE DATABASE helpdesk")
    admin.close()
    db_url = f"postgresql://postgres@127.0.0.1:{private_pg.port}/helpdesk"
    dovecot = dc.started("scale")
    capture = Capture()
    relay = Controller(capture, hostname="127.0.0.1", port=free_port())
    relay.start()
    switch = Switch(relay.port)
    login = user()
    paths = configs(tmp_path, db_url, login, dovecot, switch.port)
    workers: list[Worker] = []
    seen_children: set[int] = set()
    killed: dict[int, float] = {}
    started = time.monotonic()
    try:
        workers = [Worker(paths[0])]
        workers[0].wait_for("helpdesk running", timeout=60)      # the first one creates the schema
        workers += [Worker(path) for path in paths[1:]]
        for worker in workers[1:]:
            worker.wait_for("helpdesk running", timeout=60)
        ports = [smtp_port(path) for path in paths]

        by_imap = set(range(0, N, 5))
        by_smtp = [n for n in range(N) if n not in by_imap]
        sent = Counter()
        deadline = time.monotonic() + 300

        def sender(k: int) -> None:
            for i, n in enumerate(by_smtp[k::SENDERS]):
                send(ports[(i + k) % WORKERS], customer(n), deadline)
                sent["smtp"] += 1

        def appender() -> None:
            numbers = sorted(by_imap)
            for i in range(0, len(numbers), 20):
                dovecot.append(login, *(customer(n) for n in numbers[i:i + 20]))
                sent["imap"] += len(numbers[i:i + 20])
                time.sleep(0.2)

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(SENDERS)]
        threads.append(threading.Thread(target=appender))
        for thread in threads:
            thread.start()

        def watch_children() -> None:
            seen_children.update(descendants({w.proc.pid for w in workers if w.proc.poll() is None}))

        def total() -> int:
            return sent["smtp"] + sent["imap"]

        def until(check, timeout: float, what: str) -> None:
            end = time.monotonic() + timeout
            while not check():
                watch_children()
                assert time.monotonic() < end, f"timed out waiting for {what}"
                time.sleep(0.2)

        until(lambda: total() >= N // 4, 120, "a quarter sent")
        watch_children()
        victim = reader(db_url, workers)                              # the IMAP reader, to prove
        workers[victim].proc.kill()                                   # the takeover: SIGKILL
        killed[victim] = time.monotonic()
        workers[victim].proc.wait()
        time.sleep(1)
        workers.append(Worker(paths[victim]))                         # restarted, same config
        workers[-1].wait_for("helpdesk running", timeout=60)

        until(lambda: total() >= N // 2, 120, "half sent")
        faults = {"kill": killed[victim], "restart": time.monotonic()}
        private_pg.restart()                                          # every connection dropped

        until(lambda: total() >= 3 * N // 4, 120, "three quarters sent")
        faults["hang"] = time.monotonic()
        switch.hang()                                                 # the relay hangs ...
        time.sleep(6)
        switch.back()                                                 # ... and comes back

        for thread in threads:
            thread.join()
        check = psycopg.connect(db_url, autocommit=True)

        def one(sql: str) -> int:
            return check.execute(sql).fetchone()[0]

        until(lambda: one("SELECT count(*) FROM raw_message WHERE status = 'done'") == N, 180,
              "every message processed")
        until(lambda: one("SELECT count(*) FROM timer WHERE status = 'pending'") == 0, 120,
              "every deadline fired")
        until(lambda: one("SELECT count(*) FROM outbox WHERE status <> 'sent'") == 0, 120,
              "every mail sent")
        time.sleep(1)
        wall = time.monotonic() - started
    finally:
        stopped = time.monotonic()
        for worker in workers:
            if worker.proc.poll() is None:
                worker.stop()
        switch.close()
        relay.stop()
        dovecot.close()
    logs = "\n".join(line for w in workers for line in w.lines)
    assert sent["smtp"] + sent["imap"] == N
    # Each fault was felt: the restart cut connections, the hung relay deferred mail.
    assert "database connection lost" in logs or "database unreachable" in logs, logs
    assert "deferred mail" in logs, logs

    # Every message in exactly one ticket.
    assert one("SELECT count(*) FROM raw_message") == N
    assert one("SELECT count(DISTINCT ticket_id) FROM raw_message WHERE outcome = 'new_ticket'") == N
    assert one("SELECT count(*) FROM ticket") == N
    assert one("SELECT count(*) FROM message WHERE direction = 'in'") == N

    # Every notification reached the relay; repeats at most one group.
    queued = {row[0].strip("<>") for row in check.execute("SELECT message_id FROM outbox")}
    assert set(capture.seen) == queued
    repeats = sum(count - 1 for count in capture.seen.values())
    deferred = logs.count("deferred mail")
    by_fault = repeats_by_fault(capture.times, faults)
    print(f"\nscale-out proof: N={N}, {len(queued)} mails, wall {wall:.1f} s, repeated {repeats} "
          f"{dict(by_fault)}, {deferred} deferrals")
    # A repeat is a mail handed over whose record a fault cut off: the SIGKILL may repeat the
    # killed worker's group; the relay's restart the mail in flight on each worker's session
    # (its 250 lost after the end of DATA, which any SMTP client sends again); the database's
    # restart a group per worker (one silent past worker_timeout is reaped and its claims
    # freed). Nothing else repeats: every repeat has a copy before a fault and one after it.
    assert by_fault["none"] == 0, capture.times
    assert by_fault["kill"] <= GROUP and by_fault["hang"] <= WORKERS, by_fault
    assert by_fault["restart"] <= GROUP * WORKERS, by_fault

    # Every deadline fired exactly once: each timer row fired, and the fired counts logged by
    # all workers add up to the number of timers.
    timers = one("SELECT count(*) FROM timer")
    assert timers == 2 * N
    assert one("SELECT count(*) FROM timer WHERE status = 'fired'") == timers
    fired = 0
    for line in logs.splitlines():
        if "deadlines fired: " in line:
            fired += sum(int(part.split()[0]) for part in line.split("deadlines fired: ")[1].split(", "))
    assert fired == timers, fired

    # The IMAP mailbox was read by one worker at a time.
    periods = reading_periods(workers, killed, stopped)
    assert periods, logs
    for (_, end_a, a), (start_b, _, b) in itertools.pairwise(periods):
        assert start_b >= end_a, f"worker {b} read while {a} did: {periods}\n{imap_log(workers)}"
    passes = stored_from_imap(workers)
    assert passes
    for at, n in passes:
        assert any(s <= at <= e for s, e, holder in periods if holder == n), (at, n, periods)
    print(f"IMAP read by workers {[n for _, _, n in periods]}, {len(passes)} passes; "
          f"{len(seen_children)} child processes seen")

    # Nothing left over: every process the workers started is gone.
    time.sleep(1)
    assert not [pid for pid in seen_children if alive(pid)], seen_children
    errors = [x for x in logs.splitlines() if "Traceback" in x or " ERROR " in x]
    assert not errors, logs                  # every fault told in its one-line warning
    check.close()
