"""The door to tickets: their rows, participants, messages, thread references and bounces.

The tickets and staff domains read and write through these functions, which
take and return plain values (and ``TicketRow``); what a status or a timer
means is decided there, not here. Writes run in the caller's transaction.
The per-message ones use the prepared statements of ``sql``, one statement
per table whatever the number of rows.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from helpdesk.mail.filenames import neutralised
from helpdesk.store import sql
from helpdesk.store.attachments import StoredAttachment
from helpdesk.store.schema import (
    Attachment,
    Bounce,
    Dispute,
    Message,
    Outbox,
    Participant,
    ThreadRef,
    Ticket,
)


@dataclass
class TicketRow:
    """A ticket's working fields; whoever changes the ticket records the change here too."""

    id: int
    subject: str
    status: str
    requester: str
    priority: str
    assignee: str | None
    first_response_at: dt.datetime | None
    mailbox: str


_TICKET_COLUMNS = ("id", "subject", "status", "requester", "priority", "assignee", "first_response_at",
                   "mailbox")


# --- ticket rows ---------------------------------------------------------------

def create(mailbox: str, subject: str, requester: str, requester_name: str, now: dt.datetime,
           follow_up_of: int | None, reply_to: str | None = None) -> int:
    """A new ticket, status "new"; returns its number. ``reply_to``: the mail's differing,
    unverified Reply-To, kept to show staff."""
    return sql.insert(
        Ticket, mailbox=mailbox, subject=subject, requester=requester,
        requester_name=requester_name, status="new", priority="normal",
        created_at=now, updated_at=now, follow_up_of=follow_up_of, reply_to=reply_to)


def read(ticket_id: int) -> TicketRow | None:
    """One ticket's working fields, by a prepared statement; None for no ticket (or a dispute's chat)."""
    rows = sql.select(Ticket, _TICKET_COLUMNS, {"id": ticket_id, "kind": "ticket"})
    if not rows:
        return None
    values = list(rows[0])
    values[6] = Ticket.first_response_at.python_value(values[6])
    return TicketRow(*values)


def read_many(ids: Iterable[int]) -> dict[int, TicketRow]:
    """Many tickets' working fields in one query (a chunk of due timers)."""
    found: dict[int, TicketRow] = {}
    unique = sorted(set(ids))
    for start in range(0, len(unique), 500):
        rows = (Ticket.select(*[getattr(Ticket, c) for c in _TICKET_COLUMNS])
                .where(Ticket.id.in_(unique[start:start + 500]) & (Ticket.kind == "ticket")).tuples())
        found.update({row[0]: TicketRow(*row) for row in rows})
    return found


def shown(ticket_id: int) -> tuple[str, str, str]:
    """The subject, status and requester that a mail about the ticket shows."""
    [row] = sql.select(Ticket, ["subject", "status", "requester"], {"id": ticket_id})
    return row


def update(ticket_id: int, **values) -> None:
    """Set columns of one ticket (``status=..., updated_at=...``)."""
    sql.update(Ticket, ticket_id, **values)


def mark_overdue(priorities: dict[int, str], now: dt.datetime) -> None:
    """Escalated tickets: overdue, priority raised; one UPDATE per new priority."""
    by_priority: dict[str, list[int]] = defaultdict(list)
    for ticket_id, priority in priorities.items():
        by_priority[priority].append(ticket_id)
    for priority, ids in by_priority.items():
        for start in range(0, len(ids), 500):
            (Ticket.update(overdue=True, priority=priority, updated_at=now)
             .where(Ticket.id.in_(ids[start:start + 500])).execute())


# --- participants --------------------------------------------------------------

def add_participant(ticket_id: int, address: str, name: str, role: str) -> int:
    """A new participant (the address must not be on the ticket yet); returns its id."""
    return sql.insert(Participant, ticket=ticket_id, address=address, name=name, role=role)


def add_copied(ticket_id: int, addresses: Sequence[str]) -> None:
    """Addresses join as "cc" participants; those already on the ticket stay as they are."""
    sql.insert_rows(Participant, [{"ticket": ticket_id, "address": a, "name": "", "role": "cc"}
                                  for a in addresses], ignore_conflicts=True)


