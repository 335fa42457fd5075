"""The composition root: every long-lived object is built here, from the config.

Nothing else reads config.toml or decides which transport, database or clock
to use, so tests build an ``App`` with a different clock or config and get the
whole helpdesk wired the same way as in production.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from helpdesk.clock import Clock, naive_utc
from helpdesk.config.loader import load_config
from helpdesk.config.settings import Config
from helpdesk.disputes import deadlines as dispute_deadlines
from helpdesk.disputes.desk import DisputeDesk
from helpdesk.disputes.inbox import DisputeInbox
from helpdesk.errors import ConfigError, TemporaryStoreError
from helpdesk.intake import spool
from helpdesk.mail.loop import loop_id
from helpdesk.oauth2 import tokens
from helpdesk.outbound import failures, outbox, suppression
from helpdesk.outbound.notify import Notifier, Renderer
from helpdesk.outbound.template_check import verify as verify_templates
from helpdesk.outbound.transports import Transport, transport_from_url
from helpdesk.pipeline.batches import Pipeline, Tally
from helpdesk.runtime import samples, shipped
from helpdesk.runtime.tick import TickReport, fire_due
from helpdesk.staff import act as staff_act
from helpdesk.store.attachments import AttachmentStore
from helpdesk.store.db import connect
from helpdesk.tickets import deadlines as ticket_deadlines
from helpdesk.tickets import held_mail
from helpdesk.tickets.desk import Desk
from helpdesk.tickets.inbox import TicketInbox

TEMPLATES = shipped.templates()     # the shipped defaults; [helpdesk] templates_dir overrides file by file
log = logging.getLogger("helpdesk")


@dataclass
class App:
    config: Config
    clock: Clock
    desk: Desk
    disputes: DisputeDesk
    pipeline: Pipeline
    # deadline handlers by timer subject ("ticket", "dispute"); see runtime.tick
    timer_handlers: dict = field(default_factory=dict)
    timer_flushers: dict = field(default_factory=dict)   # alerts a handler returns, sent once per chunk
    reporter: failures.Reporter | None = None            # tells the staff of mail given up
    _transport: object = None

    # --- the three steps every source and the scheduler drive ---------------

    def store(self, batch: list[spool.Incoming]) -> list[spool.Stored]:
        return spool.store(batch, self.clock)

    def process(self, tally: Tally | None = None, between: Callable[[], object] | None = None) -> Tally:
        """Every pending message; ``between`` runs once per batch (the service wakes delivery
        there, so acknowledgements leave while a backlog is still being worked through)."""
        return self.pipeline.process_pending(tally=tally, between=between)

    def deliver(self, stopping: threading.Event | None = None) -> outbox.DeliveryReport:
        """Hand over everything due now; then tell the staff of mail given up, at once.
        ``stopping`` (SIGTERM) ends the pass after the mail in hand."""
        policy = outbox.RetryPolicy.of(self.config.outgoing)
        held = suppression.Suppression.of(self.config)
        total = outbox.deliver_all(self.transport, self.clock, policy, held, stopping)
        if (self.reporter is not None and not (stopping and stopping.is_set())
                and self.reporter.tell(self.config, self.clock, total.failed)):
            total.add(outbox.deliver_all(self.transport, self.clock, policy, held, stopping))
        return total

    def remove_stale_outgoing(self) -> None:
        """At start: the files a crashed delivery left in the outgoing Maildir's tmp/."""
        remove = getattr(self.transport, "remove_stale", None)
        if remove is not None:
            remove()

    def abort_delivery(self) -> None:
        """From another thread: close the relay connection a delivery hangs on (SIGTERM)."""
        abort = getattr(self._transport, "abort", None)
        if abort is not None:
            abort()

    def tick(self, stopping: threading.Event | None = None) -> TickReport:
        """Fire every deadline and reminder due now (on ``stopping``, up to the chunk in hand)."""
        report = fire_due(self.timer_handlers, self.clock, flushers=self.timer_flushers, stopping=stopping)
        try:   # held mail the confirmation cap left unmailed: one combined mail a day per person
            held_mail.announce(self.desk, naive_utc(self.clock.now()))
        except TemporaryStoreError as exc:   # an outage: the store logs it once; the next tick retries
            log.debug("held mail announcement waits for the store: %s", exc)
        except Exception as exc:   # noqa: BLE001 - the next tick tries again; the deadlines fired
            log.error("held mail announcement failed: %s: %s", type(exc).__name__, exc)
        return report

    @property
    def transport(self):
        if self._transport is None:
            self._transport = build_transport(self.config, self.clock)
        return self._transport

    def close(self) -> None:
        self.pipeline.close()
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def build(config_path: str | os.PathLike, clock: Clock | None = None,
          templates: Path = TEMPLATES, wait: float | None = None) -> App:
    """``wait``: bound the database's lock and connection waits (``store.db.connect``)."""
    config = load_config(config_path)
    clock = clock or Clock()
    _prepare_dirs(config)
    connect(config.database.url, wait)
    secret = load_secret(config)
    own = config.helpdesk.templates_dir
    renderer = Renderer([own, templates] if own else [templates], config.helpdesk.data_dir / "template-cache")
    verify_templates(renderer, samples.contexts(config))   # a broken one stops the start, before any mail
    notifiers = {m.name: Notifier(renderer, clock, m.address, config.helpdesk.name, loop_id(secret))
                 for m in config.mailboxes}
    desk = Desk(config, clock, secret,
                AttachmentStore(config.helpdesk.attachments_dir, config.limits.max_attachment_size,
                                config.limits.max_attachments_total, config.limits.max_attachments),
                notifiers)
    disputes = DisputeDesk(config, clock, secret, desk.attachments, notifiers, desk)
    domains = {"tickets": TicketInbox(desk, staff_act.staff_reply), "disputes": DisputeInbox(disputes)}
    app = App(config, clock, desk, disputes, Pipeline(config, clock, desk.attachments, domains),
              reporter=failures.Reporter(notifiers))
    app.timer_handlers["ticket"] = ticket_deadlines.handler(desk)
    app.timer_flushers["ticket"] = ticket_deadlines.flusher(desk)
    app.timer_handlers["dispute"] = dispute_deadlines.handler(disputes)
    return app


