"""Routing, threading, dedupe, loops and quarantine, end to end, on both databases."""

from __future__ import annotations

import re

import pytest

from helpdesk.mail import replyaddr
from helpdesk.mail.loop import loop_id
from helpdesk.reports.listings import quarantined, ticket_detail
from helpdesk.store.schema import Bounce, Message, Outbox, Participant, RawMessage, Ticket
from tests.conftest import mail

pytestmark = pytest.mark.usefixtures("db_url")


def acks(desk, address="bob@example.com"):
    return [m for m in desk.to(address) if m["Auto-Submitted"] == "auto-replied"]


def reply_to_of(message) -> str:
    return re.search(r"<([^>]+)>", str(message["Reply-To"])).group(1)


def test_new_mail_becomes_a_ticket_with_ack_and_staff_notice(desk):
    tally = desk.ingest(mail(frm="Bob Buyer <bob@example.com>", subject="Key does not work"))
    assert tally.counts["new_ticket"] == 1
    ticket = Ticket.get()
    assert (ticket.status, ticket.requester, ticket.subject) == ("new", "bob@example.com", "Key does not work")
    assert ticket.requester_name == "Bob Buyer"
    assert Message.get().body == "Hello,\n\nmy key does not work.\n\nBob"
    [ack] = acks(desk)
    assert f"[T-{ticket.id}]" in ack["Subject"]
    [notice] = desk.to("alice@shop.example")
    assert "my key does not work" in notice.get_body(("plain",)).get_content()
    assert desk.to("carol@shop.example") == []  # admins do not get new-ticket notices


def test_reply_to_is_not_the_requester_but_is_recorded(desk):
    desk.ingest(mail(frm="Shop Bot <noreply@forms.example>", headers={"Reply-To": "Real Person <real@example.com>"}))
    assert (Ticket.get().requester, Ticket.get().reply_to) == ("noreply@forms.example", "real@example.com")
    assert acks(desk, "real@example.com") == []
    assert len(acks(desk, "noreply@forms.example")) == 1


def test_reply_through_signed_address_threads_and_reopens_resolved(desk):
    desk.ingest(mail(message_id="first"))
    [ack] = acks(desk)
    Ticket.update(status="resolved").execute()
    reply = mail(to=reply_to_of(ack), subject="Thanks", message_id="second",
                 body="One more thing.\n\nOn Thu, 26 Nov 2026 at 09:00, Support wrote:\n> old text\n")
    tally = desk.ingest(reply)
    assert tally.counts["reply"] == 1
    assert Ticket.select().count() == 1
    assert Ticket.get().status == "open"
    assert Message.select().order_by(Message.id.desc()).first().body == "One more thing."
    assert len(acks(desk)) == 1  # a reply gets no second acknowledgement


def test_signed_address_used_by_someone_else_does_not_post_into_the_ticket(desk):
    desk.ingest(mail(message_id="first"))
    [ack] = acks(desk)
    desk.ingest(mail(frm="mallory@evil.example", to=reply_to_of(ack), subject="hijack"))
    assert Ticket.select().count() == 2
    assert Ticket.get(Ticket.requester == "mallory@evil.example").messages.count() == 1


def test_forged_mac_is_not_a_signed_address(desk):
    desk.ingest(mail(message_id="first"))
    ticket = Ticket.get()
    pid = Participant.get(Participant.role == "requester").id
    forged = f"support+t{ticket.id}.{pid}.aaaaaaaaaa@shop.example"
    assert replyaddr.verify(desk.app.desk.secret, frozenset({"support@shop.example"}), forged) is None
    desk.ingest(mail(to=forged, subject="no token, no refs"))
    assert Ticket.select().count() == 2


