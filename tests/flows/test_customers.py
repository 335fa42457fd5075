"""Customers and backscatter (issue 11): whose ticket a mail opens, where answers go,
what the helpdesk echoes back, and what a dispute relays between the parties."""

from __future__ import annotations

import re

import pytest

from helpdesk.clock import Clock
from helpdesk.config.loader import load_config
from helpdesk.errors import ConfigError
from helpdesk.reports.listings import ticket_detail
from helpdesk.store.schema import Participant, Ticket
from tests.conftest import START, Desk, authenticated, mail, write_config

pytestmark = pytest.mark.usefixtures("db_url")


def reply_address(message) -> str:
    return re.search(r"<([^>]+)>", str(message["Reply-To"])).group(1)


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


# --- attack 6: Reply-To names a victim ---------------------------------------------

def test_a_reply_to_does_not_make_its_address_the_requester(desk):
    desk.ingest(mail(frm="Mallory <mallory@evil.example>", message_id="m1",
                     headers={"Reply-To": "Victor <victim@buyers.example>"}))
    ticket = Ticket.get()
    assert (ticket.requester, ticket.reply_to) == ("mallory@evil.example", "victim@buyers.example")
    assert ticket_detail("T-1")["reply_to_unverified"] == "victim@buyers.example"
    assert desk.to("victim@buyers.example") == []                 # no acknowledgement to the victim
    assert len(desk.to("mallory@evil.example")) == 1
    [notice] = desk.to("alice@shop.example")
    shown = text_of(notice)
    assert "from Mallory <mallory@evil.example>" in shown
    assert "Reply-To (unverified): victim@buyers.example" in shown
    assert "<victim@buyers.example>" not in shown

    # Mallory threads in with her own Message-ID, then the agent answers from the notice.
    desk.ingest(mail(frm="Mallory <mallory@evil.example>", subject="Re: Key does not work",
                     headers={"In-Reply-To": "<m1@example.com>", "Reply-To": "victim@buyers.example"}))
    desk.ingest(mail(frm="Alice <alice@shop.example>", to=reply_address(notice),
                     subject="Re: " + str(notice["Subject"]), body="Here is your new key: QQQQ.\n",
                     headers={"In-Reply-To": notice["Message-ID"]}))
    assert desk.to("victim@buyers.example") == []
    answers = [m for m in desk.to("mallory@evil.example") if "QQQQ" in text_of(m)]
    assert len(answers) == 1                                      # to From, once: not a second time as cc
    assert [str(a["To"]) for a in answers] == ["Mallory <mallory@evil.example>"]
    assert answers[0]["Cc"] is None


def test_a_trusted_form_sender_speaks_for_its_reply_to(tmp_path, request):
    url = request.getfixturevalue("db_url")
    config = write_config(tmp_path, db_url=url, extra='\n[trust]\nform_senders = ["noreply@forms.example"]\n')
    desk = Desk(tmp_path, config, Clock(START))
    try:
        desk.ingest(authenticated(mail(frm="Shop form <noreply@forms.example>",
                                       headers={"Reply-To": "Clara <clara@example.org>"})))
        assert (Ticket.get().requester, Ticket.get().reply_to) == ("clara@example.org", None)
        assert len(desk.to("clara@example.org")) == 1
        assert desk.to("noreply@forms.example") == []
        assert "unverified" not in text_of(desk.to("alice@shop.example")[0])
    finally:
        desk.app.close()


def test_a_forged_form_sender_does_not_speak_for_its_reply_to(tmp_path, request):
    """The form's address is as easy to write as any: without our MTA's word for it, the
    From stays the requester and the Reply-To named (a victim) gets nothing."""
    url = request.getfixturevalue("db_url")
    config = write_config(tmp_path, db_url=url, extra='\n[trust]\nform_senders = ["noreply@forms.example"]\n')
    desk = Desk(tmp_path, config, Clock(START))
    try:
        desk.ingest(mail(frm="Shop form <noreply@forms.example>",
                         headers={"Reply-To": "Victor <victim@buyers.example>"}))
        assert (Ticket.get().requester, Ticket.get().reply_to) == ("noreply@forms.example",
                                                                   "victim@buyers.example")
        assert desk.to("victim@buyers.example") == []
        assert "Reply-To (unverified): victim@buyers.example" in text_of(desk.to("alice@shop.example")[0])
    finally:
        desk.app.close()


