"""store.recovery: which errors are temporary, and one log line per outage."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat

import peewee as pw
import pytest

from helpdesk.errors import StorageFull, StoreUnavailable
from helpdesk.store import db as store_db
from helpdesk.store import recovery
from helpdesk.store.schema import db


def chained(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__context__ = inner      # as raising ``outer`` while handling ``inner`` leaves it
    return outer


@pytest.mark.parametrize("exc, kind", [
    (pw.OperationalError("terminating connection due to administrator command"), StoreUnavailable),
    (pw.InterfaceError("connection already closed"), StoreUnavailable),
    (pw.OperationalError("the connection is closed"), StoreUnavailable),
    (pw.OperationalError("database is locked"), StoreUnavailable),
    (pw.OperationalError("database or disk is full"), StorageFull),
    (OSError(errno.ENOSPC, "No space left on device"), StorageFull),
    # SQLite rolls back by itself on a full disk; the rollback that follows hides the cause
    (chained(pw.OperationalError("cannot rollback - no transaction is active"),
             pw.OperationalError("database or disk is full")), StorageFull),
    (pw.IntegrityError("UNIQUE constraint failed: ticket.id"), None),
    (pw.OperationalError("no such table: ticket"), None),
    (ValueError("bad"), None),
])
def test_classify(exc, kind):
    assert recovery.classify(exc) is kind


def test_the_real_cause_is_named_not_the_failed_rollback():
    exc = chained(pw.OperationalError("cannot rollback - no transaction is active"),
                  pw.OperationalError("database or disk is full"))
    mapped = recovery.temporary(exc)
    assert isinstance(mapped, StorageFull)
    assert "database or disk is full" in str(mapped)
    assert "rollback" not in str(mapped)


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_one_line_per_outage_however_many_threads_and_attempts(caplog):
    caplog.set_level(logging.WARNING, "helpdesk.store")
    now = FakeTime()
    outage = recovery.Outage(now=now)
    gens = [outage.opened() for _ in range(3)]          # three threads' connections
    outage.lost(gens[0], "terminating connection")      # the first finds its connection dead
    assert outage.may_try()                              # and reconnects at once
    for _ in range(5):
        outage.failed("connection refused")              # the server is still away
        assert not outage.may_try()                      # refused without an attempt
        now.t += 10
    outage.lost(gens[1], "terminating connection")      # the same outage, found by another
    new = outage.opened()
    outage.lost(gens[2], "terminating connection")      # found late, after the recovery
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("database connection lost")
    assert messages[1].startswith("database connection back after")
    outage.lost(new, "terminating connection")          # a connection opened since: a new outage
    assert len(caplog.records) == 3


def test_backoff_doubles_up_to_five_seconds():
    now = FakeTime()
    outage = recovery.Outage(now=now)
    waits = []
    for _ in range(8):
        outage.failed("refused")
        waits.append(round(outage.next_try - now.t, 3))
    assert waits == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    outage.opened()
    outage.failed("refused")
    assert round(outage.next_try - now.t, 3) == 0.2


def test_a_locked_sqlite_file_is_unavailable_not_a_crash(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "helpdesk.store")
    path = tmp_path / "h.db"
    store_db.connect(f"sqlite:///{path}", wait=0.2)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(3):
            with pytest.raises(StoreUnavailable, match="database is locked"), store_db.write_transaction():
                db.execute_sql("SELECT 1")
    finally:
        holder.rollback()
        holder.close()
    with store_db.write_transaction():        # and usable again at once
        db.execute_sql("SELECT 1")
    db.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages       # once when found, once when over
    assert "database is locked" in messages[0]
    assert messages[1].startswith("database available again after")


def test_a_new_sqlite_database_is_private(tmp_path):
    """Like the secret key: 0600 whatever the umask, its WAL and shared memory too."""
    old = os.umask(0o022)
    try:
        store_db.connect(f"sqlite:///{tmp_path / 'new.db'}")
        with store_db.write_transaction():
            db.execute_sql("SELECT 1")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    finally:
        os.umask(old)
        db.close()
    assert modes == {"new.db": 0o600, "new.db-wal": 0o600, "new.db-shm": 0o600}


def test_an_existing_sqlite_file_keeps_its_mode(tmp_path):
    path = tmp_path / "old.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    store_db.connect(f"sqlite:///{path}")
    db.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