def test_reply_addresses_handed_out_earlier_still_verify():
    """The MAC is HMAC-SHA256 in base32, cut to 10 digits: pinned, so a faster
    encoding can never invalidate the addresses customers already hold."""
    secret, mailboxes = b"k" * 32, frozenset({"support@shop.example"})
    token = replyaddr.ReplyToken("t", 42, 7)
    assert replyaddr.sign(secret, token) == "t42.7.zfloxqceeg"
    assert replyaddr.verify(secret, mailboxes, "support+t42.7.zfloxqceeg@shop.example") == token
    assert replyaddr.verify(secret, mailboxes, "support+t42.7.zfloxqceeh@shop.example") is None


def test_reply_by_references_threads(desk):
    desk.ingest(mail(message_id="root"))
    desk.ingest(mail(subject="Re: Key does not work", message_id="child",
                     headers={"In-Reply-To": "<root@example.com>", "References": "<root@example.com>"}))
    assert Ticket.select().count() == 1
    assert Ticket.get().messages.count() == 2


def test_reply_to_our_ack_message_id_threads(desk):
    desk.ingest(mail(message_id="root"))
    [ack] = acks(desk)
    desk.ingest(mail(subject="Re: ack", headers={"In-Reply-To": ack["Message-ID"]}))
    assert Ticket.select().count() == 1


def test_reply_before_its_parent_still_ends_on_one_ticket(desk):
    child = mail(subject="Re: Key does not work", message_id="child",
                 headers={"In-Reply-To": "<root@example.com>", "References": "<root@example.com>"})
    grandchild = mail(subject="Re: Re: Key", message_id="grandchild",
                      headers={"References": "<root@example.com> <child@example.com>"})
    root = mail(message_id="root")
    desk.ingest(grandchild)
    desk.ingest(root, child)
    assert Ticket.select().count() == 1
    assert Ticket.get().messages.count() == 3
    assert Ticket.get().subject == "Re: Key".removeprefix("Re: ")  # prefixes stripped


def test_subject_token_threads_only_for_participants(desk):
    desk.ingest(mail(message_id="root"))
    number = Ticket.get().id
    desk.ingest(mail(subject=f"[T-{number}] more info"))
    assert Ticket.select().count() == 1
    desk.ingest(mail(frm="stranger@else.example", subject=f"[T-{number}] let me in"))
    assert Ticket.select().count() == 2
    assert Ticket.get_by_id(number).messages.count() == 2


def test_reply_to_closed_ticket_opens_a_follow_up(desk):
    desk.ingest(mail(message_id="root"))
    Ticket.update(status="closed").execute()
    desk.ingest(mail(subject="Re: again", headers={"In-Reply-To": "<root@example.com>"}))
    follow_up = Ticket.select().order_by(Ticket.id.desc()).first()
    assert follow_up.follow_up_of == Ticket.select().order_by(Ticket.id).first().id
    assert len(acks(desk)) == 2


def test_same_message_twice_makes_one_ticket_and_one_ack(desk):
    raw = mail(message_id="dup")
    desk.ingest(raw)
    tally = desk.ingest(raw, raw)
    assert tally.counts["duplicate"] == 2
    assert (Ticket.select().count(), RawMessage.select().count(), len(acks(desk))) == (1, 1, 1)


def test_copy_from_another_source_with_transport_headers_is_a_duplicate(desk):
    raw = mail(message_id="dup")
    relayed = b"Return-Path: <bob@example.com>\r\nReceived: from mx by us\r\n" + raw.replace(b"\n", b"\r\n")
    desk.ingest(raw, source="maildir")
    desk.ingest(relayed, source="smtp")
    assert (Ticket.select().count(), len(acks(desk))) == (1, 1)


def test_without_message_id_the_digest_decides(desk):
    one = mail(headers={"Message-ID": None}, body="first text\n")
    two = mail(headers={"Message-ID": None}, body="second text\n")
    desk.ingest(one, one, two)
    assert Ticket.select().count() == 2


def test_same_message_id_different_content_is_not_a_duplicate(desk):
    desk.ingest(mail(message_id="same", body="one\n"), mail(message_id="same", body="two\n"))
    assert RawMessage.select().count() == 2