def test_a_stranger_quoting_a_customers_own_message_id_does_not_join_the_ticket(desk):
    """A Message-ID the customer wrote is no capability: anyone can write one and then
    quote it (here the stranger forged the first mail too). The stranger's mail is kept on
    the ticket, but the stranger does not join it: the agent's answer reaches the customer only."""
    desk.ingest(mail(frm="Victor <victim@buyers.example>", message_id="chosen",
                     subject="Refund for order 77"))
    desk.ingest(mail(frm="Mallory <mallory@evil.example>", subject="Re: Refund for order 77",
                     body="Please send the refund code to this address.\n",
                     headers={"In-Reply-To": "<chosen@example.com>", "Cc": "victim@buyers.example"}))
    assert Ticket.select().count() == 1
    assert "refund code to this address" in str(ticket_detail("T-1"))
    assert not Participant.select().where(Participant.address == "mallory@evil.example").exists()
    [notice] = [m for m in desk.to("alice@shop.example") if "[T-1]" in str(m["Subject"])]
    desk.ingest(mail(frm="Alice <alice@shop.example>", to=reply_address(notice),
                     subject="Re: " + str(notice["Subject"]), body="Your refund code is 1234.\n",
                     headers={"In-Reply-To": notice["Message-ID"]}))
    assert [m for m in desk.to("mallory@evil.example") if "1234" in text_of(m)] == []
    assert len([m for m in desk.to("victim@buyers.example") if "1234" in text_of(m)]) == 1


def test_a_colleague_answering_our_mail_still_joins_the_ticket(desk):
    """Our Message-IDs are random and reach only those we wrote to: whoever quotes one
    received our mail (a colleague it was forwarded to) and is threaded in."""
    desk.ingest(mail(frm="Victor <victim@buyers.example>", message_id="first"))
    [ack] = desk.to("victim@buyers.example")
    desk.ingest(mail(frm="Colleague <colleague@buyers.example>", subject="Re: " + str(ack["Subject"]),
                     headers={"In-Reply-To": ack["Message-ID"]}))
    assert Ticket.select().count() == 1
    assert Participant.select().where(Participant.address == "colleague@buyers.example").exists()


def test_a_bad_form_senders_value_is_one_line(tmp_path):
    config = write_config(tmp_path, extra='\n[trust]\nform_senders = "form@shop.example"\n')
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert str(info.value).endswith('[trust] form_senders: expected a list of addresses like '
                                    '["form@shop.example"], got "form@shop.example"')


# --- attack 7: backscatter -----------------------------------------------------------

def test_a_huge_subject_and_name_are_not_echoed_at_length(desk):
    subject, name = "Refund " * 300_000, "Mallory " * 25_000          # 2.1 MB and 200 kB
    desk.ingest(mail(frm=f'"{name}" <mallory@evil.example>', subject=subject,
                     headers={"Reply-To": "victim@buyers.example"}))
    assert desk.to("victim@buyers.example") == []
    [ack] = desk.to("mallory@evil.example")
    [notice] = desk.to("alice@shop.example")
    assert len(ack.as_bytes()) < 10_000 and len(notice.as_bytes()) < 10_000
    assert "Refund Refund" in str(ack["Subject"]) and "…" in str(ack["Subject"])
    assert len(Ticket.get().subject) == 200 and len(Ticket.get().requester_name) == 200


def test_clip_marks_the_cut():
    from helpdesk.mail.compose import ECHO_LIMIT, clip
    assert clip("short") == "short"
    assert clip("x" * ECHO_LIMIT) == "x" * ECHO_LIMIT
    assert clip("x" * 5000) == "x" * (ECHO_LIMIT - 1) + "…"


# --- dispute files: an allowlist -----------------------------------------------------

