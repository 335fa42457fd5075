"""Remembered hard bounces: no automatic mail to an address that bounced with a 5.x.x status
for ``[limits] bounce_suppression``; staff answers still go, and the staff are told.

Bounces arrive as real delivery status notifications through the pipeline; the
helpdesk runs on a fake clock, on both engines, delivering to its Maildir.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from helpdesk.cli import main
from helpdesk.clock import Clock, naive_utc
from helpdesk.intake.spool import Incoming
from helpdesk.reports.listings import ticket_detail
from helpdesk.staff import act
from helpdesk.staff.commands import Plan
from helpdesk.store.schema import Bounce, Outbox, Ticket, db
from tests.conftest import START, Desk, mail, write_config
from tests.pipeline.test_batches import BOUNCE

DAY = dt.timedelta(days=1)


def bounce_for(desk: Desk, address: str, status: str = "5.1.1") -> None:
    """The MTA's report that our last mail to ``address`` could not be delivered."""
    [*_, last] = desk.to(address)
    report = (BOUNCE.replace(b"gone@example.com", address.encode())
              .replace(b"MSGID", last["Message-ID"].strip("<>").encode())
              .replace(b"Status: 5.1.1", f"Status: {status}".encode())
              .replace(b"<bounce1@mx.example.com>", f"<{uuid.uuid4().hex}@mx.example.com>".encode()))
    assert desk.ingest(report).counts["bounce"] == 1


def make(tmp_path, db_url, limits: str = "") -> Desk:
    return Desk(tmp_path, write_config(tmp_path, db_url=db_url, limits=limits), Clock(START))


@pytest.fixture
def desk(tmp_path, db_url):
    made = make(tmp_path, db_url)
    yield made
    made.app.close()


def kinds_to(desk: Desk, address: str) -> list[str]:
    return [o.kind for o in Outbox.select().where((Outbox.recipient == address) & (Outbox.status == "sent"))
            .order_by(Outbox.id)]


def test_after_a_hard_bounce_the_address_gets_no_acknowledgement_until_the_window_ends(desk):
    desk.ingest(mail(message_id="first"))
    bounce_for(desk, "bob@example.com")
    assert Bounce.get().status == "5.1.1"

    desk.clock.advance(dt.timedelta(hours=1))
    desk.ingest(mail(subject="Another try", message_id="second"))
    ack = Outbox.select().where(Outbox.kind == "ack").order_by(Outbox.id.desc()).get()
    assert ack.status == "suppressed" and ack.attempts == 0
    assert ack.last_error == ("not sent: bob@example.com bounced (5.1.1) on 2026-11-26 09:00 UTC; "
                              "no automatic mail to it until 2026-12-03 09:00 UTC")
    assert len(desk.to("bob@example.com")) == 1          # only the first acknowledgement ever left
    assert len(desk.to("alice@shop.example")) == 2       # the staff still hear of both tickets

    # a "status" request is automatic mail too
    desk.ingest(mail(subject="status", message_id="status"))
    assert Outbox.get(Outbox.kind == "status").status == "suppressed"

    # the window ends seven days after the bounce
    desk.clock.set(START + 7 * DAY + dt.timedelta(minutes=1))
    desk.ingest(mail(subject="A week later", message_id="third"))
    assert kinds_to(desk, "bob@example.com") == ["ack", "ack"]


def test_a_soft_bounce_or_a_report_without_status_holds_nothing_back(desk):
    desk.ingest(mail(message_id="first"))
    bounce_for(desk, "bob@example.com", status="4.2.2")
    desk.ingest(mail(subject="Again", message_id="second"))
    assert kinds_to(desk, "bob@example.com") == ["ack", "ack"]
    assert Outbox.select().where(Outbox.status == "suppressed").count() == 0


def test_bounce_suppression_off_holds_nothing_back(tmp_path, db_url):
    desk = make(tmp_path, db_url, limits='bounce_suppression = "off"')
    try:
        desk.ingest(mail(message_id="first"))
        bounce_for(desk, "bob@example.com")
        desk.ingest(mail(subject="Again", message_id="second"))
        assert kinds_to(desk, "bob@example.com") == ["ack", "ack"]
    finally:
        desk.app.close()


def test_mail_queued_before_the_bounce_arrived_is_held_back_when_it_would_leave(desk):
    desk.ingest(mail(message_id="first"))
    bounce_for(desk, "bob@example.com")
    # queued but not delivered yet (the service between two passes)...
    desk.app.store([Incoming(mail(subject="queued", message_id="q"), "support", "file")])
    desk.app.process()
    Bounce.delete().execute()
    assert desk.app.deliver().sent == 2      # no bounce known at the moment of sending: it goes
    desk.app.store([Incoming(mail(subject="queued 2", message_id="q2"), "support", "file")])
    desk.app.process()
    bounce_for(desk, "bob@example.com")      # ...and the bounce arrives before the pass
    assert Outbox.select().where(Outbox.status == "suppressed").count() == 1


