"""The door to outgoing mail rows: queued by the notifier, claimed and recorded by the deliverer.

A row is queued in the transaction of the event that causes it, due at
once; the Message-ID of every mail about a ticket is kept as one of that
ticket's thread references (``ours``), so a reply to it threads. The
deliverer claims due rows with a lease on ``next_attempt_at`` and records
each attempt's result on the row, which stays the record of what was sent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from helpdesk.store import sql
from helpdesk.store.schema import Outbox, ThreadRef


@dataclass(frozen=True)
class Draft:
    """A rendered mail to queue."""

    kind: str
    ticket_id: int | None
    message_id: str
    envelope_from: str
    recipient: str
    headers: str            # JSON, see ``mail.compose``
    subject: str
    text: str
    html: str | None


@dataclass(frozen=True)
class Queued:
    """A claimed row, as the deliverer composes and records it."""

    id: int
    kind: str
    ticket_id: int | None
    message_id: str
    envelope_from: str
    recipient: str
    headers: str
    subject: str
    text: str
    html: str | None
    attempts: int


@dataclass(frozen=True)
class Attempt:
    """The result of handing one row over."""

    id: int
    attempts: int           # including this one
    result: str             # sent | deferred | failed
    at: dt.datetime | None  # sent: when; deferred: the next attempt
    error: str | None = None


def queue(drafts: list[Draft], now: dt.datetime) -> None:
    """Insert the mails, due now, with one statement per table."""
    rows, refs = [], []
    for draft in drafts:
        rows.append({
            "kind": draft.kind, "ticket": draft.ticket_id, "message_id": draft.message_id,
            "envelope_from": draft.envelope_from, "recipient": draft.recipient,
            "headers": draft.headers, "subject": draft.subject, "text": draft.text,
            "html": draft.html, "status": "queued", "next_attempt_at": now, "created_at": now})
        if draft.ticket_id is not None:
            refs.append({"msgid": draft.message_id, "ticket": draft.ticket_id, "ours": True})
    sql.insert_rows(Outbox, rows)
    sql.insert_rows(ThreadRef, refs, ignore_conflicts=True)


def due(now: dt.datetime, limit: int) -> list[int]:
    """Ids of the queued rows due by ``now``, oldest first."""
    return [row_id for row_id, in Outbox.select(Outbox.id)
            .where((Outbox.status == "queued") & (Outbox.next_attempt_at <= now))
            .order_by(Outbox.id).limit(limit).tuples()]


def claim(ids: list[int], now: dt.datetime, until: dt.datetime) -> list[int]:
    """Lease the rows still queued and due: their next attempt moves to ``until``,
    which hides them from every other deliverer. Returns the ids we got."""
    return [row_id for row_id in ids
            if sql.update(Outbox, row_id, only_if={"status": "queued"},
                          at_most=("next_attempt_at", now), next_attempt_at=until) == 1]


def load(ids: list[int]) -> list[Queued]:
    """The rows of ``ids``, in id order."""
    if not ids:
        return []
    return [Queued(r["id"], r["kind"], r["ticket"], r["message_id"], r["envelope_from"], r["recipient"],
                   r["headers"], r["subject"], r["text"], r["html"], r["attempts"])
            for r in Outbox.select().where(Outbox.id.in_(ids)).order_by(Outbox.id).dicts()]


def record(attempts: list[Attempt]) -> None:
    """Write each attempt's result on its row (a deferred row stays queued)."""
    for attempt in attempts:
        sql.update(Outbox, attempt.id, **_fields(attempt))


def _fields(attempt: Attempt) -> dict:
    if attempt.result == "sent":
        return {"attempts": attempt.attempts, "status": "sent", "sent_at": attempt.at, "last_error": None}
    if attempt.result == "deferred":
        return {"attempts": attempt.attempts, "next_attempt_at": attempt.at, "last_error": attempt.error}
    return {"attempts": attempt.attempts, "status": "failed", "last_error": attempt.error}
