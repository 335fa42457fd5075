"""The worker registry: who runs ``helpdesk run`` on this database, and who is dead.

Each ``helpdesk run`` inserts a row (host, pid, start) and renews its
``heartbeat_at`` from a thread of its own (``runtime.membership``). Claims
(``raw.claim``, the outbox's) and leases (``leases``) name their worker by
id; a worker whose heartbeat is older than ``[intake] worker_timeout`` is dead,
and the next live worker to beat frees everything it held at once
(``reap``): its pending messages can be claimed again, its outgoing mail is due
again, its IMAP mailboxes may be read by another. At start, a worker frees the
rows of this host whose process is gone (``on_host``), so a restart after a
crash goes on at once rather than a timeout later.

A process has at most one worker row (``me``). One that has none (``ingest``,
pipe mode, a test) claims as ``-pid`` (``claimant``): such claims are never
reaped, they run out at their ``claimed_until``.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from helpdesk.store.db import write_transaction
from helpdesk.store.schema import Lease, Outbox, RawMessage, Worker, db

_me: int | None = None


@dataclass(frozen=True)
class Registered:
    """A worker row, as ``helpdesk status`` or a start-up check reads it."""

    id: int
    host: str
    pid: int
    started_at: dt.datetime
    heartbeat_at: dt.datetime


def me() -> int | None:
    """This process's worker id, while it is registered."""
    return _me


def claimant() -> int:
    """The id claims are made under: the worker's, or ``-pid`` for an unregistered process."""
    return _me if _me is not None else -os.getpid()


def register(host: str, pid: int, now: dt.datetime) -> int:
    """Insert this process's row; from now on its claims name it."""
    global _me
    with write_transaction():
        _me = Worker.insert(host=host, pid=pid, started_at=now, heartbeat_at=now).execute()
    return _me


def beat(worker: int, now: dt.datetime, lease_until: dt.datetime) -> bool:
    """Renew the heartbeat and every lease the worker holds; False when its row is gone
    (another worker took it for dead: its claims and leases were freed)."""
    with write_transaction(proves_space=False):
        alive = Worker.update(heartbeat_at=now).where(Worker.id == worker).execute() == 1
        if alive:
            Lease.update(expires_at=lease_until).where(Lease.holder == worker).execute()
    return alive


def revive(worker: int, host: str, pid: int, started: dt.datetime, now: dt.datetime) -> None:
    """Put back the row of a worker that was taken for dead (its heartbeat could not reach
    the database for a while) under the same id, so its next claims name it again."""
    with write_transaction():
        Worker.insert(id=worker, host=host, pid=pid, started_at=started, heartbeat_at=now) \
            .on_conflict_ignore().execute()


def reap(now: dt.datetime, timeout: dt.timedelta) -> list[int]:
    """Free everything held by workers whose heartbeat is older than ``timeout`` and delete
    their rows, in one transaction; returns their ids."""
    with write_transaction(proves_space=False):
        dead = [w for w, in Worker.select(Worker.id).where(Worker.heartbeat_at < now - timeout).tuples()]
        _free(dead, now)
    return dead


def on_host(host: str) -> list[Registered]:
    """The rows of this host (to check which of their processes still exist)."""
    return [Registered(*row) for row in Worker.select(
        Worker.id, Worker.host, Worker.pid, Worker.started_at, Worker.heartbeat_at)
        .where(Worker.host == host).order_by(Worker.id).tuples()]


def listing() -> list[Registered]:
    """Every registered worker, oldest first."""
    return [Registered(*row) for row in Worker.select(
        Worker.id, Worker.host, Worker.pid, Worker.started_at, Worker.heartbeat_at)
        .order_by(Worker.id).tuples()]


def release(workers: list[int], now: dt.datetime) -> None:
    """Free what these workers held and delete their rows (dead ones, or this one leaving)."""
    global _me
    with write_transaction():
        _free(workers, now)
    if _me in workers:
        _me = None


def _free(workers: list[int], now: dt.datetime) -> None:
    """Pending messages claimable again, claimed outgoing mail due now, leases free."""
    if not workers:
        return
    (RawMessage.update(claimed_by=None, claimed_until=None)
     .where((RawMessage.status == "pending") & RawMessage.claimed_by.in_(workers)).execute())
    (Outbox.update(next_attempt_at=now, claimed_by=None)
     .where((Outbox.status == "queued") & Outbox.claimed_by.in_(workers)).execute())
    Lease.update(holder=None, expires_at=None).where(Lease.holder.in_(workers)).execute()
    Worker.delete().where(Worker.id.in_(workers)).execute()


def close_connection() -> None:
    """Close this thread's connection (the heartbeat thread ends)."""
    if db.obj is not None and not db.is_closed():
        db.close()