def test_the_staff_answer_still_goes_and_the_agent_is_told_the_address_bounced(desk):
    desk.ingest(mail(message_id="first"))
    number = Ticket.get().id
    bounce_for(desk, "bob@example.com")
    alice = desk.app.config.staff_member("alice@shop.example")
    act.from_command_line(desk.app.desk, number, alice, Plan(text="Here is a new key: ABC-123"))
    desk.app.deliver()

    [_, answer] = desk.to("bob@example.com")
    assert "ABC-123" in answer.get_body(("plain",)).get_content() and answer["Auto-Submitted"] is None
    [told] = [m for m in desk.to("alice@shop.example") if "may not arrive" in str(m["Subject"])]
    assert told["Subject"] == f"[T-{number}] Your answer may not arrive: bob@example.com bounced"
    body = told.get_content()
    assert "bob@example.com: 5.1.1 on 2026-11-26 09:00 UTC" in body and "user unknown" in body
    assert "no automatic mail (acknowledgements, notices) until 2026-12-03 09:00 UTC" in body

    # an answer after the window tells nobody
    desk.clock.advance(8 * DAY)
    act.from_command_line(desk.app.desk, number, alice, Plan(text="Did it work?"))
    desk.app.deliver()
    assert len([m for m in desk.to("alice@shop.example") if "may not arrive" in str(m["Subject"])]) == 1


def test_staff_never_lose_their_notices_to_a_bounce(desk):
    desk.ingest(mail(message_id="first"))
    Bounce.create(address="alice@shop.example", status="5.2.2", created_at=naive_utc(START))
    desk.ingest(mail(subject="Second", message_id="second"))
    assert kinds_to(desk, "alice@shop.example") == ["new_ticket", "new_ticket"]


def test_show_lists_the_bounce_and_until_when_mail_is_held_back(tmp_path, db_url, capsys):
    desk = make(tmp_path, db_url)
    try:
        desk.ingest(mail(message_id="first"))
        bounce_for(desk, "bob@example.com")
        number = Ticket.get().id
        detail = ticket_detail(f"T-{number}", naive_utc(START), dt.timedelta(days=7))
        [shown] = detail["bounces"]
        assert shown == {"address": "bob@example.com", "status": "5.1.1", "hard": True,
                         "diagnostic": "smtp; 550 5.1.1 user unknown", "at": "2026-11-26T09:00:00Z",
                         "held_until": "2026-12-03T09:00:00Z"}
        later = ticket_detail(f"T-{number}", naive_utc(START + 8 * DAY), dt.timedelta(days=7))
        assert later["bounces"][0]["held_until"] is None

        config = str(desk.config_path)      # the command line, at the real time (after the window)
        assert main(["--config", config, "show", f"T-{number}"]) == 0
        out = capsys.readouterr().out
        assert "bounced: bob@example.com 5.1.1 at 2026-11-26T09:00:00Z" in out and "user unknown" in out
        assert main(["--config", config, "show", f"T-{number}", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["bounces"][0]["address"] == "bob@example.com"
    finally:
        desk.app.close()


def test_the_check_is_one_query_per_group_not_one_per_mail(tmp_path):
    """20 acknowledgements to 20 addresses, three of which bounced, and 20 staff notices:
    one group of mail (``outbox.GROUP``), one bounce query; 80 mails, two."""
    desk = make(tmp_path, None)
    try:
        for n in range(3):
            Bounce.create(address=f"c{n}@example.com", status="5.1.1", created_at=naive_utc(START))
        for customers, queries in ((20, 1), (40, 2)):
            desk.app.store([Incoming(mail(frm=f"c{n}@example.com", message_id=f"m{customers}-{n}"),
                                     "support", "file") for n in range(customers)])
            desk.app.process()
            seen: list[str] = []
            db.connection().set_trace_callback(seen.append)
            try:
                desk.app.deliver()
            finally:
                db.connection().set_trace_callback(None)
            assert len([q for q in seen if 'FROM "bounce"' in q]) == queries
        assert Outbox.select().where(Outbox.status == "suppressed").count() == 3 + 3
        assert Outbox.select().where(Outbox.status == "sent").count() == 17 + 20 + 37 + 40
    finally:
        desk.app.close()