def participant_id(ticket_id: int, address: str) -> int | None:
    rows = sql.select(Participant, ["id"], {"ticket": ticket_id, "address": address})
    return rows[0][0] if rows else None


def participants(ticket_id: int, roles: Sequence[str]) -> list[tuple[int, str, str]]:
    """(id, address, name) of the participants in these roles, in the order they joined."""
    return list(Participant.select(Participant.id, Participant.address, Participant.name)
                .where((Participant.ticket == ticket_id) & Participant.role.in_(list(roles)))
                .order_by(Participant.id).tuples())


# --- messages and threading ----------------------------------------------------

def add_message(ticket_id: int, now: dt.datetime, *, raw_id: int | None, direction: str, sender: str,
                recipients: str, subject: str, body: str, full_text: str, message_id: str | None,
                auto: bool, attachments: Iterable[StoredAttachment] = (),
                thread_ids: Iterable[str] = ()) -> int:
    """One entry of a ticket's conversation, its attachments' rows, and the Message-IDs
    that thread later mail to the ticket (known ones are kept). Returns the message's id."""
    message = sql.insert(
        Message, ticket=ticket_id, raw=raw_id, direction=direction, sender=sender,
        recipients=recipients, subject=subject, body=body, full_text=full_text,
        message_id=message_id, auto=auto, created_at=now)
    sql.insert_rows(Attachment, [
        {"message": message, "filename": neutralised(a.filename), "content_type": a.content_type,
         "size": a.size, "sha256": a.sha256, "inline": a.inline, "refused": a.refused}
        for a in attachments])
    sql.insert_rows(ThreadRef, [{"msgid": m, "ticket": ticket_id} for m in thread_ids],
                    ignore_conflicts=True)
    return message


def last_inbound_message_id(ticket_id: int) -> str | None:
    """The Message-ID of the newest mail received on the ticket that had one."""
    return (Message.select(Message.message_id)
            .where((Message.ticket == ticket_id) & (Message.direction == "in")
                   & Message.message_id.is_null(False))
            .order_by(Message.id.desc()).limit(1).scalar())


def add_bounces(addresses: Iterable[str], raw_id: int, ticket_id: int | None, now: dt.datetime,
                status: str, diagnostic: str) -> None:
    """One delivery failure, kept against each address that failed."""
    sql.insert_rows(Bounce, [
        {"address": a, "raw": raw_id, "ticket": ticket_id, "created_at": now,
         "status": status, "diagnostic": diagnostic}
        for a in addresses])


# --- what an address has asked for -------------------------------------------

def sent_since(recipient: str, kind: str, since: dt.datetime) -> int:
    """How many mails of this kind (acknowledgements, status lists) went to the
    recipient since then: the count the rate limit reads, through the
    (recipient, kind, created_at) index."""
    return sql.scalar(Outbox, "COUNT(*)", {"recipient": recipient, "kind": kind},
                      since=("created_at", since))


def open_tickets(requester: str) -> list[tuple[int, str, str, dt.datetime]]:
    """(id, subject, status, created_at) of the requester's tickets not closed, oldest first, at most 50."""
    return list(Ticket.select(Ticket.id, Ticket.subject, Ticket.status, Ticket.created_at)
                .where((Ticket.requester == requester) & (Ticket.kind == "ticket")
                       & (Ticket.status != "closed"))
                .order_by(Ticket.id).limit(50).tuples())


def open_disputes(party: str, final: Iterable[str]) -> list[tuple[int, str, str, str]]:
    """(id, order, status, buyer) of the disputes the address is buyer or seller in,
    not in a ``final`` status, oldest first, at most 50."""
    return list(Dispute.select(Dispute.id, Dispute.order_id, Dispute.status, Dispute.buyer)
                .where(((Dispute.buyer == party) | (Dispute.seller == party))
                       & Dispute.status.not_in(sorted(final)))
                .order_by(Dispute.id).limit(50).tuples())
