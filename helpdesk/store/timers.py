"""Deadlines and reminders in the ``timer`` table: schedule, cancel, find due, claim.

Fired by ``runtime.tick``; what a timer means is said in ``tickets.deadlines`` and
``disputes.deadlines``. Tickets and disputes schedule timers in the
same transaction as the event that starts the clock (a new ticket, a
customer's reply, a dispute opened) and cancel them in the transaction that
stops it (a staff answer, a confirmed solution).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from helpdesk.store import sql
from helpdesk.store.schema import Timer, db


@dataclass(frozen=True)
class Due:
    id: int
    subject: str          # "ticket" | "dispute"
    subject_id: int
    kind: str
    fire_at: dt.datetime


def schedule(subject: str, subject_id: int, now: dt.datetime,
             timers: Iterable[tuple[str, dt.datetime]]) -> None:
    """Add pending timers ``(kind, fire_at)`` for one ticket or dispute."""
    sql.insert_rows(Timer, [
        {"subject": subject, "subject_id": subject_id, "kind": kind, "fire_at": fire_at,
         "status": "pending", "created_at": now}
        for kind, fire_at in timers])


def cancel(subject: str, subject_id: int, kinds: Iterable[str] | None = None) -> int:
    """Cancel pending timers of one subject (all, or those of the given kinds)."""
    query = Timer.update(status="cancelled").where(
        (Timer.subject == subject) & (Timer.subject_id == subject_id) & (Timer.status == "pending"))
    if kinds is not None:
        query = query.where(Timer.kind.in_(list(kinds)))
    return query.execute()


def pending(subject: str, subject_id: int) -> list[tuple[str, dt.datetime]]:
    """The pending timers of one subject, soonest first."""
    # sorted here, not by ORDER BY fire_at: that would tempt SQLite into the (status, fire_at)
    # index and a scan of every pending timer, instead of this subject's few rows
    rows = sql.select(Timer, ["kind", "fire_at"], {"subject": subject, "subject_id": subject_id,
                                                         "status": "pending"})
    return sorted(((kind, Timer.fire_at.python_value(at)) for kind, at in rows), key=lambda pair: pair[1])


def pending_for(subject: str, subject_ids: Iterable[int]) -> dict[int, list[tuple[str, dt.datetime]]]:
    """The pending timers of many subjects in one query (listings, digests)."""
    ids = list(subject_ids)
    found: dict[int, list[tuple[str, dt.datetime]]] = {i: [] for i in ids}
    for start in range(0, len(ids), 500):
        rows = (Timer.select(Timer.subject_id, Timer.kind, Timer.fire_at)
                .where((Timer.subject == subject) & (Timer.subject_id.in_(ids[start:start + 500]))
                       & (Timer.status == "pending")).tuples())
        for subject_id, kind, fire_at in rows:
            found[subject_id].append((kind, fire_at))
    for timers_of in found.values():
        timers_of.sort(key=lambda pair: pair[1])   # see pending(): no ORDER BY fire_at
    return found


def latest(subject: str, subject_ids: Iterable[int], kinds: Iterable[str]) -> dict[tuple[int, str], dt.datetime]:
    """When each (subject, kind) of these is or was due: the latest pending or fired
    timer's, i.e. the current round's (it may be firing in this same tick).
    Many subjects in one query."""
    ids, kinds = sorted(set(subject_ids)), tuple(kinds)
    found: dict[tuple[int, str], dt.datetime] = {}
    for start in range(0, len(ids), 500):
        rows = (Timer.select(Timer.subject_id, Timer.kind, Timer.fire_at)
                .where((Timer.subject == subject) & Timer.subject_id.in_(ids[start:start + 500])
                       & Timer.kind.in_(kinds) & Timer.status.in_(("pending", "fired"))).tuples())
        for subject_id, kind, at in rows:
            key = (subject_id, kind)
            found[key] = max(at, found.get(key, at))
    return found


def due(now: dt.datetime, limit: int) -> list[Due]:
    """Pending timers due by ``now``, oldest first: one range of the (status, fire_at) index."""
    rows = (Timer.select(Timer.id, Timer.subject, Timer.subject_id, Timer.kind, Timer.fire_at)
            .where((Timer.status == "pending") & (Timer.fire_at <= now))
            .order_by(Timer.fire_at, Timer.id).limit(limit).tuples())
    return [Due(*row) for row in rows]


def claim_many(ids: list[int], now: dt.datetime) -> set[int]:
    """Mark the still-pending ones of ``ids`` fired, in one statement; returns those we got.

    ``UPDATE ... RETURNING`` runs on SQLite (>= 3.35) and PostgreSQL alike. On
    PostgreSQL a second worker's UPDATE waits for the first one's row locks and
    then sees the rows no longer pending, so each id is returned to one worker.
    """
    if not ids:
        return set()
    marks = ", ".join([db.param] * len(ids))
    text = (f'UPDATE "timer" SET "status" = {db.param}, "fired_at" = {db.param} '
           f'WHERE "status" = {db.param} AND "id" IN ({marks}) RETURNING "id"')
    cursor = sql.cursor_execute(text, ["fired", Timer.fired_at.db_value(now), "pending", *ids])
    return {row[0] for row in cursor.fetchall()}


def unclaim(timer_id: int) -> None:
    """Back to pending: its handler failed, the next tick tries again."""
    sql.update(Timer, timer_id, status="pending", fired_at=None)
