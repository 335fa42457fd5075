"""``helpdesk run``: the sources, the pipeline, the outbox and the tick as independent stages.

Each part of the work runs in a thread of its own (``scheduler.Stage``): the
Maildir poll, processing, delivery and the tick; the SMTP server and one IMAP
watcher per IMAP mailbox (IDLE) run in their own threads already. A source that
stored a mail wakes the process stage; processing and the tick wake delivery.
No stage waits for another: a relay that accepts and never answers holds the
deliver stage alone (bounded by the transport's time-outs), and a backlog in
the pipeline does not hold back delivery. They share one stopping event:
SIGTERM lets each finish the batch, chunk or mail in hand; a delivery still
hung after a grace period has its connection closed (``transport.abort()``).

``roles`` (``run --only``) picks the parts this worker runs, so SMTP intake can
run on the MX hosts and the rest elsewhere. ``--once`` runs one pass of the
chosen parts in the pipeline's order and returns its exit status (1 when an IMAP
mailbox failed, so cron can tell).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from helpdesk.clock import Clock
from helpdesk.errors import UserError
from helpdesk.intake import imap, maildir
from helpdesk.intake.smtp import SmtpIntake
from helpdesk.reports import digest
from helpdesk.runtime import membership, metrics, reload, sdnotify
from helpdesk.runtime.app import App
from helpdesk.runtime.scheduler import Loop, Stages
from helpdesk.store import health

log = logging.getLogger("helpdesk")

ROLES = ("smtp", "imap", "maildir", "process", "deliver", "tick")
STAGES = ("maildir", "process", "tick", "deliver")     # the pipeline's order, for --once
GRACE = 2.0          # seconds a stopping stage may take before its relay connection is closed
STOP_WAIT = 3.0      # then how long more before the service exits without it


def parse_roles(text: str | None) -> frozenset[str]:
    """``--only smtp,process``: the roles named, each known; None (no ``--only``): all."""
    if text is None:
        return frozenset(ROLES)
    named = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in named if part not in ROLES]
    if unknown or not named:
        what = f"unknown role {unknown[0]!r}" if unknown else "no role named"
        raise UserError(f"--only: {what}; choose from {','.join(ROLES)}")
    return frozenset(named)


def poll_maildirs(app: App, stopping: threading.Event | None = None) -> int:
    """Every Maildir, a batch at a time; on ``stopping`` (SIGTERM) after the batch in hand,
    the rest staying in new/ for the next start."""
    stored = 0
    for mailbox in app.config.mailboxes:
        if mailbox.source_kind == "maildir":
            for new, _duplicates in maildir.poll(mailbox, app.store, app.config.intake.batch_size):
                stored += new
                if stopping is not None and stopping.is_set():
                    return stored
    return stored


def poll_imap(app: App, meanwhile: Callable[[], object] | None = None) -> imap.Polled:
    """Every IMAP mailbox once; a failing one is logged, named in ``failed`` and skipped.
    With ``meanwhile`` (``run --once``: processing) the fetching runs in a thread and
    overlaps with it."""
    mailboxes = [m for m in app.config.mailboxes if m.source_kind in ("imap", "imaps")]
    batch = app.config.intake.batch_size
    if meanwhile is not None and mailboxes:
        return imap.poll_all(mailboxes, app.store, batch, meanwhile)
    return imap.total([imap.poll_once(mailbox, app.store, batch) for mailbox in mailboxes])


def one_pass(app: App) -> None:
    poll_maildirs(app)
    poll_imap(app)
    app.process()
    app.tick()
    app.deliver()


def plans(app: App, stopping: threading.Event, roles: frozenset[str] = frozenset(ROLES),
          wake: Callable[[str], Callable[[], None]] | None = None) -> dict[str, Callable[[Loop], None]]:
    """Per stage this worker runs, what registers its jobs at the config's intervals (read
    again after a reload). ``wake(stage)`` gives what wakes another stage: a poll that
    stored mail wakes processing, processing and the tick wake delivery."""
    wake = wake or (lambda name: lambda: None)

    def maildir_plan(loop: Loop) -> None:
        def poll() -> None:
            if poll_maildirs(app, stopping):
                wake("process")()
        loop.every(app.config.intake.poll_interval.total_seconds(), "poll", poll)

    def process_plan(loop: Loop) -> None:
        def process() -> None:
            if sum(app.process(between=wake("deliver")).counts.values()):
                wake("deliver")()
        loop.every(app.config.intake.poll_interval.total_seconds(), "process", process)

    def tick_plan(loop: Loop) -> None:
        def deadlines() -> None:
            if app.tick(stopping).total:
                wake("deliver")()
        loop.every(app.config.tickets.tick_interval.total_seconds(), "deadlines", deadlines)
        def digest_due() -> None:
            if digest.run_due(app) is not None:
                wake("deliver")()
        if app.config.digest.schedule is not None:   # due once per period: one indexed lookup
            loop.every(30, "digest", digest_due)

    def deliver_plan(loop: Loop) -> None:
        loop.every(app.config.outgoing.poll_interval.total_seconds(), "deliver",
                   lambda: app.deliver(stopping))

    every = {"maildir": maildir_plan, "process": process_plan, "tick": tick_plan, "deliver": deliver_plan}
    has_maildir = any(m.source_kind == "maildir" for m in app.config.mailboxes)
    return {name: every[name] for name in STAGES
            if name in roles and (name != "maildir" or has_maildir)}


def build_loop(app: App, roles: frozenset[str] = frozenset(ROLES)) -> Loop:
    """``run --once``: every chosen stage's jobs on one loop, in the pipeline's order."""
    loop = Loop()
    for plan in plans(app, loop.stopping, roles).values():
        plan(loop)
    return loop


def build_stages(app: App, roles: frozenset[str] = frozenset(ROLES)) -> Stages:
    """One stage per part this worker runs; each closes its thread's connection as it ends."""
    stages = Stages()
    for name, plan in plans(app, stages.stopping, roles, stages.waker).items():
        stages.add(name, plan, on_exit=health.release)
    return stages


