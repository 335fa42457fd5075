"""The door to held mail and to the senders our MTA said failed (docs/trust.md).

A hold is a mail from a claimed sender, kept unapplied; its confirmation
puts the raw mail back in line (``raw.requeue``) and marks the hold
``confirmed``, which the second pass consumes (``applied``) when it acts.
Every change is conditional on the current status, so a hold is confirmed
once and applied once, whoever races. Writes run in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import peewee as pw

from helpdesk.store import raw as raw_messages
from helpdesk.store.schema import Dispute, Hold, Message, Participant, SenderFailure, Ticket

CONFIRMED_DIRECTION = "held_ok"   # the held entry once its person confirmed it (then applied anew)


@dataclass(frozen=True)
class HoldRow:
    id: int
    ticket_id: int
    raw_id: int | None
    participant_id: int
    address: str
    status: str
    expires_at: dt.datetime


def create(ticket_id: int, raw_id: int, participant_id: int, address: str, now: dt.datetime,
           expires_at: dt.datetime, mailed: bool) -> int:
    return Hold.insert(ticket=ticket_id, raw=raw_id, participant=participant_id, address=address,
                       status="pending", mailed=mailed, created_at=now, expires_at=expires_at).execute()


def mailed_since(address: str, since: dt.datetime) -> int:
    """Confirmation mails sent to ``address`` since then (the per-person rate cap)."""
    return Hold.select().where((Hold.address == address) & Hold.mailed & (Hold.created_at >= since)).count()


@dataclass(frozen=True)
class Unannounced:
    """A pending hold past the cap, never mailed: what its combined mail needs of it."""
    id: int
    participant_id: int
    address: str
    name: str
    role: str
    ticket_id: int
    mailbox: str
    dispute_id: int | None
    sender: str
    subject: str
    body: str
    received: dt.datetime


def unannounced(now: dt.datetime, since: dt.datetime, limit: int) -> list[Unannounced]:
    """Pending holds never mailed nor announced, of people with no combined mail since then
    (one query, oldest first; at most ``limit``: the rest wait for the next tick)."""
    told = Hold.select(Hold.address).where(Hold.announced_at >= since)
    rows = (Hold.select(Hold.id, Hold.participant, Hold.address, Participant.name, Participant.role,
                        Hold.ticket, Ticket.mailbox, Dispute.id, Message.sender, Message.subject,
                        Message.body, Message.created_at)
            .join(Ticket, on=(Ticket.id == Hold.ticket))
            .join(Participant, on=(Participant.id == Hold.participant))
            .join(Dispute, pw.JOIN.LEFT_OUTER, on=(Dispute.ticket == Hold.ticket))
            .join(Message, on=((Message.raw == Hold.raw) & (Message.ticket == Hold.ticket)
                               & (Message.direction == "held")))
            .where((Hold.status == "pending") & ~Hold.mailed & Hold.announced_at.is_null()
                   & Hold.address.not_in(told))
            .order_by(Hold.id).limit(limit).tuples())
    return [Unannounced(*row) for row in rows]


def announced(hold_ids: list[int], now: dt.datetime, expires_at: dt.datetime) -> None:
    """Told in a combined mail: their one-time addresses work from now on (one UPDATE)."""
    if hold_ids:
        Hold.update(announced_at=now, expires_at=expires_at).where(
            Hold.id.in_(hold_ids) & (Hold.status == "pending")).execute()


def read(hold_id: int) -> HoldRow | None:
    row = (Hold.select(Hold.id, Hold.ticket, Hold.raw, Hold.participant, Hold.address, Hold.status,
                       Hold.expires_at).where(Hold.id == hold_id).tuples().first())
    return HoldRow(*row) if row else None


def confirm(hold_id: int, now: dt.datetime) -> bool:
    """Pending and unexpired -> confirmed, and its mail back in line; False if it was not (one-time)."""
    changed = (Hold.update(status="confirmed", confirmed_at=now)
               .where((Hold.id == hold_id) & (Hold.status == "pending") & (Hold.expires_at > now))
               .execute())
    if changed != 1:
        return False
    raw_id = Hold.select(Hold.raw).where(Hold.id == hold_id).scalar()
    if raw_id is not None:
        raw_messages.requeue(raw_id)
    return True


def take_confirmed(raw_id: int) -> int | None:
    """The confirmed hold of this raw mail, now applied (so never twice); None if there is none."""
    hold_id = Hold.select(Hold.id).where((Hold.raw == raw_id) & (Hold.status == "confirmed")).scalar()
    if hold_id is None:
        return None
    changed = (Hold.update(status="applied")
               .where((Hold.id == hold_id) & (Hold.status == "confirmed")).execute())
    if changed != 1:
        return None
    Message.update(direction=CONFIRMED_DIRECTION).where(
        (Message.raw == raw_id) & (Message.direction == "held")).execute()
    return hold_id


def held_on(ticket_id: int) -> int:
    return Hold.select().where((Hold.ticket == ticket_id) & (Hold.status == "pending")).count()


def record_failure(raw_id: int, address: str, reason: str, now: dt.datetime) -> None:
    SenderFailure.insert(raw=raw_id, address=address, reason=reason, created_at=now).execute()


def counts_between(start: dt.datetime, end: dt.datetime) -> tuple[int, int]:
    """(mail held, senders failed) in a digest's period."""
    held = Hold.select().where((Hold.created_at >= start) & (Hold.created_at < end)).count()
    failed = (SenderFailure.select()
              .where((SenderFailure.created_at >= start) & (SenderFailure.created_at < end)).count())
    return held, failed
