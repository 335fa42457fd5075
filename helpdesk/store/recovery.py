"""Faults the store survives: a lost database connection and a full disk.

Both are temporary: the server comes back (a restart, a failover to a promoted
standby is just a reconnect), space is freed. So they are never a reason to
quarantine or bounce a mail: the failed transaction is rolled back whole, its
work stays pending (SMTP answers 4xx, the pipeline leaves the message
``pending``), and its caller tries the whole transaction again later. A half
transaction is never re-run: only a ``BEGIN`` or a lone ``SELECT`` outside any
transaction is retried at once on a fresh connection, since neither can have
changed anything.

Connections are per thread (peewee's), so every thread finds out about a lost
connection by itself and reconnects by itself. An outage is logged once when
found and once when over, however many threads and attempts see it: each
connection remembers the outage generation it was opened in, and a loss on a
connection older than the last known outage is that outage's, not a new one.
While the server is unreachable, reconnecting backs off from 0.2 s to 5 s; a
caller in between is refused at once (``StoreUnavailable``) without a connection
attempt.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from collections.abc import Callable

import peewee as pw

from helpdesk.errors import StorageFull, StoreUnavailable, TemporaryStoreError

log = logging.getLogger("helpdesk.store")

# What the drivers say (lower case) when the connection is gone or cannot be had:
# psycopg 3 and 2, and SQLite's "locked"/"cannot open" (waiting cures those too).
_LOST = ("terminating connection", "server closed the connection", "connection already closed",
         "the connection is closed", "connection is lost", "consuming input failed",
         "could not connect", "connection refused", "connection failed", "connection timeout",
         "no connection to the server", "ssl connection has been closed", "server conn crashed",
         "the database system is shutting down", "the database system is starting up",
         "the database system is in recovery mode", "cannot operate on a closed database",
         "database is locked", "unable to open database file")
_FULL = ("database or disk is full", "no space left on device", "could not extend file",
         "disk quota exceeded")
# SQLSTATE classes: 08 connection exception, 57P01-03 shutdown / cannot connect now,
# 53100 disk full, 53400 configuration limit exceeded (not temporary: left out).
_LOST_STATES = ("08", "57P01", "57P02", "57P03")
_FULL_STATES = ("53100",)
_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def classify(exc: BaseException) -> type[TemporaryStoreError] | None:
    """``StorageFull``, ``StoreUnavailable``, or None for a real error; the whole chain of
    causes is read, since a failed rollback hides the error that caused it."""
    for found in _chain(exc):
        if isinstance(found, TemporaryStoreError):
            return type(found)
        if isinstance(found, OSError) and found.errno in _SPACE_ERRNOS:
            return StorageFull
        state = getattr(found, "sqlstate", None) or ""
        text = str(found).lower()
        if state.startswith(_FULL_STATES) or any(s in text for s in _FULL):
            return StorageFull
        if state.startswith(_LOST_STATES) or any(s in text for s in _LOST):
            return StoreUnavailable
        if isinstance(found, pw.InterfaceError):
            return StoreUnavailable
    return None


_CONFLICT_STATES = ("40P01", "40001")      # deadlock detected, serialization failure


def conflict(exc: BaseException) -> str | None:
    """The reason when ``exc`` is a clash with another worker's transaction (PostgreSQL chose
    ours as a deadlock's victim): no fault of the work, which is simply done again."""
    for found in _chain(exc):
        if (getattr(found, "sqlstate", None) or "") in _CONFLICT_STATES:
            return reason(found)
    return None


def temporary(exc: BaseException) -> TemporaryStoreError | None:
    """The temporary error ``exc`` stands for, its message naming the real cause (not
    SQLite's "cannot rollback - no transaction is active" that followed it), or None."""
    kind = classify(exc)
    if kind is None:
        return None
    if isinstance(exc, kind):
        return exc
    label = "storage full" if kind is StorageFull else "database unavailable"
    return kind(f"{label}: {reason(exc)}")


def reason(exc: BaseException) -> str:
    """One line: the first error in the chain that is not a failed rollback."""
    for found in _chain(exc):
        text = str(found).strip()
        if text and "cannot rollback" not in text and "rollback" not in text.lower()[:20]:
            return f"{type(found).__name__}: {text.splitlines()[0]}"[:300]
    return type(exc).__name__


def _chain(exc: BaseException):
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        found = todo.pop(0)
        if id(found) in seen:
            continue
        seen.add(id(found))
        yield found
        todo.extend(e for e in (found.__cause__, found.__context__) if e is not None)