CALENDAR = (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nORGANIZER:mailto:sam@seller.example\r\n"
            b"SUMMARY:call\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
HEADERS = b"From: Sam <sam@seller.example>\r\nTo: bob@example.com\r\nSubject: key\r\n"


def test_dispute_files_outside_the_allowlist_are_kept_and_listed_with_the_reason(tmp_path, db_url):
    from tests.flows.test_disputes_smtp import (
        BUYER,
        SELLER,
        assert_private,
        attached,
        body,
        make_market,
    )
    desk, smtp, market = make_market(tmp_path, db_url)
    try:
        market.open()
        [notice] = [m for m in market.new() if SELLER in str(m["To"])]
        market.reply(notice, SELLER, "Here is what I have.", files=(
            ("image/png", "photo.png", b"\x89PNG\r\n\x1a\nbytes"),
            ("text/calendar", "call.ics", CALENDAR),
            ("application/ms-tnef", "winmail.dat", b"\x78\x9f\x3e\x22" + SELLER.encode()),
            ("application/vnd.ms-outlook", "earlier.msg", b"\xd0\xcf\x11\xe0" + SELLER.encode()),
            ("text/rfc822-headers", "headers.txt", HEADERS),
            ("image/jpeg", "invoice\u202egpj.exe", b"MZ\x90\x00 not a picture")))
        relayed = market.last_to(BUYER)
        assert attached(relayed) == [("photo.png", "image/png")]
        listing = body(relayed).split("Not passed on")[1]
        for line in ("- call.ics", "files of type text/calendar are not passed on",
                     "- winmail.dat", "files of type application/ms-tnef are not passed on",
                     "- earlier.msg", "files of type application/vnd.ms-outlook are not passed on",
                     "- headers.txt", "files of type text/rfc822-headers are not passed on",
                     "- invoice_gpj.exe", "its name does not end in .jpg or .jpeg, as a image/jpeg file's does"):
            assert line in listing, line
        assert "\u202e" not in relayed.as_string()
        assert_private(market)
    finally:
        smtp.stop()
        desk.app.close()


def test_the_allowlist_is_configurable(tmp_path, db_url):
    from tests.flows.test_disputes_smtp import BUYER, SELLER, attached, make_market
    desk, smtp, market = make_market(tmp_path, db_url, extra='\n[disputes]\nrelay_file_types = ["text/csv .csv"]\n')
    try:
        market.open()
        [notice] = [m for m in market.new() if SELLER in str(m["To"])]
        market.reply(notice, SELLER, "Both files.", files=(
            ("image/png", "photo.png", b"\x89PNG\r\n\x1a\nbytes"), ("text/csv", "keys.csv", b"a,b\n")))
        assert attached(market.last_to(BUYER)) == [("keys.csv", "text/csv")]
    finally:
        smtp.stop()
        desk.app.close()


@pytest.mark.parametrize("value, error", [
    ('"image/png .png"', 'expected a list like ["image/png .png", "application/pdf .pdf"], got "image/png .png"'),
    ('["image/png"]', '"image/png" is not a MIME type followed by its file name endings, like "image/jpeg .jpg .jpeg"'),
])
def test_a_bad_relay_file_types_value_is_one_line(tmp_path, value, error):
    config = write_config(tmp_path, extra=f"\n[disputes]\nrelay_file_types = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert str(info.value).endswith("[disputes] relay_file_types: " + error)


# --- no oracle for order ids -------------------------------------------------------------

def test_no_such_order_and_not_your_order_get_the_same_answer(tmp_path, db_url):
    from helpdesk.store.schema import RawMessage
    from tests.flows.test_disputes_smtp import STRANGER, make_market
    desk, smtp, market = make_market(tmp_path, db_url)
    try:
        answers = []
        for order in ("100235", "999995"):                   # the first exists (bought by Bob)
            market.open(subject=f"Order {order}", body="Reason: not received\n\nNothing came.\n",
                        frm=f"Mallory <{STRANGER}>")
            [answer] = market.new()
            answers.append((str(answer["Subject"]).replace(order, "N"),
                            answer.get_body(("plain",)).get_content().replace(order, "N")))
        assert answers[0] == answers[1]
        assert [r.outcome for r in RawMessage.select().order_by(RawMessage.id)] == ["dispute_refused"] * 2
    finally:
        smtp.stop()
        desk.app.close()


# --- X-Helpdesk-Loop by value --------------------------------------------------------------

def test_two_helpdesks_answering_each_others_humans_do_not_drop_each_others_mail(tmp_path, db_url):
    """Two installations, each with its own secret key (one at a time: the store is per process)."""
    from helpdesk.mail.loop import loop_id
    from helpdesk.store.schema import RawMessage
    (tmp_path / "other").mkdir()
    (tmp_path / "ours").mkdir()
    path = write_config(tmp_path / "other")
    path.write_text(path.read_text().replace("shop.example", "other.example"))
    other = Desk(tmp_path / "other", path, Clock(START))
    try:
        # Their agent answers a question from one of our agents: a human's mail, with their id.
        other.ingest(mail(frm="Alice <alice@shop.example>", to="support@other.example"))
        [notice] = other.to("alice@other.example")
        other.ingest(mail(frm="Alice <alice@other.example>", to=reply_address(notice),
                          subject="Re: " + str(notice["Subject"]), body="Yes, it is in stock.\n",
                          headers={"In-Reply-To": notice["Message-ID"]}))
        [answer] = [m for m in other.to("alice@shop.example") if "in stock" in text_of(m)]
        theirs = loop_id(other.app.desk.secret)
    finally:
        other.app.close()
    desk = Desk(tmp_path / "ours", write_config(tmp_path / "ours", db_url=db_url), Clock(START))
    try:
        ours = loop_id(desk.app.desk.secret)
        assert ours != theirs and len(ours) == 16 and answer["X-Helpdesk-Loop"] == theirs
        raw = answer.as_bytes().replace(b"To: Alice <alice@shop.example>", b"To: support@shop.example")
        assert desk.ingest(raw).counts["new_ticket"] == 1      # theirs is not ours: it gets in
        # Our own id coming back is a loop, whoever it seems to be from.
        [ack] = desk.to("support@other.example")
        assert ack["X-Helpdesk-Loop"] == ours
        tally = desk.ingest(ack.as_bytes().replace(b"support@shop.example", b"someone@example.com"))
        assert tally.counts["dropped"] == 1
        assert RawMessage.select().order_by(RawMessage.id.desc()).get().reason == \
            "loop: carries our X-Helpdesk-Loop id"
    finally:
        desk.app.close()