@pytest.mark.parametrize("headers, reason", [
    ({"Auto-Submitted": "auto-replied"}, "auto-reply"),
    ({"X-Autoreply": "yes"}, "auto-reply"),
    ({"Precedence": "auto_reply"}, "auto-reply"),
])
def test_unthreaded_auto_reply_is_dropped_with_reason_and_never_acknowledged(desk, headers, reason):
    tally = desk.ingest(mail(subject="Out of office", headers=headers))
    assert tally.counts["dropped"] == 1
    row = RawMessage.get()
    assert row.status == "dropped" and reason in row.reason
    assert desk.outgoing() == []


def test_auto_reply_that_threads_is_recorded_silently(desk):
    desk.ingest(mail(message_id="root"))
    [ack] = acks(desk)
    Ticket.update(status="resolved").execute()
    desk.ingest(mail(subject="Out of office", headers={"Auto-Submitted": "auto-replied",
                                                       "In-Reply-To": ack["Message-ID"]}))
    ticket = Ticket.get()
    assert ticket.status == "resolved"  # an auto-reply re-opens nothing
    assert Message.select().where(Message.auto == True).count() == 1
    assert len(desk.outgoing()) == 2  # the first ack and staff notice only


@pytest.mark.parametrize("headers", [{"Precedence": "bulk"}, {"List-Id": "<news.example.com>"},
                                     {"Precedence": "list"}])
def test_bulk_mail_makes_a_ticket_without_acknowledgement(desk, headers):
    desk.ingest(mail(frm="news@example.com", headers=headers))
    assert Ticket.select().count() == 1
    assert acks(desk, "news@example.com") == []


@pytest.mark.parametrize("frm, headers", [
    ("support@shop.example", {}),
    ("Support <support+t1.1.abcdefghij@shop.example>", {}),
    ("someone@example.com", {"X-Helpdesk-Loop": "ours"}),
])
def test_our_own_mail_is_dropped_as_a_loop(desk, frm, headers):
    headers = {name: loop_id(desk.app.desk.secret) for name in headers}   # the instance's own id
    tally = desk.ingest(mail(frm=frm, headers=headers))
    assert tally.counts["dropped"] == 1
    assert RawMessage.get().reason.startswith("loop")
    assert desk.outgoing() == []


def test_acknowledgements_are_rate_limited_per_sender(desk):
    for n in range(7):
        desk.ingest(mail(subject=f"request {n}", body=f"body {n}\n"))
    assert Ticket.select().count() == 7
    assert len(acks(desk)) == 5
    desk.clock.advance(__import__("datetime").timedelta(hours=1, minutes=1))
    desk.ingest(mail(subject="after an hour", body="later\n"))
    assert len(acks(desk)) == 6


BOUNCE = b"""From: Mail Delivery System <MAILER-DAEMON@mx.example.com>
To: support@shop.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce1@mx.example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.
--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; gone@example.com
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--B
Content-Type: text/rfc822-headers

From: support@shop.example
To: gone@example.com
Message-ID: <MSGID>
Subject: [T-1] We received your request

--B--
"""


def test_bounce_is_recorded_against_the_failed_address_and_never_answered(desk):
    desk.ingest(mail(frm="gone@example.com", message_id="root"))
    [ack] = acks(desk, "gone@example.com")
    before = len(desk.outgoing())
    tally = desk.ingest(BOUNCE.replace(b"MSGID", ack["Message-ID"].strip("<>").encode()))
    assert tally.counts["bounce"] == 1
    bounce = Bounce.get()
    assert (bounce.address, bounce.status, bounce.ticket_id) == ("gone@example.com", "5.1.1", Ticket.get().id)
    assert "user unknown" in bounce.diagnostic
    assert len(desk.outgoing()) == before


def test_mail_without_sender_is_quarantined_and_retry_reruns_it(desk):
    tally = desk.ingest(mail(frm="undisclosed"))
    assert tally.counts["quarantined"] == 1
    [row] = quarantined()
    assert "no sender" in row["reason"]
    # The operator fixes nothing: a retry quarantines it again, with the reason, losing nothing.
    outcome = desk.app.pipeline.retry(row["id"])
    assert outcome.kind == "quarantined"
    assert RawMessage.select().count() == 1


