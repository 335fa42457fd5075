"""Where an IMAP mailbox's reading stands: UIDVALIDITY and the last stored UID.

Kept in the ``Meta`` key/value table, one row per mailbox (``imap:<mailbox>``),
so the protocol code in ``imap.py`` never touches peewee. A cursor is saved
only after ``intake.spool`` committed the messages up to its UID: a message at
or below it is known to be stored and only needs flagging and moving. The
source URL is kept too, so pointing a mailbox at another server or folder
starts from scratch instead of trusting a foreign UID.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from helpdesk.store.schema import Meta, db


@dataclass(frozen=True)
class Cursor:
    source: str
    uidvalidity: int
    last_uid: int


def key(mailbox: str) -> str:
    """``imap:<mailbox>``, shortened with a digest if it would not fit the column."""
    full = f"imap:{mailbox}"
    if len(full) <= 64:
        return full
    return f"imap:{mailbox[:40]}:{hashlib.sha256(mailbox.encode()).hexdigest()[:16]}"


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