class Outage:
    """One outage of the database, seen by any number of threads: logged once when found,
    once when over; reconnection attempts spaced from ``first`` to ``most`` seconds."""

    def __init__(self, first: float = 0.2, most: float = 5.0,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.first, self.most, self.now = first, most, now
        self.lock = threading.Lock()
        self.generation = 0        # outages seen so far
        self.down_since: float | None = None
        self.delay = first
        self.next_try = 0.0

    def lost(self, opened_in: int, why: str) -> None:
        """A connection opened in generation ``opened_in`` was found dead."""
        with self.lock:
            if opened_in < self.generation:
                return             # a casualty of the outage already reported
            self.generation += 1
            self.down_since = self.down_since or self.now()
            self.next_try = 0.0    # the first reconnection is tried at once
            log.warning("database connection lost (%s); reconnecting", why)

    def may_try(self) -> bool:
        with self.lock:
            return self.down_since is None or self.now() >= self.next_try

    def failed(self, why: str) -> None:
        """A connection attempt failed: the next waits twice as long (up to ``most``)."""
        with self.lock:
            if self.down_since is None:
                self.generation += 1
                self.down_since = self.now()
                log.warning("database unreachable (%s); retrying with back-off", why)
            self.next_try = self.now() + self.delay
            self.delay = min(self.delay * 2, self.most)

    def opened(self) -> int:
        """A connection is open: the outage (if any) is over. Returns its generation."""
        with self.lock:
            if self.down_since is not None:
                log.warning("database connection back after %.1f s", self.now() - self.down_since)
                self.down_since = None
            self.delay = self.first
            return self.generation


class Streak:
    """A fault seen by any number of callers that has no connection to reopen (a full
    disk, a locked SQLite file): logged once when a call fails for it, once when a call
    succeeds again. ``found`` takes the reason; ``over`` the seconds it lasted."""

    def __init__(self, found: str, over: str, confirm: int = 1) -> None:
        self.found, self.over, self.confirm = found, over, confirm
        self.lock = threading.Lock()
        self.since: float | None = None
        self.failures = 0

    def failed(self, why: str) -> None:
        with self.lock:
            self.failures += 1
            if self.since is None and self.failures >= self.confirm:
                self.since = time.monotonic()
                log.warning(self.found, why)

    def ok(self) -> None:
        if not self.failures:       # the usual case: no lock taken
            return
        with self.lock:
            if self.since is not None:
                log.warning(self.over, time.monotonic() - self.since)
            self.since, self.failures = None, 0


_PENDING = "; mail stays pending and is retried until space is freed"
DISK = Streak("storage full for the database (%s)" + _PENDING,      # told by write transactions
              "storage for the database writable again after %.1f s")
FILES = Streak("storage full for the attachments (%s)" + _PENDING,  # told by the pipeline
               "storage for the attachments writable again after %.1f s")
# SQLite locked past its busy timeout, or not to be opened. Told from the second failure
# in a row: one is contention, and a one-shot caller (pipe mode) says it in its own line.
BUSY = Streak("database unavailable (%s); SMTP answers 451 and work waits",
              "database available again after %.1f s", confirm=2)


class ReconnectingPostgres(pw.PostgresqlDatabase):
    """PostgreSQL whose lost connections are dropped and reopened (see the module's doc).

    peewee's own ``ReconnectMixin`` retries any statement outside a transaction; this
    retries only what cannot have changed anything, and adds the back-off and the
    once-per-outage log.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.outage = Outage()
        self.ever_opened = False
        self._opened_in = threading.local()

    def connect(self, reuse_if_open: bool = False) -> bool:
        if not self._state.closed:
            return super().connect(reuse_if_open)
        if not self.outage.may_try():
            raise StoreUnavailable("database unavailable: reconnecting (waiting between attempts)")
        try:
            opened = super().connect(reuse_if_open)
        except pw.DatabaseError as exc:
            if not self.ever_opened:
                raise            # not an outage: a wrong URL or a server not started (the caller says so)
            self.outage.failed(reason(exc))
            raise StoreUnavailable(f"database unavailable: {reason(exc)}") from exc
        self.ever_opened = True
        self._opened_in.generation = self.outage.opened()
        return opened

    def begin(self, *args, **kwargs) -> None:
        conn = self._state.conn
        if conn is not None and (getattr(conn, "broken", False) or getattr(conn, "closed", False)):
            self._lost(pw.InterfaceError("connection found broken"))
        self._once_more(super().begin, *args, **kwargs)

    def execute_sql(self, sql, params=None):
        if self.in_transaction() or sql.lstrip()[:6].upper() != "SELECT":
            try:
                return super().execute_sql(sql, params)
            except pw.DatabaseError as exc:
                if classify(exc) is StoreUnavailable:
                    self._lost(exc)
                raise
        return self._once_more(super().execute_sql, sql, params)

    def _once_more(self, action, *args, **kwargs):
        """Run ``action`` (that changes nothing); on a lost connection, reconnect and run it
        once more."""
        try:
            return action(*args, **kwargs)
        except pw.DatabaseError as exc:
            if classify(exc) is not StoreUnavailable or self.in_transaction():
                raise
            self._lost(exc)
        return action(*args, **kwargs)

    def _lost(self, exc: BaseException) -> None:
        """Report the loss (once per outage) and drop the dead connection, unless a
        transaction still stands on it: its ``__exit__`` ends it, the next ``begin`` drops it."""
        self.outage.lost(getattr(self._opened_in, "generation", 0), reason(exc))
        if self.in_transaction():
            return
        conn = self._state.conn
        self._state.reset()
        if conn is not None:
            with contextlib.suppress(Exception):    # it is dead already; closing is a courtesy
                conn.close()
