"""``helpdesk run``: the sources, the pipeline and the outbox on one loop.

One pass = poll every Maildir mailbox, process what is pending, deliver what
is due. ``--once`` runs one pass and returns; otherwise the SMTP server runs
in its own thread and wakes the loop whenever it stored a mail.
"""

from __future__ import annotations

import logging
import signal
import threading

from helpdesk.app import App
from helpdesk.scheduler import Loop
from helpdesk.sources import maildir
from helpdesk.sources.smtp import SmtpIntake

log = logging.getLogger("helpdesk")


def poll_maildirs(app: App) -> int:
    stored = 0
    for mailbox in app.config.mailboxes:
        if mailbox.source_kind == "maildir":
            for new, _duplicates in maildir.poll(mailbox, app.store, app.config.intake.batch_size):
                stored += new
    return stored


def one_pass(app: App) -> None:
    poll_maildirs(app)
    app.process()
    app.tick()
    app.deliver()


def build_loop(app: App) -> Loop:
    loop = Loop()
    loop.every(app.config.intake.poll_interval.total_seconds(), "poll", lambda: poll_maildirs(app))
    loop.every(app.config.intake.poll_interval.total_seconds(), "process", app.process)
    loop.every(app.config.tickets.tick_interval.total_seconds(), "deadlines", app.tick)
    loop.every(app.config.outgoing.poll_interval.total_seconds(), "deliver", app.deliver)
    return loop


def run(app: App, once: bool) -> None:
    for mailbox in app.config.mailboxes:
        if mailbox.source_kind in ("imap", "imaps"):
            log.error("mailbox %s: IMAP polling is not built yet; its mail is not read "
                      "(use a Maildir source or the SMTP server)", mailbox.name)
    loop = build_loop(app)
    if once:
        loop.run_once()
        return
    smtp = None
    if app.config.smtp_server.enabled:
        smtp = SmtpIntake(app.config, app.store, on_stored=loop.wake.set)
        smtp.start()
    _stop_on_signals(loop)
    log.info("helpdesk running; stop with Ctrl-C")
    try:
        loop.run_forever(on_wake=lambda: (app.process(), app.deliver()))
    finally:
        if smtp is not None:
            smtp.stop()
        app.close()
        log.info("helpdesk stopped")


def _stop_on_signals(loop: Loop) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (tests run the service in a thread)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: loop.stop())
