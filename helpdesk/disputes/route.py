"""Decide what a mail to a disputes mailbox is, without changing anything.

The disputes mailbox's rule table, run by ``routing.route`` like the
tickets' one: the first answer wins and the rules consulted are kept to
explain the decision. Loops, bounces and missing senders are judged by the
rules ``routing`` shares with every mailbox; then:

1. auto-replies and bulk mail are dropped (an out-of-office must never count
   as the seller's answer, and nothing automatic is ever answered);
2. a signed reply address ``disputes+d7.12.<mac>@…`` is a message into
   dispute 7 from participant 12 — but only when the From is that
   participant; anyone else gets ``NotYours`` (refused, relayed to nobody);
3. In-Reply-To/References to a dispute's mail, or its ``[D-7]`` subject
   token, from one of its participants is a message too (a client that
   answered the From instead of the Reply-To); from anyone else, ``NotYours``;
4. the subject "status" asks for the state of the sender's disputes;
5. anything else is a request to open a dispute, parsed here into
   ``OpenRequest`` (order id, reason, description) with what is missing.

Database lookups come through the read-only ``DisputeIndex``.
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
from helpdesk.units import normalise_reason

# Mail text is an outsider's and may be megabytes: each pattern here is linear in it. The
# look-ahead for a digit runs only after a letter (which starts a fresh run); the reason
# stays on its line and its words are taken possessively. The plain forms re-scanned a run
# from each of its positions (order-order-... or 40,000 newlines: 7-15 s, four times that
# per doubling), and a blank "Reason:" took the next line of the mail as its reason.
_ORDER = re.compile(
    r"\border\b(?:[\s-]*(?:id|number|nr|no)\b\.?)?[\s:#]*((?:\d|[A-Za-z](?=[\w-]*\d))[\w-]{0,63})",
    re.IGNORECASE | re.ASCII)
_ORDER_LINE = re.compile(r"^\s*order\b[^\n]*$", re.IGNORECASE)
_REASON = re.compile(r"^[^\S\n]*reason[^\S\n]*[:=-][^\S\n]*((?:[^\S\n]*+\S)*+)[^\S\n]*$",
                     re.IGNORECASE | re.MULTILINE)
_SUBJECT_TOKEN = re.compile(r"\[D-(\d{1,9})\]", re.IGNORECASE)
_PREFIXES = re.compile(r"^\s*((re|fwd?|aw|wg|sv|vs|tr|rv|antw)\s*:\s*)+", re.IGNORECASE)


@dataclass(frozen=True)
class DisputeMessage:
    dispute_id: int
    ticket_id: int
    participant_id: int
    role: str            # buyer | seller | admin
    rule: str
    proof: str | None = None     # how the sender is proven (routing.proof); None: claimed, held


@dataclass(frozen=True)
class NotYours:
    """Somebody who is not a participant wrote into a dispute."""

    dispute_id: int
    ticket_id: int
    rule: str


@dataclass(frozen=True)
class DisputesStatusRequest:
    address: str


@dataclass(frozen=True)
class OpenRequest:
    order_id: str | None
    reason: str | None          # one of the configured reasons, normalised
    reason_given: str | None    # what the sender wrote after "Reason:"
    description: str
    problems: tuple[str, ...]   # no_order, no_reason, bad_reason, no_description


DisputeRoute = (DisputeMessage | NotYours | DisputesStatusRequest | OpenRequest | ConfirmHold | RecordBounce
                | Drop | Quarantine)


class DisputeIndex(ThreadIndex, Protocol):
    def dispute_participant(self, participant_id: int) -> tuple[int, int, str, str] | None:
        """(dispute, ticket, address, role) of a participant of a dispute's ticket."""
    def disputes_of_tickets(self, ticket_ids: list[int]) -> dict[int, int]:
        """ticket id -> dispute id, for the tickets that are disputes' chats."""
    def dispute_ticket(self, dispute_id: int) -> int | None: ...
    def role_in(self, ticket_id: int, address: str) -> tuple[int, str] | None:
        """(participant id, role) of ``address`` on a ticket."""


@dataclass(frozen=True)
class DisputeContext:
    own_addresses: frozenset[str]
    secret: bytes
    reasons: tuple[str, ...]
    index: DisputeIndex
    authserv_ids: tuple[str, ...] = ()      # [trust]: whose Authentication-Results count


