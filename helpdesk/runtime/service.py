"""``helpdesk run``: the sources, the pipeline and the outbox on one loop.

One pass = poll every Maildir and IMAP mailbox, process what is pending,
deliver what is due. ``--once`` runs one pass and returns its exit status (1 when
an IMAP mailbox failed, so cron can tell); otherwise the SMTP
server and one IMAP watcher per IMAP mailbox (IDLE) run in their own threads
and wake the loop whenever they stored a mail.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from helpdesk.clock import Clock
from helpdesk.intake import imap, maildir
from helpdesk.intake.smtp import SmtpIntake
from helpdesk.reports import digest
from helpdesk.runtime import membership, metrics, reload, sdnotify
from helpdesk.runtime.app import App
from helpdesk.runtime.scheduler import Loop

log = logging.getLogger("helpdesk")


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


def build_loop(app: App) -> Loop:
    loop = Loop()
    schedule_jobs(loop, app)
    return loop


def schedule_jobs(loop: Loop, app: App) -> None:
    """The jobs at the config's intervals; again after a reload, which may have changed them."""
    loop.clear()
    loop.every(app.config.intake.poll_interval.total_seconds(), "poll",
               lambda: poll_maildirs(app, loop.stopping))
    loop.every(app.config.intake.poll_interval.total_seconds(), "process", app.process)
    loop.every(app.config.tickets.tick_interval.total_seconds(), "deadlines", app.tick)
    if app.config.digest.schedule is not None:   # due once per period; checking is one indexed lookup
        loop.every(30, "digest", lambda: digest.run_due(app))
    loop.every(app.config.outgoing.poll_interval.total_seconds(), "deliver", app.deliver)


def run(app: App, once: bool) -> int:
    """As one of the workers sharing the database (``membership``): registered with a
    heartbeat while it runs, its claims and leases freed when it ends."""
    with membership.joined(Clock(), app.config.intake.worker_timeout):
        return _run(app, once)


def _run(app: App, once: bool) -> int:
    """The exit status: 1 if ``once`` and an IMAP mailbox failed (its error is logged)."""
    app.desk.notifiers[app.config.mailboxes[0].name].renderer.preload()
    loop = build_loop(app)
    if once:
        polled = poll_imap(app, meanwhile=app.process)
        loop.run_once()
        return 1 if polled.failed else 0
    app.pipeline.stopping = loop.stopping       # SIGTERM: the batch in hand is finished, no more
    reload_wanted = threading.Event()
    _reload_on_hang_up(loop, reload_wanted)      # before anything starts: SIGHUP must never kill it
    scraped = (metrics.serve(app.config, app.clock, lambda: app.config)
               if app.config.metrics.host else None)
    smtp = None
    if app.config.smtp_server.enabled:
        smtp = SmtpIntake(app.config, app.store, on_stored=loop.wake.set)
        smtp.start()
    watchers = imap.start_watchers(app.config.mailboxes, app.store, app.config.intake.batch_size,
                                   on_stored=loop.wake.set, lease_for=membership.lease_for)
    _stop_on_signals(loop)

    def on_wake() -> None:
        if reload_wanted.is_set():
            reload_wanted.clear()
            if reload.reload(app, smtp):
                schedule_jobs(loop, app)
        app.process()
        app.deliver()

    log.info("helpdesk running; stop with Ctrl-C or SIGTERM, reload the config with SIGHUP")
    sdnotify.ready("running")
    try:
        loop.run_forever(on_wake=on_wake)
    finally:
        sdnotify.stopping()
        for watcher in watchers:
            watcher.stop()
        if smtp is not None:
            smtp.stop()
        if scraped is not None:
            metrics.stop(scraped)
        app.close()
        log.info("helpdesk stopped")
    return 0


def _stop_on_signals(loop: Loop) -> None:
    """SIGINT and SIGTERM stop the loop: the job in hand finishes its batch, no other starts."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (tests run the service in a thread)

    def stop(signum, frame) -> None:
        log.info("%s: stopping after the batch in hand", signal.Signals(signum).name)
        loop.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)


def _reload_on_hang_up(loop: Loop, reload_wanted: threading.Event) -> None:
    """SIGHUP asks for a reload; the loop's own thread does it, between jobs."""
    if threading.current_thread() is not threading.main_thread():
        return

    def hang_up(signum, frame) -> None:
        reload_wanted.set()
        loop.wake.set()

    signal.signal(signal.SIGHUP, hang_up)
