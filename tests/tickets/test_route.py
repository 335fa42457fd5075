"""The support mailbox's rule table, pure: a fake index stands in for the store."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from helpdesk.mail import replyaddr
from helpdesk.mail.parse import parse
from helpdesk.routing import Drop, route
from helpdesk.tickets.route import (
    RULES,
    NewTicket,
    StaffReply,
    TicketContext,
    TicketReply,
    TicketsStatusRequest,
)
from tests.conftest import mail

SECRET = b"0123456789abcdef0123456789abcdef"
OURS = frozenset({"support@shop.example"})
STAFF = frozenset({"alice@shop.example"})


@dataclass
class Index:
    """Ticket 42 (open): participant 7 is bob, the requester; 8 is alice, staff.
    Ticket 50 is closed, 60 is a dispute's chat (no ticket status)."""

    statuses: dict = field(default_factory=lambda: {42: "open", 50: "closed"})
    people: dict = field(default_factory=lambda: {7: (42, "bob@example.com", "requester"),
                                                  8: (42, "alice@shop.example", "staff"),
                                                  9: (50, "bob@example.com", "requester")})
    known: dict = field(default_factory=lambda: {"parent@example.com": 42, "old@example.com": 50,
                                                 "chat@shop.example": 60})

    ours: dict = field(default_factory=dict)          # our own Message-IDs, by ticket

    def thread_matches(self, msgids):
        return ([(self.known[m], False) for m in msgids if m in self.known]
                + [(self.ours[m], True) for m in msgids if m in self.ours])

    def participant(self, pid):
        found = self.people.get(pid)
        return (found[0], found[1]) if found else None

    def is_participant(self, ticket_id, address):
        return self.role_of(ticket_id, address) is not None

    def role_of(self, ticket_id, address):
        return next((role for t, a, role in self.people.values() if t == ticket_id and a == address), None)

    def ticket_status(self, ticket_id):
        return self.statuses.get(ticket_id)


CTX = TicketContext(OURS, SECRET, Index(), STAFF)


def decide(**fields):
    return route(parse(mail(**fields)), CTX, RULES)


def signed(ticket: int, participant: int) -> str:
    return replyaddr.reply_address(SECRET, "support@shop.example", replyaddr.ReplyToken("t", ticket, participant))


def test_a_signed_reply_address_threads_only_the_participant_it_was_issued_to():
    found = decide(frm="bob@example.com", to=signed(42, 7), subject="Re: hello")
    assert found.route == TicketReply(42, silent=False, rule="signed-address")
    assert found.rules == ("no_sender", "own_mail", "bounce", "confirmation", "thread")
    stranger = decide(frm="mallory@evil.example", to=signed(42, 7), subject="Re: hello")
    assert stranger.route == NewTicket(acknowledge=True)


def test_a_forged_mac_threads_nothing():
    local, _, domain = signed(42, 7).partition("@")
    mac = local[-replyaddr.MAC_LENGTH:]
    forged = f"{local[:-len(mac)]}{mac[::-1] if mac[::-1] != mac else 'a' * len(mac)}@{domain}"
    assert replyaddr.verify(SECRET, OURS, forged) is None
    assert decide(frm="bob@example.com", to=forged).route == NewTicket(acknowledge=True)


def test_an_inbound_message_id_threads_a_stranger_without_letting_them_join():
    """parent@example.com was written by a sender (not ours): anyone could quote it."""
    own = decide(frm="bob@example.com", headers={"In-Reply-To": "<parent@example.com>"})
    assert own.route == TicketReply(42, silent=False, rule="references")
    stranger = decide(frm="colleague@example.com", headers={"In-Reply-To": "<parent@example.com>"})
    assert stranger.route == TicketReply(42, silent=False, rule="references-inbound")   # threaded, not joined


def test_one_of_our_message_ids_threads_whoever_sends_it():
    """Ours are random and reach only those we wrote to: a forwarded-to colleague holds one."""
    index = Index()
    index.ours = {"ours@shop.example": 42}
    ctx = TicketContext(OURS, SECRET, index, STAFF)
    found = route(parse(mail(frm="colleague@example.com", headers={"In-Reply-To": "<ours@shop.example>"})),
                  ctx, RULES)
    assert found.route == TicketReply(42, silent=False, rule="references")


def test_the_subject_token_counts_only_for_the_tickets_participants():
    assert decide(frm="bob@example.com", subject="Re: [T-42] hello").route.rule == "subject-token"
    assert decide(frm="mallory@evil.example", subject="Re: [T-42] hello").route == NewTicket(acknowledge=True)


def test_staff_threading_in_is_a_staff_reply_even_on_a_closed_ticket():
    signed_reply = decide(frm="alice@shop.example", to=signed(42, 8)).route
    assert signed_reply == StaffReply(42, "signed-address", proof="signed reply address")
    old = decide(frm="alice@shop.example", headers={"References": "<old@example.com>"})
    assert old.route == StaffReply(50, "references", proof=None)    # a Message-ID proves nobody


def test_a_reply_to_a_closed_ticket_opens_a_follow_up_and_an_auto_reply_to_it_is_dropped():
    follow_up = decide(frm="bob@example.com", headers={"In-Reply-To": "<old@example.com>"})
    assert follow_up.route == NewTicket(acknowledge=True, follow_up_of=50)
    auto = decide(frm="bob@example.com", headers={"In-Reply-To": "<old@example.com>", "Auto-Submitted": "auto-replied"})
    assert auto.route == Drop("auto-reply to closed ticket T-50")


def test_an_auto_reply_threads_silently_or_is_dropped_when_it_matches_nothing():
    silent = decide(frm="bob@example.com", headers={"In-Reply-To": "<parent@example.com>",
                                                     "Auto-Submitted": "auto-replied"})
    assert silent.route == TicketReply(42, silent=True, rule="references")
    assert decide(headers={"Auto-Submitted": "auto-replied"}).route == Drop("auto-reply that matches no ticket")


def test_a_dispute_chats_message_id_is_not_a_ticket_here():
    assert decide(headers={"In-Reply-To": "<chat@shop.example>"}).route == NewTicket(acknowledge=True)


@pytest.mark.parametrize("subject, bulk, expected", [
    ("status", False, TicketsStatusRequest()),
    ("  Status ", False, TicketsStatusRequest()),
    ("status", True, NewTicket(acknowledge=False, why_silent="bulk or list mail")),
])
def test_status_requests_and_bulk_mail(subject, bulk, expected):
    headers = {"Precedence": "bulk"} if bulk else {}
    assert decide(subject=subject, headers=headers).route == expected