Rule = Callable[[InboundMail, DisputeContext], DisputeRoute | None]


def noise(mail: InboundMail, ctx: DisputeContext) -> DisputeRoute | None:
    if mail.auto_submitted:
        return Drop("auto-reply to the disputes address (never relayed or answered)")
    if mail.bulk:
        return Drop("bulk or list mail to the disputes address")
    return None


def signed_address(mail: InboundMail, ctx: DisputeContext) -> DisputeRoute | None:
    token = replyaddr.find_token(ctx.secret, ctx.own_addresses, mail.recipients)
    if token is None or token.kind != "d":
        return None
    owner = ctx.index.dispute_participant(token.participant_id)
    if owner is None or owner[0] != token.thread_id:
        return None
    dispute, ticket, address, role = owner
    if address != mail.from_addr:
        return NotYours(dispute, ticket, "signed-address")
    return DisputeMessage(dispute, ticket, token.participant_id, role, "signed-address",
                          proof(mail, ctx, signed=True))


def references(mail: InboundMail, ctx: DisputeContext) -> DisputeRoute | None:
    tickets = [ticket for ticket, _ in ctx.index.thread_matches(mail.thread_ids)]
    disputes = ctx.index.disputes_of_tickets(tickets) if tickets else {}
    ticket = next((t for t in tickets if t in disputes), None)
    return None if ticket is None else _from_participant(mail, ctx, disputes[ticket], ticket, "references")


def subject_token(mail: InboundMail, ctx: DisputeContext) -> DisputeRoute | None:
    match = _SUBJECT_TOKEN.search(mail.subject)
    ticket = ctx.index.dispute_ticket(int(match.group(1))) if match else None
    if ticket is None:
        return None
    return _from_participant(mail, ctx, int(match.group(1)), ticket, "subject-token")


def status(mail: InboundMail, ctx: DisputeContext) -> DisputeRoute | None:
    subject = _PREFIXES.sub("", mail.subject).strip(" \t?!.:").lower()
    return DisputesStatusRequest(mail.from_addr) if subject == "status" else None


def open_request(mail: InboundMail, ctx: DisputeContext) -> DisputeRoute | None:
    failed = sender_failed(mail, ctx)
    if failed:   # forged by our MTA's word: no dispute in someone's name, no answer to a victim
        return Quarantine(f"the sender failed {failed}: no dispute opened, nothing answered")
    return parse_request(mail.subject, mail.reply_text, ctx.reasons)


RULES: tuple[Rule, ...] = (no_sender, own_mail, bounce, noise, confirmation, signed_address, references,
                           subject_token, status, open_request)


def parse_request(subject: str, text: str, reasons: tuple[str, ...]) -> OpenRequest:
    """Order id (subject first, then body), ``Reason:`` line, and the rest as the description."""
    found = _ORDER.search(subject) or _ORDER.search(text)
    order_id = found.group(1) if found else None
    reason_match = _REASON.search(text)
    given = reason_match.group(1) if reason_match else None
    reason = normalise_reason(given) if given else None
    problems = []
    if order_id is None:
        problems.append("no_order")
    if not given:
        problems.append("no_reason")
    elif reason not in reasons:
        problems.append("bad_reason")
    description = _description(text)
    if not description:
        problems.append("no_description")
    return OpenRequest(order_id, reason if reason in reasons else None, given, description,
                       tuple(problems))


def _description(text: str) -> str:
    """The body without the ``Reason:`` line and lines that only name the order."""
    kept = [line for line in text.splitlines()
            if not _REASON.match(line) and not (_ORDER_LINE.match(line) and _only_order(line))]
    return "\n".join(kept).strip()


def _only_order(line: str) -> bool:
    match = _ORDER.search(line)
    return bool(match) and not line[match.end():].strip(" .,:;")


def _from_participant(mail: InboundMail, ctx: DisputeContext, dispute: int, ticket: int,
                      rule: str) -> DisputeRoute:
    found = ctx.index.role_in(ticket, mail.from_addr)
    if found is None:
        return NotYours(dispute, ticket, rule)
    return DisputeMessage(dispute, ticket, found[0], found[1], rule, proof(mail, ctx))