def test_a_crash_while_applying_quarantines_only_that_message(desk, monkeypatch):
    from helpdesk.tickets import desk as tickets
    original = tickets.Desk.new_ticket

    def explode(self, route, mail_, stored, raw_id, mailbox):
        if "boom" in mail_.subject:
            original(self, route, mail_, stored, raw_id, mailbox)  # writes rows, which must roll back
            raise RuntimeError("simulated crash")
        return original(self, route, mail_, stored, raw_id, mailbox)

    monkeypatch.setattr(tickets.Desk, "new_ticket", explode)
    tally = desk.ingest(mail(subject="fine one", body="1\n"), mail(subject="boom", body="2\n"),
                        mail(subject="fine two", body="3\n"))
    assert tally.counts["new_ticket"] == 2 and tally.counts["quarantined"] == 1
    assert sorted(t.subject for t in Ticket.select()) == ["fine one", "fine two"]
    assert Outbox.select().where(Outbox.subject.contains("boom")).count() == 0
    [row] = quarantined()
    assert "RuntimeError: simulated crash" in row["reason"]
    monkeypatch.setattr(tickets.Desk, "new_ticket", original)
    assert desk.app.pipeline.retry(row["id"]).kind == "new_ticket"
    assert Ticket.select().count() == 3


def test_a_database_error_in_one_message_is_redone_without_it(desk, monkeypatch):
    """A failed statement aborts a PostgreSQL transaction: the optimistic batch is rolled
    back whole, and the careful pass commits the other messages."""
    from helpdesk.store import sql
    from helpdesk.tickets import desk as tickets
    original = tickets.Desk.new_ticket

    def broken_sql(self, route, mail_, stored, raw_id, mailbox):
        number = original(self, route, mail_, stored, raw_id, mailbox)
        if "bad sql" in mail_.subject:
            sql.cursor_execute("SELECT no_such_column FROM ticket", [])
        return number

    monkeypatch.setattr(tickets.Desk, "new_ticket", broken_sql)
    tally = desk.ingest(*(mail(subject=s, body=f"{s}\n") for s in ("first", "bad sql", "third")))
    assert (tally.counts["new_ticket"], tally.counts["quarantined"]) == (2, 1)
    assert sorted(t.subject for t in Ticket.select()) == ["first", "third"]
    [row] = quarantined()
    assert row["reason"].startswith("apply failed:") and "no_such_column" in row["reason"]
    assert len(desk.outgoing()) == 4


def test_oversized_file_message_is_quarantined_not_lost(tmp_path, db_url):
    from tests.conftest import START, Clock, Desk, write_config
    config = write_config(tmp_path, db_url=db_url, limits='max_message_size = "2KB"')
    small = Desk(tmp_path, config, Clock(START))
    tally = small.ingest(mail(body="x" * 5000 + "\n"))
    assert tally.counts["quarantined"] == 1
    assert "larger than" in quarantined()[0]["reason"]
    small.app.close()


def test_message_finished_by_another_worker_is_not_applied_twice(desk):
    """A worker that read a message as pending, but finds it done when it claims it, rolls back."""
    from helpdesk.intake.spool import Incoming
    from helpdesk.pipeline.batches import _jobs
    from helpdesk.store.raw import pending
    desk.app.store([Incoming(mail(), "support", "file")])
    rows = pending(0, 10)
    parsed = desk.app.pipeline.parser.run(_jobs(rows))
    RawMessage.update(status="done").execute()  # the other worker committed meanwhile
    [outcome] = desk.app.pipeline._batch(rows, parsed)
    assert outcome.kind == "skipped"
    assert (Ticket.select().count(), Message.select().count(), Outbox.select().count()) == (0, 0, 0)


