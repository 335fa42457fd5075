"""The door to outgoing mail rows: queued by the notifier, claimed and recorded by the deliverer.

A row is queued in the transaction of the event that causes it, due at
once; the Message-ID of every mail about a ticket is kept as one of that
ticket's thread references (``ours``), so a reply to it threads. The
deliverer claims due rows with a lease on ``next_attempt_at`` and records
each attempt's result on the row, which stays the record of what was sent.

A row's status is ``queued`` (waiting, or between attempts), ``sent``,
``failed`` (given up: ``failed_at``, the last answer in ``last_error``),
``suppressed`` (automatic mail held back from an address that bounced) or
``cancelled`` (by the operator). An operator may put a failed row back in
line: its queue lifetime then starts again at ``queued_at``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import peewee as pw

from helpdesk.store import sql, workers
from helpdesk.store.schema import Dispute, Outbox, ThreadRef

STATUSES = ("queued", "sent", "failed", "suppressed", "cancelled")


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
    queued_at: dt.datetime  # when it (last) entered the queue: its lifetime counts from here


@dataclass(frozen=True)
class Attempt:
    """The result of handing one row over (or of holding it back)."""

    id: int
    attempts: int           # including this one
    result: str             # sent | deferred | failed | suppressed | released
    at: dt.datetime | None  # sent: when; deferred: the next attempt; failed, suppressed: now;
                            # released (claimed, never tried): due again from then
    error: str | None = None


@dataclass(frozen=True)
class Failure:
    """A mail given up, as the staff are told of it."""

    id: int
    kind: str
    recipient: str
    subject: str
    ticket_id: int | None
    attempts: int
    queued_at: dt.datetime
    failed_at: dt.datetime
    last_error: str
    dispute_id: int | None = None         # when the ticket is a dispute's chat


@dataclass(frozen=True)
class OutgoingRow:
    """A row as ``helpdesk outbox`` lists it."""

    id: int
    status: str
    recipient: str
    kind: str
    subject: str
    attempts: int
    next_attempt_at: dt.datetime | None   # queued only
    last_error: str | None
    ticket_id: int | None
    dispute_id: int | None                # when the ticket is a dispute's chat
    created_at: dt.datetime
    queued_at: dt.datetime | None
    sent_at: dt.datetime | None
    failed_at: dt.datetime | None


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


def claim(ids: list[int], now: dt.datetime, until: dt.datetime, worker: int | None = None) -> list[int]:
    """Lease the rows still queued and due: their next attempt moves to ``until``,
    which hides them from every other deliverer, and ``claimed_by`` names the worker,
    so its lease is freed at once if it dies (``workers.reap``). One UPDATE ... RETURNING:
    on PostgreSQL a second claimer waits for the row and then finds it no longer due.
    Returns the ids we got, in id order."""
    if not ids:
        return []
    worker = workers.claimant() if worker is None else worker
    query = (Outbox.update(next_attempt_at=until, claimed_by=worker)
             .where(Outbox.id.in_(ids) & (Outbox.status == "queued") & (Outbox.next_attempt_at <= now))
             .returning(Outbox.id))
    return sorted(row_id for row_id, in query.tuples().execute())


def release_mine(now: dt.datetime) -> int:
    """This worker's claimed rows due again now: a pass that a store error broke off may
    have claimed them (the commit reached the server, its answer did not) and will never
    send them; waiting for the lease would hold their mail back for minutes."""
    return (Outbox.update(next_attempt_at=now, claimed_by=None)
            .where((Outbox.claimed_by == workers.claimant()) & (Outbox.status == "queued"))
            .execute())


def load(ids: list[int]) -> list[Queued]:
    """The rows of ``ids``, in id order."""
    if not ids:
        return []
    return [Queued(r["id"], r["kind"], r["ticket"], r["message_id"], r["envelope_from"], r["recipient"],
                   r["headers"], r["subject"], r["text"], r["html"], r["attempts"],
                   r["queued_at"] or r["created_at"])
            for r in Outbox.select().where(Outbox.id.in_(ids)).order_by(Outbox.id).dicts()]


def record(attempts: list[Attempt]) -> None:
    """Write each attempt's result on its row (a deferred row stays queued).

    A row the operator cancelled while it was being sent stays cancelled
    unless it was sent: then the record says what happened. One statement per
    kind of result, not per row (the fields a result sets are always the same).
    """
    by_result: dict[str, list[tuple[int, dict]]] = {}
    for attempt in attempts:
        by_result.setdefault(attempt.result, []).append((attempt.id, {"claimed_by": None, **_fields(attempt)}))
    for result, rows in by_result.items():
        sql.update_rows(Outbox, rows, only_if=None if result == "sent" else {"status": "queued"})


def _fields(attempt: Attempt) -> dict:
    if attempt.result == "sent":
        return {"attempts": attempt.attempts, "status": "sent", "sent_at": attempt.at, "last_error": None}
    if attempt.result == "deferred":
        return {"attempts": attempt.attempts, "next_attempt_at": attempt.at, "last_error": attempt.error}
    if attempt.result == "released":     # claimed, not tried (the service stopped): due again
        return {"next_attempt_at": attempt.at}
    if attempt.result == "suppressed":
        return {"attempts": attempt.attempts, "status": "suppressed", "last_error": attempt.error}
    return {"attempts": attempt.attempts, "status": "failed", "failed_at": attempt.at,
            "last_error": attempt.error}


# --- telling the staff --------------------------------------------------------------

def report_failures(now: dt.datetime) -> list[Failure]:
    """Mark every failed row the staff were not told of yet as told, and return them.

    One UPDATE ... RETURNING in the caller's transaction, with the notice it
    queues: a row is returned to exactly one caller, however many deliverers
    run, and the mark and the notice commit together. Rows failed before
    ``failed_at`` existed have none and are never reported.
    """
    query = (Outbox.update(reported_at=now)
             .where((Outbox.status == "failed") & Outbox.failed_at.is_null(False)
                    & Outbox.reported_at.is_null())
             .returning(Outbox.id, Outbox.kind, Outbox.recipient, Outbox.subject, Outbox.ticket,
                        Outbox.attempts, Outbox.created_at, Outbox.queued_at, Outbox.failed_at,
                        Outbox.last_error))
    rows = sorted(query.objects().execute(), key=lambda r: r.id)
    chats = _disputes_of({r.ticket_id for r in rows if r.ticket_id})
    return [Failure(r.id, r.kind, r.recipient, r.subject, r.ticket_id, r.attempts, r.queued_at or r.created_at,
                    r.failed_at, r.last_error or "", chats.get(r.ticket_id)) for r in rows]


def _disputes_of(ticket_ids: set[int]) -> dict[int, int]:
    """Ticket id -> dispute id, for the tickets that are a dispute's chat."""
    ids, found = sorted(ticket_ids), {}
    for start in range(0, len(ids), 500):
        found.update(Dispute.select(Dispute.ticket, Dispute.id)
                     .where(Dispute.ticket.in_(ids[start:start + 500])).tuples())
    return found


