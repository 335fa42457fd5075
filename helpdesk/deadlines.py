"""The deadline tick: fire every timer due by now, each exactly once.

Timers are claimed a chunk at a time with one ``UPDATE ... RETURNING`` in the
transaction that applies their effects, so the state changes, the mail they
cause and the record of the firing commit together, and two workers never
fire one timer twice. Each handler runs in a savepoint: one that fails is
rolled back alone, its timer goes back to pending (tried again next tick) and
the tick goes on with the rest.

A handler may return items (alerts) instead of queueing mail itself; the
subject's flusher then gets all the items of the chunk at once, so a burst
of due timers becomes one mail per recipient rather than hundreds.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from helpdesk import timers
from helpdesk.clock import Clock, naive_utc
from helpdesk.models import write_transaction
from helpdesk.timers import Due

log = logging.getLogger("helpdesk.deadlines")
CHUNK = 500

Handler = Callable[[Due, dt.datetime], Iterable[object] | None]
Flusher = Callable[[list, dt.datetime], None]


@dataclass
class TickReport:
    fired: Counter = field(default_factory=Counter)
    failed: int = 0

    @property
    def total(self) -> int:
        return sum(self.fired.values())


def tick(handlers: dict[str, Handler], clock: Clock, limit: int = 10_000,
         flushers: dict[str, Flusher] | None = None) -> TickReport:
    """Fire what is due, a chunk per transaction."""
    now = naive_utc(clock.now())
    report = TickReport()
    failed: set[int] = set()
    while report.total < limit:
        batch = [d for d in timers.due(now, CHUNK + len(failed)) if d.id not in failed][:CHUNK]
        if not batch:
            break
        with write_transaction():
            claimed = timers.claim_many([d.id for d in batch], now)
            items: dict[str, list] = defaultdict(list)
            for due in batch:
                if due.id in claimed and not _fire(due, handlers, now, report, items):
                    failed.add(due.id)
            for subject, collected in items.items():
                (flushers or {})[subject](collected, now)
    return report


def _fire(due: Due, handlers: dict[str, Handler], now: dt.datetime, report: TickReport,
          items: dict[str, list]) -> bool:
    handler = handlers.get(due.subject)
    try:
        with write_transaction():
            made = handler(due, now) if handler is not None else None
    except Exception as exc:
        timers.unclaim(due.id)
        report.failed += 1
        log.error("deadline %s for %s %s failed: %s: %s", due.kind, due.subject, due.subject_id,
                  type(exc).__name__, exc)
        log.debug("deadline traceback", exc_info=True)
        return False
    if handler is None:
        log.warning("timer %s: no handler for %s timers; marked fired", due.id, due.subject)
    if made:
        items[due.subject].extend(made)
    report.fired[due.kind] += 1
    log.info("deadline %s fired for %s %s", due.kind, due.subject, due.subject_id)
    return True
