"""SMTP intake over real sockets: smtplib client -> the real aiosmtpd server.

Nothing is mocked on the wire. The server answers 250 only once the raw mail
is stored, 550 for any address that is not one of our mailboxes, 552 above the
size limit and 451 when storing failed; the stored mail becomes a ticket.
"""

from __future__ import annotations

import re
import smtplib
import threading
import time

import peewee as pw
import pytest

from helpdesk.clock import Clock
from helpdesk.errors import StoreError
from helpdesk.intake.smtp import SmtpIntake
from helpdesk.runtime import service
from helpdesk.store import raw as raw_messages
from helpdesk.store.schema import Outbox, RawMessage, Ticket
from tests.conftest import START, Desk, free_port, mail, write_config

pytestmark = pytest.mark.usefixtures("db_url")


# --------------------------------------------------------------------- helpers


def crlf(raw: bytes) -> bytes:
    """What a real MTA puts on the wire."""
    return re.sub(rb"\r?\n", b"\r\n", raw)


def transact(port: int, raw: bytes, rcpts: list[str], mail_from: str = "bob@example.com",
             size: bool = False):
    """One SMTP transaction; returns ([rcpt replies], final DATA reply or None).

    Without ``size`` the MAIL command carries no SIZE, so a too-large message is
    refused at the end of DATA rather than at MAIL.
    """
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.ehlo("client.example")
        options = [f"SIZE={len(raw)}"] if size else []
        code, text = client.mail(mail_from, options)
        if code != 250:
            return [], (code, text)
        replies = [client.rcpt(r) for r in rcpts]
        if not any(code == 250 for code, _ in replies):
            client.rset()
            return replies, None
        return replies, client.data(crlf(raw))


def send(port: int, raw: bytes, to: str = "support@shop.example") -> tuple[int, bytes]:
    replies, final = transact(port, raw, [to])
    assert [code for code, _ in replies] == [250]
    return final


def acks(desk, address="bob@example.com"):
    return [m for m in desk.to(address) if m["Auto-Submitted"] == "auto-replied"]


@pytest.fixture
def start_intake(desk):
    """Start an SmtpIntake for ``desk`` on a free port; stopped after the test."""
    running = []

    def start(store=None, on_stored=lambda: None, config=None) -> int:
        port = free_port()
        smtp = SmtpIntake(config or desk.app.config, store or desk.app.store,
                          on_stored=on_stored, host="127.0.0.1", port=port)
        host, bound = smtp.start()
        running.append(smtp)
        assert (host, bound) == ("127.0.0.1", port)
        return port

    yield start
    for smtp in running:
        smtp.stop()


@pytest.fixture
def port(start_intake) -> int:
    return start_intake()


# ------------------------------------------------------------- acceptance


@pytest.mark.parametrize("rcpt", [
    "support@shop.example",
    "support+anything@shop.example",
    "SUPPORT+Order-17@Shop.Example",
    "Support@SHOP.example",
])
def test_mail_to_our_address_is_stored_then_becomes_a_ticket(desk, port, rcpt):
    raw = mail(message_id="accept-1", to=rcpt)
    code, text = send(port, raw, rcpt)
    assert code == 250, text

    row = RawMessage.get()
    assert (row.status, row.source, row.mailbox) == ("pending", "smtp", "support")
    assert row.envelope_to == rcpt.lower()
    assert row.message_id == "<accept-1@example.com>"
    assert bytes(row.raw).startswith(b"Return-Path: <bob@example.com>\r\n")
    assert b"my key does not work" in bytes(row.raw)
    assert Ticket.select().count() == 0  # stored, not yet processed

    tally = desk.app.process()
    assert tally.counts["new_ticket"] == 1
    ticket = Ticket.get()
    assert (ticket.requester, ticket.subject, ticket.mailbox) == (
        "bob@example.com", "Key does not work", "support")
    assert RawMessage.get().status == "done"


def test_every_accepted_recipient_is_kept_in_the_envelope(desk, port):
    rcpts = ["support@shop.example", "Disputes+X@shop.example"]
    replies, (code, _) = transact(port, mail(to="support@shop.example"), rcpts)
    assert [c for c, _ in replies] == [250, 250]
    assert code == 250
    [row] = RawMessage.select()
    assert row.envelope_to.split(",") == ["support@shop.example", "disputes+x@shop.example"]
    assert row.mailbox == "support"  # the first recipient's mailbox


# ------------------------------------------------------------- refusals