def run(app: App, once: bool, roles: frozenset[str] = frozenset(ROLES)) -> int:
    """As one of the workers sharing the database (``membership``): registered with a
    heartbeat while it runs, its claims and leases freed when it ends."""
    with membership.joined(Clock(), app.config.intake.worker_timeout):
        return _run(app, once, roles)


def _run(app: App, once: bool, roles: frozenset[str]) -> int:
    """The exit status: 1 if ``once`` and an IMAP mailbox failed (its error is logged)."""
    app.desk.notifiers[app.config.mailboxes[0].name].renderer.preload()
    if "deliver" in roles:
        app.remove_stale_outgoing()
    if once:
        loop = build_loop(app, roles)
        polled = poll_imap(app, meanwhile=app.process if "process" in roles else None) \
            if "imap" in roles else None
        loop.run_once()
        return 1 if polled is not None and polled.failed else 0
    stages = build_stages(app, roles)
    app.pipeline.stopping = stages.stopping      # SIGTERM: the batch in hand is finished, no more
    reload_wanted = threading.Event()
    _reload_on_hang_up(stages, reload_wanted)    # before anything starts: SIGHUP must never kill it
    scraped = (metrics.serve(app.config, app.clock, lambda: app.config)
               if app.config.metrics.host else None)
    smtp, watchers = None, []
    if "smtp" in roles and app.config.smtp_server.enabled:   # a port in use: one line, nothing started
        smtp = SmtpIntake(app.config, app.store, on_stored=stages.waker("process"))
        smtp.start()
    if "imap" in roles:
        watchers = imap.start_watchers(app.config.mailboxes, app.store, app.config.intake.batch_size,
                                       on_stored=stages.waker("process"), lease_for=membership.lease_for)
    try:
        _stop_on_signals(stages)
        stages.start()
        log.info("helpdesk running (%s); stop with Ctrl-C or SIGTERM, reload the config with SIGHUP",
                 ", ".join(role for role in ROLES if role in roles))
        sdnotify.ready("running")
        _serve(app, stages, reload_wanted, smtp)
    finally:
        sdnotify.stopping()
        stages.stop()
        for watcher in watchers:
            watcher.stop()
        if smtp is not None:
            smtp.stop()
        _join(app, stages)
        if scraped is not None:
            metrics.stop(scraped)
        app.close()
        log.info("helpdesk stopped")
    return 0


def _serve(app: App, stages: Stages, reload_wanted: threading.Event, smtp) -> None:
    """The main thread while the stages run: a reload when SIGHUP asked for one."""
    while not stages.stopping.is_set():
        stages.wake.wait(1.0)
        stages.wake.clear()
        if reload_wanted.is_set() and not stages.stopping.is_set():
            reload_wanted.clear()
            if reload.reload(app, smtp):
                stages.replan()


def _join(app: App, stages: Stages) -> None:
    """Wait for the stages; a delivery still hung on its relay after ``GRACE`` seconds has
    its connection closed (the mail stays queued); a stage that still does not end is
    left behind with one log line, so SIGTERM always ends the process."""
    late = [name for name, stage in stages.stages.items() if not stage.join(GRACE)]
    if not late:
        return
    if "deliver" in late:
        app.abort_delivery()
    late = [name for name in late if not stages.stages[name].join(STOP_WAIT)]
    if late:
        log.warning("stopping without waiting for %s", ", ".join(late))


def _stop_on_signals(stages) -> None:
    """SIGINT and SIGTERM stop the stages: each finishes the job in hand, no other starts."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (tests run the service in a thread)

    def stop(signum, frame) -> None:
        log.info("%s: stopping after the batch in hand", signal.Signals(signum).name)
        stages.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)


def _reload_on_hang_up(stages: Stages, reload_wanted: threading.Event) -> None:
    """SIGHUP asks for a reload; the main thread does it, then each stage re-reads its intervals."""
    if threading.current_thread() is not threading.main_thread():
        return

    def hang_up(signum, frame) -> None:
        reload_wanted.set()
        stages.wake.set()

    signal.signal(signal.SIGHUP, hang_up)
