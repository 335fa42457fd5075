"""Where an IMAP mailbox's reading stands: UIDVALIDITY and the last stored UID.

Kept in the ``Meta`` key/value table, one row per mailbox (``imap:<mailbox>``),
so the protocol code in ``imap.py`` never touches peewee. A cursor is saved
only after ``intake.spool`` committed the messages up to its UID: a message at
or below it is known to be stored and only needs flagging and moving. The
source URL is kept too, so pointing a mailbox at another server or folder
starts from scratch instead of trusting a foreign UID.

The same table keeps each mailbox's last successful pass and last fault
(``imap-ok:<mailbox>``, ``imap-fault:<mailbox>``) for ``helpdesk status``: one
upsert per pass, which a pass that stored mail has paid many times over.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import asdict, dataclass

import peewee as pw

from helpdesk.clock import naive_utc
from helpdesk.store.schema import Meta, db

log = logging.getLogger("helpdesk.imap")


@dataclass(frozen=True)
class Cursor:
    source: str
    uidvalidity: int
    last_uid: int


def key(mailbox: str, prefix: str = "imap") -> str:
    """``imap:<mailbox>``, shortened with a digest if it would not fit the column."""
    full = f"{prefix}:{mailbox}"
    if len(full) <= 64:
        return full
    return f"{prefix}:{mailbox[:40]}:{hashlib.sha256(mailbox.encode()).hexdigest()[:16]}"


def load(mailbox: str) -> Cursor | None:
    row = Meta.get_or_none(Meta.key == key(mailbox))
    if row is None:
        return None
    try:
        return Cursor(**json.loads(row.value))
    except (ValueError, TypeError):
        return None  # unreadable: read the folder again, the dedupe key skips copies


def save(mailbox: str, cursor: Cursor) -> None:
    """Upsert in one statement: atomic on SQLite and PostgreSQL alike."""
    value = json.dumps(asdict(cursor))
    (Meta.insert(key=key(mailbox), value=value)
     .on_conflict(conflict_target=[Meta.key], update={Meta.value: value})
     .execute())


def release() -> None:
    """Close this thread's database connection (an IMAP watcher thread ends)."""
    if db.obj is not None and not db.is_closed():
        db.close()


@dataclass(frozen=True)
class Health:
    """A mailbox's last successful pass and last fault (naive UTC), as ``helpdesk status`` shows them."""

    passed_at: dt.datetime | None = None
    failed_at: dt.datetime | None = None
    fault: str | None = None


def passed(mailbox: str, at: dt.datetime | None = None) -> None:
    """A pass read the folder to its end: say when (real time unless told)."""
    _note("imap-ok", mailbox, {"at": _moment(at)})


def failed(mailbox: str, fault: str, at: dt.datetime | None = None) -> None:
    """A pass failed with ``fault`` (one line, as logged)."""
    _note("imap-fault", mailbox, {"at": _moment(at), "fault": fault})


def health() -> dict[str, Health]:
    """Every mailbox's record, by mailbox name, in one query over the meta table's key."""
    found: dict[str, dict] = {}
    for row_key, value in Meta.select(Meta.key, Meta.value).where(Meta.key.startswith("imap-")).tuples():
        try:
            record = json.loads(value)
            at = dt.datetime.fromisoformat(record["at"])
        except (ValueError, TypeError, KeyError):
            continue
        fields = found.setdefault(record.get("mailbox", ""), {})
        if row_key.startswith("imap-ok:"):
            fields["passed_at"] = at
        elif row_key.startswith("imap-fault:"):
            fields.update(failed_at=at, fault=record.get("fault"))
    return {name: Health(**fields) for name, fields in found.items() if name}


def _note(prefix: str, mailbox: str, record: dict) -> None:
    """Upsert a health record; never raises, since a record must not stop the intake it describes."""
    value = json.dumps({"mailbox": mailbox, **record})
    try:
        (Meta.insert(key=key(mailbox, prefix), value=value)
         .on_conflict(conflict_target=[Meta.key], update={Meta.value: value}).execute())
    except pw.PeeweeException as exc:
        log.debug("mailbox %s: could not record its %s: %s", mailbox, prefix, exc)


def _moment(at: dt.datetime | None) -> str:
    return naive_utc(at if at is not None else dt.datetime.now(dt.UTC)).isoformat()
