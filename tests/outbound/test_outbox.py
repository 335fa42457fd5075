"""The outbox through real transports: a Maildir, and a real SMTP relay (aiosmtpd).

Every mail the helpdesk sends is an outbox row written with its cause; these
tests check what leaves (headers, body, envelope), how temporary and permanent
relay failures are kept and retried on the (fixed, advanced) clock, and that a
failing apply leaves neither a ticket nor its mail behind.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import json
import re

import pytest
from aiosmtpd.controller import Controller

from helpdesk.clock import Clock, naive_utc
from helpdesk.intake.spool import Incoming
from helpdesk.mail import replyaddr
from helpdesk.reports.listings import quarantined, ticket_detail
from helpdesk.store.schema import Message, Outbox, Participant, RawMessage, ThreadRef, Ticket
from helpdesk.tickets import desk as tickets
from tests.conftest import START, Desk, free_port, mail, write_config

pytestmark = pytest.mark.usefixtures("db_url")

MINUTE = dt.timedelta(minutes=1)
ACK_HEADERS = {"Content-Type", "MIME-Version", "From", "To", "Reply-To", "Subject", "Date",
               "Message-ID", "X-Helpdesk-Loop", "In-Reply-To", "References", "Auto-Submitted",
               "X-Auto-Response-Suppress"}


def parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def header_lines(data: bytes) -> list[bytes]:
    """The header block's lines, continuation lines folded into their field."""
    head = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0]
    fields: list[bytes] = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def row(kind: str) -> Outbox:
    return Outbox.get(Outbox.kind == kind)


# --------------------------------------------------------------------- Maildir


def test_ack_and_staff_notice_are_delivered_to_the_maildir(desk):
    desk.ingest(mail(frm="Bob Buyer <bob@example.com>", message_id="cust-1",
                     headers={"References": "<earlier@example.com>"}))
    ticket = Ticket.get()
    assert {(o.kind, o.recipient, o.status, o.attempts) for o in Outbox.select()} == {
        ("ack", "bob@example.com", "sent", 1), ("new_ticket", "alice@shop.example", "sent", 1)}
    assert all(o.sent_at == naive_utc(START) and o.last_error is None for o in Outbox.select())

    [ack] = desk.to("bob@example.com")
    [notice] = desk.to("alice@shop.example")
    assert len(desk.outgoing()) == 2

    # Identity and threading.
    assert ack["Message-ID"] != notice["Message-ID"]
    assert re.fullmatch(r"<[0-9a-f]{24}@shop\.example>", ack["Message-ID"])
    assert ack["Message-ID"] == f"<{row('ack').message_id}>"
    assert email.utils.parsedate_to_datetime(ack["Date"]) == START
    assert ack["From"] == "Difmark Support <support@shop.example>"
    assert ack["To"] == "Bob Buyer <bob@example.com>"
    assert ack["In-Reply-To"] == "<cust-1@example.com>"
    assert "<cust-1@example.com>" in ack["References"].split()
    assert "<earlier@example.com>" in ack["References"].split()
    assert f"[T-{ticket.id}]" in ack["Subject"]
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Helpdesk-Loop"]

    # The signed reply address names this ticket and Bob's participant row.
    name, reply_to = email.utils.parseaddr(ack["Reply-To"])
    assert name == "Difmark Support"
    assert re.fullmatch(rf"support\+t{ticket.id}\.\d+\.[a-z2-7]{{10}}@shop\.example", reply_to)
    token = replyaddr.verify(desk.app.desk.secret, desk.app.config.own_addresses, reply_to)
    bob = Participant.get((Participant.ticket == ticket.id) & (Participant.role == "requester"))
    assert token == replyaddr.ReplyToken("t", ticket.id, bob.id)
    assert bob.address == "bob@example.com"
    _, notice_reply_to = email.utils.parseaddr(notice["Reply-To"])
    assert notice_reply_to != reply_to  # one address per participant

    # Body: text and HTML alternatives that name the ticket and the promise.
    assert ack.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in ack.iter_parts()] == ["text/plain", "text/html"]
    text = ack.get_body(("plain",)).get_content()
    html = ack.get_body(("html",)).get_content()
    for body in (text, html):
        assert f"T-{ticket.id}" in body
        assert "4 hours" in body
        assert "Key does not work" in body

    # The outgoing Message-IDs thread replies into the ticket.
    assert ThreadRef.select().where(ThreadRef.msgid == row("ack").message_id).get().ticket_id == ticket.id


