"""Decide what an inbound mail is, without changing anything: the one routing engine.

A domain (tickets, disputes) is an ordered tuple of small rules; the first
that returns a route wins, and the names of the rules consulted are kept in
the ``Decision`` so every outcome can be explained in the log. The pipeline
picks the table by the mailbox's kind and hands the decision to that
domain's ``apply``, the same way for every domain.

The rules that hold whatever the mailbox (no sender, our own mail, bounces)
live here; each domain's table lists them where it wants them. Lookups come
through the read-only ``ThreadIndex`` protocol, which the store implements:
no rule ever writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from helpdesk.mail import authresults, replyaddr
from helpdesk.mail.loop import loop_id
from helpdesk.mail.parse import InboundMail


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


@dataclass(frozen=True)
class ConfirmHold:
    """A reply to a confirmation mail's signed one-time address (token kind ``c``)."""

    hold_id: int
    participant_id: int


@dataclass(frozen=True)
class Decision:
    route: Any                      # one of the domain's route values, or the shared ones above
    rules: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Applied:
    """What a domain made of one mail, for the pipeline's outcome and log line."""

    kind: str               # new_ticket | reply | staff_* | dispute_* | bounce | dropped | quarantined ...
    ticket_id: int | None
    detail: str = ""


class ThreadIndex(Protocol):
    def thread_matches(self, msgids: tuple[str, ...]) -> list[tuple[int, bool]]:
        """(ticket, ours) for tickets that know one of these ids, newest ticket first;
        ``ours`` when the id is one of the Message-IDs the helpdesk itself generated."""


class RuleContext(Protocol):
    """What the shared rules need of a domain's context."""

    own_addresses: frozenset[str]
    secret: bytes
    index: ThreadIndex


Rule = Callable[[InboundMail, Any], Any]


class Domain(Protocol):
    """A kind of mailbox: its rule table, the context its rules read, and what applies a decision.

    ``apply`` runs inside the pipeline's transaction: the state change and the
    mail it causes are committed together or not at all.
    """

    table: tuple[Rule, ...]

    def context(self) -> Any: ...

    def apply(self, decision: Decision, mail: InboundMail, stored: tuple, raw_id: int,
              mailbox: Any) -> Applied: ...


def route(mail: InboundMail, ctx: Any, rules: tuple[Rule, ...]) -> Decision:
    """The first rule with an answer decides; every rule asked is named in the decision."""
    consulted = []
    for rule in rules:
        consulted.append(rule.__name__)
        result = rule(mail, ctx)
        if result is not None:
            return Decision(result, tuple(consulted))
    return Decision(Quarantine("no rule matched"), tuple(consulted))


def bounced(chosen: RecordBounce, mail: InboundMail, ticket_id: int | None) -> Applied:
    """A bounce, once the tickets desk recorded it (on the ticket it refers to, if any)."""
    return Applied("bounce", ticket_id, "bounce: " + (", ".join(chosen.recipients) or mail.from_addr))


def settled(chosen: Any) -> Applied:
    """What a domain makes of the routes no domain handles: dropped and quarantined mail.

    Anything else reaching here is a route its domain forgot to apply: a bug, said loudly.
    """
    if isinstance(chosen, Drop):
        return Applied("dropped", None, chosen.reason)
    if isinstance(chosen, Quarantine):
        return Applied("quarantined", None, chosen.reason)
    raise TypeError(f"no domain applies the route {chosen!r}")


def explain(decision: Decision) -> str:
    """The log's account of a decision: the rules asked, then the answer."""
    return f"rules {' > '.join(decision.rules)} -> {decision.route}"


# --- proven identity (docs/trust.md) ----------------------------------------------

CONFIRM_TOKEN = "c"
SIGNED = "signed reply address"


def proof(mail: InboundMail, ctx: Any, signed: bool = False) -> str | None:
    """How the sender is proven, or None when they are only claimed.

    ``signed``: the mail came to the reply address we issued to the very
    participant its From names (the domain's rule checked the token's owner).
    Otherwise only the topmost Authentication-Results of an MTA the config
    trusts can prove it. An ambiguous From proves nothing, whatever else.
    """
    if mail.from_ambiguous or not mail.from_addr:
        return None
    if signed:
        return SIGNED
    found = authresults.verdict(mail.auth_results, getattr(ctx, "authserv_ids", ()), mail.from_addr)
    return f"authentication-results {found.proven}" if found.proven else None


def sender_failed(mail: InboundMail, ctx: Any) -> str | None:
    """``dmarc=fail``/``spf=fail`` when our trusted MTA says so: no acknowledgement goes to such a From."""
    return authresults.verdict(mail.auth_results, getattr(ctx, "authserv_ids", ()), mail.from_addr).failed


# --- the rules every domain shares -------------------------------------------------

def no_sender(mail: InboundMail, ctx: RuleContext) -> Quarantine | None:
    return None if mail.from_addr else Quarantine("no sender address (From is missing or invalid)")


def own_mail(mail: InboundMail, ctx: RuleContext) -> Drop | None:
    if loop_id(ctx.secret) in mail.loop_ids:   # another helpdesk's id is not ours: its mail gets in
        return Drop("loop: carries our X-Helpdesk-Loop id")
    base = replyaddr.untagged(mail.from_addr)
    if base in ctx.own_addresses:
        return Drop(f"loop: sent from our own address {mail.from_addr}")
    return None


def bounce(mail: InboundMail, ctx: RuleContext) -> RecordBounce | None:
    if mail.bounce is None:
        return None
    ids = (mail.bounce.original_message_id,) if mail.bounce.original_message_id else ()
    ours = [ticket for ticket, generated in ctx.index.thread_matches(ids + mail.thread_ids) if generated]
    return RecordBounce(mail.bounce.recipients, ours[0] if ours else None)


def confirmation(mail: InboundMail, ctx: RuleContext) -> ConfirmHold | None:
    """A reply to a confirmation mail; whether it confirms anything is checked when applied."""
    token = replyaddr.find_token(ctx.secret, ctx.own_addresses, mail.recipients)
    if token is None or token.kind != CONFIRM_TOKEN:
        return None
    return ConfirmHold(token.thread_id, token.participant_id)
