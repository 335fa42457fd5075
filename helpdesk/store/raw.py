"""The door to raw messages: stored durably once, read in batches, finished once.

A source acknowledges its own side only after ``store_new`` committed (FULL
durability, the one copy everything else can be rebuilt from). The pipeline
reads the next pending messages in id order and records each one's outcome
with ``finish``, whose update holds only while the message is still
``pending``: that is how two workers on one database never apply it twice.

Workers share the backlog by claiming it (``claim``): a batch of pending
messages no live claim holds is marked with the worker's id and a time
(``claimed_until``) past which anyone may take it again, so N workers take
disjoint batches instead of all parsing the same ones and all but one rolling
back. A dead worker's claims are freed at once by ``workers.reap``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import peewee as pw

from helpdesk.errors import StoreError
from helpdesk.store import sql
from helpdesk.store.db import rebuildable_transaction, write_transaction
from helpdesk.store.schema import RawContent, RawMessage, db


@dataclass(frozen=True)
class Arrival:
    """One received message with its dedupe key, as a source handed it over."""

    dedupe_key: str
    message_id: str | None
    mailbox: str
    source: str
    envelope_to: tuple[str, ...]
    raw: bytes


@dataclass(frozen=True)
class Pending:
    """A message waiting for the pipeline, with its bytes."""

    id: int
    mailbox: str
    envelope_to: tuple[str, ...]
    content: bytes


def store_new(arrivals: list[Arrival], now: dt.datetime) -> dict[str, int]:
    """Insert, in one durable transaction, the arrivals not stored yet (a key seen
    twice in the batch once); returns the ids of those keys, by dedupe key."""
    try:
        with write_transaction():
            known = _existing_keys([a.dedupe_key for a in arrivals])
            rows, order = _new_rows(arrivals, known, now)
            if rows:
                sql.insert_rows(RawMessage, [r for r, _ in rows], ignore_conflicts=True)
            ids = _ids_for(order)
            contents = [{"message": ids[r["dedupe_key"]], "raw": raw} for r, raw in rows]
            sql.insert_rows(RawContent, contents, ignore_conflicts=True)
    except Exception as exc:
        cause = _first_error(exc)
        raise StoreError(f"could not store raw message: {type(cause).__name__}: {cause}".splitlines()[0]) from exc
    return ids


def _first_error(exc: BaseException) -> BaseException:
    """The error that broke the transaction, not the rollback that failed after it: SQLite
    rolls back by itself on an I/O error (a full disk), and then says only "cannot rollback"."""
    found = exc
    while found.__context__ is not None and "cannot rollback" in str(found):
        found = found.__context__
    return found


def _new_rows(arrivals: list[Arrival], known: set[str], now: dt.datetime):
    rows, order = [], []
    for item in arrivals:
        key = item.dedupe_key
        if key in known or key in order:
            continue
        order.append(key)
        rows.append(({
            "dedupe_key": key, "message_id": item.message_id, "mailbox": item.mailbox,
            "source": item.source, "envelope_to": ",".join(item.envelope_to),
            "received_at": now, "size": len(item.raw), "status": "pending",
        }, item.raw))
    return rows, order


def _existing_keys(keys: list[str]) -> set[str]:
    return {key for key, in _by_key(["dedupe_key"], keys)}


def _ids_for(keys: list[str]) -> dict[str, int]:
    """Ids now stored under these keys; a racing process's row is processed once anyway."""
    return {key: raw_id for key, raw_id in _by_key(["dedupe_key", "id"], keys)}


def _by_key(columns: list[str], keys: list[str]) -> list[tuple]:
    rows: list[tuple] = []
    for start in range(0, len(keys), 500):
        rows += sql.select(RawMessage, columns, {}, in_column="dedupe_key",
                           in_values=keys[start:start + 500])
    return rows


def pending(after_id: int, size: int) -> list[Pending]:
    """The next ``size`` pending messages with an id above ``after_id``, in id order."""
    rows = (RawMessage.select(RawMessage.id, RawMessage.mailbox, RawMessage.envelope_to,
                              RawContent.raw.alias("content"))
            .join(RawContent, on=(RawContent.message == RawMessage.id))
            .where((RawMessage.status == "pending") & (RawMessage.id > after_id))
            .order_by(RawMessage.id).limit(size).tuples())
    return [Pending(raw_id, mailbox, tuple(a for a in envelope_to.split(",") if a), bytes(content))
            for raw_id, mailbox, envelope_to, content in rows]


