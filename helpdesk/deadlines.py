"""The deadline tick: fire every timer due by now, each exactly once.

Handlers are given by subject ("ticket", "dispute"); each runs inside the
transaction that claims its timer, so the state change, the mail it queues
and the record of the firing commit together. A handler that fails is rolled
back alone (its timer stays pending, tried again next tick) and the tick goes
on with the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from helpdesk import timers
from helpdesk.clock import Clock, naive_utc
from helpdesk.models import write_transaction
from helpdesk.timers import Due

log = logging.getLogger("helpdesk.deadlines")
CHUNK = 200

Handler = Callable[[Due, dt.datetime], None]


@dataclass
class TickReport:
    fired: Counter = field(default_factory=Counter)
    failed: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return sum(self.fired.values())


def tick(handlers: dict[str, Handler], clock: Clock, limit: int = 10_000) -> TickReport:
    """Fire what is due, in chunks of one transaction with a savepoint per timer."""
    now = naive_utc(clock.now())
    report = TickReport()
    seen: set[int] = set()
    while len(seen) < limit:
        batch = [d for d in timers.due(now, CHUNK) if d.id not in seen]
        if not batch:
            break
        with write_transaction():
            for due in batch:
                seen.add(due.id)
                _fire(due, handlers, now, report)
    return report


def _fire(due: Due, handlers: dict[str, Handler], now: dt.datetime, report: TickReport) -> None:
    handler = handlers.get(due.subject)
    try:
        with write_transaction():
            if not timers.claim(due.id, now):
                report.skipped += 1
                return
            if handler is None:
                log.warning("timer %s: no handler for %s timers; marked fired", due.id, due.subject)
            else:
                handler(due, now)
        report.fired[due.kind] += 1
        log.info("deadline %s fired for %s %s", due.kind, due.subject, due.subject_id)
    except Exception as exc:
        report.failed += 1
        log.error("deadline %s for %s %s failed: %s: %s", due.kind, due.subject, due.subject_id,
                  type(exc).__name__, exc)
        log.debug("deadline traceback", exc_info=True)
