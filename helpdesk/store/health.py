"""The door to the figures ``helpdesk status``, the metrics and ``helpdesk check`` read.

Each figure is one query over an indexed column (the outbox's and the timers'
(status, ...) indexes, the meta table's key), so a monitoring system may ask
every few seconds however large the tables grow. ``attach`` opens the database
*without* upgrading it: a monitor (or a check run as another user) must never
migrate a schema under a running service; it reports the version instead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import peewee as pw

from helpdesk.errors import StoreError
from helpdesk.store import sql
from helpdesk.store.db import _open, _schema_version, redact, temporary_faults  # the connection's own recipe
from helpdesk.store.schema import MIGRATIONS, Meta, Outbox, Timer, db

TICK_KEY = "tick:last"


@dataclass(frozen=True)
class Schema:
    version: int            # what the database has
    expected: int           # what this helpdesk's code needs

    @property
    def current(self) -> bool:
        return self.version == self.expected


def expected_version() -> int:
    return len(MIGRATIONS)


def attach(url: str) -> Schema:
    """Bind the store to ``url`` and read its schema version, creating and upgrading nothing.

    A SQLite file that is not there is not created (a StoreError says so): an
    empty file would look like a database with no schema."""
    if url.startswith("sqlite:///") and ":memory:" not in url:
        path = Path(url.removeprefix("sqlite:///").partition("?")[0])
        if not path.exists():
            raise StoreError(f"database {path} does not exist yet (`helpdesk run` creates it)")
    database = _open(url)
    db.initialize(database)
    sql.reset()
    try:
        database.connect(reuse_if_open=True)
        return Schema(_schema_version(database), expected_version())
    except pw.PeeweeException as exc:
        raise StoreError(f"database {redact(url)}: {exc}".splitlines()[0]) from exc


def schema() -> Schema:
    """The bound database's schema version (the meta row: one indexed lookup)."""
    return Schema(_schema_version(db.obj), expected_version())


def release() -> None:
    """Close this thread's connection: the metrics server answers each scrape in a new thread."""
    if db.obj is not None and not db.is_closed():
        db.close()


# --- the outbox ----------------------------------------------------------------------

def outbox_counts() -> dict[str, int]:
    """Outgoing mail by status (queued, sent, failed, ...): the (status, ...) index alone answers it."""
    return dict(Outbox.select(Outbox.status, pw.fn.COUNT(Outbox.id)).group_by(Outbox.status).tuples())


def oldest_queued() -> dt.datetime | None:
    """When the oldest mail still waiting to leave was queued (naive UTC), or None: a mail put
    back in line by ``outbox retry`` counts from then (``queued_at``), not from its creation."""
    value = (Outbox.select(pw.fn.MIN(pw.fn.COALESCE(Outbox.queued_at, Outbox.created_at)))
             .where(Outbox.status == "queued").scalar())
    return Outbox.created_at.python_value(value) if value is not None else None


def mail_status(message_id: str) -> tuple[str, int, str | None] | None:
    """(status, attempts, last error) of one outgoing mail, by its Message-ID."""
    rows = sql.select(Outbox, ["status", "attempts", "last_error"], {"message_id": message_id})
    return tuple(rows[0]) if rows else None


# --- the deadline tick ------------------------------------------------------------------

def overdue_timers(before: dt.datetime) -> int:
    """Pending timers that were due before ``before``: the tick should have fired them."""
    return (Timer.select(pw.fn.COUNT(Timer.id))
            .where((Timer.status == "pending") & (Timer.fire_at < before)).scalar())


def ticked(at: dt.datetime) -> None:
    """Record a finished deadline tick (one upsert: cheap next to the tick's own reads)."""
    value = at.isoformat()
    with temporary_faults(writes=False):    # a lost connection: StoreUnavailable, not a failed job
        (Meta.insert(key=TICK_KEY, value=value)
         .on_conflict(conflict_target=[Meta.key], update={Meta.value: value}).execute())


def last_tick() -> dt.datetime | None:
    row = Meta.get_or_none(Meta.key == TICK_KEY)
    return dt.datetime.fromisoformat(row.value) if row is not None else None