@pytest.mark.parametrize("rcpt", [
    "other@elsewhere.example",
    "support@other.example",
    "alice@shop.example",          # a staff address is not a mailbox
    "support.team@shop.example",
    "<>",
])
def test_foreign_recipient_is_refused_with_550_and_nothing_is_stored(desk, port, rcpt):
    replies, final = transact(port, mail(to=rcpt), [rcpt])
    [(code, text)] = replies
    assert code == 550
    assert b"no such mailbox" in text and b"does not relay" in text
    assert final is None
    assert RawMessage.select().count() == 0


def test_sendmail_to_a_foreign_address_raises_recipients_refused(desk, port):
    with (smtplib.SMTP("127.0.0.1", port, timeout=5) as client,
          pytest.raises(smtplib.SMTPRecipientsRefused) as caught):
        client.sendmail("bob@example.com", ["other@elsewhere.example"], crlf(mail()))
    assert caught.value.recipients["other@elsewhere.example"][0] == 550
    assert RawMessage.select().count() == 0


def test_mixed_recipients_store_once_for_the_good_one(desk, port):
    rcpts = ["other@elsewhere.example", "support+x@shop.example", "alice@shop.example"]
    replies, (code, _) = transact(port, mail(), rcpts)
    assert [c for c, _ in replies] == [550, 250, 550]
    assert code == 250
    [row] = RawMessage.select()
    assert row.envelope_to == "support+x@shop.example"
    desk.app.process()
    desk.app.deliver()
    assert Ticket.select().count() == 1
    assert len(acks(desk)) == 1


@pytest.fixture
def small_desk(tmp_path, db_url):
    made = Desk(tmp_path, write_config(tmp_path, db_url=db_url, limits='max_message_size = "10KB"'),
                Clock(START))
    yield made
    made.app.close()


def test_message_above_the_size_limit_gets_552_and_is_not_stored(small_desk, start_intake):
    assert small_desk.app.config.limits.max_message_size == 10 * 1024
    port = start_intake(store=small_desk.app.store, config=small_desk.app.config)
    big = mail(body="x" * 70 + "\n") + (("y" * 70 + "\n") * 200).encode()
    assert len(big) > 10 * 1024

    # Announced with SIZE: refused at MAIL already.
    _, (code, text) = transact(port, big, ["support@shop.example"], size=True)
    assert code == 552, text
    # Not announced: the whole message is read, then refused.
    replies, (code, text) = transact(port, big, ["support@shop.example"])
    assert [c for c, _ in replies] == [250]
    assert code == 552, text
    assert RawMessage.select().count() == 0

    # Just below the limit is fine.
    code, _ = send(port, mail(body="small\n"))
    assert code == 250
    assert RawMessage.select().count() == 1


