"""A full disk is temporary: the mail waits, pending, and goes through once space is back.

Two real write failures: the attachment writer's file write failing with ``ENOSPC``
(injected at ``os.fdopen``'s file, the one fault a test cannot get from a real full
device on this machine), and SQLite's own ``database or disk is full`` through
``PRAGMA max_page_count``. Neither quarantines the mail; SMTP answers ``452 4.3.1``
while the database cannot grow; the log names the real cause, once.
"""

from __future__ import annotations

import email.message
import errno
import logging
import os

import pytest

from helpdesk.errors import StorageFull
from helpdesk.intake.smtp import SmtpIntake
from helpdesk.intake.spool import Incoming
from helpdesk.store.schema import RawMessage, Ticket, db
from tests.conftest import free_port, mail
from tests.flows.test_smtp import send


def with_attachment(subject: str) -> bytes:
    message = email.message.EmailMessage()
    message["From"] = "Bob <bob@example.com>"
    message["To"] = "support@shop.example"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@example.com>"
    message.set_content("The log is attached.\n")
    message.add_attachment(os.urandom(4000), maintype="application", subtype="octet-stream",
                           filename="debug.bin")
    return message.as_bytes()


def statuses() -> list[str]:
    return [r.status for r in RawMessage.select().order_by(RawMessage.id)]


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("helpdesk") and r.levelno >= logging.WARNING]


@pytest.fixture
def full_attachment_disk(monkeypatch):
    """While ``on``, every attachment file write fails with ENOSPC."""
    real_fdopen = os.fdopen
    state = {"on": True}

    class FullFile:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        return FullFile(handle) if state["on"] else handle
    monkeypatch.setattr("helpdesk.store.attachments.os.fdopen", fdopen)
    return state


@pytest.mark.usefixtures("db_url")
def test_attachments_on_a_full_disk_wait_pending_then_go_through(desk, full_attachment_disk, caplog):
    caplog.set_level(logging.INFO)
    desk.app.store([Incoming(with_attachment("log attached"), "support", "file"),
                    Incoming(mail(subject="plain text"), "support", "file")])
    for _ in range(3):                       # pass after pass while the disk stays full
        tally = desk.app.process()
        assert tally.counts["deferred"] == 1
        assert tally.counts["quarantined"] == 0
    assert statuses() == ["pending", "done"]      # the plain one is not held up
    assert [t.subject for t in Ticket.select()] == ["plain text"]
    files = list((desk.folder / "var" / "attachments").rglob("*"))
    assert not [f for f in files if f.is_file()]   # no half-written temporary file left
    lines = warnings(caplog)
    assert len(lines) == 1, lines
    assert "storage full for the attachments" in lines[0] and "No space left on device" in lines[0]

    full_attachment_disk["on"] = False       # space is back: the next pass takes it by itself
    tally = desk.app.process()
    assert tally.counts["new_ticket"] == 1
    assert statuses() == ["done", "done"]
    desk.app.deliver()
    assert len([m for m in desk.to("bob@example.com") if "log attached" in m["Subject"]]) == 1
    assert "writable again" in warnings(caplog)[-1]


def grow_limit(connection_runner=None, pages: int | None = None) -> None:
    """Cap this connection's database at its current size (``pages`` None) or lift the cap."""
    def apply():
        if pages is None:
            count = db.execute_sql("PRAGMA page_count").fetchone()[0]
            db.execute_sql(f"PRAGMA max_page_count = {count}")
        else:
            db.execute_sql(f"PRAGMA max_page_count = {pages}")
    (connection_runner or (lambda f: f()))(apply)


def test_a_full_sqlite_database_leaves_the_batch_pending_with_the_real_cause(desk, caplog):
    caplog.set_level(logging.INFO)
    desk.app.store([Incoming(mail(subject="big", body=("x" * 70 + "\n") * 3000), "support", "file")])
    grow_limit()
    with pytest.raises(StorageFull, match="database or disk is full") as failed:
        desk.app.process()
    assert "rollback" not in str(failed.value)
    assert statuses() == ["pending"]
    assert Ticket.select().count() == 0
    with pytest.raises(StorageFull):
        desk.app.process()
    lines = warnings(caplog)
    assert len(lines) == 1 and "storage full for the database" in lines[0], lines

    grow_limit(pages=1_000_000_000)
    assert desk.app.process().counts["new_ticket"] == 1
    assert statuses() == ["done"]
    assert "writable again" in warnings(caplog)[-1]


def test_smtp_answers_452_while_the_database_is_full_and_250_after(desk):
    smtp = SmtpIntake(desk.app.config, desk.app.store, host="127.0.0.1", port=free_port())
    _, port = smtp.start()
    try:
        on_smtp_thread = lambda f: smtp.handler.executor.submit(f).result()   # its own connection
        assert send(port, mail(subject="first"))[0] == 250
        grow_limit(on_smtp_thread)
        code, text = send(port, mail(subject="second", body=("y" * 70 + "\n") * 3000))
        assert (code, text[:5]) == (452, b"4.3.1")
        grow_limit(on_smtp_thread, pages=1_000_000_000)
        assert send(port, mail(subject="second", body=("y" * 70 + "\n") * 3000))[0] == 250
    finally:
        smtp.stop()
    desk.app.process()
    assert sorted(t.subject for t in Ticket.select()) == ["first", "second"]