def claim(worker: int, size: int, now: dt.datetime, until: dt.datetime,
          after_id: int = 0) -> list[Pending]:
    """Claim the next ``size`` pending messages above ``after_id`` that no live claim holds
    (or that ``worker`` itself holds: left over from a batch that failed), in id order.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so concurrent claimers pass over each
    other's rows instead of waiting for them and then taking the same ones. SQLite has
    one writer at a time: the claim runs under the write lock (``BEGIN IMMEDIATE``), so
    the second claimer sees the first one's claim. The claim commits on its own: others
    must see it while this worker parses and applies. It may be lost in a power cut
    (its messages are simply pending again), so it does not wait for the disk. It
    rewrites a few columns in place: no sign that a full disk has room again.
    """
    with rebuildable_transaction(proves_space=False):
        postgres = isinstance(db.obj, pw.PostgresqlDatabase)
        pick, mark = [after_id, now, worker, size], [worker, until]
        rows = sql.cursor_execute(_claim_sql(postgres), pick + mark if postgres else mark + pick).fetchall()
        if not rows:
            return []
        contents = dict(_contents([raw_id for raw_id, _, _ in rows]))
    return [Pending(raw_id, mailbox, tuple(a for a in envelope_to.split(",") if a), bytes(contents[raw_id]))
            for raw_id, mailbox, envelope_to in sorted(rows) if raw_id in contents]


def _claim_sql(postgres: bool) -> str:
    p = db.param
    free = (f'"status" = \'pending\' AND "id" > {p} AND ("claimed_until" IS NULL '
            f'OR "claimed_until" < {p} OR "claimed_by" = {p})')
    if postgres:
        return (f'WITH picked AS (SELECT "id" FROM "raw_message" WHERE {free} ORDER BY "id" '
                f'LIMIT {p} FOR UPDATE SKIP LOCKED) '
                f'UPDATE "raw_message" AS r SET "claimed_by" = {p}, "claimed_until" = {p} FROM picked '
                f'WHERE r."id" = picked."id" RETURNING r."id", r."mailbox", r."envelope_to"')
    # INDEXED BY: once ANALYZE (or PRAGMA optimize) has run, SQLite's statistics say every
    # status value covers most rows (it keeps no histogram), so it walked the rowids from
    # after_id through every processed message: 90 ms a claim at 5,000,000 messages.
    return (f'UPDATE "raw_message" SET "claimed_by" = {p}, "claimed_until" = {p} WHERE "id" IN '
            f'(SELECT "id" FROM "raw_message" INDEXED BY "raw_message_status_id" WHERE {free} '
            f'ORDER BY "id" LIMIT {p}) '
            f'RETURNING "id", "mailbox", "envelope_to"')


def _contents(ids: list[int]) -> list[tuple]:
    rows: list[tuple] = []
    for start in range(0, len(ids), 500):
        rows += sql.select(RawContent, ["message", "raw"], {}, in_column="message",
                           in_values=ids[start:start + 500])
    return rows


def release(worker: int, ids: list[int]) -> None:
    """Give back claimed messages this worker will not process (it is stopping)."""
    if ids:
        (RawMessage.update(claimed_by=None, claimed_until=None)
         .where(RawMessage.id.in_(ids) & (RawMessage.claimed_by == worker)
                & (RawMessage.status == "pending")).execute())


def finish(raw_id: int, status: str, outcome: str, ticket_id: int | None, reason: str | None,
           at: dt.datetime) -> bool:
    """Record a message's outcome, only while it is still pending: the last statement
    of its work. False when another worker got there first."""
    changed = sql.update(
        RawMessage, raw_id, only_if={"status": "pending"},
        status=status, outcome=outcome, ticket_id=ticket_id, reason=reason, processed_at=at)
    return changed == 1


def requeue(raw_id: int) -> None:
    """Put a message (a quarantined one) back in line, its reason forgotten."""
    RawMessage.update(status="pending", reason=None).where(RawMessage.id == raw_id).execute()