def build_transport(config: Config, clock: Clock | None = None) -> Transport:
    """The outgoing transport the config describes; with ``auth = "oauth2"`` it is handed
    the relay login's tokens (nothing is asked for until the first login).  A failed
    token login is not tried again before a deferred mail's first retry would be."""
    out = config.outgoing
    oauth = out.oauth2 if out.auth == "oauth2" else None
    try:
        return transport_from_url(
            out.transport, config.base_dir, username=out.username,
            password=None if oauth else out.password(), timeout=out.timeout.total_seconds(),
            ca_file=out.ca_file, tokens=tokens.source(oauth, clock) if oauth else None,
            login_pause=out.retry_delay.total_seconds(), clock=clock,
            destination_down=out.destination_down.total_seconds())
    except ValueError as exc:
        raise ConfigError(f"{config.path.name}: [outgoing] transport: {exc}") from exc


def load_secret(config: Config) -> bytes:
    """The signing key; made (0600) on first run, refused when too short."""
    path = config.helpdesk.secret_key_file
    where = f"{config.path.name}: [helpdesk] secret_key_file"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        log.info("created a new secret key in %s", path)
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from exc
    if len(secret) < 16:
        raise ConfigError(f"{where}: {path} holds a key shorter than 16 characters")
    return secret.encode()


def _prepare_dirs(config: Config) -> None:
    config.helpdesk.data_dir.mkdir(parents=True, exist_ok=True)
    config.helpdesk.attachments_dir.mkdir(parents=True, exist_ok=True)
    url = config.database.url
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for mailbox in config.mailboxes:
        if mailbox.maildir is not None:
            for sub in ("new", "cur", "tmp"):
                (mailbox.maildir / sub).mkdir(parents=True, exist_ok=True)