def test_a_message_taken_elsewhere_does_not_hold_back_the_rest_of_its_batch(desk):
    from helpdesk.intake.spool import Incoming
    from helpdesk.pipeline.batches import _jobs
    from helpdesk.store.raw import pending
    desk.app.store([Incoming(mail(subject="taken"), "support", "file"),
                    Incoming(mail(subject="mine"), "support", "file")])
    rows = pending(0, 10)
    parsed = desk.app.pipeline.parser.run(_jobs(rows))
    RawMessage.update(status="done").where(RawMessage.id == rows[0].id).execute()
    outcomes = desk.app.pipeline._batch(rows, parsed)
    assert [o.kind for o in outcomes] == ["skipped", "new_ticket"]
    assert [t.subject for t in Ticket.select()] == ["mine"]
    assert Outbox.select().where(Outbox.subject.contains("taken")).count() == 0


def test_a_clean_batch_runs_without_a_savepoint_per_message(desk, db_url):
    """The fast path: savepoints cost SQLite a copy of every page a message touches."""
    if db_url is not None:
        pytest.skip("counts SQLite statements")
    from helpdesk.store.schema import db
    seen = []
    db.connection().set_trace_callback(seen.append)
    try:
        tally = desk.ingest(*(mail(subject=f"n{i}", body=f"{i}\n") for i in range(5)))
    finally:
        db.connection().set_trace_callback(None)
    assert tally.counts["new_ticket"] == 5
    assert sum(1 for sql in seen if sql.lstrip().upper().startswith("INSERT INTO \"TICKET\"")) == 5
    assert not [sql for sql in seen if sql.lstrip().upper().startswith("SAVEPOINT")]


def test_raw_messages_commit_durably_and_batches_without_waiting_for_the_disk(desk, db_url):
    """The raw message is the durable copy (FULL); a batch derived from it commits
    with synchronous = NORMAL, and the connection is FULL again afterwards."""
    if db_url is not None:
        pytest.skip("reads SQLite's statements")
    from helpdesk.store.schema import db
    seen = []
    db.connection().set_trace_callback(seen.append)
    try:
        desk.ingest(mail(subject="one"))
    finally:
        db.connection().set_trace_callback(None)
    mode, modes = "FULL", {}
    for sql in seen:
        upper = sql.strip().upper()
        if upper.startswith("PRAGMA SYNCHRONOUS ="):
            mode = upper.split("=")[1].strip()
        for table in ("RAW_MESSAGE", "TICKET", "OUTBOX"):
            if upper.startswith(f'INSERT INTO "{table}"'):
                modes[table] = mode
    assert modes == {"RAW_MESSAGE": "FULL", "TICKET": "NORMAL", "OUTBOX": "NORMAL"}
    assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 2    # FULL


def test_show_lists_messages_and_outgoing_mail(desk):
    desk.ingest(mail(message_id="root"))
    detail = ticket_detail("T-1")
    assert detail["messages"][0]["direction"] == "in"
    assert detail["messages"][0]["message_id"] == "root@example.com"
    assert {o["kind"] for o in detail["outbox"]} == {"ack", "new_ticket"}


def test_reply_to_does_not_prove_participation(desk):
    desk.ingest(mail(message_id="root"))
    number = Ticket.get().id
    desk.ingest(mail(frm="eve@evil.example", subject=f"Re: [T-{number}] let me in",
                     headers={"Reply-To": "bob@example.com"}))
    assert Ticket.select().count() == 2
    assert Ticket.get_by_id(number).messages.count() == 1
    assert not Participant.select().where(Participant.address == "eve@evil.example",
                                          Participant.ticket == number).exists()


