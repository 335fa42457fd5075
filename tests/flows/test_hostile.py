"""Hostile mail must not stall the service: caps on parts and attachments, end to end."""

from __future__ import annotations

import threading
import time

import pytest

from helpdesk.mail.parse import MAX_PARTS
from helpdesk.runtime import service
from helpdesk.store.attachments import MAX_COUNT
from helpdesk.store.schema import Attachment, RawMessage, Ticket
from tests.flows.test_smtp import send
from tests.mail.test_htmltext import nested
from tests.mail.test_parse_caps import many_parts

pytestmark = pytest.mark.usefixtures("db_url")


def body(message) -> str:
    return message.get_body(("plain",)).get_content()


def test_150_attachments_keep_100_and_the_rest_is_refused_and_told(desk):
    desk.ingest(many_parts(150))
    ticket = Ticket.get()
    stored = Attachment.select().where(Attachment.sha256.is_null(False))
    assert stored.count() == MAX_COUNT
    [summary] = Attachment.select().where(Attachment.refused.is_null(False))
    assert summary.filename == "50 more attachments"
    assert f"limit of {MAX_COUNT} attachments" in summary.refused
    [ack] = desk.to("bob@example.com")
    assert "50 more attachments" in body(ack) and "kept in the original mail" in body(ack)
    [notice] = desk.to("alice@shop.example")
    assert "50 more attachments" in body(notice) and "REFUSED" in body(notice)
    assert ticket.status == "new"
    files = [p for p in desk.app.desk.attachments.root.rglob("*") if p.is_file()]
    assert len(files) == MAX_COUNT


def test_5000_tiny_parts_become_one_ticket_with_the_parts_capped_and_listed(desk):
    desk.ingest(many_parts(5000))
    assert Ticket.select().count() == 1
    assert RawMessage.get().status == "done"
    assert Attachment.select().where(Attachment.sha256.is_null(False)).count() == MAX_COUNT
    refused = {a.filename for a in Attachment.select().where(Attachment.refused.is_null(False))}
    assert refused == {f"{MAX_PARTS - 1 - MAX_COUNT} more attachments", f"{5001 - MAX_PARTS} more MIME parts"}
    [ack] = desk.to("bob@example.com")
    assert f"{5001 - MAX_PARTS} more MIME parts" in body(ack)
    assert len(body(ack)) < 5000                  # one line per summary, not one per part


def test_over_smtp_a_deeply_quoted_mail_does_not_hold_up_the_next_one(desk, monkeypatch):
    """The report: 4 MB in 250 nested quotes took 25 s to parse, and a normal mail sent
    after it over SMTP waited 70 s. Now both are tickets within seconds."""
    loops = []
    monkeypatch.setattr(service, "_stop_on_signals", loops.append)  # signals need the main thread
    runner = threading.Thread(target=service.run, args=(desk.app,), kwargs={"once": False}, daemon=True)
    runner.start()
    port = desk.app.config.smtp_server.port
    try:
        deadline = time.monotonic() + 5
        while not loops and time.monotonic() < deadline:
            time.sleep(0.01)
        assert loops, "service did not start"
        hostile = ("From: Mallory <mallory@example.com>\nTo: support@shop.example\nSubject: deep\n"
                   "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n"
                   + nested(2 << 20, 250).replace(">", ">\n")).encode()   # SMTP: short lines
        started = time.monotonic()
        assert send(port, hostile)[0] == 250
        assert send(port, many_parts(3))[0] == 250
        while Ticket.select().count() < 2 and time.monotonic() - started < 20:   # before: 25 s and 70 s
            time.sleep(0.05)
        assert sorted(t.subject for t in Ticket.select()) == ["deep", "parts"]
        assert {r.status for r in RawMessage.select()} == {"done"}
    finally:
        for loop in loops:
            loop.stop()
        runner.join(30)
    assert not runner.is_alive(), "service did not stop"
