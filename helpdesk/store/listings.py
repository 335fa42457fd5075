"""The queries behind the command line's listings: tickets, disputes and quarantine.

Rows come back as plain frozen dataclasses, each read from the columns of
the same name. Every function is one query, or one per 500 ids, whatever the
number of rows (message counts are one grouped query), so ``reports.listings``
stays a fixed number of queries on a large database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from functools import cache

import peewee as pw

from helpdesk.store.disputes import DisputeRow
from helpdesk.store.schema import (
    Attachment,
    Dispute,
    DisputeEvent,
    Message,
    Outbox,
    Participant,
    Proposal,
    RawMessage,
    Ticket,
)


@dataclass(frozen=True)
class TicketListing:
    id: int
    kind: str                 # "ticket", or "dispute" for a dispute's chat
    status: str
    subject: str
    requester: str
    requester_name: str
    mailbox: str
    priority: str
    assignee: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    first_response_at: dt.datetime | None
    overdue: bool
    follow_up_of: int | None
    reply_to: str | None = None   # the first mail's differing Reply-To: unverified, never mailed


@dataclass(frozen=True)
class MessageRow:
    id: int
    direction: str
    sender: str
    recipients: str
    subject: str
    body: str
    full_text: str
    message_id: str | None
    auto: bool
    created_at: dt.datetime


@dataclass(frozen=True)
class SentRow:
    """A row of the outbox: mail we sent, or will send, about a ticket."""

    kind: str
    envelope_from: str
    recipient: str
    subject: str
    text: str
    message_id: str
    status: str
    attempts: int
    last_error: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class FileRow:
    message_id: int           # the ``Message`` it came with
    filename: str
    content_type: str
    size: int
    sha256: str | None
    inline: bool
    refused: str | None


@dataclass(frozen=True)
class QuarantineRow:
    id: int
    mailbox: str
    source: str
    reason: str | None
    received_at: dt.datetime
    message_id: str | None
    size: int


@dataclass(frozen=True)
class ProposalListing:
    number: int
    author: str
    text: str
    created_at: dt.datetime
    accepted_at: dt.datetime | None


@dataclass(frozen=True)
class EventRow:
    at: dt.datetime
    actor: str
    from_status: str | None
    to_status: str
    reason: str


# --- tickets -----------------------------------------------------------------------

def tickets(status: str | None = None) -> list[TicketListing]:
    """Tickets in id order, not disputes' chats; all, or those in one status."""
    query = Ticket.select().where(Ticket.kind == "ticket").order_by(Ticket.id)
    if status:
        query = query.where(Ticket.status == status)
    return _rows(TicketListing, query)


def ticket(number: int) -> TicketListing | None:
    """Any ticket, a dispute's chat too."""
    return _one(TicketListing, Ticket.select().where(Ticket.id == number))


def dispute_of_chat(ticket_id: int) -> int | None:
    """The dispute whose chat is this ticket."""
    rows = list(Dispute.select().where(Dispute.ticket == ticket_id).paginate(1, 1).tuples())
    return rows[0][0] if rows else None


def message_counts(ticket_ids: list[int]) -> dict[int, int]:
    """Messages per ticket in one grouped query (over every ticket for a long list)."""
    if not ticket_ids:
        return {}
    query = (Message.select(Message.ticket, pw.fn.COUNT(Message.id).alias("n"))
             .group_by(Message.ticket))
    if len(ticket_ids) < 1000:
        query = query.where(Message.ticket.in_(ticket_ids))
    return dict(query.tuples())


def messages(ticket_id: int) -> list[MessageRow]:
    """A ticket's conversation, oldest first."""
    return _rows(MessageRow, Message.select().where(Message.ticket == ticket_id)
                 .order_by(Message.created_at, Message.id))


def sent(ticket_id: int) -> list[SentRow]:
    """The outbox rows about a ticket, in the order they were queued."""
    return _rows(SentRow, Outbox.select().where(Outbox.ticket == ticket_id).order_by(Outbox.id))


def files(message_ids: list[int]) -> list[FileRow]:
    """The attachments of these messages, in the order they were stored."""
    if not message_ids:
        return []
    return _rows(FileRow, Attachment.select().where(Attachment.message.in_(message_ids))
                 .order_by(Attachment.id))


# --- quarantine --------------------------------------------------------------------

def quarantined() -> list[QuarantineRow]:
    """Every quarantined raw message, in id order (the status index finds them)."""
    rows = (RawMessage.select(RawMessage.id, RawMessage.mailbox, RawMessage.source, RawMessage.reason,
                              RawMessage.received_at, RawMessage.message_id, RawMessage.size)
            .where(RawMessage.status == "quarantined").order_by(RawMessage.id).tuples())
    return [QuarantineRow(*row) for row in rows]


def raw_status(raw_id: int) -> str | None:
    """The status of a raw message; None when there is none with this id."""
    rows = list(RawMessage.select().where(RawMessage.id == raw_id).paginate(1, 1).dicts())
    return rows[0]["status"] if rows else None


# --- disputes ----------------------------------------------------------------------

def disputes(status: str | None = None) -> list[DisputeRow]:
    """Disputes in id order; all, or those in one status."""
    query = Dispute.select().order_by(Dispute.id)
    if status:
        query = query.where(Dispute.status == status)
    return _rows(DisputeRow, query)


def dispute(number: int) -> DisputeRow | None:
    return _one(DisputeRow, Dispute.select().where(Dispute.id == number))


def roles(ticket_id: int) -> dict[str, str]:
    """Role by address of a ticket's participants (buyer, seller, admin in a dispute's chat)."""
    return dict(Participant.select(Participant.address, Participant.role)
                .where(Participant.ticket == ticket_id).tuples())


def proposals(dispute_id: int) -> list[ProposalListing]:
    return _rows(ProposalListing, Proposal.select().where(Proposal.dispute == dispute_id)
                 .order_by(Proposal.number))


def history(dispute_id: int) -> list[EventRow]:
    """Every state change of a dispute, oldest first."""
    return _rows(EventRow, DisputeEvent.select().where(DisputeEvent.dispute == dispute_id)
                 .order_by(DisputeEvent.at, DisputeEvent.id))


# --- rows --------------------------------------------------------------------------

def _rows(kind: type, query: pw.ModelSelect) -> list:
    keys = _keys(kind, query.model)
    return [kind(*[row[key] for key in keys]) for row in query.dicts()]


def _one(kind: type, query: pw.ModelSelect):
    """The first row or None, with the statement ``Model.get_or_none`` sends."""
    rows = _rows(kind, query.paginate(1, 1))
    return rows[0] if rows else None


@cache
def _keys(kind: type, model: type[pw.Model]) -> tuple[str, ...]:
    """The query's dict key for each field of ``kind``: the column of that name, or
    the foreign key it names as ``<key>_id``."""
    columns = model._meta.fields
    return tuple(f.name if f.name in columns else f.name.removesuffix("_id")
                 for f in dataclasses.fields(kind))