def test_a_colleague_answering_the_customers_own_mail_is_threaded_but_does_not_join(desk):
    """The customer's Message-ID is the customer's choice, and anyone can quote it (with the
    customer in copy too): the answer lands on the ticket, but its sender does not join it
    and its answers. A colleague who answers *our* mail joins (the next test)."""
    desk.ingest(mail(message_id="root"))
    desk.ingest(mail(frm="Ann <ann@example.com>", subject="Re: Key does not work",
                     headers={"In-Reply-To": "<root@example.com>", "Cc": "Bob <bob@example.com>"}))
    assert Ticket.select().count() == 1
    assert Message.select().where(Message.ticket == 1).count() == 2
    assert not Participant.select().where(Participant.address == "ann@example.com").exists()


def test_our_message_id_threads_whoever_replies_and_adds_them(desk):
    """A colleague the customer forwarded our mail to is let in: they hold our unguessable id."""
    desk.ingest(mail(message_id="root"))
    [ack] = acks(desk)
    desk.ingest(mail(frm="colleague@example.com", subject="Re: fwd",
                     headers={"In-Reply-To": ack["Message-ID"]}))
    assert Ticket.select().count() == 1
    assert Participant.select().where(Participant.address == "colleague@example.com").exists()


def test_replies_in_a_follow_up_thread_stay_on_the_follow_up(desk):
    desk.ingest(mail(message_id="root"))
    Ticket.update(status="closed").execute()
    desk.ingest(mail(subject="Re: again", message_id="second",
                     headers={"In-Reply-To": "<root@example.com>", "References": "<root@example.com>"}))
    follow_up = Ticket.select().order_by(Ticket.id.desc()).first()
    [_, second_ack] = acks(desk)
    desk.ingest(mail(subject="Re: Re: again", message_id="third",
                     headers={"In-Reply-To": second_ack["Message-ID"],
                              "References": f"<root@example.com> <second@example.com> {second_ack['Message-ID']}"}))
    assert Ticket.select().count() == 2
    assert follow_up.messages.count() == 2
    assert len(acks(desk)) == 2


def test_garbage_without_headers_is_kept_not_taken_for_a_duplicate(desk):
    tally = desk.ingest(b"", b"\x89PNG\r\x1a binary junk without any header")
    assert tally.counts["duplicate"] == 0
    assert RawMessage.select().count() == 2
    assert tally.counts["quarantined"] == 2


def test_control_characters_in_message_id_are_stored_on_both_engines(desk):
    tally = desk.ingest(mail(headers={"Message-ID": "<a\x00b\x01c@example.com>"}))
    assert tally.counts["new_ticket"] == 1
    assert RawMessage.get().message_id == "<abc@example.com>"


def test_colleagues_reply_before_the_customers_mail_still_joins_it(desk):
    child = mail(frm="Ann <ann@example.com>", subject="Re: Key does not work", message_id="child",
                 headers={"In-Reply-To": "<root@example.com>", "References": "<root@example.com>",
                          "Cc": "Bob <bob@example.com>"})
    desk.ingest(child)
    desk.ingest(mail(message_id="root"))
    assert Ticket.select().count() == 1
    roles = {p.address: p.role for p in Participant.select()}
    assert roles["ann@example.com"] == "requester" and roles["bob@example.com"] == "cc"
    assert "support@shop.example" not in roles and roles["alice@shop.example"] == "staff"


def test_a_deadlock_with_another_worker_leaves_the_message_pending_for_the_next_pass(desk, monkeypatch):
    """PostgreSQL picks one of two workers' transactions as a deadlock's victim: that is no
    fault of the message, which is redone at the next pass instead of quarantined."""
    import psycopg

    domain = desk.app.pipeline.domains["tickets"]
    real, calls = domain.apply, []

    def once_a_victim(*args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:    # the optimistic pass, then the careful one
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return real(*args, **kwargs)

    monkeypatch.setattr(domain, "apply", once_a_victim)
    first = desk.ingest(mail(message_id="clash"))
    assert first.counts["clashed"] == 1 and first.counts["quarantined"] == 0
    assert RawMessage.get().status == "pending" and quarantined() == []
    again = desk.app.process()
    assert again.counts["new_ticket"] == 1
    assert (RawMessage.get().status, Ticket.select().count()) == ("done", 1)
