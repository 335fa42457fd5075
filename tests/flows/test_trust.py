"""A forged From acts for nobody (issue 11, docs/trust.md).

Each attack of the issue as a test that fails on the code before proven identity,
and the legitimate paths end to end: the real pipeline, a real database on both
engines, the real templates and the outgoing Maildir, a fixed clock.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from helpdesk.cli import main
from helpdesk.reports import digest
from helpdesk.store.schema import Dispute, DisputeEvent, Hold, Message, Proposal, RawMessage, Ticket
from tests.conftest import authenticated, mail
from tests.flows.test_disputes_smtp import ADMIN, BUYER, DISPUTES, SELLER, body, make_market

pytestmark = pytest.mark.usefixtures("db_url")
FORGED_ALICE = "Alice <alice@shop.example>"
PHISH = "#priority low\nDear customer, confirm your card at https://verify.evil.example within 24 hours.\n"


def reply_to_of(message) -> str:
    return re.search(r"<([^>]+)>", str(message["Reply-To"])).group(1)


def body_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def open_ticket(desk) -> str:
    """Bob's new ticket T-1; returns Alice's signed reply address from her notice."""
    desk.ingest(mail(message_id="first", subject="My key does not work"))
    return reply_to_of(desk.to("alice@shop.example")[-1])


def confirmations(desk, address: str = "alice@shop.example") -> list:
    return [m for m in desk.to(address) if "Please confirm" in str(m["Subject"])]


def forged(body: str = PHISH, frm: str = FORGED_ALICE, **fields) -> bytes:
    return mail(frm=frm, subject="Re: [T-1] My key does not work", body=body, **fields)


# --- the attacks ---------------------------------------------------------------------

def test_a_forged_agent_neither_speaks_to_the_customer_nor_closes_the_ticket(desk):
    open_ticket(desk)
    to_bob = len(desk.to("bob@example.com"))
    tally = desk.ingest(forged())
    desk.ingest(forged("#close\n"))
    assert tally.counts["held"] == 1
    assert len(desk.to("bob@example.com")) == to_bob            # nothing relayed
    ticket = Ticket.get_by_id(1)
    assert (ticket.status, ticket.priority) == ("new", "normal")
    held = Message.select().where(Message.direction == "held")
    assert [m.sender for m in held] == ["alice@shop.example"] * 2
    assert len(confirmations(desk)) == 2                        # the real Alice is asked


def test_a_from_with_a_second_address_is_never_proof(desk):
    open_ticket(desk)
    two = "=?utf-8?q?Mallory?= <mallory@evil.example> <alice@shop.example>"
    desk.ingest(authenticated(mail(frm=two, subject="Re: [T-1] My key", body="#note applied?\n"),
                              domain="shop.example"))
    assert Message.select().where(Message.direction == "note").count() == 0
    assert Message.select().where(Message.sender == "alice@shop.example", Message.direction != "in").count() == 0


@pytest.mark.parametrize("header", [
    "Authentication-Results: mx.evil.example; dmarc=pass header.from=shop.example",   # not our MTA
    "Authentication-Results: mx.shop.example; dkim=fail header.d=shop.example",        # did not verify
    "Authentication-Results: mx.shop.example; dkim=pass header.d=evil.example",        # not aligned
])
def test_authentication_results_that_prove_nothing(desk, header):
    open_ticket(desk)
    to_bob = len(desk.to("bob@example.com"))
    assert desk.ingest((header + "\n").encode() + forged()).counts["held"] == 1
    assert len(desk.to("bob@example.com")) == to_bob
    assert Ticket.get_by_id(1).priority == "normal"


def test_the_claimed_sender_learns_nothing(desk):
    open_ticket(desk)
    before = len(desk.outgoing())
    desk.ingest(forged(frm="Alice <alice@shop.example>", headers={"Reply-To": "mallory@evil.example"}))
    new = desk.outgoing()[before:]
    assert [str(m["To"]) for m in new] == ["Alice <alice@shop.example>"]   # only the real Alice
    assert "mallory" not in new[0].as_string() and "verify.evil.example" not in new[0].as_string()


# --- the legitimate paths ---------------------------------------------------------------

def test_an_agent_replying_to_the_notice_is_proven_at_once(desk):
    signed = open_ticket(desk)
    desk.ingest(mail(frm=FORGED_ALICE, to=signed, subject="Re: [T-1] My key", body="Try ABCD-1234.\n"))
    assert "Try ABCD-1234." in body_of(desk.to("bob@example.com")[-1])
    assert not confirmations(desk)


def test_an_agent_behind_our_mta_is_proven_by_its_authentication_results(desk):
    open_ticket(desk)
    desk.ingest(authenticated(forged("#close\nSolved, I think.\n")))
    assert Ticket.get_by_id(1).status == "resolved"
    assert "Solved, I think." in body_of(desk.to("bob@example.com")[-1])


def test_the_confirmation_round_trip_applies_the_held_mail_once(desk, capsys):
    open_ticket(desk)
    to_bob = len(desk.to("bob@example.com"))
    desk.ingest(forged("#priority high\nA new key: ABCD-1234.\n"))
    [ask] = confirmations(desk)
    assert "reply to this mail" in body_of(ask)
    assert main(["--config", str(desk.config_path), "show", "T-1", "--json"]) == 0
    [held] = [m for m in json.loads(capsys.readouterr().out)["messages"] if m.get("unverified")]
    assert held["from"] == "alice@shop.example"
    assert main(["--config", str(desk.config_path), "show", "T-1"]) == 0
    assert "UNVERIFIED" in capsys.readouterr().out

    confirm = mail(frm=FORGED_ALICE, to=reply_to_of(ask), subject="Re: " + str(ask["Subject"]), body="yes\n")
    assert desk.ingest(confirm).counts["hold_confirmed"] == 1
    desk.ingest()                                          # the requeued mail's turn
    assert Ticket.get_by_id(1).priority == "high"
    assert len(desk.to("bob@example.com")) == to_bob + 1
    assert "ABCD-1234" in body_of(desk.to("bob@example.com")[-1])

    desk.ingest(mail(frm=FORGED_ALICE, to=reply_to_of(ask), subject="Re: again", body="yes\n"))
    desk.ingest()
    assert len(desk.to("bob@example.com")) == to_bob + 1   # one-time: the second use does nothing
    assert Hold.get().status == "applied"
    assert Message.select().where(Message.direction == "held").count() == 0   # no longer shown unverified


def test_a_confirmation_from_anyone_else_does_nothing(desk):
    open_ticket(desk)
    desk.ingest(forged())
    [ask] = confirmations(desk)
    desk.ingest(mail(frm="Mallory <mallory@evil.example>", to=reply_to_of(ask), subject="Re: x", body="yes\n"))
    desk.ingest()
    assert Hold.get().status == "pending"
    assert Ticket.get_by_id(1).priority == "normal"


def test_a_hold_expires(desk):
    open_ticket(desk)
    desk.ingest(forged())
    [ask] = confirmations(desk)
    desk.clock.advance(dt.timedelta(days=3, minutes=1))
    desk.ingest(mail(frm=FORGED_ALICE, to=reply_to_of(ask), subject="Re: x", body="yes\n"))
    desk.ingest()
    assert Hold.get().status == "pending"
    assert Ticket.get_by_id(1).priority == "normal"


def test_confirmation_mails_are_capped_per_person_per_day(desk):
    open_ticket(desk)
    for n in range(7):
        desk.ingest(forged(f"#note try {n}\n"))
    assert Hold.select().count() == 7                       # every one kept
    assert len(confirmations(desk)) == 5                    # [trust] confirm_rate_limit
    desk.clock.advance(dt.timedelta(days=1, minutes=1))
    desk.ingest(forged("#note next day\n"))
    assert len(confirmations(desk)) == 6


def confirmed_agent_answer(desk):
    """For the template samples: a held agent answer and its confirmation mail; past the
    cap, the combined mail."""
    open_ticket(desk)
    for _ in range(6):
        desk.ingest(forged())
    desk.app.tick()


# --- disputes: the buyer may not act for the seller, nor anyone for the administration ------

@pytest.fixture
def market(tmp_path, db_url):
    desk, smtp, made = make_market(tmp_path, db_url)
    yield made
    smtp.stop()
    desk.app.close()


def dispute_opened(market):
    """Bob's dispute D-1 on order 100234; returns the seller's notice."""
    market.open()
    [_, notice] = market.new()
    return notice


def forged_party(market, frm: str, body: str, **headers) -> None:
    market.send(mail(frm=frm, to=DISPUTES, subject="Re: [D-1] Order 100234", body=body,
                     headers=headers or None), mail_from=BUYER)


def test_the_buyer_forging_the_seller_with_the_token_returns_nothing(market, capsys):
    dispute_opened(market)
    forged_party(market, f"Sam <{SELLER}>", "#return\n")
    assert market.dispute().status == "awaiting_seller"
    capsys.readouterr()
    assert main(["--config", str(market.desk.config_path), "show", "D-1", "--json"]) == 0
    [held] = [m for m in json.loads(capsys.readouterr().out)["messages"] if m.get("unverified")]
    assert held["from"] == SELLER
    asked = market.last_to(SELLER)
    assert "Please confirm" in asked["Subject"]      # asked, the #return only quoted for the seller to judge
    assert "Commands: #return" in body(asked) and "reply to this mail" in body(asked)
    assert "Please confirm" not in market.last_to(BUYER)["Subject"]


def test_the_buyer_forging_the_seller_by_in_reply_to_cannot_propose_and_accept(market):
    dispute_opened(market)
    received = market.last_to(BUYER)
    forged_party(market, f"Sam <{SELLER}>", "#propose Full refund and keep the key\n",
                 **{"In-Reply-To": received["Message-ID"]})
    market.reply(market.last_to(BUYER), BUYER, "#accept")
    assert market.dispute().status == "awaiting_seller"
    assert Proposal.select().count() == 0


def escalated(market):
    """D-1 in admin review (the seller's offer refused, the window closed, the buyer escalated)."""
    notice = dispute_opened(market)
    market.reply(notice, SELLER, "#propose 20% discount on the next purchase")
    market.later(days=3)
    market.reply(market.last_to(BUYER), BUYER, "#escalate\nThe discount is useless to me.")
    assert market.dispute().status == "admin_review"
    return market.last_to(ADMIN)


def test_a_forged_admin_decides_nothing(market):
    escalated(market)
    forged_party(market, f"Bob <{ADMIN}>", "#decide buyer Full refund, the seller pays.\n")
    assert market.dispute().status == "admin_review"
    assert DisputeEvent.select().where(DisputeEvent.actor == f"admin:{ADMIN}").count() == 0


def test_the_admin_deciding_from_the_review_mail_is_proven(market):
    review = escalated(market)
    market.reply(review, ADMIN, "#decide buyer Full refund.")
    assert market.dispute().status == "decided"


def test_a_held_seller_return_applies_once_the_seller_confirms(market):
    dispute_opened(market)
    forged_party(market, f"Sam <{SELLER}>", "#return\nSorry, here is your money back.\n")
    asked = market.last_to(SELLER)
    market.reply(asked, SELLER, "yes, that was me")
    market.run()                                           # the requeued mail's turn
    assert market.dispute().status == "return_accepted"
    assert "money back" in body(market.last_to(BUYER))


def everyone_is_asked_to_confirm(market):
    """For the template samples: a held message of the seller, the buyer and the admin;
    past the cap, their combined mails."""
    notice = dispute_opened(market)
    for _ in range(6):
        forged_party(market, f"Sam <{SELLER}>", "#return\n")
        forged_party(market, f"Bob <{BUYER}>", "#withdraw\n")
    market.reply(notice, SELLER, "#propose 20% discount on the next purchase")
    market.later(days=3)
    market.reply(market.last_to(BUYER), BUYER, "#escalate")
    for _ in range(6):
        forged_party(market, f"Carol <{ADMIN}>", "#decide buyer Full refund.\n")
    market.run()


# --- backscatter --------------------------------------------------------------------

def test_no_acknowledgement_to_a_from_our_mta_says_is_forged_and_the_digest_counts_it(desk):
    forged_customer = authenticated(mail(frm="Victim <victim@buyers.example>", message_id="spam"),
                                    result="dmarc=fail")
    tally = desk.ingest(forged_customer)
    assert tally.counts["new_ticket"] == 1                      # kept, nothing lost
    assert desk.to("victim@buyers.example") == []
    desk.ingest(forged())                                       # and one held mail
    now = desk.clock.now() + dt.timedelta(days=1)
    got = digest.build(desk.app.config, now, digest.current_period(desk.app.config, now))
    assert (got.held, got.sender_failed) == (1, 1)
    shown = digest.context(got, desk.app.config)
    assert (shown["held"], shown["sender_failed"]) == (1, 1)


def test_a_failure_claimed_by_an_untrusted_authserv_id_is_the_senders_own_word(desk):
    desk.ingest(b"Authentication-Results: mx.evil.example; spf=fail smtp.mailfrom=bob@example.com\n"
                + mail(message_id="first"))
    assert len(desk.to("bob@example.com")) == 1                 # acknowledged as ever


def test_an_out_of_office_answer_to_the_confirmation_confirms_nothing(desk):
    open_ticket(desk)
    desk.ingest(forged())
    [ask] = confirmations(desk)
    desk.ingest(mail(frm=FORGED_ALICE, to=reply_to_of(ask), subject="Automatic reply: x", body="away\n",
                     headers={"Auto-Submitted": "auto-replied"}))
    desk.ingest()
    assert Hold.get().status == "pending"


def test_no_status_list_and_no_dispute_for_a_from_our_mta_says_is_forged(market):
    bad = {"Authentication-Results": "mx.shop.example; dmarc=fail header.from=example.com"}
    market.desk.ingest(mail(subject="status", headers=bad))
    market.send(mail(frm=f"Bob Buyer <{BUYER}>", to=DISPUTES, subject="Order 100234",
                     body="Reason: key does not work\n\nThe key is rejected.\n", headers=bad))
    assert market.desk.to(BUYER) == [] and market.desk.to(SELLER) == []
    assert Dispute.select().count() == 0
    [quarantined] = RawMessage.select().where(RawMessage.status == "quarantined")
    assert "dmarc=fail" in quarantined.reason                 # kept, with the reason


# --- security review: what a confirmation shows, and no silence past the cap -----------

def test_the_confirmation_quotes_what_it_would_apply_with_links_defanged(desk):
    open_ticket(desk)
    desk.ingest(forged("#close\n" + PHISH))
    text = body_of(confirmations(desk)[-1])
    assert "#close, #priority low" in text                    # the commands it would apply
    assert "Dear customer, confirm your card at" in text      # its first lines
    assert "hxxps://verify[.]evil[.]example" in text
    assert "verify.evil.example" not in text                  # no clickable link to the phishing page
    assert "alice@shop.example" in text and "UTC" in text     # the claimed From and when it came


def test_a_long_held_mail_is_quoted_clipped(desk):
    open_ticket(desk)
    desk.ingest(forged("".join(f"line {n}\n" for n in range(500))))
    text = body_of(confirmations(desk)[-1])
    assert "line 9\n" in text and "line 10\n" not in text
    assert len(text) < 3000


def test_past_the_cap_the_real_agent_is_still_told_in_one_combined_mail_a_day(desk):
    open_ticket(desk)
    for _ in range(5):                                       # the attacker spends Alice's cap
        desk.ingest(forged("#close\n"))
    desk.ingest(forged("#priority high\nA new key: ABCD-1234.\n"))   # Alice's own fresh [T-1] mail
    assert len(confirmations(desk)) == 5
    desk.app.tick()
    desk.app.deliver()
    [told] = confirmations(desk)[5:]                         # no silence: one combined mail
    text = body_of(told)
    assert "ABCD-1234" in text and "#priority high" in text
    [address] = [a for a in re.findall(r"write to (\S+)", text)]
    for _ in range(10):                                      # more forgeries: no flood
        desk.ingest(forged("#close\n"))
    desk.app.tick()
    desk.app.deliver()
    assert len(confirmations(desk)) == 6
    desk.clock.advance(dt.timedelta(hours=23))
    assert desk.ingest(mail(frm=FORGED_ALICE, to=address, subject="Re: x", body="yes\n")).counts["hold_confirmed"] == 1
    desk.ingest()
    assert Ticket.get_by_id(1).priority == "high"            # done, with one extra reply
    assert Ticket.get_by_id(1).status != "resolved"
    desk.clock.advance(dt.timedelta(hours=2))
    desk.app.tick()
    desk.app.deliver()
    [next_day] = confirmations(desk)[6:]                      # the next day's one mail lists the rest
    assert "10 more messages" in body_of(next_day)


def test_past_the_cap_a_seller_is_still_told(market):
    dispute_opened(market)
    for _ in range(5):
        forged_party(market, f"Sam <{SELLER}>", "#return\n")
    asked = len([m for m in market.desk.to(SELLER) if "Please confirm" in str(m["Subject"])])
    forged_party(market, f"Sam <{SELLER}>", "I can offer a discount.\n")
    market.run()
    combined = [m for m in market.desk.to(SELLER) if "Please confirm" in str(m["Subject"])][asked:]
    assert len(combined) == 1 and "I can offer a discount." in body(combined[0])
    assert "D-1" in body(combined[0])
