"""The door to disputes: the dispute rows, their history, proposals, and the chat's rows.

A dispute's chat is a ticket of kind "dispute", so its messages, attachments,
thread references, participants and outgoing mail live in the ticket tables;
the functions here write and read them the way a dispute does. Everything runs
in the caller's transaction (the pipeline's, the deadline tick's or the
command line's), and reading a dispute takes a fixed number of queries,
whatever its history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, fields

import peewee as pw

from helpdesk.errors import AlreadyOpen
from helpdesk.mail.parse import InboundMail
from helpdesk.store import sql
from helpdesk.store.attachments import StoredAttachment
from helpdesk.store.db import write_transaction
from helpdesk.store.orders import OrderRow
from helpdesk.store.schema import (
    Attachment,
    Dispute,
    DisputeEvent,
    Message,
    Outbox,
    Participant,
    Proposal,
    ThreadRef,
    Ticket,
)


@dataclass
class DisputeRow:
    """One dispute as stored. Not frozen: the desk sets the columns it has just written
    on the copy it holds, so the notices of the same change read the new state."""

    id: int
    ticket_id: int                       # its chat
    order_id: str
    buyer: str
    seller: str
    reason: str
    description: str
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime
    seller_due_at: dt.datetime
    seller_answered_at: dt.datetime | None
    window_closes_at: dt.datetime | None
    admin_due_at: dt.datetime | None
    decided_for: str | None
    decision: str | None
    open_order: str | None               # the order id while open: the unique index


_COLUMNS = tuple(f.name for f in fields(DisputeRow))


@dataclass(frozen=True)
class ChatMessage:
    created_at: dt.datetime
    sender: str
    body: str
    attachments: tuple[StoredAttachment, ...]


@dataclass(frozen=True)
class ProposalRow:
    number: int
    author: str
    text: str
    accepted: bool


# --- a dispute ---------------------------------------------------------------------

def create(mailbox: str, subject: str, order: OrderRow, requester_name: str, reason: str,
           description: str, status: str, seller_due_at: dt.datetime, now: dt.datetime) -> tuple[int, int]:
    """A new dispute on ``order`` and its chat; returns (chat ticket, dispute).

    ``AlreadyOpen`` when the database refuses a second open dispute for the order
    (the unique ``open_order``); both rows are rolled back with a savepoint, and the
    caller's transaction goes on.
    """
    try:
        with write_transaction(), pw.__exception_wrapper__:
            ticket = sql.insert(
                Ticket, mailbox=mailbox, kind="dispute", subject=subject, requester=order.buyer,
                requester_name=requester_name, status="dispute", priority="normal",
                created_at=now, updated_at=now)
            number = sql.insert(
                Dispute, ticket=ticket, order_id=order.order_id, buyer=order.buyer, seller=order.seller,
                reason=reason, description=description, status=status, created_at=now,
                updated_at=now, seller_due_at=seller_due_at, open_order=order.order_id)
    except pw.IntegrityError as exc:
        if "open_order" not in str(exc):   # both engines name the index; anything else is a bug
            raise
        raise AlreadyOpen(f"order {order.order_id} already has an open dispute") from exc
    return ticket, number


def read(dispute_id: int) -> DisputeRow | None:
    row = Dispute.get_or_none(Dispute.id == dispute_id)
    return _row(row) if row is not None else None


def update(dispute_id: int, status: str, values: dict) -> bool:
    """Write ``values`` only while the dispute is still in ``status``; whether it was.
    Another transaction (a deadline, a command) may have moved it since it was read."""
    return (Dispute.update(**values)
            .where((Dispute.id == dispute_id) & (Dispute.status == status)).execute()) == 1


def add_event(dispute_id: int, now: dt.datetime, actor: str, before: str | None, after: str,
              reason: str) -> None:
    """One step of the dispute's history."""
    sql.insert(DisputeEvent, dispute=dispute_id, at=now, actor=actor, from_status=before,
               to_status=after, reason=reason)


def open_for_order(order_id: str, statuses: Iterable[str]) -> tuple[int, str] | None:
    """(id, status) of the order's dispute in one of the open ``statuses``, if any."""
    row = (Dispute.select(Dispute.id, Dispute.status)
           .where((Dispute.order_id == order_id) & Dispute.status.in_(list(statuses)))
           .order_by(Dispute.id).first())
    return (row.id, row.status) if row is not None else None


def of_participant(address: str, limit: int) -> list[tuple[DisputeRow, str]]:
    """The disputes ``address`` takes part in, each with its role there, oldest first."""
    rows = (Dispute.select(Dispute, Participant.role.alias("role"))
            .join(Participant, on=(Participant.ticket == Dispute.ticket))
            .where(Participant.address == address).order_by(Dispute.id).limit(limit).objects())
    return [(_row(row), row.role) for row in rows]


