"""``helpdesk run`` as a worker: registered with a heartbeat while it runs, gone when it
stops; a crashed worker's claims on this host are taken up at the next start, at once."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import time

from helpdesk.clock import Clock, naive_utc
from helpdesk.config.loader import load_config
from helpdesk.runtime import membership
from helpdesk.store import db as store_db
from helpdesk.store import outbox, raw, schema, workers
from helpdesk.store.raw import Arrival
from helpdesk.store.schema import Outbox, RawMessage, Worker
from tests.conftest import START, mail, write_config
from tests.runtime.test_signals import Service

TIMEOUT = dt.timedelta(seconds=30)


def _gone_pid() -> int:
    """The id of a process that existed and no longer does."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _rows() -> list[tuple]:
    return list(Worker.select(Worker.host, Worker.pid).tuples())


def test_joining_registers_beating_renews_and_leaving_unregisters(database):
    clock = Clock(START)
    member = membership.Membership(clock, TIMEOUT, host="h1", pid=4242)
    member.join()
    assert _rows() == [("h1", 4242)] and workers.me() == member.id
    clock.advance(dt.timedelta(seconds=10))
    member.beat()
    assert Worker.get().heartbeat_at == naive_utc(clock.now())
    member.leave()
    assert _rows() == [] and workers.me() is None


def test_a_start_frees_the_claims_of_a_crashed_worker_on_this_host_at_once(database):
    now = naive_utc(START)
    crashed = workers.register("h1", _gone_pid(), now)
    elsewhere = workers.register("h2", 1, now)          # another host: only its heartbeat tells
    raw.store_new([Arrival("k", "<m@example.com>", "support", "file", (), mail())], now)
    raw.claim(crashed, 10, now, now + dt.timedelta(minutes=5))
    workers._me = None
    member = membership.Membership(Clock(START), TIMEOUT, host="h1", pid=4242)
    member.join()
    try:
        assert sorted(_rows()) == [("h1", 4242), ("h2", 1)]
        assert RawMessage.get().claimed_by is None
        assert elsewhere in [w for w, in Worker.select(Worker.id).tuples()]
    finally:
        member.leave()


def test_a_worker_silent_past_the_timeout_is_reaped_by_a_live_ones_beat(database):
    clock = Clock(START)
    silent = workers.register("h2", 1, naive_utc(START))
    workers._me = None
    member = membership.Membership(clock, TIMEOUT, host="h1", pid=4242)
    member.join()
    try:
        clock.advance(dt.timedelta(seconds=29))
        member.beat()
        assert silent in [w for w, in Worker.select(Worker.id).tuples()]
        clock.advance(dt.timedelta(seconds=2))
        member.beat()
        assert [w for w, in Worker.select(Worker.id).tuples()] == [member.id]
    finally:
        member.leave()


def test_helpdesk_run_registers_and_unregisters(tmp_path):
    config = write_config(tmp_path, extra='[intake]\nworker_timeout = "3s"\n')
    service = Service(config)
    try:
        service.wait_for("helpdesk running")
        store_db.connect(load_config(config).database.url)
        assert _rows() == [(socket.gethostname(), service.proc.pid)]
        first = Worker.get().heartbeat_at
        deadline = time.monotonic() + 10
        while Worker.get().heartbeat_at == first and time.monotonic() < deadline:
            time.sleep(0.2)
        assert Worker.get().heartbeat_at > first            # the heartbeat thread beats
    finally:
        assert service.stop() == 0
    assert _rows() == []
    schema.db.close()


def test_a_restart_after_a_crash_delivers_at_once_not_after_the_lease(tmp_path):
    """A worker killed mid-delivery leaves its outgoing mail leased for 10 minutes and its
    claimed messages claimed for 5: the next start on this host frees both at once."""
    config = write_config(tmp_path)
    (tmp_path / "var").mkdir()
    store_db.connect(load_config(config).database.url)
    now = naive_utc(Clock().now())
    crashed = workers.register(socket.gethostname(), _gone_pid(), now)
    raw.store_new([Arrival("k", "<m@example.com>", "support", "file", ("support@shop.example",),
                           mail(subject="claimed by the dead"))], now)
    raw.claim(crashed, 10, now, now + dt.timedelta(minutes=5))
    outbox.queue([outbox.Draft("ack", None, "<out@shop.example>", "support@shop.example", "bob@example.com",
                               '{"From": ["Support", "support@shop.example"], "To": ["Bob", "bob@example.com"]}', "in flight",
                               "text", None)], now)
    outbox.claim([Outbox.get().id], now, now + dt.timedelta(minutes=10), worker=crashed)
    schema.db.close()
    workers._me = None
    service = Service(config)
    try:
        service.wait_for("freed the claims of workers")
        outgoing = tmp_path / "mailboxes" / "outgoing" / "new"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            subjects = [p.read_text() for p in outgoing.iterdir()] if outgoing.exists() else []
            if any("in flight" in s for s in subjects) and any("claimed by the dead" in s for s in subjects):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the crashed worker's mail was not taken up:\n" + "\n".join(service.lines))
    finally:
        service.stop()


def test_leaving_without_the_database_is_one_line_not_a_crash(database, caplog, monkeypatch):
    member = membership.Membership(Clock(START), TIMEOUT, host="h1", pid=4242)
    member.join()

    def down(*args):
        raise RuntimeError("database is down\nsecond line")
    monkeypatch.setattr(workers, "release", down)
    member.leave()
    [line] = [r.getMessage() for r in caplog.records if "could not unregister" in r.getMessage()]
    assert "RuntimeError: database is down" in line and "\n" not in line


def test_a_killed_ingest_leaves_no_claim_behind_the_next_start_takes_it_at_once(tmp_path):
    """``helpdesk ingest`` registers as a worker too: killed with a batch in hand, that batch
    is processed by the next start on this host at once, not after its 5-minute claim."""
    import sys
    config = write_config(tmp_path, extra='[intake]\nbatch_size = 20\nparse_workers = 0\n')
    (tmp_path / "var").mkdir(exist_ok=True)
    folder = tmp_path / "backlog"
    folder.mkdir()
    for n in range(1500):
        (folder / f"{n:05d}.eml").write_bytes(mail(subject=f"n{n}", frm=f"C{n} <c{n}@example.com>"))
    store_db.connect(load_config(config).database.url)       # the schema, before the ingest writes
    ingest = subprocess.Popen([sys.executable, "-m", "helpdesk", "--config", str(config), "ingest", str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (RawMessage.select().where(RawMessage.status == "pending", RawMessage.claimed_by.is_null(False))
                   .exists()):
            assert ingest.poll() is None and time.monotonic() < deadline, "the ingest claimed nothing"
            time.sleep(0.005)
    finally:
        ingest.kill()
        ingest.wait()
    claimed = RawMessage.select().where(RawMessage.status == "pending", RawMessage.claimed_by.is_null(False)).count()
    assert claimed
    stored = RawMessage.select().count()
    schema.db.close()
    once = subprocess.run([sys.executable, "-m", "helpdesk", "--config", str(config), "run", "--once"],
                          capture_output=True, timeout=120, check=False)
    assert once.returncode == 0, once.stderr
    store_db.connect(load_config(config).database.url)
    assert RawMessage.select().where(RawMessage.status == "done").count() == stored, claimed
    assert _rows() == []
    schema.db.close()
