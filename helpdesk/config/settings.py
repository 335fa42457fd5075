"""What the helpdesk is configured with: frozen dataclasses, one per section of
``config.toml``, built once by :func:`helpdesk.config.loader.load_config`.

They live apart from the loader so that the rest of the helpdesk depends on the
settings it reads, not on TOML or on how values are checked; and they are frozen
so that nothing can change, mid-run, what another part was configured with.
Passwords are not kept here: ``password()`` reads them when they are needed.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from helpdesk.config.schema import os_error, quote
from helpdesk.errors import ConfigError, UnknownMailbox

__all__ = [
    "Config",
    "DatabaseSettings",
    "DigestSettings",
    "DisputeSettings",
    "HelpdeskSettings",
    "IntakeSettings",
    "LimitSettings",
    "Mailbox",
    "MetricsSettings",
    "OAuth2Settings",
    "OutgoingSettings",
    "SmtpServerSettings",
    "StaffMember",
    "StatusSettings",
    "TicketSettings",
]


@dataclass(frozen=True)
class HelpdeskSettings:
    name: str
    secret_key_file: Path
    timezone: str
    data_dir: Path
    attachments_dir: Path
    log_level: str
    log_format: str                  # "text" or "json" (one object per line, for log collectors)
    templates_dir: Path | None = None   # a deployment's own template files, each one overriding the shipped one


@dataclass(frozen=True)
class DatabaseSettings:
    url: str


@dataclass(frozen=True)
class OAuth2Settings:
    """Where one login's access token comes from: a mailbox's IMAP or the outgoing relay.

    Either ``token_command`` (a program that prints a token), or a grant
    (``refresh_token`` or ``client_credentials``) at ``token_url`` -- given,
    or filled in from ``provider`` by :mod:`helpdesk.oauth2.presets`, which
    also picks the scope for ``protocol`` when ``scope`` is not given.  The
    client secret and the refresh token stay in their files or environment
    variable and are read when a token is asked for, never kept here.
    """

    provider: str | None
    tenant: str | None
    grant: str | None                      # None with token_command
    token_url: str | None
    scope: str | None
    client_id: str | None
    client_secret_env: str | None
    client_secret_file: Path | None
    refresh_token_file: Path | None
    token_command: tuple[str, ...] | None  # already split (shlex), run without a shell
    timeout: dt.timedelta
    protocol: str = "imap"                 # "imap" or "smtp": which preset scope
    label: str = "mailbox"                 # who the token is for, in log lines and errors
    _origin: str = field(default="oauth2", repr=False, compare=False)

    def client_secret(self) -> str | None:
        """The client secret, read now; ConfigError if its env var is unset or file unreadable."""
        return _read_secret(self.client_secret_env, self.client_secret_file, self._origin,
                            "oauth2.client_secret")


@dataclass(frozen=True)
class Mailbox:
    name: str
    address: str
    kind: str
    source: str
    source_kind: str
    maildir: Path | None
    imap_host: str | None
    imap_port: int | None
    imap_user: str | None
    imap_folder: str | None
    password_env: str | None
    password_file: Path | None
    processed_folder: str
    starttls: bool
    ca_file: Path | None
    poll_interval: dt.timedelta
    timeout: dt.timedelta
    auth: str = "password"                 # or "oauth2": log in with a token (``oauth2``)
    oauth2: OAuth2Settings | None = None
    _origin: str = field(default="[[mailboxes]]", repr=False, compare=False)

    def password(self) -> str | None:
        """The IMAP password, read now; ConfigError if its env var is unset."""
        return _read_secret(self.password_env, self.password_file, self._origin)


@dataclass(frozen=True)
class SmtpServerSettings:
    enabled: bool
    host: str
    port: int
    max_line_length: int = 64 * 1024            # bytes per line, CRLF included
    max_connections_per_client: int = 20        # at once, per client IP address
    idle_timeout: dt.timedelta = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class OutgoingSettings:
    transport: str
    username: str | None
    password_env: str | None
    password_file: Path | None
    ca_file: Path | None
    timeout: dt.timedelta
    max_attempts: int | None         # set: given up after this many attempts (the old schedule)
    retry_delay: dt.timedelta
    poll_interval: dt.timedelta
    auth: str = "password"                 # or "oauth2": log in to the relay with a token
    oauth2: OAuth2Settings | None = None
    retry_max_delay: dt.timedelta = dt.timedelta(hours=1)
    give_up_after: dt.timedelta | None = dt.timedelta(days=5)   # None when max_attempts is set
    destination_down: dt.timedelta = dt.timedelta(minutes=1)   # a relay that timed out: no new try before
    _origin: str = field(default="[outgoing]", repr=False, compare=False)

    def password(self) -> str | None:
        """The SMTP password, read now; ConfigError if its env var is unset."""
        return _read_secret(self.password_env, self.password_file, self._origin)


@dataclass(frozen=True)
class StaffMember:
    address: str
    name: str
    role: str


@dataclass(frozen=True)
class TicketSettings:
    first_response: dt.timedelta
    next_response: dt.timedelta
    reminder_at: int                 # percent of a response deadline used when the reminder goes
    auto_close: dt.timedelta
    tick_interval: dt.timedelta


@dataclass(frozen=True)
class DigestSettings:
    schedule: tuple[str, int, int] | None   # ("daily"|"monday".."sunday", hour, minute); None: off
    timezone: str
    overdue_limit: int


@dataclass(frozen=True)
class DisputeSettings:
    seller_response: dt.timedelta
    seller_reminders: tuple[dt.timedelta, ...]   # before the seller's deadline
    negotiation: dt.timedelta
    admin_after: dt.timedelta
    reasons: tuple[str, ...]
    # the files passed on between the parties: (MIME type, the file name endings it may have)
    relay_file_types: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class TrustSettings:
    """Whose word the helpdesk takes for what a mail claims (docs/trust.md)."""

    # a contact form's sender address: its Reply-To is the customer who filled it in
    form_senders: tuple[str, ...] = ()
    # the receiving MTAs whose Authentication-Results prove a sender
    authserv_ids: tuple[str, ...] = ()
    confirm_within: dt.timedelta = dt.timedelta(days=3)   # a held mail waits this long for its confirmation
    confirm_rate_limit: int = 5                            # confirmation mails per person per day


@dataclass(frozen=True)
class LimitSettings:
    max_message_size: int
    max_attachment_size: int
    max_attachments_total: int
    ack_rate_limit: int
    ack_rate_window: dt.timedelta
    bounce_suppression: dt.timedelta = dt.timedelta(days=7)   # zero: off
    # hostile mail: what one message may cost (docs/known-limits.md)
    max_parts: int = 1000                     # MIME parts read; the rest counted, kept in the raw mail
    max_attachments: int = 100                # attachments stored; the rest refused, told
    parse_timeout: dt.timedelta = dt.timedelta(seconds=30)   # per message parsed alone in a worker
    parse_memory: int = 1 << 30               # address space of a parse worker (bytes)


@dataclass(frozen=True)
class IntakeSettings:
    poll_interval: dt.timedelta
    batch_size: int
    parse_workers: int
    pipe_wait: dt.timedelta          # ``ingest -``: how long to wait for the database before EX_TEMPFAIL
    # ``helpdesk run``: a worker silent this long is dead, its claims and leases freed (``runtime.membership``)
    worker_timeout: dt.timedelta = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class StatusSettings:
    """``helpdesk status``'s thresholds: at or past ``*_warning`` it warns, at or past
    ``*_critical`` it is critical; a count threshold of 0 is never reached."""

    outbox_age_warning: dt.timedelta       # the oldest mail still queued
    outbox_age_critical: dt.timedelta
    failed_warning: int                    # outgoing mail given up
    failed_critical: int
    quarantine_warning: int                # mail the pipeline could not handle
    quarantine_critical: int
    imap_warning: dt.timedelta             # since a mailbox's last successful pass
    imap_critical: dt.timedelta
    tick_warning: dt.timedelta             # since the last deadline tick
    tick_critical: dt.timedelta
    overdue_warning: int                   # timers due longer ago than tick_warning, still pending
    overdue_critical: int


@dataclass(frozen=True)
class MetricsSettings:
    host: str | None                       # None: no metrics listener
    port: int | None


@dataclass(frozen=True)
class Config:
    path: Path
    base_dir: Path
    helpdesk: HelpdeskSettings
    database: DatabaseSettings
    mailboxes: tuple[Mailbox, ...]
    smtp_server: SmtpServerSettings
    outgoing: OutgoingSettings
    staff: tuple[StaffMember, ...]
    tickets: TicketSettings
    limits: LimitSettings
    intake: IntakeSettings
    digest: DigestSettings
    disputes: DisputeSettings
    status: StatusSettings
    metrics: MetricsSettings
    trust: TrustSettings = TrustSettings()

    def mailbox(self, name: str) -> Mailbox:
        """The mailbox called ``name``; UnknownMailbox (a LookupError) if there is none."""
        for mailbox in self.mailboxes:
            if mailbox.name == name:
                return mailbox
        known = ", ".join(m.name for m in self.mailboxes)
        raise UnknownMailbox(f"{self.path.name}: no mailbox named {name!r} (configured: {known})")

    def mailbox_or_default(self, name: str, kind: str = "tickets") -> Mailbox:
        """For mail about an existing ticket or dispute whose mailbox was removed from the
        config since: its notices still go out, from the first mailbox of that kind."""
        try:
            return self.mailbox(name)
        except UnknownMailbox:
            return next((m for m in self.mailboxes if m.kind == kind), self.mailboxes[0])

    def mailbox_for_address(self, address: str) -> Mailbox | None:
        """The mailbox for ``support@x`` or ``support+anything@x`` (any case)."""
        wanted = untagged(address)
        return next((m for m in self.mailboxes if m.address == wanted), None)

    def staff_member(self, address: str) -> StaffMember | None:
        wanted = _bare(address)
        return next((s for s in self.staff if s.address == wanted), None)

    @functools.cached_property
    def own_addresses(self) -> frozenset[str]:
        return frozenset(m.address for m in self.mailboxes)


def _bare(address: str) -> str:
    if address and not any(c in address for c in ' <>"(),;:'):
        return address.lower()  # already a bare address: skip the full parser (hot path)
    return email.utils.parseaddr(address or "")[1].strip().lower()


def untagged(address: str) -> str:
    """``support+anything@x`` -> ``support@x``, lower case: the mailbox address it reaches."""
    local, _, domain = _bare(address).rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}" if local else ""


def _read_secret(env: str | None, path: Path | None, origin: str, key: str = "password") -> str | None:
    if env is not None:
        if env not in os.environ:
            raise ConfigError(
                f"{origin} {key}_env: environment variable {quote(env)} is not set"
            )
        return os.environ[env]
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{origin} {key}_file: cannot read {quote(str(path))}: {os_error(exc)}"
            ) from None
    return None