def test_each_delivered_mail_gets_a_fresh_message_id(desk):
    desk.ingest(mail(frm="a@example.com"), mail(frm="b@example.com"), mail(frm="c@example.com"))
    ids = [m["Message-ID"] for m in desk.outgoing()]
    assert len(ids) == 6 and len(set(ids)) == 6


def test_nothing_is_delivered_twice(desk):
    desk.ingest(mail())
    report = desk.app.deliver()
    assert (report.sent, report.deferred, report.failed) == (0, 0, 0)
    assert len(desk.outgoing()) == 2


def test_a_row_that_cannot_be_composed_fails_alone_and_its_group_is_delivered(desk):
    now = naive_utc(START)
    Outbox.insert(kind="ack", message_id="broken@shop.example", envelope_from="support@shop.example",
                  recipient="x@example.com", headers="{not json", subject="s", text="t", html=None,
                  status="queued", next_attempt_at=now, created_at=now).execute()
    desk.ingest(mail(frm="a@example.com"), mail(frm="b@example.com"))
    broken = Outbox.get(Outbox.message_id == "broken@shop.example")
    assert broken.status == "failed" and broken.last_error.startswith("could not compose: JSONDecodeError")
    # the four mails of the group, and the admin told of the broken one (issue 12)
    assert len(desk.outgoing()) == 4 + 1
    assert Outbox.select().where(Outbox.status == "sent").count() == 4 + 1
    [told] = desk.to("carol@shop.example")
    assert "x@example.com" in told.get_content() and "could not compose" in told.get_content()


# --------------------------------------------------------------------- a relay


class Relay:
    """An aiosmtpd handler that answers DATA from a script, per recipient."""

    def __init__(self) -> None:
        self.script: dict[str, list[str]] = {}
        self.attempts: list[str] = []
        self.accepted: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        first = envelope.rcpt_tos[0]
        self.attempts.append(first)
        answers = self.script.get(first, [])
        answer = answers.pop(0) if answers else "250 2.0.0 queued as 1234"
        if answer.startswith("250"):
            self.accepted.append((envelope.mail_from, list(envelope.rcpt_tos),
                                  envelope.original_content))
        return answer

    def accepted_for(self, address: str) -> list[bytes]:
        return [data for _, rcpts, data in self.accepted if address in rcpts]


@pytest.fixture
def relay():
    handler = Relay()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


@pytest.fixture
def relay_desk(tmp_path, db_url):
    """A helpdesk whose [outgoing] transport is an SMTP relay on ``port``."""
    made = []

    def build(port: int) -> Desk:
        outgoing = (f'transport = "smtp+plain://127.0.0.1:{port}"\n'
                    '        max_attempts = 3\n'
                    '        timeout = "5s"')
        config = write_config(tmp_path, db_url=db_url, outgoing=outgoing)
        made.append(Desk(tmp_path, config, Clock(START)))
        return made[-1]

    yield build
    for desk in made:
        desk.app.close()


def test_relay_receives_the_ack_with_our_envelope(relay, relay_desk):
    desk = relay_desk(relay.port)
    desk.ingest(mail(message_id="via-relay"))
    assert {o.status for o in Outbox.select()} == {"sent"}
    envelopes = sorted((frm, rcpts) for frm, rcpts, _ in relay.accepted)
    assert envelopes == [("support@shop.example", ["alice@shop.example"]),
                         ("support@shop.example", ["bob@example.com"])]
    [data] = relay.accepted_for("bob@example.com")
    assert b"\r\n" in data and not re.search(rb"(?<!\r)\n", data)  # CRLF on the wire
    ack = parsed(data)
    assert ack["In-Reply-To"] == "<via-relay@example.com>"
    assert desk.outgoing() == []  # nothing went to the Maildir


