"""Leases: a named thing one worker at a time may do, such as reading an IMAP mailbox.

A lease is a row (name, holder, expires_at). ``acquire`` takes it when it is
free, expired, or already ours, in one conditional UPDATE: on PostgreSQL a
second taker waits for the row and then finds it held; on SQLite the write
lock orders them. The holder's heartbeat renews every lease it holds
(``workers.beat``), so a lease lives exactly as long as its worker beats; a
dead worker's leases are freed by ``workers.reap`` or simply run out, and
another worker takes over within ``[intake] worker_timeout``.
"""

from __future__ import annotations

import datetime as dt

from helpdesk.store.db import write_transaction
from helpdesk.store.schema import Lease


def acquire(name: str, holder: int, now: dt.datetime, until: dt.datetime) -> bool:
    """Take or renew the lease; False while another live holder has it."""
    with write_transaction():
        Lease.insert(name=name, holder=None, expires_at=None).on_conflict_ignore().execute()
        taken = (Lease.update(holder=holder, expires_at=until)
                 .where((Lease.name == name)
                        & (Lease.holder.is_null() | (Lease.holder == holder) | (Lease.expires_at < now)))
                 .execute())
    return taken == 1


def holds(name: str, holder: int, now: dt.datetime) -> bool:
    """Whether ``holder`` still has the lease (not taken over, not run out)."""
    return (Lease.select().where((Lease.name == name) & (Lease.holder == holder)
                                 & (Lease.expires_at >= now)).exists())


def holder_of(name: str) -> tuple[int | None, dt.datetime | None]:
    """Who holds the lease and until when; (None, None) when nobody does."""
    row = Lease.get_or_none(Lease.name == name)
    return (row.holder, row.expires_at) if row is not None else (None, None)


def release(name: str, holder: int) -> None:
    """Give the lease up (the watcher stops), if it is still ours."""
    with write_transaction():
        (Lease.update(holder=None, expires_at=None)
         .where((Lease.name == name) & (Lease.holder == holder)).execute())
