"""This process as one of the workers sharing a database: registered, beating, gone.

``helpdesk run`` joins (``joined``): it registers a worker row, frees the rows
of this host whose process no longer exists (a crash or ``kill -9`` a moment
ago: its claimed messages, its outgoing mail in flight and its IMAP mailboxes
are taken up at once, not after a timeout), and starts a heartbeat thread. The
heartbeat renews the row and this worker's leases every third of
``[intake] worker_timeout``, and frees what any worker silent for longer than
the timeout held (``store.workers.reap``): with N workers the first live one to
beat does it. Leaving frees this worker's claims and leases and deletes its row.

Each IMAP watcher of a registered worker reads its mailbox under a lease
(``MailboxLease``, ``store.leases``): one worker at a time reads a mailbox, and
another takes over within the timeout when the holder dies.

A heartbeat that cannot reach the database logs once per outage; a worker that
was taken for dead meanwhile puts its row back under the same id.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Iterator

from helpdesk.clock import Clock, naive_utc
from helpdesk.store import leases, workers

log = logging.getLogger("helpdesk.workers")


class Membership:
    """One registered worker and its heartbeat thread."""

    def __init__(self, clock: Clock, timeout: dt.timedelta, host: str | None = None,
                 pid: int | None = None) -> None:
        self.clock = clock
        self.timeout = timeout
        self.host = host or socket.gethostname()
        self.pid = pid or os.getpid()
        self.id: int | None = None
        self.started: dt.datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: str | None = None

    def join(self) -> int:
        now = self._now()
        self.started = now
        self.id = workers.register(self.host, self.pid, now)
        self._free_dead_here(now)
        workers.reap(now, self.timeout)
        self._thread = threading.Thread(target=self._beating, name="heartbeat", daemon=True)
        self._thread.start()
        log.debug("worker %s registered (%s, pid %s)", self.id, self.host, self.pid)
        return self.id

    def leave(self) -> None:
        """Stop beating, free this worker's claims and leases, delete its row."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.id is None:
            return
        try:
            workers.release([self.id], self._now())
        except Exception as exc:  # noqa: BLE001 - stopping goes on; the others reap it later
            log.warning("worker %s could not unregister (%s); the other workers free its claims "
                        "once its heartbeat is %s old", self.id,
                        f"{type(exc).__name__}: {exc}".splitlines()[0], self.timeout)
            return
        log.debug("worker %s unregistered", self.id)

    def beat(self) -> None:
        """One heartbeat: renew, come back if taken for dead, free the dead."""
        now = self._now()
        if not workers.beat(self.id, now, now + self.timeout):
            log.warning("worker %s was taken for dead (no heartbeat for %s); registering again",
                        self.id, self.timeout)
            workers.revive(self.id, self.host, self.pid, self.started, now)
        dead = workers.reap(now, self.timeout)
        if dead:
            log.warning("workers %s stopped beating: their claims and leases are free",
                        ", ".join(map(str, dead)))

    def _free_dead_here(self, now: dt.datetime) -> None:
        dead = [row.id for row in workers.on_host(self.host)
                if row.id != self.id and (row.pid == self.pid or not _alive(row.pid))]
        if dead:
            workers.release(dead, now)
            log.info("freed the claims of workers %s: their processes on %s are gone",
                     ", ".join(map(str, dead)), self.host)

    def _beating(self) -> None:
        try:
            while not self._stop.wait(self.timeout.total_seconds() / 3):
                try:
                    self.beat()
                    if self._failing is not None:
                        log.info("worker %s: heartbeat reaches the database again", self.id)
                        self._failing = None
                except Exception as exc:  # noqa: BLE001 - the next beat tries again
                    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    if self._failing is None:
                        log.warning("worker %s: heartbeat failed (%s); trying again", self.id, reason)
                    self._failing = reason
        finally:
            workers.close_connection()

    def _now(self) -> dt.datetime:
        return naive_utc(self.clock.now())


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (signal 0 checks, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True         # someone else's process: it exists
    return True


@contextlib.contextmanager
def joined(clock: Clock, timeout: dt.timedelta) -> Iterator[Membership]:
    """Registered for the duration of the block (``helpdesk run``)."""
    global _current
    member = Membership(clock, timeout)
    member.join()
    _current = member
    try:
        yield member
    finally:
        _current = None
        member.leave()


# --- leases -----------------------------------------------------------------------------

_current: Membership | None = None


class MailboxLease:
    """The lease on one IMAP mailbox for this worker, as the watcher uses it
    (``intake.imap.Watcher``): wait for it before connecting, check it between IDLEs."""

    def __init__(self, member: Membership, mailbox: str) -> None:
        self.member = member
        self.mailbox = mailbox
        self.name = f"imap:{mailbox}"
        self.check_every = member.timeout.total_seconds() / 3

    def acquire(self, stopping: threading.Event) -> bool:
        """Block until this worker holds the lease (True) or ``stopping`` is set (False)."""
        waited = False
        while not stopping.is_set():
            now = self.member._now()
            if leases.acquire(self.name, self.member.id, now, now + self.member.timeout):
                if waited:
                    log.info("mailbox %s: this worker (%s) reads it now", self.mailbox, self.member.id)
                return True
            if not waited:
                holder, _ = leases.holder_of(self.name)
                log.info("mailbox %s: read by worker %s; this one takes over if that one stops",
                         self.mailbox, holder)
                waited = True
            stopping.wait(self.check_every)
        return False

    def held(self) -> bool:
        return leases.holds(self.name, self.member.id, self.member._now())

    def release(self) -> None:
        leases.release(self.name, self.member.id)


def lease_for(mailbox: str) -> MailboxLease | None:
    """The lease an IMAP watcher of this process takes; None when it is not a registered
    worker (then it reads without one, as a single process always may)."""
    return MailboxLease(_current, mailbox) if _current is not None else None
