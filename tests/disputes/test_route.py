"""Routing of mail to the disputes address, pure: a fake index stands in for the store."""

from __future__ import annotations

from typing import ClassVar

import pytest

from helpdesk.disputes.route import (
    RULES,
    DisputeContext,
    DisputeMessage,
    DisputesStatusRequest,
    NotYours,
    OpenRequest,
    parse_request,
)
from helpdesk.mail import replyaddr
from helpdesk.mail.loop import loop_id
from helpdesk.mail.parse import parse
from helpdesk.routing import Drop, Quarantine, route
from helpdesk.units import normalise_reason
from tests.conftest import mail

SECRET = b"0123456789abcdef0123456789abcdef"
REASONS = ("not received", "key does not work", "not as described", "other")
OURS = frozenset({"disputes@shop.example", "support@shop.example"})


class FakeIndex:
    """Dispute 7 lives in ticket 70: participant 1 the buyer, 2 the seller."""

    people: ClassVar[dict] = {1: (7, 70, "bob@example.com", "buyer"), 2: (7, 70, "sam@seller.example", "seller")}

    def thread_matches(self, msgids):
        return [(70, True)] if "ours@shop.example" in msgids else []

    def participant(self, pid):
        return None

    def is_participant(self, ticket_id, address):
        return False

    def ticket_status(self, ticket_id):
        return None

    def dispute_participant(self, pid):
        return self.people.get(pid)

    def disputes_of_tickets(self, ticket_ids):
        return {70: 7} if 70 in ticket_ids else {}

    def dispute_ticket(self, dispute_id):
        return 70 if dispute_id == 7 else None

    def role_in(self, ticket_id, address):
        return next(((pid, p[3]) for pid, p in self.people.items() if p[2] == address), None)


CTX = DisputeContext(OURS, SECRET, REASONS, FakeIndex())


def decide(**fields):
    fields.setdefault("to", "disputes@shop.example")
    return route(parse(mail(**fields)), CTX, RULES).route


def signed(participant: int, dispute: int = 7) -> str:
    return replyaddr.reply_address(SECRET, "disputes@shop.example", replyaddr.ReplyToken("d", dispute, participant))


def test_a_participant_writing_to_their_own_address_is_a_message():
    found = decide(frm="sam@seller.example", to=signed(2), body="#return\n")
    assert found == DisputeMessage(7, 70, 2, "seller", "signed-address", proof="signed reply address")


def test_anyone_else_with_that_address_is_refused():
    assert decide(frm="mallory@evil.example", to=signed(2)) == NotYours(7, 70, "signed-address")
    assert decide(frm="bob@example.com", to=signed(2)) == NotYours(7, 70, "signed-address")


def test_a_forged_or_foreign_token_is_no_address_at_all():
    forged = "disputes+d7.2.aaaaaaaaaa@shop.example"
    found = decide(frm="sam@seller.example", to=forged, subject="hello", body="hi\n")
    assert isinstance(found, OpenRequest)
    ticket_token = replyaddr.reply_address(SECRET, "disputes@shop.example", replyaddr.ReplyToken("t", 7, 2))
    assert isinstance(decide(frm="sam@seller.example", to=ticket_token, body="hi\n"), OpenRequest)


def test_references_and_subject_token_thread_participants_only():
    headers = {"In-Reply-To": "<ours@shop.example>"}
    assert decide(frm="bob@example.com", headers=headers) == DisputeMessage(7, 70, 1, "buyer", "references")
    assert decide(frm="eve@example.com", headers=headers) == NotYours(7, 70, "references")
    assert decide(frm="bob@example.com", subject="Re: [D-7] Order") == DisputeMessage(
        7, 70, 1, "buyer", "subject-token")
    assert decide(frm="eve@example.com", subject="Re: [D-7] Order") == NotYours(7, 70, "subject-token")
    assert isinstance(decide(frm="bob@example.com", subject="[D-8] x", body="y\n"), OpenRequest)


@pytest.mark.parametrize("headers, reason", [
    ({"Auto-Submitted": "auto-replied"}, "auto-reply"),
    ({"Precedence": "bulk"}, "bulk"),
    ({"X-Helpdesk-Loop": loop_id(SECRET)}, "loop"),
])
def test_automatic_mail_is_dropped_even_from_a_participant(headers, reason):
    found = decide(frm="sam@seller.example", to=signed(2), headers=headers)
    assert isinstance(found, Drop) and reason in found.reason


def test_no_sender_is_quarantined():
    assert isinstance(decide(frm="undisclosed"), Quarantine)


@pytest.mark.parametrize("subject", ["status", "Status?", "RE: status", " STATUS "])
def test_status_by_subject(subject):
    assert decide(frm="bob@example.com", subject=subject) == DisputesStatusRequest("bob@example.com")


@pytest.mark.parametrize("subject, text, order", [
    ("Order 100234", "", "100234"),
    ("order #100234 broken", "", "100234"),
    ("Dispute", "Order ID: A-100234\n", "A-100234"),
    ("Dispute", "my order no. 55123 never came", "55123"),
    ("Problem", "I ordered a key; order was late. Order: 777\n", "777"),
    ("Help", "no number here", None),
])
def test_the_order_id_is_found_in_subject_or_body(subject, text, order):
    assert parse_request(subject, text, REASONS).order_id == order


def test_reason_and_description():
    request = parse_request("Order 100234", "Order: 100234\nReason: Key does NOT work.\n\nSteam says invalid.\n"
                            "My order 100234 was paid.", REASONS)
    assert request == OpenRequest("100234", "key does not work", "Key does NOT work.",
                                  "Steam says invalid.\nMy order 100234 was paid.", ())


@pytest.mark.parametrize("text, problems", [
    ("Nothing came.", ("no_reason",)),
    ("Reason: lost\nNothing came.", ("bad_reason",)),
    ("Reason: not received", ("no_description",)),
])
def test_what_is_missing_is_named(text, problems):
    assert parse_request("Order 1234", text, REASONS).problems == problems


def test_reasons_are_compared_loosely():
    assert normalise_reason('  "Not-Received". ') == "not received"
    assert normalise_reason("key_does_not  work!") == "key does not work"


def test_configured_reasons_are_normalised_like_the_senders(tmp_path):
    from helpdesk.config.loader import load_config
    from tests.conftest import write_config
    extra = '\n[disputes]\nreasons = ["Key-does-not-work!", "not_received.", "  Other  "]\n'
    reasons = load_config(write_config(tmp_path, extra=extra)).disputes.reasons
    assert reasons == ("key does not work", "not received", "other")
    request = parse_request("Order 1234", "Reason: Key does not work\n\nSteam says invalid.", reasons)
    assert (request.reason, request.problems) == ("key does not work", ())
    assert parse_request("Order 1234", "Reason: not-received\n\nNothing.", reasons).reason == "not received"


@pytest.mark.parametrize("reasons, message", [
    ('["not received", "Not-Received."]', 'lists the reason "not received" twice'),
    ('["other", "?!"]', "a reason is empty"),
])
def test_reasons_that_cannot_be_told_apart_are_refused(tmp_path, reasons, message):
    from helpdesk.config.loader import load_config
    from helpdesk.errors import ConfigError
    from tests.conftest import write_config
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, extra=f"\n[disputes]\nreasons = {reasons}\n"))
    assert message in str(info.value) and "reasons" in str(info.value)
