"""Whole disputes over real SMTP with a simulated clock, on SQLite and PostgreSQL.

Buyer, seller, a stranger and the administration write through the service's
own SMTP server (aiosmtpd on a real socket) from "their mail clients": every
answer goes to the Reply-To of the mail they received, with In-Reply-To and a
quoted history. Between steps the clock moves and the service does what one
pass of ``helpdesk run`` does: process, fire due deadlines, deliver.
"""

from __future__ import annotations

import datetime as dt
import re
import smtplib
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest

from helpdesk.clock import Clock
from helpdesk.disputes import orders
from helpdesk.disputes.desk import StaleDispute
from helpdesk.intake.smtp import SmtpIntake
from helpdesk.reports.listings import dispute_detail, list_disputes, list_tickets
from helpdesk.store.db import write_transaction
from helpdesk.store.schema import Dispute, DisputeEvent, Message, Proposal, RawMessage, Ticket, Timer
from tests.conftest import START, Desk, free_port, mail, write_config

pytestmark = pytest.mark.usefixtures("db_url")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BUYER, SELLER, ADMIN, STRANGER = ("bob@example.com", "sam@seller.example", "carol@shop.example",
                                  "mallory@evil.example")
DISPUTES = "disputes@shop.example"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00fake-image-bytes" * 20
CARRY_ADDRESSES = {"text/vcard", "text/x-vcard", "message/rfc822", "application/pkcs7-signature",
                   "application/x-pkcs7-signature", "application/pgp-keys", "application/pgp-signature"}


class Market:
    """The helpdesk with the marketplace's orders, its SMTP server, and the people around it."""

    def __init__(self, desk: Desk, port: int) -> None:
        self.desk = desk
        self.port = port
        self.seen = 0

    # --- time and the service ---

    def run(self) -> None:
        """One pass of the service: process stored mail, fire due deadlines, deliver."""
        self.desk.app.process()
        self.desk.app.tick()
        self.desk.app.deliver()

    def later(self, **delta) -> None:
        self.desk.clock.advance(dt.timedelta(**delta))
        self.run()

    # --- mail in ---

    def send(self, raw: bytes, rcpt: str = DISPUTES, mail_from: str = BUYER) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as client:
            refused = client.sendmail(mail_from, [rcpt], re.sub(rb"\r?\n", b"\r\n", raw))
        assert refused == {}
        self.run()

    def open(self, subject="Order 100234", body="Reason: key does not work\n\nThe key is rejected.\n",
             frm=f"Bob Buyer <{BUYER}>", image: bool = False) -> None:
        raw = with_image(frm, subject, body) if image else mail(frm=frm, to=DISPUTES, subject=subject,
                                                               body=body)
        self.send(raw, mail_from=frm)

    def reply(self, to: EmailMessage, frm: str, text: str, rcpt: str | None = None,
              files: tuple = ()) -> None:
        """Answer a received mail from a mail client: to its Reply-To, quoting it."""
        address = rcpt or reply_to(to)
        quoted = "".join(f"> {line}\n" for line in plain(to).splitlines()[:5])
        text = f"{text}\n\nOn Thu, 26 Nov 2026 at 09:00, Difmark Support wrote:\n{quoted}"
        headers = {"In-Reply-To": to["Message-ID"], "References": to["Message-ID"]}
        raw = with_files(frm, address, f"Re: {to['Subject']}", text, files, headers) if files else \
            mail(frm=frm, to=address, subject=f"Re: {to['Subject']}", body=text, headers=headers)
        self.send(raw, rcpt=address, mail_from=frm)

    # --- mail out ---

    def new(self) -> list[EmailMessage]:
        """Mail delivered since the last call."""
        everything = self.desk.outgoing()
        fresh, self.seen = everything[self.seen:], len(everything)
        return fresh

    def last_to(self, address: str) -> EmailMessage:
        return self.desk.to(address)[-1]

    def dispute(self) -> Dispute:
        return Dispute.select().order_by(Dispute.id.desc()).get()