def test_451_defers_until_the_retry_time_then_sends(relay, relay_desk):
    desk = relay_desk(relay.port)
    relay.script["bob@example.com"] = ["451 4.7.1 Greylisted, try again later"]
    desk.ingest(mail())

    ack, notice = row("ack"), row("new_ticket")
    assert notice.status == "sent"
    assert (ack.status, ack.attempts) == ("queued", 1)
    assert ack.next_attempt_at == naive_utc(START) + MINUTE  # retry_delay = "1m"
    assert "451" in ack.last_error and "Greylisted" in ack.last_error
    assert ack.sent_at is None
    assert relay.attempts == ["bob@example.com", "alice@shop.example"]

    desk.clock.advance(dt.timedelta(seconds=59))
    report = desk.app.deliver()
    assert (report.sent, report.deferred, report.failed) == (0, 0, 0)
    assert relay.attempts == ["bob@example.com", "alice@shop.example"]  # not retried early
    assert row("ack").status == "queued"

    desk.clock.advance(dt.timedelta(seconds=1))
    report = desk.app.deliver()
    assert (report.sent, report.deferred, report.failed) == (1, 0, 0)
    ack = row("ack")
    assert (ack.status, ack.attempts, ack.last_error) == ("sent", 2, None)
    assert ack.sent_at == naive_utc(START) + MINUTE
    assert len(relay.accepted_for("bob@example.com")) == 1
    assert len(relay.accepted_for("alice@shop.example")) == 1


def test_550_fails_the_row_and_the_reason_is_visible_on_the_ticket(relay, relay_desk):
    desk = relay_desk(relay.port)
    relay.script["bob@example.com"] = ["550 5.1.1 <bob@example.com>: mailbox unavailable"]
    desk.ingest(mail())

    ack = row("ack")
    assert (ack.status, ack.attempts) == ("failed", 1)
    assert "550" in ack.last_error and "mailbox unavailable" in ack.last_error
    assert row("new_ticket").status == "sent"

    desk.clock.advance(dt.timedelta(days=1))
    assert desk.app.deliver().sent == 0
    assert relay.attempts.count("bob@example.com") == 1  # never retried

    detail = ticket_detail(f"T-{Ticket.get().id}")
    [shown] = [o for o in detail["outbox"] if o["kind"] == "ack"]
    assert (shown["status"], shown["to"], shown["attempts"]) == ("failed", "bob@example.com", 1)
    assert "550" in shown["last_error"] and "mailbox unavailable" in shown["last_error"]


def test_relay_down_defers_and_gives_up_after_max_attempts(relay_desk):
    desk = relay_desk(free_port())  # nothing listens there
    desk.ingest(mail())

    for attempt, wait in ((1, MINUTE), (2, 2 * MINUTE)):
        for o in Outbox.select():
            assert (o.status, o.attempts) == ("queued", attempt)
            assert "refused connection" in o.last_error
            assert o.next_attempt_at == naive_utc(desk.clock.now()) + wait
        desk.clock.advance(wait)
        desk.app.deliver()

    for o in Outbox.select().where(Outbox.kind != "delivery_failed"):
        assert (o.status, o.attempts) == ("failed", 3)  # max_attempts = 3
        assert o.last_error.startswith("gave up after 3 attempts: ")
        assert "refused connection" in o.last_error
    # issue 12: the admin is told once, by a notice that waits for the relay like any mail
    [notice] = Outbox.select().where(Outbox.kind == "delivery_failed")
    assert (notice.recipient, notice.status) == ("carol@shop.example", "queued")
    desk.clock.advance(dt.timedelta(days=1))
    report = desk.app.deliver()
    assert (report.sent, report.deferred, report.failed) == (0, 1, 0)   # only the notice
    desk.clock.advance(dt.timedelta(days=1))
    report = desk.app.deliver()
    assert (report.sent, report.deferred, report.failed) == (0, 0, 1)   # the notice given up...
    assert Outbox.select().where(Outbox.kind == "delivery_failed").count() == 1   # ...and never told


def test_relay_coming_back_gets_the_deferred_mail(relay_desk):
    port = free_port()
    desk = relay_desk(port)
    desk.ingest(mail())
    assert {o.status for o in Outbox.select()} == {"queued"}

    handler = Relay()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        desk.clock.advance(MINUTE)
        assert desk.app.deliver().sent == 2
    finally:
        controller.stop()
    assert {o.status for o in Outbox.select()} == {"sent"}
    assert sorted(r for _, rcpts, _ in handler.accepted for r in rcpts) == [
        "alice@shop.example", "bob@example.com"]


