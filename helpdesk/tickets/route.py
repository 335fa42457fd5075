"""Decide what an inbound mail is, without changing anything.

An ordered tuple of small rules; the first that returns a ``Route`` wins, and
the names of the rules consulted are kept so every decision can be explained
in the log. Lookups the rules need (which ticket a Message-ID belongs to, who a
participant is) come through the read-only ``ThreadIndex`` protocol, which the
store implements; the router itself never writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from helpdesk.mail import replyaddr
from helpdesk.mail.parse import InboundMail

_SUBJECT_TOKEN = re.compile(r"\[T-(\d{1,12})\]", re.IGNORECASE)
OPEN_FOR_REPLIES = frozenset({"new", "open", "waiting_on_customer", "resolved"})
CUSTOMER_ROLES = ("requester", "cc")   # a staff member who wrote in as a customer stays one there


@dataclass(frozen=True)
class NewTicket:
    acknowledge: bool
    why_silent: str = ""
    follow_up_of: int | None = None


@dataclass(frozen=True)
class TicketReply:
    ticket_id: int
    silent: bool
    rule: str


@dataclass(frozen=True)
class StaffReply:
    """A staff member writing into a ticket: commands, a note, or an answer to relay."""

    ticket_id: int
    rule: str


@dataclass(frozen=True)
class StatusRequest:
    """A customer asking for the list of their open requests (subject "status")."""


@dataclass(frozen=True)
class RecordBounce:
    recipients: tuple[str, ...]
    ticket_id: int | None


@dataclass(frozen=True)
class Drop:
    reason: str


@dataclass(frozen=True)
class Quarantine:
    reason: str


Route = NewTicket | TicketReply | StaffReply | StatusRequest | RecordBounce | Drop | Quarantine


@dataclass(frozen=True)
class Decision:
    route: Route
    rules: tuple[str, ...] = field(default=())


class ThreadIndex(Protocol):
    def thread_matches(self, msgids: tuple[str, ...]) -> list[tuple[int, bool]]:
        """(ticket, ours) for tickets that know one of these ids, newest ticket first;
        ``ours`` when the id is one of the Message-IDs the helpdesk itself generated."""
    def participant(self, participant_id: int) -> tuple[int, str] | None: ...
    def is_participant(self, ticket_id: int, address: str) -> bool: ...
    def role_of(self, ticket_id: int, address: str) -> str | None: ...
    def ticket_status(self, ticket_id: int) -> str | None: ...


@dataclass(frozen=True)
class RouteContext:
    mailbox_kind: str
    own_addresses: frozenset[str]
    secret: bytes
    index: ThreadIndex
    staff: frozenset[str] = frozenset()


Rule = Callable[[InboundMail, RouteContext], Route | None]


def no_sender(mail: InboundMail, ctx: RouteContext) -> Route | None:
    return None if mail.from_addr else Quarantine("no sender address (From is missing or invalid)")


def own_mail(mail: InboundMail, ctx: RouteContext) -> Route | None:
    if mail.loop:
        return Drop("loop: carries our X-Helpdesk-Loop header")
    base = replyaddr.untagged(mail.from_addr)
    if base in ctx.own_addresses:
        return Drop(f"loop: sent from our own address {mail.from_addr}")
    return None


def bounce(mail: InboundMail, ctx: RouteContext) -> Route | None:
    if mail.bounce is None:
        return None
    ids = (mail.bounce.original_message_id,) if mail.bounce.original_message_id else ()
    ours = [ticket for ticket, generated in ctx.index.thread_matches(ids + mail.thread_ids) if generated]
    return RecordBounce(mail.bounce.recipients, ours[0] if ours else None)


def thread(mail: InboundMail, ctx: RouteContext) -> Route | None:
    found = _by_signed_address(mail, ctx) or _by_references(mail, ctx) or _by_subject(mail, ctx)
    if found is None:
        return None
    ticket_id, rule = found
    status = ctx.index.ticket_status(ticket_id)
    if status is None:
        return None  # a dispute's chat: not a ticket, the mail is new here
    if (mail.from_addr in ctx.staff and not mail.auto_submitted
            and ctx.index.role_of(ticket_id, mail.from_addr) not in CUSTOMER_ROLES):
        return StaffReply(ticket_id, rule)  # also on a closed ticket: "#reopen" must work
    if status not in OPEN_FOR_REPLIES:
        if mail.auto_submitted:
            return Drop(f"auto-reply to closed ticket T-{ticket_id}")
        return NewTicket(acknowledge=not mail.bulk, why_silent=_silence(mail),
                         follow_up_of=ticket_id)
    return TicketReply(ticket_id, silent=mail.auto_submitted, rule=rule)


def unthreaded_auto_reply(mail: InboundMail, ctx: RouteContext) -> Route | None:
    if mail.auto_submitted:
        return Drop("auto-reply that matches no ticket")
    return None


def status_request(mail: InboundMail, ctx: RouteContext) -> Route | None:
    if mail.subject.strip().lower() == "status" and not mail.bulk:
        return StatusRequest()
    return None


def new_ticket(mail: InboundMail, ctx: RouteContext) -> Route | None:
    return NewTicket(acknowledge=not mail.bulk, why_silent=_silence(mail))


RULES: tuple[Rule, ...] = (no_sender, own_mail, bounce, thread, unthreaded_auto_reply, status_request,
                           new_ticket)


def route(mail: InboundMail, ctx: RouteContext, rules: tuple[Rule, ...] = RULES) -> Decision:
    consulted = []
    for rule in rules:
        consulted.append(rule.__name__)
        result = rule(mail, ctx)
        if result is not None:
            return Decision(result, tuple(consulted))
    return Decision(Quarantine("no rule matched"), tuple(consulted))


def _by_signed_address(mail: InboundMail, ctx: RouteContext) -> tuple[int, str] | None:
    token = replyaddr.find_token(ctx.secret, ctx.own_addresses, mail.recipients)
    if token is None or token.kind != "t":
        return None
    owner = ctx.index.participant(token.participant_id)
    if owner is None or owner[0] != token.thread_id:
        return None
    if owner[1] != mail.from_addr:
        return None  # somebody else's address (Reply-To proves nothing): try the other rules
    return token.thread_id, "signed-address"


def _by_references(mail: InboundMail, ctx: RouteContext) -> tuple[int, str] | None:
    """A known Message-ID threads whoever sends it, like every mail client does.

    A Message-ID works as a capability: only people who received the mail know
    it (ours are random; clients use UUIDs or equivalent), and a thread's
    colleagues and forwarded-to helpers must be able to answer in it. What
    proves nothing (Reply-To, a ticket number in the subject) never counts.
    The newest matching ticket wins, so a follow-up's thread stays on it.
    """
    matches = ctx.index.thread_matches(mail.thread_ids)
    return (matches[0][0], "references") if matches else None


def _by_subject(mail: InboundMail, ctx: RouteContext) -> tuple[int, str] | None:
    match = _SUBJECT_TOKEN.search(mail.subject)
    if match is None:
        return None
    ticket = int(match.group(1))
    if ctx.index.is_participant(ticket, mail.from_addr):
        return ticket, "subject-token"
    return None


def _silence(mail: InboundMail) -> str:
    return "bulk or list mail" if mail.bulk else ""