def padded(size: int, **fields) -> bytes:
    """A CRLF message of exactly ``size`` bytes, in lines aiosmtpd accepts."""
    base = crlf(mail(body="x\n", **fields))
    pad = size - len(base)
    return base + (b"y" * 98 + b"\r\n") * (pad // 100) + b"z" * (pad % 100 - 2) + b"\r\n"


def test_what_is_accepted_is_never_too_large_for_the_pipeline(small_desk, start_intake):
    """The stored copy carries the Return-Path line, and it must still fit the limit.

    Before, a mail of exactly the limit got 250 from aiosmtpd and was then
    quarantined as too large: the sender believed it delivered, no ticket came.
    """
    limit = small_desk.app.config.limits.max_message_size
    port = start_intake(store=small_desk.app.store, config=small_desk.app.config)
    return_path = len(b"Return-Path: <bob@example.com>\r\n")

    at_limit = padded(limit, message_id="at-limit")
    assert len(at_limit) == limit
    replies, (code, text) = transact(port, at_limit, ["support@shop.example"], size=True)
    assert [c for c, _ in replies] == [250]  # SIZE=limit passes MAIL; the stored copy would not fit
    assert (code, text) == (552, b"5.3.4 Message too big for this server")
    assert RawMessage.select().count() == 0

    fits = padded(limit - return_path, message_id="fits")
    _, (code, _) = transact(port, fits, ["support@shop.example"], size=True)
    assert code == 250
    assert RawMessage.get().size == limit
    assert small_desk.app.process().counts["new_ticket"] == 1


# ------------------------------------------------------------- store failures


def test_store_that_raises_gives_451_then_a_resend_is_accepted(desk, start_intake):
    broken = threading.Event()
    broken.set()
    stored_calls = []

    def store(batch):
        if broken.is_set():
            raise StoreError("could not store raw message: disk I/O error")
        return desk.app.store(batch)

    port = start_intake(store=store, on_stored=lambda: stored_calls.append(1))
    raw = mail(message_id="retry-me")
    code, text = send(port, raw)
    assert code == 451 and text.startswith(b"4.3.0")
    assert RawMessage.select().count() == 0
    assert stored_calls == []  # the loop is not woken for nothing

    broken.clear()
    code, _ = send(port, raw)
    assert code == 250
    assert RawMessage.select().count() == 1
    assert stored_calls == [1]


def test_database_failure_mid_store_rolls_back_and_answers_451(desk, port, monkeypatch):
    """The rows are inserted, then the transaction fails: nothing may remain."""
    inside = []

    def fail_after_insert(keys):
        inside.append(RawMessage.select().count())  # in the transaction: inserted
        raise pw.OperationalError("database is locked")

    monkeypatch.setattr(raw_messages, "_ids_for", fail_after_insert)
    raw = mail(message_id="half")
    code, _ = send(port, raw)
    assert code == 451
    assert inside == [1]
    assert RawMessage.select().count() == 0

    monkeypatch.undo()
    code, _ = send(port, raw)
    assert code == 250
    [row] = RawMessage.select()
    assert row.message_id == "<half@example.com>"


# ------------------------------------------------------------- dedupe


def test_same_message_twice_over_smtp_is_one_ticket_and_one_ack(desk, port):
    raw = mail(message_id="twice")
    assert send(port, raw)[0] == 250
    desk.app.process()
    desk.app.deliver()
    # A sender that missed our 250 sends again, from another envelope sender.
    _, (code, _) = transact(port, raw, ["support+dup@shop.example"], mail_from="relay@example.net")
    assert code == 250
    desk.app.process()
    desk.app.deliver()
    assert RawMessage.select().count() == 1
    assert Ticket.select().count() == 1
    assert len(acks(desk)) == 1


@pytest.mark.parametrize("smtp_first", [True, False])
def test_same_message_over_smtp_and_from_a_file_is_one_ticket(desk, port, smtp_first):
    raw = mail(message_id="both-ways")  # LF line ends, no Return-Path: as a saved file
    assert b"\r\n" not in raw
    if smtp_first:
        assert send(port, raw)[0] == 250
        desk.app.process()
        tally = desk.ingest(raw)
    else:
        desk.ingest(raw)
        assert send(port, raw)[0] == 250
        tally = desk.app.process()
        desk.app.deliver()
    assert tally.counts["new_ticket"] == 0
    assert RawMessage.select().count() == 1
    assert Ticket.select().count() == 1
    assert len(acks(desk)) == 1


def test_on_stored_is_called_after_the_row_is_committed(desk, start_intake):
    seen = []
    done = threading.Event()

    def on_stored():
        seen.append(RawMessage.select().where(RawMessage.status == "pending").count())
        done.set()

    port = start_intake(on_stored=on_stored)
    assert send(port, mail())[0] == 250
    assert done.wait(2)
    assert seen == [1]

    _, final = transact(port, mail(), ["other@elsewhere.example"])
    assert final is None
    assert seen == [1]


# ------------------------------------------------------------- the service


def test_service_turns_an_smtp_mail_into_a_ticket_and_an_ack(desk, monkeypatch):
    """``service.run`` as in production, in a thread, stopped through its loop."""
    loops = []
    monkeypatch.setattr(service, "_stop_on_signals", loops.append)  # signals need the main thread
    errors = []

    def run():
        try:
            service.run(desk.app, once=False)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    port = desk.app.config.smtp_server.port
    try:
        deadline = time.monotonic() + 5
        while not loops and time.monotonic() < deadline:
            time.sleep(0.01)
        assert loops, f"service did not start: {errors}"
        started = time.monotonic()
        assert send(port, mail(message_id="via-service"))[0] == 250

        while time.monotonic() - started < 5:
            sent = Outbox.select().where((Outbox.kind == "ack") & (Outbox.status == "sent"))
            if Ticket.select().count() and sent.exists():
                break
            time.sleep(0.02)
        assert time.monotonic() - started < 5
        ticket = Ticket.get()
        [ack] = acks(desk)
        assert f"[T-{ticket.id}]" in ack["Subject"]
        assert ack["In-Reply-To"] == "<via-service@example.com>"
        assert Outbox.get(Outbox.kind == "ack").status == "sent"
    finally:
        for loop in loops:
            loop.stop()
        runner.join(5)
    assert not runner.is_alive(), "service did not stop"
    assert errors == []
    # The SMTP server went down with the service.
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", port, timeout=2)
