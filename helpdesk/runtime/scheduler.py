"""The one importer of ``schedule``: the service's jobs and its loop.

Jobs are small calls into the app (poll sources, process, deliver); the loop
sleeps until the next job is due or until a source wakes it (a mail arrived
over SMTP), so a new mail becomes a ticket at once instead of at the next poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import schedule

from helpdesk.errors import TemporaryStoreError

log = logging.getLogger("helpdesk.scheduler")


class Loop:
    def __init__(self) -> None:
        self.scheduler = schedule.Scheduler()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.jobs: list[tuple[str, Callable[[], object]]] = []

    def every(self, seconds: float, name: str, job: Callable[[], object]) -> None:
        self.jobs.append((name, job))
        self.scheduler.every(max(seconds, 0.1)).seconds.do(self._guarded, name, job)

    def clear(self) -> None:
        """No jobs: they are registered again (after a reload, with its intervals)."""
        self.scheduler.clear()
        self.jobs.clear()

    def run_once(self) -> None:
        """Each job exactly once, in registration order (``run --once``)."""
        for name, job in self.jobs:
            self._guarded(name, job)

    def run_forever(self, on_wake: Callable[[], object] | None = None) -> None:
        self.run_once()
        while not self.stopping.is_set():
            self.scheduler.run_pending()
            idle = self.scheduler.idle_seconds
            woken = self.wake.wait(timeout=max(0.05, min(idle if idle is not None else 1.0, 1.0)))
            if woken:
                self.wake.clear()
                if on_wake is not None and not self.stopping.is_set():
                    self._guarded("wake", on_wake)

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def _guarded(self, name: str, job: Callable[[], object]) -> None:
        """A failing job is logged in one line and tried again on its next turn. Once the
        loop is stopping no job starts: the one in hand was the last."""
        if self.stopping.is_set():
            return
        try:
            job()
        except TemporaryStoreError as exc:    # the store logs an outage once, not per job and turn
            log.debug("job %s waits for the store: %s", name, exc)
        except Exception as exc:
            log.error("job %s failed: %s: %s", name, type(exc).__name__, exc)
            log.debug("job %s traceback", name, exc_info=True)
