"""The tickets mailbox's rule table: what a mail to support is, decided without writing.

Run by ``routing.route``; the first rule with an answer wins. Threading here
decides only *where* a mail belongs: a signed reply address, a known
Message-ID, or a ``[T-n]`` subject token from one of the ticket's
participants. Lookups (which ticket a Message-ID belongs to, who a
participant is) come through the read-only ``TicketIndex``, which the store
implements.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from helpdesk.mail import replyaddr
from helpdesk.mail.parse import InboundMail
from helpdesk.routing import (
    ConfirmHold,
    Drop,
    Quarantine,
    RecordBounce,
    ThreadIndex,
    bounce,
    confirmation,
    no_sender,
    own_mail,
    proof,
    sender_failed,
)

_SUBJECT_TOKEN = re.compile(r"\[T-(\d{1,12})\]", re.IGNORECASE)
OPEN_FOR_REPLIES = frozenset({"new", "open", "waiting_on_customer", "resolved"})
CUSTOMER_ROLES = ("requester", "cc")   # a staff member who wrote in as a customer stays one there


@dataclass(frozen=True)
class NewTicket:
    acknowledge: bool
    why_silent: str = ""
    follow_up_of: int | None = None
    sender_failed: str | None = None   # our MTA said "dmarc=fail"/"spf=fail": no acknowledgement (backscatter)


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
    proof: str | None = None     # how the sender is proven (routing.proof); None: claimed, held


@dataclass(frozen=True)
class TicketsStatusRequest:
    """A customer asking for the list of their open requests (subject "status")."""


Route = (NewTicket | TicketReply | StaffReply | TicketsStatusRequest | ConfirmHold | RecordBounce | Drop
         | Quarantine)


class TicketIndex(ThreadIndex, Protocol):
    def participant(self, participant_id: int) -> tuple[int, str] | None: ...
    def is_participant(self, ticket_id: int, address: str) -> bool: ...
    def role_of(self, ticket_id: int, address: str) -> str | None: ...
    def ticket_status(self, ticket_id: int) -> str | None: ...


@dataclass(frozen=True)
class TicketContext:
    own_addresses: frozenset[str]
    secret: bytes
    index: TicketIndex
    staff: frozenset[str] = frozenset()
    authserv_ids: tuple[str, ...] = ()      # [trust]: whose Authentication-Results count


Rule = Callable[[InboundMail, TicketContext], Route | None]
INBOUND_ONLY = "references-inbound"     # threaded by a Message-ID we did not write: not joined


def thread(mail: InboundMail, ctx: TicketContext) -> Route | None:
    found = _by_signed_address(mail, ctx) or _by_references(mail, ctx) or _by_subject(mail, ctx)
    if found is None:
        return None
    ticket_id, rule = found
    status = ctx.index.ticket_status(ticket_id)
    if status is None:
        return None  # a dispute's chat: not a ticket, the mail is new here
    if (mail.from_addr in ctx.staff and not mail.auto_submitted
            and ctx.index.role_of(ticket_id, mail.from_addr) not in CUSTOMER_ROLES):
        return StaffReply(ticket_id, rule, proof(mail, ctx, signed=rule == "signed-address"))  # also on a closed ticket: "#reopen" must work
    if status not in OPEN_FOR_REPLIES:
        if mail.auto_submitted:
            return Drop(f"auto-reply to closed ticket T-{ticket_id}")
        return _new_ticket(mail, ctx, follow_up_of=ticket_id)
    return TicketReply(ticket_id, silent=mail.auto_submitted, rule=rule)


def unthreaded_auto_reply(mail: InboundMail, ctx: TicketContext) -> Route | None:
    if mail.auto_submitted:
        return Drop("auto-reply that matches no ticket")
    return None


def status_request(mail: InboundMail, ctx: TicketContext) -> Route | None:
    if mail.subject.strip().lower() == "status" and not mail.bulk:
        failed = sender_failed(mail, ctx)
        return Drop(f"status request: the sender failed {failed}") if failed else TicketsStatusRequest()
    return None


def new_ticket(mail: InboundMail, ctx: TicketContext) -> Route | None:
    return _new_ticket(mail, ctx)


RULES: tuple[Rule, ...] = (no_sender, own_mail, bounce, confirmation, thread, unthreaded_auto_reply, status_request,
                           new_ticket)


def _by_signed_address(mail: InboundMail, ctx: TicketContext) -> tuple[int, str] | None:
    token = replyaddr.find_token(ctx.secret, ctx.own_addresses, mail.recipients)
    if token is None or token.kind != "t":
        return None
    owner = ctx.index.participant(token.participant_id)
    if owner is None or owner[0] != token.thread_id:
        return None
    if owner[1] != mail.from_addr:
        return None  # somebody else's address (Reply-To proves nothing): try the other rules
    return token.thread_id, "signed-address"


def _by_references(mail: InboundMail, ctx: TicketContext) -> tuple[int, str] | None:
    """A known Message-ID threads the mail; only ours let a newcomer join the ticket.

    Our Message-IDs are random and reach only those we wrote to, so whoever
    quotes one received our mail: a colleague it was forwarded to answers in
    the thread and joins the ticket. A Message-ID an inbound mail carried
    proves nothing of the sort (its writer chose it, anyone can quote it): a
    newcomer quoting one is threaded, so the text lands where it belongs
    (a colleague answering the customer's mail), but does not join the ticket
    and its answers (``references-inbound``; a stranger who forged the first
    mail got the agent's answers as a copy). The ticket's people and staff
    (whose actions need proof of their own) thread as before. What proves
    nothing (Reply-To, a ticket number in the subject) never counts. The
    newest matching ticket wins, so a follow-up's thread stays on it.
    """
    matches = ctx.index.thread_matches(mail.thread_ids)
    if not matches:
        return None
    ticket, ours = matches[0]
    if ours or mail.from_addr in ctx.staff or ctx.index.is_participant(ticket, mail.from_addr):
        return ticket, "references"
    return ticket, INBOUND_ONLY


def _by_subject(mail: InboundMail, ctx: TicketContext) -> tuple[int, str] | None:
    match = _SUBJECT_TOKEN.search(mail.subject)
    if match is None:
        return None
    ticket = int(match.group(1))
    if ctx.index.is_participant(ticket, mail.from_addr):
        return ticket, "subject-token"
    return None


def _new_ticket(mail: InboundMail, ctx: TicketContext, follow_up_of: int | None = None) -> NewTicket:
    """A new ticket, acknowledged unless bulk, or unless our MTA says the From is forged:
    an acknowledgement would then go to a victim of the forgery (backscatter)."""
    failed = sender_failed(mail, ctx)
    if failed:
        return NewTicket(acknowledge=False, why_silent=f"the sender failed {failed}",
                         follow_up_of=follow_up_of, sender_failed=failed)
    return NewTicket(acknowledge=not mail.bulk, why_silent=_silence(mail), follow_up_of=follow_up_of)


def _silence(mail: InboundMail) -> str:
    return "bulk or list mail" if mail.bulk else ""
