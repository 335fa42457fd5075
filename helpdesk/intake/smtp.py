"""SMTP intake with aiosmtpd: accept only our addresses, answer 250 only once stored.

The handler implements just the hooks it needs. RCPT refuses every address
that is not a configured mailbox (or its ``+tag`` form) with 550, so the
server is never an open relay; aiosmtpd itself answers 552 above
``data_size_limit``. DATA stores the raw bytes through the blocking store on a
worker thread and answers 451 if that fails (452 when the disk is full), so the
sender keeps the mail and retries.

The session (``Session``) takes what real MTAs send and refuses what only abuse
needs: lines up to ``max_line_length`` (aiosmtpd's default of RFC 5321's 1,000
would bounce real mail with a permanent 500), at most
``max_connections_per_client`` sessions per client address (``421 4.7.0``), and
a session idle for ``idle_timeout`` is closed with ``421 4.4.2``.

Bare line feeds (SMTP smuggling): only ``<CR><LF>.<CR><LF>`` ends a message, as
aiosmtpd reads DATA; ``<LF>.<LF>``, ``<CR><LF>.<LF>``, ``<LF>.<CR><LF>`` and
``<CR>.<CR>`` are message text, so commands hidden after them are never run as a
second transaction: they are part of the one message stored (Postfix's
``smtpd_forbid_bare_newline = normalize`` makes the same choice). Lines ending
in a bare LF are accepted and stored as received; the helpdesk never relays an
inbound message to another SMTP server, so it cannot pass a smuggled end of data
on, and its parser reads either line ending.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from helpdesk.config.settings import Config
from helpdesk.errors import ConfigError, StorageFull, StoreUnavailable
from helpdesk.intake.spool import Incoming, Stored
from helpdesk.store import recovery

log = logging.getLogger("helpdesk.smtp")


class IntakeHandler:
    def __init__(self, config: Config, store: Callable[[list[Incoming]], list[Stored]],
                 on_stored: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.store = store
        self.on_stored = on_stored
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smtp-store")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.config.mailbox_for_address(address) is None:
            log.info("refused recipient %s from %s", address, session.peer)
            return f"550 5.1.1 <{address}>: no such mailbox here (this server does not relay)"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        mailbox = self.config.mailbox_for_address(envelope.rcpt_tos[0])
        raw = f"Return-Path: <{envelope.mail_from or ''}>\r\n".encode() + envelope.original_content
        if len(raw) > self.config.limits.max_message_size:
            # The pipeline would quarantine it as too large after we said 250.
            return "552 5.3.4 Message too big for this server"
        item = Incoming(raw, mailbox.name, "smtp", tuple(a.lower() for a in envelope.rcpt_tos))
        try:
            loop = asyncio.get_running_loop()
            stored = (await loop.run_in_executor(self.executor, self.store, [item]))[0]
        except Exception as exc:  # noqa: BLE001 - the sender must retry, we must not crash
            return _refusal(exc, envelope.mail_from)
        log.info("accepted mail from %s for %s (%d bytes%s)", envelope.mail_from,
                 ", ".join(envelope.rcpt_tos), len(raw), ", duplicate" if stored.duplicate else "")
        self.on_stored()
        return "250 2.0.0 Message accepted"

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def _refusal(exc: BaseException, sender: str | None) -> str:
    """The temporary reply for a mail that could not be stored. A lost database or a full
    disk is logged by the store once per outage, so here only at debug level; anything
    else is logged here."""
    kind = recovery.classify(exc)
    if kind is StorageFull:
        log.debug("storage full, mail from %s refused for now: %s", sender, exc)
        return "452 4.3.1 Insufficient system storage; please try again later"
    if kind is StoreUnavailable:
        log.debug("database unavailable, mail from %s refused for now: %s", sender, exc)
    else:
        log.error("could not store mail from %s: %s", sender, exc)
    return "451 4.3.0 Could not store the message; please try again later"


class Session(SMTP):
    """One SMTP session with the limits of ``[smtp_server]`` (see the module's doc)."""

    def __init__(self, handler: IntakeHandler, clients: Counter, **kwargs) -> None:
        settings = handler.config.smtp_server
        self.line_length_limit = settings.max_line_length    # read by SMTP.__init__ and DATA
        self.clients = clients           # open sessions by client address, shared by the server
        self.max_per_client = settings.max_connections_per_client
        self.client: str | None = None
        self.over_limit = False
        super().__init__(handler, timeout=settings.idle_timeout.total_seconds(), **kwargs)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self.client is None:          # not again after STARTTLS
            peer = transport.get_extra_info("peername")
            self.client = str(peer[0]) if peer else "unknown"
            self.clients[self.client] += 1
            self.over_limit = self.clients[self.client] > self.max_per_client

    def connection_lost(self, error) -> None:
        if self.client is not None:
            self.clients[self.client] -= 1
            if self.clients[self.client] <= 0:
                del self.clients[self.client]
            self.client = None
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        """Idle means sending nothing: a long message still arriving keeps the session."""
        self._reset_timeout()
        super().data_received(data)

    async def _handle_client(self) -> None:
        if self.over_limit:
            log.info("refused a session from %s: %d open from there already", self.client,
                     self.max_per_client)
            await self.push("421 4.7.0 Too many connections from your address; try again later")
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    def _timeout_cb(self) -> None:
        log.info("closed an idle session from %s", self.client)
        if self.transport is not None:      # close() sends what is buffered first
            self.transport.write(f"421 4.4.2 {self.hostname} Idle too long; closing\r\n".encode())
        super()._timeout_cb()


class _Controller(Controller):
    """aiosmtpd's controller, making ``Session``s; each reads the handler's config as it is
    at connection time, so a reloaded config applies to the next sessions."""

    def __init__(self, handler: IntakeHandler, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.clients: Counter = Counter()

    def factory(self) -> Session:
        return Session(self.handler, self.clients, **self.SMTP_kwargs)


class SmtpIntake:
    """A running aiosmtpd server on the configured address, in its own thread."""

    def __init__(self, config: Config, store, on_stored=lambda: None,
                 host: str | None = None, port: int | None = None) -> None:
        self.handler = IntakeHandler(config, store, on_stored)
        self.config_name = config.path.name
        settings = config.smtp_server
        self.controller = _Controller(
            self.handler, hostname=host or settings.host,
            port=settings.port if port is None else port,
            data_size_limit=config.limits.max_message_size,
            server_hostname=config.mailboxes[0].address.rpartition("@")[2])

    def start(self) -> tuple[str, int]:
        try:
            self.controller.start()
        except (OSError, RuntimeError) as exc:
            self.handler.close()
            where = f"{self.controller.hostname}:{self.controller.port}"
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(f"{self.config_name}: [smtp_server] listen: cannot listen on {where}: {reason}") from exc
        sock = self.controller.server.sockets[0].getsockname()
        log.info("SMTP intake listening on %s:%d", sock[0], sock[1])
        return sock[0], sock[1]

    def reconfigure(self, config: Config) -> None:
        """A reloaded config (SIGHUP) for the next sessions: its size limit above all. The
        listening address and the mailboxes stay those the server was started with."""
        self.handler.config = config
        self.controller.SMTP_kwargs["data_size_limit"] = config.limits.max_message_size

    def stop(self) -> None:
        self.controller.stop()
        self.handler.close()
