"""The queries behind the admin digest: one per figure, and the record of digests sent.

Every figure is one aggregate query over indexed columns (or one per 500
assignees), never a query per ticket: counts are ``COUNT``/``GROUP BY`` in the
database, the overdue list is ``ORDER BY ... LIMIT``, and only the tickets
first answered in the period are read. Only SQL that SQLite and PostgreSQL
both run is used; time differences and percentiles are left to
``reports.digest``. Statuses are the caller's: these functions only count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import peewee as pw

from helpdesk.store.schema import (
    Bounce,
    DigestRun,
    Dispute,
    Hold,
    Outbox,
    RawMessage,
    SenderFailure,
    Ticket,
    db,
)

# --- tickets -----------------------------------------------------------------------

def new_tickets(since: dt.datetime, end: dt.datetime) -> int:
    """Tickets (not dispute chats) created in [since, end)."""
    return _count(Ticket, (Ticket.kind == "ticket") & (Ticket.created_at >= since)
                  & (Ticket.created_at < end))


def by_status(statuses: Sequence[str]) -> dict[str, int]:
    """Tickets of every kind (dispute chats too) in these statuses, by status:
    the (status, updated_at) index alone answers it."""
    return dict(Ticket.select(Ticket.status, pw.fn.COUNT(Ticket.id))
                .where(Ticket.status.in_(statuses)).group_by(Ticket.status).tuples())


def by_assignee(assignees: list[str], statuses: Sequence[str]) -> list[tuple[str, str, int]]:
    """(assignee, status, count) of tickets of every kind in these statuses, 500
    assignees per query: the (assignee, status) index alone answers it."""
    found: list[tuple[str, str, int]] = []
    for start in range(0, len(assignees), 500):
        found.extend(Ticket.select(Ticket.assignee, Ticket.status, pw.fn.COUNT(Ticket.id))
                     .where(Ticket.assignee.in_(assignees[start:start + 500]) & Ticket.status.in_(statuses))
                     .group_by(Ticket.assignee, Ticket.status).tuples())
    return found


def unassigned(statuses: Sequence[str]) -> dict[str, int]:
    """Unassigned tickets of every kind in these statuses, by status."""
    return dict(Ticket.select(Ticket.status, pw.fn.COUNT(Ticket.id))
                .where(Ticket.assignee.is_null() & Ticket.status.in_(statuses))
                .group_by(Ticket.status).tuples())


def assignees() -> list[str]:
    """Every distinct assignee, by skipping through the (assignee, status) index
    (a recursive query both engines run: one index seek per assignee)."""
    table, column = _q(Ticket._meta.table_name), _q(Ticket.assignee.column_name)
    sql = (f"WITH RECURSIVE a(v) AS (SELECT MIN({column}) FROM {table} UNION ALL "
           f"SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > a.v) FROM a WHERE a.v IS NOT NULL) "
           "SELECT v FROM a WHERE v IS NOT NULL")
    return [row[0] for row in db.execute_sql(sql).fetchall()]


def dispute_chats(statuses: Sequence[str]) -> list[tuple[str, str | None, int]]:
    """(status, assignee, count) of dispute chats in these ticket statuses.

    ``CROSS JOIN`` is an inner join to PostgreSQL; to SQLite it also says to
    walk the small dispute table and look each chat up by its primary key.
    """
    t, d = _q(Ticket._meta.table_name), _q(Dispute._meta.table_name)
    marks = ", ".join([db.param] * len(statuses))
    sql = (f'SELECT t."status", t."assignee", COUNT(*) FROM {d} d CROSS JOIN {t} t '
           f'WHERE t."id" = d."ticket_id" AND t."kind" = {db.param} AND t."status" IN ({marks}) '
           'GROUP BY t."status", t."assignee"')
    return db.execute_sql(sql, ("dispute", *statuses)).fetchall()


def _q(name: str) -> str:
    return f'"{name}"'


def overdue(statuses: Sequence[str], limit: int) -> list[tuple[int, str, str, str, str | None, dt.datetime]]:
    """(number, subject, status, priority, assignee, created_at) of overdue tickets
    in these statuses, oldest first, at most ``limit``."""
    return list(Ticket.select(Ticket.id, Ticket.subject, Ticket.status, Ticket.priority, Ticket.assignee,
                              Ticket.created_at)
                .where(_overdue(statuses)).order_by(Ticket.created_at, Ticket.id).limit(limit).tuples())


def overdue_count(statuses: Sequence[str]) -> int:
    return _count(Ticket, _overdue(statuses))


def _overdue(statuses: Sequence[str]):
    return (Ticket.overdue == True) & Ticket.status.in_(statuses) & (Ticket.kind == "ticket")


def first_responses(statuses: Sequence[str], since: dt.datetime,
                    end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """(created_at, first_response_at) of the tickets first answered in [since, end).

    There is no index on ``first_response_at``, but the update that sets it
    also sets ``updated_at``, which only moves forward: a ticket answered since
    ``since`` was updated since then, which the (status, updated_at) index finds.
    ``statuses`` must hold every status such a ticket can be in now.
    """
    return list(Ticket.select(Ticket.created_at, Ticket.first_response_at)
                .where(Ticket.status.in_(statuses) & (Ticket.updated_at >= since)
                       & (Ticket.first_response_at >= since) & (Ticket.first_response_at < end)
                       & (Ticket.kind == "ticket")).tuples())


def unanswered(created_from: dt.datetime, created_to: dt.datetime, statuses: Sequence[str]) -> int:
    """Tickets created in [created_from, created_to), in these statuses, never
    answered: the (created_at) index finds them."""
    return _count(Ticket, (Ticket.created_at >= created_from) & (Ticket.created_at < created_to)
                  & Ticket.first_response_at.is_null() & Ticket.status.in_(statuses)
                  & (Ticket.kind == "ticket"))


# --- mail and disputes ---------------------------------------------------------------

def bounces(since: dt.datetime, end: dt.datetime) -> int:
    """Bounce reports received in [since, end)."""
    return _count(Bounce, (Bounce.created_at >= since) & (Bounce.created_at < end))


def held(since: dt.datetime, end: dt.datetime) -> int:
    """Mail from claimed senders held in [since, end) (docs/trust.md)."""
    return _count(Hold, (Hold.created_at >= since) & (Hold.created_at < end))


def sender_failed(since: dt.datetime, end: dt.datetime) -> int:
    """Mail our trusted MTA said failed DMARC or SPF in [since, end): not acknowledged."""
    return _count(SenderFailure, (SenderFailure.created_at >= since) & (SenderFailure.created_at < end))


def failed(since: dt.datetime, end: dt.datetime) -> int:
    """Outgoing mail given up in [since, end) and still failed (not put back in line or
    cancelled): the (status, next_attempt_at) index finds the failed rows."""
    return _count(Outbox, (Outbox.status == "failed") & (Outbox.failed_at >= since) & (Outbox.failed_at < end))


def failed_waiting() -> int:
    """Every outgoing mail failed now."""
    return _count(Outbox, Outbox.status == "failed")


def oldest_failed(limit: int) -> list[tuple[int, str, str, int | None, int | None, dt.datetime, str]]:
    """(id, kind, recipient, ticket, dispute, failed_at, last answer) of the mail failed now,
    the longest failed first, at most ``limit``; mail failed before ``failed_at`` was kept
    (an older schema) comes first, by id."""
    return list(Outbox.select(Outbox.id, Outbox.kind, Outbox.recipient, Outbox.ticket, Dispute.id,
                              Outbox.failed_at, Outbox.last_error)
                .join(Dispute, pw.JOIN.LEFT_OUTER, on=(Dispute.ticket == Outbox.ticket))
                .where(Outbox.status == "failed")
                .order_by(Outbox.failed_at.asc(nulls="first"), Outbox.id).limit(limit).tuples())


def quarantined(since: dt.datetime, end: dt.datetime) -> int:
    """Raw messages received in [since, end) and quarantined (the status index finds them)."""
    return _count(RawMessage, (RawMessage.status == "quarantined") & (RawMessage.received_at >= since)
                  & (RawMessage.received_at < end))


def quarantine_waiting() -> int:
    """Everything in quarantine now."""
    return _count(RawMessage, RawMessage.status == "quarantined")


def disputes(statuses: Sequence[str]) -> dict[str, int]:
    """Disputes in these states, by state."""
    return dict(Dispute.select(Dispute.status, pw.fn.COUNT(Dispute.id))
                .where(Dispute.status.in_(statuses)).group_by(Dispute.status).tuples())


def existed_before(end: dt.datetime) -> bool:
    """Any ticket or mail before ``end``: the (created_at) index answers the first;
    raw messages are stored in about time order, so the second scan stops early."""
    return (Ticket.select(Ticket.id).where(Ticket.created_at < end).exists()
            or RawMessage.select(RawMessage.id).where(RawMessage.received_at < end).exists())


def _count(model: type[pw.Model], where) -> int:
    return model.select(pw.fn.COUNT(model._meta.primary_key)).where(where).scalar() or 0


# --- digests sent ----------------------------------------------------------------------

def last_period(prefix: str, before: str) -> str | None:
    """The greatest period key starting with ``prefix`` below ``before``: one
    indexed range lookup (keys of one schedule sort by date)."""
    return (DigestRun.select(DigestRun.period)
            .where((DigestRun.period >= prefix) & (DigestRun.period < before))
            .order_by(DigestRun.period.desc()).limit(1).scalar())


def already_sent(key: str) -> bool:
    return DigestRun.select(DigestRun.id).where(DigestRun.period == key).exists()


def claim(key: str, now: dt.datetime, recipients: int) -> bool:
    """Insert the period's row; True only for the transaction that inserted it
    (``ON CONFLICT DO NOTHING``: another worker's or an earlier run's row wins)."""
    table = DigestRun._meta.table_name
    mark = db.param
    cursor = db.execute_sql(
        f'INSERT INTO "{table}" ("period", "created_at", "recipients") VALUES ({mark}, {mark}, {mark}) '
        "ON CONFLICT DO NOTHING",
        (key, DigestRun.created_at.db_value(now), recipients))
    return cursor.rowcount == 1