# --- the operator ----------------------------------------------------------------------

def listing(statuses: tuple[str, ...], limit: int) -> list[OutgoingRow]:
    """Rows in these statuses, oldest first, at most ``limit``; a dispute's chat is named by
    its dispute (one query: the (status, next_attempt_at) index finds the statuses)."""
    query = (Outbox.select(Outbox.id, Outbox.status, Outbox.recipient, Outbox.kind, Outbox.subject,
                           Outbox.attempts, Outbox.next_attempt_at, Outbox.last_error, Outbox.ticket,
                           Dispute.id, Outbox.created_at, Outbox.queued_at, Outbox.sent_at, Outbox.failed_at)
             .join(Dispute, pw.JOIN.LEFT_OUTER, on=(Dispute.ticket == Outbox.ticket))
             .where(Outbox.status.in_(list(statuses))).order_by(Outbox.id).limit(limit).tuples())
    return [_listed(row) for row in query]


def _listed(row: tuple) -> OutgoingRow:
    fields = list(row)
    if fields[1] != "queued":
        fields[6] = None      # a next attempt only means something for queued mail
    return OutgoingRow(*fields)


def count(statuses: tuple[str, ...]) -> int:
    return Outbox.select(pw.fn.COUNT(Outbox.id)).where(Outbox.status.in_(list(statuses))).scalar() or 0


def status_of(row_id: int) -> str | None:
    rows = sql.select(Outbox, ["status"], {"id": row_id})
    return rows[0][0] if rows else None


def requeue(row_id: int | None, now: dt.datetime) -> int:
    """Put a failed row (or, with None, every failed row) back in line, due now, its
    attempts and lifetime counted afresh; returns how many rows."""
    where = Outbox.status == "failed"
    if row_id is not None:
        where &= Outbox.id == row_id
    return (Outbox.update(status="queued", attempts=0, next_attempt_at=now, queued_at=now,
                          failed_at=None, reported_at=None)
            .where(where).execute())


def cancel(row_id: int, statuses: tuple[str, ...] = ("queued", "failed")) -> bool:
    """Cancel the row if it is in one of ``statuses``; False when it is not (any more)."""
    return (Outbox.update(status="cancelled")
            .where((Outbox.id == row_id) & Outbox.status.in_(list(statuses))).execute()) == 1
