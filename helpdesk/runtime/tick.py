"""The deadline tick: fire every timer due by now, each exactly once.

Timers are claimed a chunk at a time with one ``UPDATE ... RETURNING`` in the
transaction that applies their effects, so the state changes, the mail they
cause and the record of the firing commit together, and two workers never
fire one timer twice. A chunk runs optimistically in one transaction; when a
handler fails, the chunk is rolled back and redone with each handler in a
savepoint: the failing one is rolled back alone, its timer goes back to
pending (tried again next tick) and the rest fire.

A handler may return items (alerts) instead of queueing mail itself; the
subject's flusher then gets all the items of the chunk at once, so a burst
of due timers becomes one mail per recipient rather than hundreds.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from helpdesk.clock import Clock, naive_utc
from helpdesk.store import health, timers
from helpdesk.store.db import write_transaction
from helpdesk.store.timers import Due

log = logging.getLogger("helpdesk.deadlines")
CHUNK = 1000   # timers per transaction: one commit (fsync) for a typical burst

Handler = Callable[[Due, dt.datetime], Iterable[object] | None]
Flusher = Callable[[list, dt.datetime], None]


@dataclass
class TickReport:
    fired: Counter = field(default_factory=Counter)
    failed: int = 0

    @property
    def total(self) -> int:
        return sum(self.fired.values())


def fire_due(handlers: dict[str, Handler], clock: Clock, limit: int | None = None,
             flushers: dict[str, Flusher] | None = None,
             stopping: threading.Event | None = None) -> TickReport:
    """Fire what is due (all of it, or at most ``limit``), a chunk per transaction; on
    ``stopping`` (SIGTERM) after the chunk in hand, the rest firing at the next start."""
    now = naive_utc(clock.now())
    report = TickReport()
    failed: set[int] = set()
    while (limit is None or report.total < limit) and not (stopping and stopping.is_set()):
        batch = [d for d in timers.due(now, CHUNK + len(failed)) if d.id not in failed][:CHUNK]
        if not batch:
            break
        chunk = TickReport()
        try:
            _chunk(batch, handlers, flushers or {}, now, chunk, careful=False)
        except _HandlerFailed:
            chunk = TickReport()     # rolled back: again, each handler in a savepoint of its own
            failed |= _chunk(batch, handlers, flushers or {}, now, chunk, careful=True)
        report.fired.update(chunk.fired)
        report.failed += chunk.failed
        if chunk.fired:
            log.info("deadlines fired: %s", ", ".join(f"{n} {k}" for k, n in sorted(chunk.fired.items())))
    health.ticked(now)   # for `helpdesk status`: a service whose tick stopped is told from one that idles
    return report


class _HandlerFailed(Exception):
    """Rolls back an optimistic chunk: it is redone with a savepoint per timer."""


def _chunk(batch: list[Due], handlers: dict[str, Handler], flushers: dict[str, Flusher],
           now: dt.datetime, report: TickReport, careful: bool) -> set[int]:
    """One transaction: claim, run the handlers, flush their alerts.

    Optimistically (``careful=False``) without a savepoint per timer, which is
    most of the cost of a large tick; a failing handler then aborts the chunk,
    and the careful pass isolates it. Returns the ids whose handler failed.
    """
    failed: set[int] = set()
    with write_transaction():
        claimed = timers.claim_many([d.id for d in batch], now)
        _prefetch(handlers, [d for d in batch if d.id in claimed])
        items: dict[str, list] = defaultdict(list)
        for due in batch:
            if due.id not in claimed:
                continue
            if careful:
                if not _fire_isolated(due, handlers, flushers, now, report):
                    failed.add(due.id)
                continue
            try:
                _fire(due, handlers, now, report, items)
            except Exception as exc:
                raise _HandlerFailed() from exc
        try:
            for subject, collected in items.items():
                flushers[subject](collected, now)
        except Exception as exc:   # e.g. a template error: isolate it in the careful pass
            raise _HandlerFailed() from exc
    return failed


def _prefetch(handlers: dict[str, Handler], dues: list[Due]) -> None:
    """Handlers that can read their subjects for a whole chunk at once get the chance."""
    by_subject: dict[str, list[Due]] = defaultdict(list)
    for due in dues:
        by_subject[due.subject].append(due)
    for subject, group in by_subject.items():
        prefetch = getattr(handlers.get(subject), "prefetch", None)
        if prefetch is not None:
            prefetch(group)


def _fire(due: Due, handlers: dict[str, Handler], now: dt.datetime, report: TickReport,
          items: dict[str, list]) -> None:
    handler = handlers.get(due.subject)
    if handler is None:
        log.warning("timer %s: no handler for %s timers; marked fired", due.id, due.subject)
    made = handler(due, now) if handler is not None else None
    if made:
        items[due.subject].extend(made)
    report.fired[due.kind] += 1
    log.debug("deadline %s fired for %s %s", due.kind, due.subject, due.subject_id)


def _fire_isolated(due: Due, handlers: dict[str, Handler], flushers: dict[str, Flusher],
                   now: dt.datetime, report: TickReport) -> bool:
    """One timer in a savepoint of its own, its alerts sent on their own (no list mail):
    whatever fails, handler or mail, rolls back this timer alone."""
    mine = TickReport()
    collected: dict[str, list] = defaultdict(list)
    try:
        with write_transaction():
            _fire(due, handlers, now, mine, collected)
            for subject, made in collected.items():
                flushers[subject](made, now)
    except Exception as exc:
        timers.unclaim(due.id)
        report.failed += 1
        log.error("deadline %s for %s %s failed: %s: %s", due.kind, due.subject, due.subject_id,
                  type(exc).__name__, exc)
        log.debug("deadline traceback", exc_info=True)
        return False
    report.fired.update(mine.fired)
    return True
