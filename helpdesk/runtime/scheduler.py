"""The one importer of ``schedule``: the service's jobs, their loops and the stages running them.

Jobs are small calls into the app (poll sources, process, deliver, fire
deadlines). A ``Loop`` sleeps until its next job is due or until something
wakes it (a mail arrived over SMTP), so a new mail becomes a ticket at once
instead of at the next poll.

``helpdesk run`` gives each part of the work a ``Stage``: a loop in a thread of
its own (maildir poll, process, deliver, tick). They share one stopping event
and nothing else, so no part waits on another: a relay that never answers
holds the deliver stage alone, while new mail still becomes tickets, and a
backlog in the pipeline does not hold back delivery. ``run --once`` keeps one
loop that runs every job once, in the pipeline's order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import schedule

from helpdesk.errors import TemporaryStoreError

log = logging.getLogger("helpdesk.scheduler")

Plan = Callable[["Loop"], None]      # registers a stage's jobs on a loop, with the config's intervals


class Loop:
    def __init__(self, stopping: threading.Event | None = None) -> None:
        self.scheduler = schedule.Scheduler()
        self.wake = threading.Event()
        self.stopping = stopping if stopping is not None else threading.Event()
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


class Stage:
    """One part of the service in a thread of its own: its jobs at their intervals, and
    all of them at once whenever another part wakes it (a mail stored, mail queued).

    ``plan`` registers the jobs; after a reload it runs again in the stage's own
    thread (``replan``), since a ``schedule.Scheduler`` is not to be shared
    between threads. ``on_exit`` runs in the thread as it ends: each thread has
    its own database connection, which it closes.
    """

    def __init__(self, name: str, plan: Plan, stopping: threading.Event,
                 on_exit: Callable[[], object] | None = None) -> None:
        self.name = name
        self.loop = Loop(stopping)
        self.plan = plan
        self.on_exit = on_exit
        self._replan = threading.Event()
        plan(self.loop)
        self.thread = threading.Thread(target=self._run, name=f"stage-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        self.loop.wake.set()

    def replan(self) -> None:
        self._replan.set()
        self.loop.wake.set()

    def join(self, timeout: float) -> bool:
        """True when the stage has ended within ``timeout`` seconds."""
        if self.thread.is_alive():
            self.thread.join(timeout)
        return not self.thread.is_alive()

    def _run(self) -> None:
        try:
            self.loop.run_forever(on_wake=self._woken)
        finally:
            if self.on_exit is not None:
                try:
                    self.on_exit()
                except Exception as exc:  # noqa: BLE001 - the thread ends either way
                    log.debug("stage %s: %s while ending: %s", self.name, type(exc).__name__, exc)

    def _woken(self) -> None:
        if self._replan.is_set():
            self._replan.clear()
            self.loop.clear()
            self.plan(self.loop)
        self.loop.run_once()


class Stages:
    """The service's stages and the one stopping event they share.

    ``stop`` (SIGTERM) sets it and wakes every stage: each finishes the batch,
    chunk or mail in hand and ends. ``wake`` also wakes the main thread, which
    handles a reload and otherwise only waits.
    """

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.wake = threading.Event()         # the main thread's
        self.stages: dict[str, Stage] = {}

    def add(self, name: str, plan: Plan, on_exit: Callable[[], object] | None = None) -> Stage:
        self.stages[name] = Stage(name, plan, self.stopping, on_exit)
        return self.stages[name]

    def waker(self, name: str) -> Callable[[], None]:
        """What wakes the stage ``name``; nothing when this worker does not run it (``--only``)."""
        stage = self.stages.get(name)
        return stage.wake if stage is not None else _nothing

    def start(self) -> None:
        for stage in self.stages.values():
            stage.start()

    def replan(self) -> None:
        for stage in self.stages.values():
            stage.replan()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        for stage in self.stages.values():
            stage.wake()

    def running(self) -> list[str]:
        return [name for name, stage in self.stages.items() if stage.thread.is_alive()]


def _nothing() -> None:
    pass