def _row(row: Dispute) -> DisputeRow:
    return DisputeRow(*(getattr(row, name) for name in _COLUMNS))


# --- proposals ---------------------------------------------------------------------

def offers(dispute_id: int) -> list[tuple[int, str, str]]:
    """(number, author, text) of every proposal, in order."""
    return list(Proposal.select(Proposal.number, Proposal.author, Proposal.text)
                .where(Proposal.dispute == dispute_id).order_by(Proposal.number).tuples())


def propose(dispute_id: int, author: str, text: str, now: dt.datetime) -> int:
    """A new proposal; returns its number (1, 2, ... per dispute)."""
    number = (Proposal.select(pw.fn.MAX(Proposal.number)).where(Proposal.dispute == dispute_id)
              .scalar() or 0) + 1
    sql.insert(Proposal, dispute=dispute_id, number=number, author=author, text=text, created_at=now)
    return number


def accept(dispute_id: int, number: int, now: dt.datetime) -> None:
    (Proposal.update(accepted_at=now)
     .where((Proposal.dispute == dispute_id) & (Proposal.number == number)).execute())


# --- the chat ----------------------------------------------------------------------

def chat_mailbox(ticket_id: int) -> str:
    [(mailbox,)] = sql.select(Ticket, ["mailbox"], {"id": ticket_id})
    return mailbox


def participants(ticket_id: int) -> list[tuple[int, str, str, str]]:
    """(id, address, name, role) of everyone in the chat, in the order they joined."""
    return list(Participant.select(Participant.id, Participant.address, Participant.name, Participant.role)
                .where(Participant.ticket == ticket_id).order_by(Participant.id).tuples())


def add_participant(ticket_id: int, address: str, name: str, role: str) -> int:
    return sql.insert(Participant, ticket=ticket_id, address=address, name=name, role=role)


def record(ticket_id: int, sender: str, body: str, stored: Iterable[StoredAttachment], now: dt.datetime,
           mail: InboundMail | None, raw_id: int | None) -> None:
    """One inbound message of the chat (``body``: its own words), with its attachments and
    thread references; ``mail`` is None for the marketplace's form."""
    message = sql.insert(
        Message, ticket=ticket_id, raw=raw_id, direction="in", sender=sender,
        recipients=", ".join(mail.to + mail.cc) if mail else "", subject=mail.subject if mail else "",
        body=body, full_text=mail.text if mail else body, message_id=mail.message_id if mail else None,
        auto=False, created_at=now)
    sql.insert_rows(Attachment, [
        {"message": message, "filename": a.filename, "content_type": a.content_type, "size": a.size,
         "sha256": a.sha256, "inline": a.inline, "refused": a.refused} for a in stored])
    if mail is not None:
        sql.insert_rows(ThreadRef, [{"msgid": m, "ticket": ticket_id} for m in mail.thread_ids],
                        ignore_conflicts=True)


def chat(ticket_id: int, dispute_id: int) -> tuple[list[ChatMessage], list[ProposalRow]]:
    """Every message (with its files) and every proposal, in three queries."""
    messages = list(Message.select().where(Message.ticket == ticket_id)
                    .order_by(Message.created_at, Message.id))
    files: dict[int, list[StoredAttachment]] = {}
    for a in Attachment.select().where(Attachment.message.in_([m.id for m in messages] or [0])):
        files.setdefault(a.message_id, []).append(
            StoredAttachment(a.filename, a.content_type, a.size, a.sha256, a.inline, a.refused))
    said = [ChatMessage(m.created_at, m.sender, m.body, tuple(files.get(m.id, ()))) for m in messages]
    proposals = [ProposalRow(p.number, p.author, p.text, p.accepted_at is not None)
                 for p in Proposal.select().where(Proposal.dispute == dispute_id).order_by(Proposal.number)]
    return said, proposals


def anchors(ticket_id: int) -> dict[str, str]:
    """Recipient -> the Message-ID of our first mail to them in this chat."""
    first = (Outbox.select(pw.fn.MIN(Outbox.id)).where(Outbox.ticket == ticket_id)
             .group_by(Outbox.recipient))
    return dict(Outbox.select(Outbox.recipient, Outbox.message_id).where(Outbox.id.in_(first)).tuples())


def sent_to(address: str, kinds: Iterable[str], since: dt.datetime) -> int:
    """How many mails of these kinds were queued to ``address`` since then (rate limits)."""
    return (Outbox.select().where((Outbox.recipient == address) & Outbox.kind.in_(list(kinds))
                                  & (Outbox.created_at >= since)).count())