# ------------------------------------------------------------ header injection


def test_crlf_in_subject_and_display_name_cannot_inject_headers(relay, relay_desk):
    desk = relay_desk(relay.port)
    raw = mail(frm="=?utf-8?q?Bob=0D=0ABcc=3A_evil-name=40x.example?= <bob@example.com>",
               subject="=?utf-8?q?Hi=0D=0ABcc:_evil@x.example?=",
               message_id="inject")
    desk.ingest(raw)
    ticket = Ticket.get()
    assert "Bcc: evil@x.example" in ticket.subject  # the CR LF became a space
    assert "Bcc: evil-name@x.example" in ticket.requester_name

    assert {o.status for o in Outbox.select()} == {"sent"}
    assert sorted(rcpts for _, rcpts, _ in relay.accepted) == [
        ["alice@shop.example"], ["bob@example.com"]]
    [data] = relay.accepted_for("bob@example.com")
    ack = parsed(data)
    assert ack["Bcc"] is None and ack["Cc"] is None
    names = [line.split(b":", 1)[0].decode() for line in header_lines(data)]
    assert sorted(names) == sorted(ACK_HEADERS)
    assert "\r" not in str(ack["Subject"]) and "\n" not in str(ack["Subject"])
    assert "[T-" in ack["Subject"] and "Hi" in ack["Subject"]
    assert email.utils.parseaddr(ack["To"])[1] == "bob@example.com"

    [data] = relay.accepted_for("alice@shop.example")
    notice = parsed(data)
    assert notice["Bcc"] is None and notice["Cc"] is None
    for message in (ack, notice):
        for part in message.walk():
            assert not any(name.lower() == "bcc" for name in part)


def test_outbox_rows_with_raw_crlf_are_still_composed_safely(relay, relay_desk):
    """Defence in depth: even a row holding CR LF (not from parse) cannot add headers."""
    desk = relay_desk(relay.port)
    desk.app.store([Incoming(mail(), "support", "file")])
    desk.app.process()
    ack = row("ack")
    headers = json.loads(ack.headers)
    headers["To"] = ["Bob\r\nBcc: evil@x.example", "bob@example.com"]
    headers["In-Reply-To"] = "<x@example.com>\r\nBcc: evil2@x.example"
    Outbox.update(subject="Hi\r\nBcc: evil3@x.example\r\n\r\nbody", headers=json.dumps(headers),
                  ).where(Outbox.id == ack.id).execute()
    desk.app.deliver()

    assert row("ack").status == "sent"
    [(_, rcpts, data)] = [a for a in relay.accepted if "bob@example.com" in a[1]]
    assert rcpts == ["bob@example.com"]
    message = parsed(data)
    assert message["Bcc"] is None
    names = [line.split(b":", 1)[0].decode() for line in header_lines(data)]
    assert sorted(names) == sorted(ACK_HEADERS)
    assert message["Subject"].startswith("Hi Bcc: evil3@x.example")


# ------------------------------------------------------------ one transaction