def plain(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def body(message: EmailMessage) -> str:
    """The text part with whitespace collapsed, so phrases match across line breaks."""
    return " ".join(plain(message).split())


def reply_to(message: EmailMessage) -> str:
    return re.search(r"<([^>]+)>", str(message["Reply-To"])).group(1)


def to_of(messages: list[EmailMessage]) -> list[str]:
    return sorted(re.search(r"[\w.+-]+@[\w.-]+", str(m["To"])).group(0) for m in messages)


def with_image(frm: str, subject: str, text: str) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = frm, DISPUTES, subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@example.com>"
    message.set_content(text)
    message.add_attachment(PNG, maintype="image", subtype="png", filename="screenshot.png")
    return message.as_bytes()


def with_files(frm: str, to: str, subject: str, text: str, files: tuple, headers: dict | None = None) -> bytes:
    """A mail with attachments: each file is (content type, file name, content), content an
    EmailMessage for message/rfc822."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = frm, to, subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@example.com>"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(text)
    for content_type, filename, content in files:
        if isinstance(content, EmailMessage):
            message.add_attachment(content, filename=filename)
            continue
        maintype, subtype = content_type.split("/")
        if maintype == "text":
            message.add_attachment(content.decode(), subtype=subtype, filename=filename, cte="base64")
        else:
            message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


def history() -> list[tuple[str | None, str, str]]:
    return [(e.from_status, e.to_status, e.actor) for e in DisputeEvent.select().order_by(DisputeEvent.id)]


def readable(message: EmailMessage) -> str:
    """Everything a reader can see in a mail, decoded and lower-cased: every header, and every
    part's file name and body (base64 and quoted-printable undone), attached mail included."""
    seen = [message.as_string()]
    for part in message.walk():
        seen.extend(f"{name}: {value}" for name, value in part.items())
        seen.append(part.get_filename() or "")
        if not part.is_multipart():
            payload = part.get_payload(decode=True)
            seen.append(payload.decode("utf-8", "replace") if payload is not None else str(part.get_payload()))
    return "\n".join(seen).lower()


def assert_private(market: Market) -> None:
    """Neither party's address appears anywhere in the mail the other side, or the
    administration (who may forward it), received."""
    for reader, hidden in ((BUYER, (SELLER,)), (SELLER, (BUYER,)), (ADMIN, (BUYER, SELLER))):
        for message in market.desk.to(reader):
            seen = readable(message)
            for address in hidden:
                assert address not in seen, (reader, message["Subject"])
            assert reply_to(message).startswith("disputes+d")
            assert not {p.get_content_type() for p in message.iter_attachments()} & CARRY_ADDRESSES


def make_market(tmp_path: Path, db_url: str | None, extra: str = ""):
    desk = Desk(tmp_path, write_config(tmp_path, db_url=db_url, extra=extra), Clock(START))
    orders.import_file(FIXTURES / "orders.csv", START)
    port = free_port()
    smtp = SmtpIntake(desk.app.config, desk.app.store, host="127.0.0.1", port=port)
    smtp.start()
    return desk, smtp, Market(desk, port)


@pytest.fixture
def market(tmp_path, db_url):
    desk, smtp, made = make_market(tmp_path, db_url)
    yield made
    smtp.stop()
    desk.app.close()


@pytest.fixture
def slow_admin_market(tmp_path, db_url):
    """The administration steps in only 5 days after the window opened: room to #escalate."""
    desk, smtp, made = make_market(tmp_path, db_url, extra='\n[disputes]\nadmin_after = "5d"\n')
    yield made
    smtp.stop()
    desk.app.close()


# ----------------------------------------------------------------- opening


def test_opening_by_mail_tells_both_sides_with_the_deadline_and_the_image(market):
    market.open(image=True)
    dispute = market.dispute()
    assert (dispute.status, dispute.order_id, dispute.buyer, dispute.seller) == (
        "awaiting_seller", "100234", BUYER, SELLER)
    assert (dispute.reason, dispute.description) == ("key does not work", "The key is rejected.")
    assert dispute.seller_due_at == (START + dt.timedelta(hours=48)).replace(tzinfo=None)
    [confirmation, notice] = market.new()
    assert to_of([confirmation, notice]) == [BUYER, SELLER]
    assert f"[D-{dispute.id}]" in confirmation["Subject"] and "is open" in confirmation["Subject"]
    assert "Saturday 28 November 2026, 09:00 UTC" in body(confirmation)
    assert "Saturday 28 November 2026, 09:00 UTC" in notice["Subject"]
    text = body(notice)
    assert "Space Game (Steam key)" in text and "key does not work" in text and "The key is rejected." in text
    assert "#return" in text and "#propose" in text
    [image] = [part for part in notice.iter_attachments()]
    assert (image.get_filename(), image.get_content()) == ("screenshot.png", PNG)
    assert history() == [(None, "awaiting_seller", "buyer")]
    assert [t.kind for t in Timer.select().order_by(Timer.fire_at)] == [
        "seller_reminder", "seller_reminder", "seller_due"]
    assert list_tickets() == []          # a dispute's chat is not a ticket
    assert RawMessage.get().outcome == "dispute_opened"
    assert_private(market)


@pytest.mark.parametrize("frm, subject, text, expected", [
    (f"Bob <{BUYER}>", "Order 999999", "Reason: not received\n\nNothing came.\n",
     ["no order 999999 bought with your address", 'We have no order "999999" bought with']),
    ("Eve <eve@example.com>", "Order 100234", "Reason: not received\n\nNothing came.\n",
     ["no order 100234 bought with your address", 'We have no order "100234" bought with']),
    (f"Bob <{BUYER}>", "Order 100234", "The key is rejected, please help.\n",
     ["some information is missing", 'the reason: a line "Reason: ..."', "- not as described"]),
    (f"Bob <{BUYER}>", "Order 100234", "Reason: it is broken\n\nThe key is rejected.\n",
     ["some information is missing", '"it is broken" is not one of the reasons',
      "the address you bought with"]),
    (f"Bob <{BUYER}>", "Help!", "Reason: not received\n\nNothing came.\n",
     ["some information is missing", "the order id"]),
])
def test_each_refused_opening_gets_one_specific_reply_and_no_dispute(market, frm, subject, text, expected):
    market.open(subject=subject, body=text, frm=frm)
    assert Dispute.select().count() == 0 and Ticket.select().count() == 0
    [answer] = market.new()
    assert answer["To"].addresses[0].addr_spec == frm.split("<")[1].rstrip(">")
    whole = answer["Subject"] + "\n" + body(answer)
    for phrase in expected:
        assert phrase in whole
    assert RawMessage.get().outcome == "dispute_refused"


def test_a_second_dispute_for_an_open_one_points_to_it(market):
    market.open()
    market.new()
    market.open(body="Reason: not received\n\nStill nothing.\n")
    [answer] = market.new()
    assert "already has dispute D-1" in answer["Subject"]
    assert "reply to any mail you received about D-1" in body(answer)
    assert Dispute.select().count() == 1


# ----------------------------------------------------------------- whole disputes


def test_seller_returns_at_once(market):
    market.open()
    [_, notice] = market.new()
    market.reply(notice, SELLER, "#return\nSorry, refund on its way.")
    dispute = market.dispute()
    assert dispute.status == "return_accepted"
    assert dispute.seller_answered_at is not None
    told, confirmed = market.last_to(BUYER), market.last_to(SELLER)
    assert "accepted the return" in told["Subject"]
    assert "Next steps" in body(told) and "refunds 19.99 EUR" in body(told)
    assert "Sorry, refund on its way." in body(told)
    assert "Difmark Support wrote" not in body(told)        # quotes stripped
    assert "refund 19.99 EUR for order 100234" in body(confirmed)
    assert history()[-1] == ("awaiting_seller", "return_accepted", "seller")
    assert Timer.select().where(Timer.status == "pending").count() == 0
    market.new()
    market.later(hours=49)                                   # no deadline is left to fire
    assert market.new() == []
    assert_private(market)


def test_seller_proposes_and_the_buyer_accepts(market):
    market.open()
    [_, notice] = market.new()
    market.reply(notice, SELLER, "Hello, did you redeem it on the right region?")
    dispute = market.dispute()
    assert dispute.status == "negotiation"
    assert dispute.window_closes_at == (START + dt.timedelta(days=3)).replace(tzinfo=None)
    relayed = market.last_to(BUYER)
    assert "did you redeem it on the right region?" in body(relayed)
    assert "until Sunday 29 November 2026, 09:00 UTC" in body(relayed)
    assert relayed["Auto-Submitted"] is None               # a person's words, not a robot's
    market.reply(relayed, BUYER, "Yes, region EU, as sold.")
    assert "region EU" in body(market.last_to(SELLER))
    market.reply(market.last_to(SELLER), SELLER, "#propose a replacement key\nI can send another one.")
    offer = market.last_to(BUYER)
    assert "The seller proposes a solution" in offer["Subject"]
    assert "a replacement key" in body(offer) and "#accept" in body(offer)
    market.reply(offer, BUYER, "#accept\nThank you!")
    dispute = market.dispute()
    assert dispute.status == "resolved"
    assert Proposal.get().accepted_at is not None
    assert "resolved" in market.last_to(SELLER)["Subject"] and "Thank you!" in body(market.last_to(SELLER))
    assert "You accepted the seller's proposal #1" in body(market.last_to(BUYER))
    assert [h[1] for h in history()] == ["awaiting_seller", "negotiation", "resolved"]
    assert Timer.select().where(Timer.status == "pending").count() == 0
    assert_private(market)


def test_window_closes_buyer_escalates_admin_decides(slow_admin_market):
    market = slow_admin_market
    market.open()
    [_, notice] = market.new()
    market.reply(notice, SELLER, "#propose 20% discount on the next purchase")
    market.reply(market.last_to(BUYER), BUYER, "#escalate")
    refused = market.last_to(BUYER)
    assert "Not done: #escalate" in refused["Subject"]
    assert "the negotiation window is still open" in body(refused)
    assert "from Sunday 29 November 2026, 09:00 UTC" in body(refused)
    market.new()
    market.later(days=3)
    assert to_of(market.new()) == [BUYER, SELLER]
    buyer_notice = market.last_to(BUYER)
    assert "without a solution" in buyer_notice["Subject"] and "#escalate" in body(buyer_notice)
    assert market.dispute().status == "window_closed"
    market.reply(buyer_notice, BUYER, "#escalate\nThe discount is useless to me.")
    assert market.dispute().status == "admin_review"
    review = market.last_to(ADMIN)
    assert "Please decide" in review["Subject"] and "the buyer escalated" in review["Subject"]
    assert "20% discount" in body(review) and "The key is rejected." in body(review)
    assert BUYER not in readable(review) and SELLER not in readable(review)   # roles, not addresses
    assert "useless to me" in body(review)
    market.reply(review, ADMIN, "#decide buyer Full refund: the key never worked.")
    dispute = market.dispute()
    assert (dispute.status, dispute.decided_for, dispute.decision) == (
        "decided", "buyer", "Full refund: the key never worked.")
    for party in (BUYER, SELLER):
        assert "Full refund: the key never worked." in body(market.last_to(party))
    assert "decided for you" in body(market.last_to(BUYER))
    assert [h[1] for h in history()] == ["awaiting_seller", "negotiation", "window_closed",
                                         "admin_review", "decided"]
    assert history()[-1][2] == f"admin:{ADMIN}"
    assert_private(market)


def test_seller_silent_for_48_hours(market):
    market.open()
    market.new()
    market.later(hours=24)
    [first] = market.new()
    assert to_of([first]) == [SELLER] and "Reminder" in first["Subject"] and "1 day left until" in body(first)
    market.later(hours=18)
    [second] = market.new()
    assert "Reminder" in second["Subject"] and "6 hours left until" in body(second)
    market.later(hours=6)
    fired = market.new()
    assert to_of(fired) == [BUYER, ADMIN, SELLER]
    assert market.dispute().status == "seller_missed"
    told = market.last_to(BUYER)
    assert "did not answer in time" in told["Subject"] and "#escalate" in body(told)
    assert "Seller missed the deadline" in market.last_to(ADMIN)["Subject"]
    market.reply(told, BUYER, "#escalate")
    assert market.dispute().status == "admin_review"
    assert "Please decide" in market.last_to(ADMIN)["Subject"]
    assert_private(market)


def test_the_administration_steps_in_by_itself_and_each_deadline_fires_once(market):
    market.open()
    [_, notice] = market.new()
    market.reply(notice, SELLER, "The key works, I tested it.")
    market.reply(market.last_to(BUYER), BUYER, "It does not, see the error.")
    market.new()
    market.later(hours=72)
    fired = market.new()
    assert market.dispute().status == "admin_review"
    assert to_of(fired) == [BUYER, ADMIN, SELLER]   # no "you may escalate" in the same minute
    review = market.last_to(ADMIN)
    assert "not resolved in time" in review["Subject"]
    assert "The key works, I tested it." in body(review) and "see the error" in body(review)
    assert "administration is now involved" in body(market.last_to(BUYER))
    assert [h[1:] for h in history()][-2:] == [("window_closed", "system"), ("admin_review", "system")]
    market.later(days=10)
    assert market.new() == []
    fired_kinds = sorted(t.kind for t in Timer.select().where(Timer.status == "fired"))
    assert fired_kinds == ["admin_due", "window_close"]


def test_a_third_party_using_a_participants_reply_address_reaches_nobody(market):
    market.open()
    [_, notice] = market.new()
    market.reply(notice, STRANGER, "I am the seller, send me the buyer's address.", rcpt=reply_to(notice))
    [answer] = market.new()
    assert to_of([answer]) == [STRANGER]
    assert "was not passed on to anyone" in body(answer) and SELLER not in answer.as_string()
    assert Message.select().count() == 1                    # only the opening mail
    assert market.dispute().status == "awaiting_seller"
    assert RawMessage.select().order_by(RawMessage.id.desc()).get().outcome == "dispute_refused"


def test_commands_not_allowed_now_say_why_and_when(market):
    market.open()
    [confirmation, notice] = market.new()
    market.reply(confirmation, BUYER, "#propose refund please")
    refused = market.last_to(BUYER)
    assert "proposals start when the seller answers" in body(refused)
    assert "Saturday 28 November 2026, 09:00 UTC" in body(refused)
    market.reply(notice, SELLER, "#escalate")
    assert "#escalate is for the buyer only" in body(market.last_to(SELLER))
    market.reply(notice, SELLER, "#accept")
    assert "not applied" in body(market.last_to(SELLER))
    market.reply(notice, SELLER, "#refund")
    assert "#refund is not a command" in body(market.last_to(SELLER))
    assert RawMessage.select().order_by(RawMessage.id.desc()).get().outcome == "dispute_command_refused"
    assert market.dispute().status == "awaiting_seller"
    assert Message.select().count() == 1                    # refused mail is relayed to nobody
    market.reply(notice, SELLER, "#help")
    helped = market.last_to(SELLER)
    assert "#return" in body(helped) and "#propose" in body(helped) and "#escalate" not in body(helped)


def test_a_late_seller_answer_opens_the_window_but_the_buyer_may_escalate(market):
    market.open()
    [_, notice] = market.new()
    market.later(hours=50)
    assert market.dispute().status == "seller_missed"
    market.reply(notice, SELLER, "Sorry, I was away. Which platform?")
    dispute = market.dispute()
    assert dispute.status == "negotiation"
    assert dispute.admin_due_at == (START + dt.timedelta(hours=48 + 72)).replace(tzinfo=None)
    market.reply(market.last_to(BUYER), BUYER, "#escalate")
    assert market.dispute().status == "admin_review"


def test_status_lists_the_senders_disputes_with_deadlines(market):
    market.open()
    market.new()
    market.send(mail(frm=SELLER, to=DISPUTES, subject="Status", body="\n"), mail_from=SELLER)
    [answer] = market.new()
    text = body(answer)
    assert "D-1 order 100234 (Space Game (Steam key)), you are the seller" in text
    assert "the seller's answer is due on Saturday 28 November 2026, 09:00 UTC" in text
    assert BUYER not in answer.as_string()
    market.send(mail(frm=STRANGER, to=DISPUTES, subject="status", body="\n"), mail_from=STRANGER)
    assert "there are no disputes for mallory@evil.example" in body(market.new()[0])


def test_show_has_the_chat_and_the_history(market):
    market.open(image=True)
    [_, notice] = market.new()
    market.reply(notice, SELLER, "#return")
    detail = dispute_detail("D-1")
    assert detail["status"] == "return_accepted" and detail["deadline"] is None
    assert [(h["from"], h["to"], h["actor"]) for h in detail["history"]] == [
        (None, "awaiting_seller", "buyer"), ("awaiting_seller", "return_accepted", "seller")]
    chat = [m for m in detail["messages"] if m["direction"] == "in"]
    assert [m["role"] for m in chat] == ["buyer", "seller"]
    assert chat[0]["attachments"][0]["filename"] == "screenshot.png"
    assert {o["kind"] for o in detail["outbox"]} == {"dispute_opened", "dispute_message", "dispute_update"}


def test_an_out_of_office_is_no_answer_and_goes_nowhere(market):
    market.open()
    [_, notice] = market.new()
    ooo = mail(frm=SELLER, to=reply_to(notice), subject="Out of office", body="Back on Monday.\n",
               headers={"Auto-Submitted": "auto-replied", "In-Reply-To": notice["Message-ID"]})
    market.send(ooo, rcpt=reply_to(notice), mail_from=SELLER)
    assert market.dispute().status == "awaiting_seller"
    assert market.new() == []
    assert RawMessage.select().order_by(RawMessage.id.desc()).get().status == "dropped"


def test_addresses_written_in_the_text_are_masked_for_the_other_side(market):
    market.open()
    [confirmation, _] = market.new()
    market.reply(confirmation, BUYER, "Write me directly at BOB@example.com please.")
    relayed = market.last_to(SELLER)
    assert "Write me directly at [address hidden] please." in body(relayed)
    market.reply(relayed, SELLER, "Sure, or mail sam@seller.example yourself.")
    assert "or mail [address hidden] yourself." in body(market.last_to(BUYER))
    assert_private(market)


def test_the_administration_writes_to_both_parties(market):
    market.open()
    market.new()
    market.later(hours=48)
    market.new()
    market.reply(market.last_to(ADMIN), ADMIN, "Seller, please answer the buyer today.")
    relayed = market.new()
    assert to_of(relayed) == [BUYER, SELLER]
    assert all("The administration wrote: Seller, please answer the buyer today." in body(m) for m in relayed)
    assert all(ADMIN not in m.as_string() for m in relayed)


def test_answers_to_strangers_are_rate_limited(market):
    for n in range(7):
        market.send(mail(frm=STRANGER, to=DISPUTES, subject=f"hello {n}", body=f"text {n}\n"),
                    mail_from=STRANGER)
    assert len(market.desk.to(STRANGER)) == 5
    outcomes = [r.outcome for r in RawMessage.select()]
    assert outcomes == ["dispute_refused"] * 7


def test_with_two_admins_both_review_and_one_decision_reaches_everyone(tmp_path, db_url):
    extra = '\n[[staff]]\naddress = "dave@shop.example"\nname = "Dave"\nrole = "admin"\n'
    desk, smtp, market = make_market(tmp_path, db_url, extra=extra)
    try:
        market.open()
        market.new()
        market.later(hours=48)
        market.reply(market.last_to(BUYER), BUYER, "#escalate")
        reviews = [m for m in market.new() if "Please decide" in m["Subject"]]
        assert to_of(reviews) == [ADMIN, "dave@shop.example"]
        market.reply(reviews[1], "dave@shop.example", "#decide seller The key was redeemed on the 21st.")
        assert market.dispute().decided_for == "seller"
        told = market.new()
        assert to_of(told) == [BUYER, ADMIN, "dave@shop.example", SELLER]
        assert all("The key was redeemed on the 21st." in body(m) for m in told)
        assert history()[-1][2] == "admin:dave@shop.example"
    finally:
        smtp.stop()
        desk.app.close()


# ----------------------------------------------------------------- privacy, everywhere

VCARD = f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Bob Buyer\r\nEMAIL:{BUYER}\r\nEND:VCARD\r\n".encode()


def attached(message: EmailMessage) -> list[tuple[str, str]]:
    return [(a.get_filename(), a.get_content_type()) for a in message.iter_attachments()]


def test_proposals_accepted_texts_and_decisions_are_masked_for_the_other_side(slow_admin_market):
    market = slow_admin_market
    market.open()
    [_, notice] = market.new()
    market.reply(notice, SELLER, "#propose a new key, or write to SAM@seller.example")
    offer = market.last_to(BUYER)
    assert "a new key, or write to [address hidden]" in body(offer)
    market.reply(offer, BUYER, f"#propose a refund to {BUYER}")
    offer = market.last_to(SELLER)
    assert "a refund to [address hidden]" in body(offer)
    market.reply(offer, SELLER, "#accept")
    assert market.dispute().status == "resolved"
    assert "You accepted the buyer's proposal #2: a refund to [address hidden]" in body(market.last_to(SELLER))
    market.open(subject="Order 100235", body="Reason: not received\n\nNothing came.\n")
    market.later(hours=48)
    market.reply(market.last_to(BUYER), BUYER, "#escalate")
    review = market.last_to(ADMIN)
    assert "[D-2]" in review["Subject"]
    market.reply(review, ADMIN, f"#decide buyer {SELLER} refunds 49 EUR to {BUYER}.")
    assert market.dispute().decision == f"{SELLER} refunds 49 EUR to {BUYER}."
    assert f"[address hidden] refunds 49 EUR to {BUYER}." in body(market.last_to(BUYER))
    assert f"{SELLER} refunds 49 EUR to [address hidden]." in body(market.last_to(SELLER))
    assert "[address hidden] refunds 49 EUR to [address hidden]." in body(market.last_to(ADMIN))
    assert_private(market)


def test_files_that_carry_an_address_are_kept_but_not_passed_on_and_names_are_masked(market):
    opening = ((("application/pdf", f"receipt-{BUYER}.pdf", b"%PDF-1.4 receipt")),
               ("text/vcard", "Bob Buyer.vcf", VCARD), ("text/x-vcard", f"{BUYER}.vcf", VCARD))
    market.send(with_files(f"Bob Buyer <{BUYER}>", DISPUTES, "Order 100234",
                           "Reason: key does not work\n\nThe key is rejected.\n", opening), mail_from=BUYER)
    [confirmation, notice] = market.new()
    assert attached(notice) == [("receipt-[address hidden].pdf", "application/pdf")]
    text = body(notice)
    assert "receipt-[address hidden].pdf" in text
    assert "Not passed on" in text and "- Bob Buyer.vcf" in text and "- [address hidden].vcf" in text
    assert f"- {BUYER}.vcf" in body(confirmation)               # the buyer's own names stay
    earlier = EmailMessage()
    earlier["From"], earlier["To"], earlier["Subject"] = SELLER, "shop@example.org", "key sold"
    earlier.set_content(f"Sold by {SELLER}\n")
    market.reply(notice, SELLER, "Here is the invoice.", files=(
        ("application/pdf", f"invoice-for-{SELLER}.pdf", b"%PDF-1.4 invoice"),
        ("application/pkcs7-signature", "smime.p7s", b"0\x82cert " + SELLER.encode()),
        ("application/x-pkcs7-signature", "old-smime.p7s", b"0\x82cert " + SELLER.encode()),
        ("application/pgp-keys", "key.asc", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n" + SELLER.encode()),
        ("application/pgp-signature", "signature.asc", b"-----BEGIN PGP SIGNATURE-----\n" + SELLER.encode()),
        ("message/rfc822", "earlier.eml", earlier)))
    relayed = market.last_to(BUYER)
    assert attached(relayed) == [("invoice-for-[address hidden].pdf", "application/pdf")]
    text = body(relayed)
    for name in ("smime.p7s", "old-smime.p7s", "key.asc", "signature.asc", "earlier.eml"):
        assert f"- {name}" in text.split("Not passed on")[1]
    detail = dispute_detail("D-1")                           # everything is kept for the record
    names = [a["filename"] for m in detail["messages"] if m.get("direction") == "in" for a in m["attachments"]]
    assert len(names) == 9 and f"invoice-for-{SELLER}.pdf" in names and f"{BUYER}.vcf" in names
    assert_private(market)


def test_admin_mail_names_roles_and_the_record_keeps_the_addresses(market):
    market.open(body=f"Reason: key does not work\n\nI am {BUYER}, the key is rejected.\n")
    [_, notice] = market.new()
    market.later(hours=48)
    missed = market.last_to(ADMIN)
    assert "Seller missed the deadline" in missed["Subject"]
    assert "I am [address hidden], the key is rejected." in body(missed)
    market.reply(market.last_to(BUYER), BUYER, f"#escalate\nThe seller {SELLER} ignores me.")
    review = market.last_to(ADMIN)
    assert "Please decide" in review["Subject"] and "The seller [address hidden] ignores me." in body(review)
    assert "--- Thursday 26 November 2026, 09:00 UTC, the buyer" in body(review)
    market.reply(notice, SELLER, f"I was ill. {BUYER}, write to {SELLER}.")
    assert "I was ill. [address hidden], write to [address hidden]." in body(market.last_to(ADMIN))
    assert "I was ill. [address hidden], write to sam@seller.example." not in body(market.last_to(BUYER))
    for message in market.desk.to(ADMIN):
        assert BUYER not in readable(message) and SELLER not in readable(message), message["Subject"]
    detail = dispute_detail("D-1")
    assert (detail["buyer"], detail["seller"]) == (BUYER, SELLER)
    assert [(d["buyer"], d["seller"]) for d in list_disputes()] == [(BUYER, SELLER)]
    assert_private(market)


# ----------------------------------------------------------------- more whole disputes


def test_the_buyer_withdraws_and_may_then_open_a_new_dispute(market):
    market.open()
    [confirmation, _] = market.new()
    market.reply(confirmation, BUYER, "#withdraw\nThe key works now, sorry.")
    dispute = market.dispute()
    assert (dispute.status, dispute.open_order) == ("withdrawn", None)
    told = market.last_to(SELLER)
    assert "The buyer withdrew the dispute" in told["Subject"]
    assert "nothing more needs to be done" in body(told) and "The key works now, sorry." in body(told)
    assert "You withdrew the dispute. It is closed." in body(market.last_to(BUYER))
    assert history() == [(None, "awaiting_seller", "buyer"), ("awaiting_seller", "withdrawn", "buyer")]
    assert Timer.select().where(Timer.status == "pending").count() == 0
    market.new()
    market.later(hours=49)                                   # no reminder, no missed deadline
    assert market.new() == []
    market.open(body="Reason: key does not work\n\nIt stopped working again.\n")
    again = market.dispute()
    assert (again.id, again.status, again.order_id) == (2, "awaiting_seller", "100234")
    assert to_of(market.new()) == [BUYER, SELLER]
    assert_private(market)


def test_the_buyer_may_write_with_any_capitalisation_of_the_address(market):
    market.open(frm="Bob Buyer <BOB@Example.COM>")
    dispute = market.dispute()
    assert (dispute.status, dispute.buyer) == ("awaiting_seller", BUYER)
    [confirmation, notice] = market.new()
    assert to_of([confirmation, notice]) == [BUYER, SELLER]
    market.reply(notice, SELLER, "Which region did you buy for?")
    market.reply(market.last_to(BUYER), "Bob <BOB@EXAMPLE.com>", "EU, I am BOB@Example.COM.")
    assert "EU, I am [address hidden]." in body(market.last_to(SELLER))
    assert_private(market)


def test_accept_takes_the_other_sides_latest_proposal(market):
    market.open()
    [_, notice] = market.new()
    market.reply(notice, SELLER, "#propose a 10% refund")
    market.reply(market.last_to(BUYER), BUYER, "#propose a full refund")
    market.reply(market.last_to(SELLER), SELLER, "#propose a 50% refund")
    offer = market.last_to(BUYER)
    assert "(#3)" in body(offer) and "a 50% refund" in body(offer)
    assert "accept proposal #3: a 50% refund" in body(offer)
    market.reply(offer, BUYER, "#accept")
    assert market.dispute().status == "resolved"
    assert [(p.number, p.author, p.accepted_at is not None) for p in Proposal.select().order_by(Proposal.number)] == [
        (1, "seller", False), (2, "buyer", False), (3, "seller", True)]
    assert "You accepted the seller's proposal #3" in body(market.last_to(BUYER))
    assert "The buyer accepted your proposal #3" in body(market.last_to(SELLER))


def test_an_empty_message_is_answered_with_the_help(market):
    market.open()
    [_, notice] = market.new()
    market.reply(notice, SELLER, "-- \nSam")             # nothing but the quote and a signature
    [answer] = market.new()
    assert to_of([answer]) == [SELLER] and "Your commands in dispute D-1" in answer["Subject"]
    assert "nothing was passed on" in body(answer) and "#return" in body(answer)
    assert market.dispute().status == "awaiting_seller"          # nothing said: no answer yet
    assert RawMessage.select().order_by(RawMessage.id.desc()).get().outcome == "dispute_help"


def test_a_refused_command_has_its_own_outcome(market):
    market.open()
    [confirmation, _] = market.new()
    market.reply(confirmation, BUYER, "#escalate")
    assert RawMessage.select().order_by(RawMessage.id.desc()).get().outcome == "dispute_command_refused"


# ----------------------------------------------------------------- races


def test_a_stale_snapshot_cannot_overwrite_a_newer_status(market):
    market.open()
    market.new()
    disputes = market.desk.app.disputes
    stale = disputes.load(1)
    Dispute.update(status="withdrawn", open_order=None).where(Dispute.id == 1).execute()  # another worker
    due = stale.row.seller_due_at
    change = disputes.rules.timer("seller_due", stale.snap, due)
    with pytest.raises(StaleDispute), write_transaction():
        disputes.change(stale, change, "system", due)
    assert market.dispute().status == "withdrawn"
    assert history() == [(None, "awaiting_seller", "buyer")]


def race(monkeypatch, market, status: str, times: int = 1) -> list[str]:
    """Another worker moves dispute 1 to ``status`` right after each of our first ``times``
    reads, which all still see the status of the first one. Returns the statuses read."""
    disputes = market.desk.app.disputes
    real, reads = disputes.load, []

    def racing(dispute_id):
        loaded = real(dispute_id)
        reads.append(loaded.row.status)
        if len(reads) <= times:
            loaded.row.status = reads[0]
            Dispute.update(status=status).where(Dispute.id == dispute_id).execute()
        return loaded
    monkeypatch.setattr(disputes, "load", racing)
    return reads


def test_a_deadline_that_raced_a_command_is_decided_again(market, monkeypatch):
    market.open()
    market.later(hours=47)                   # both reminders
    market.new()
    reads = race(monkeypatch, market, "withdrawn")
    market.later(hours=1)                    # the seller's deadline fires while the buyer withdraws
    assert market.dispute().status == "withdrawn"
    assert reads == ["awaiting_seller", "withdrawn"]   # read again, and decided: nothing to do
    assert history() == [(None, "awaiting_seller", "buyer")]
    assert market.new() == []
    assert Timer.select().where(Timer.kind == "seller_due").get().status == "fired"


def test_a_command_that_raced_a_deadline_is_decided_again(market, monkeypatch):
    market.open()
    [_, notice] = market.new()
    reads = race(monkeypatch, market, "withdrawn")
    market.reply(notice, SELLER, "#return")
    assert market.dispute().status == "withdrawn" and reads == ["awaiting_seller", "withdrawn"]
    refused = market.last_to(SELLER)
    assert "Not done: #return" in refused["Subject"] and "a closed dispute takes no more commands" in body(refused)
    assert RawMessage.select().order_by(RawMessage.id.desc()).get().outcome == "dispute_command_refused"


def test_a_deadline_that_keeps_losing_goes_back_to_pending(market, monkeypatch):
    market.open()
    market.later(hours=47)
    market.new()
    race(monkeypatch, market, "seller_missed", times=100)   # every read is stale
    market.desk.clock.advance(dt.timedelta(hours=1))
    report = market.desk.app.tick()
    assert report.failed == 1
    assert Timer.select().where(Timer.kind == "seller_due").get().status == "pending"
    assert history() == [(None, "awaiting_seller", "buyer")]   # nothing of ours was written
    market.desk.app.deliver()
    assert market.new() == []


def test_an_opening_that_lost_the_race_gets_the_already_open_answer(market, monkeypatch):
    market.open()
    market.new()
    disputes = market.desk.app.disputes
    real, calls = disputes.problem, []

    def blind(*args):
        calls.append(args)
        return None if len(calls) == 1 else real(*args)    # the other opening not committed yet
    monkeypatch.setattr(disputes, "problem", blind)
    market.open(body="Reason: not received\n\nStill nothing.\n")
    [answer] = market.new()
    assert "already has dispute D-1" in answer["Subject"]
    assert Dispute.select().count() == 1 and Ticket.select().count() == 1
    assert RawMessage.select().order_by(RawMessage.id.desc()).get().outcome == "dispute_refused"