def test_failure_after_the_ticket_insert_leaves_neither_ticket_nor_mail(desk, monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("staff directory unavailable")

    monkeypatch.setattr(tickets.Desk, "_staff_notices", broken)
    tally = desk.ingest(mail(message_id="rolled-back"))

    assert tally.counts["quarantined"] == 1
    for model in (Ticket, Outbox, Message, Participant, ThreadRef):
        assert model.select().count() == 0, model.__name__
    assert desk.outgoing() == []
    raw = RawMessage.get()
    assert raw.status == "quarantined"
    assert raw.reason == "apply failed: RuntimeError: staff directory unavailable"
    assert [q["reason"] for q in quarantined()] == [raw.reason]

    # Once the cause is gone, the quarantined mail goes through as one piece.
    monkeypatch.undo()
    outcome = desk.app.pipeline.retry(raw.id)
    assert outcome.kind == "new_ticket"
    desk.app.deliver()
    assert Ticket.select().count() == 1
    assert {o.kind for o in Outbox.select()} == {"ack", "new_ticket"}
    assert len(desk.outgoing()) == 2


def test_two_deliverers_never_send_the_same_row(desk):
    """Two processes (here: two threads with their own connections) drain one outbox."""
    import threading
    import time as _time

    from helpdesk.outbound import outbox as outbox_module
    from helpdesk.outbound.transports import MaildirTransport
    from helpdesk.store.schema import Outbox as OutboxRow

    desk.app.store([__import__("helpdesk.intake.spool", fromlist=["Incoming"]).Incoming(
        mail(frm=f"c{n}@example.com", message_id=f"m{n}", body=f"text {n}\n"), "support", "file")
        for n in range(40)])
    desk.app.process()
    queued = OutboxRow.select().where(OutboxRow.status == "queued").count()
    assert queued == 80

    class Slow:
        """The real Maildir transport, slowed so the two deliverers overlap."""

        def __init__(self):
            self.inner = MaildirTransport(desk.folder / "mailboxes" / "outgoing")

        def send(self, envelope_from, recipients, message):
            _time.sleep(0.002)
            return self.inner.send(envelope_from, recipients, message)

    policy = outbox_module.RetryPolicy()
    reports = []

    def drain():
        reports.append(outbox_module.deliver_due(Slow(), desk.clock, policy))

    workers = [threading.Thread(target=drain) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert sum(r.sent for r in reports) == 80
    assert all(r.sent > 0 for r in reports)          # both really worked
    assert len(desk.outgoing()) == 80                # and nothing went out twice
    assert OutboxRow.select().where(OutboxRow.status == "sent").count() == 80


def test_claims_left_by_a_pass_cut_off_by_the_store_are_due_again_at_the_next_pass(desk, monkeypatch):
    """The claim committed on the server but its pass broke off (the connection went
    before the answer): the next pass sends the mail at once, not after the 10-minute lease."""
    from helpdesk.errors import StoreUnavailable
    from helpdesk.outbound import outbox as outbox_module

    desk.app.store([Incoming(mail(), "support", "file")])
    desk.app.process()

    def cut(ids):
        raise StoreUnavailable("database unavailable: server closed the connection unexpectedly")

    monkeypatch.setattr(outbox_module.outbox_rows, "load", cut)
    with pytest.raises(StoreUnavailable):
        outbox_module.deliver_due(_maildir(desk), desk.clock, outbox_module.RetryPolicy())
    assert Outbox.select().where(Outbox.claimed_by.is_null(False)).count() == 2   # claimed, unsent
    monkeypatch.undo()

    report = outbox_module.deliver_due(_maildir(desk), desk.clock, outbox_module.RetryPolicy())
    assert report.sent == 2
    assert len(desk.outgoing()) == 2
    assert {o.status for o in Outbox.select()} == {"sent"}


def _maildir(desk):
    from helpdesk.outbound.transports import MaildirTransport
    return MaildirTransport(desk.folder / "mailboxes" / "outgoing")


def test_a_group_handed_over_whose_record_the_store_cut_off_is_not_sent_again(desk, monkeypatch):
    """The relay took the group, then the database went (a server restart) before the
    group was marked sent: the next pass writes what happened, it does not send it again
    (found by tests/flows/test_scale_out.py: each worker repeated its group)."""
    from helpdesk.errors import StoreUnavailable
    from helpdesk.outbound import outbox as outbox_module

    desk.app.store([Incoming(mail(), "support", "file")])
    desk.app.process()
    record = outbox_module.outbox_rows.record

    def cut(attempts):
        raise StoreUnavailable("database unavailable: server closed the connection unexpectedly")

    monkeypatch.setattr(outbox_module.outbox_rows, "record", cut)
    with pytest.raises(StoreUnavailable):
        outbox_module.deliver_due(_maildir(desk), desk.clock, outbox_module.RetryPolicy())
    assert len(desk.outgoing()) == 2                  # handed over, not marked
    monkeypatch.setattr(outbox_module.outbox_rows, "record", record)

    outbox_module.deliver_due(_maildir(desk), desk.clock, outbox_module.RetryPolicy())
    assert len(desk.outgoing()) == 2                  # not again
    assert {o.status for o in Outbox.select()} == {"sent"}
    assert Outbox.select().where(Outbox.claimed_by.is_null(False)).count() == 0
