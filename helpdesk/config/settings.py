"""``config.toml`` -> frozen dataclasses, with one-line errors.

Every section is described by a small schema (key -> converter + default); a
new key is one line in its section's ``*_KEYS`` dict (plus the dataclass field),
a new section is one line in ``SECTIONS`` (plus its dataclass and ``Config``
field).  Unknown sections and keys are rejected.

Every problem raises :class:`ConfigError` with a single line that names the file
(as given by the caller), the section and the key::

    config.toml: [limits] ack_rate_limit: expected an integer, got "five"

Relative paths are relative to the config file's folder.  Loading creates
nothing on disk.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import json
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from helpdesk.errors import ConfigError, UnknownMailbox
from helpdesk.units import normalise_reason, parse_duration, parse_size

__all__ = [
    "Config",
    "DatabaseSettings",
    "DigestSettings",
    "DisputeSettings",
    "HelpdeskSettings",
    "IntakeSettings",
    "LimitSettings",
    "Mailbox",
    "OutgoingSettings",
    "SmtpServerSettings",
    "StaffMember",
    "TicketSettings",
    "load_config",
]


# --------------------------------------------------------------- the dataclasses


@dataclass(frozen=True)
class HelpdeskSettings:
    name: str
    secret_key_file: Path
    timezone: str
    data_dir: Path
    attachments_dir: Path
    log_level: str


@dataclass(frozen=True)
class DatabaseSettings:
    url: str


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
    _origin: str = field(default="[[mailboxes]]", repr=False, compare=False)

    def password(self) -> str | None:
        """The IMAP password, read now; ConfigError if its env var is unset."""
        return _read_secret(self.password_env, self.password_file, self._origin)


@dataclass(frozen=True)
class SmtpServerSettings:
    enabled: bool
    host: str
    port: int


@dataclass(frozen=True)
class OutgoingSettings:
    transport: str
    username: str | None
    password_env: str | None
    password_file: Path | None
    ca_file: Path | None
    timeout: dt.timedelta
    max_attempts: int
    retry_delay: dt.timedelta
    poll_interval: dt.timedelta
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


@dataclass(frozen=True)
class LimitSettings:
    max_message_size: int
    max_attachment_size: int
    max_attachments_total: int
    ack_rate_limit: int
    ack_rate_window: dt.timedelta


@dataclass(frozen=True)
class IntakeSettings:
    poll_interval: dt.timedelta
    batch_size: int
    parse_workers: int


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
        wanted = _untagged(address)
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


def _untagged(address: str) -> str:
    local, _, domain = _bare(address).rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}" if local else ""


def _read_secret(env: str | None, path: Path | None, origin: str) -> str | None:
    if env is not None:
        if env not in os.environ:
            raise ConfigError(
                f"{origin} password_env: environment variable {_q(env)} is not set"
            )
        return os.environ[env]
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{origin} password_file: cannot read {_q(str(path))}: {_oserror(exc)}"
            ) from None
    return None


# --------------------------------------------------------------- schema machinery

REQUIRED = object()


class _Invalid(Exception):
    """A converter's complaint; the loader adds file, section and key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


@dataclass
class _Context:
    label: str
    base_dir: Path
    done: dict[str, Any] = field(default_factory=dict)

    def error(self, where: str, key: str | None, message: str) -> ConfigError:
        text = (
            f"{self.label}: {where} {key}: {message}"
            if key
            else f"{self.label}: {where}: {message}"
        )
        return ConfigError(" ".join(text.splitlines()))


Converter = Callable[[Any, _Context], Any]


@dataclass(frozen=True)
class Key:
    """``convert(raw, ctx)``; ``default`` is a raw value (converted like one
    from the file), ``None`` (kept), ``REQUIRED``, or ``f(ctx, values_so_far)``
    returning a raw value."""

    convert: Converter
    default: Any = None


@dataclass(frozen=True)
class Section:
    """``[name]`` (``many=False``) or ``[[name]]`` (``many=True``)."""

    cls: type
    keys: dict[str, Key]
    many: bool = False
    build: Callable[[dict[str, Any], _Context, str], Any] | None = None
    check: Callable[[tuple, _Context], None] | None = None


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return _q(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _oserror(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc)


# --------------------------------------------------------------- converters


def _typed(kind: type, noun: str) -> Converter:
    def convert(value: Any, ctx: _Context) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _Invalid(f"expected {noun}, got {_show(value)}")
        return value

    return convert


_str = _typed(str, "a string")
_integer = _typed(int, "an integer")
_bool = _typed(bool, "true or false")


def _text(value: Any, ctx: _Context) -> str:
    if not _str(value, ctx).strip():
        raise _Invalid("must not be empty")
    return value


def _int(low: int, high: int | None = None) -> Converter:
    def convert(value: Any, ctx: _Context) -> int:
        value = _integer(value, ctx)
        if value < low or (high is not None and value > high):
            limits = f"at least {low}" if high is None else f"between {low} and {high}"
            raise _Invalid(f"must be {limits}, got {value}")
        return value

    return convert


def _choice(*options: str, fold: bool = False) -> Converter:
    def convert(value: Any, ctx: _Context) -> str:
        text = _str(value, ctx)
        found = text.upper() if fold else text
        if found not in options:
            raise _Invalid(f"{_q(value)} is not one of {', '.join(map(_q, options))}")
        return found

    return convert


def _duration(value: Any, ctx: _Context) -> dt.timedelta:
    try:
        result = parse_duration(value)
    except ValueError:
        raise _Invalid(
            f'{_show(value)} is not a duration like "30m", "4h", "48h" or "3d"'
        ) from None
    if not result:
        raise _Invalid(f"{_show(value)} must be longer than zero")
    return result


def _size(value: Any, ctx: _Context) -> int:
    try:
        result = parse_size(value)
    except (ValueError, TypeError):
        raise _Invalid(
            f'{_show(value)} is not a size like "512KB", "25MB" or "1GB"'
        ) from None
    if not result:
        raise _Invalid(f"{_show(value)} must be larger than zero")
    return result


def _timezone(value: Any, ctx: _Context) -> str:
    try:
        zoneinfo.ZoneInfo(_text(value, ctx))
    except (KeyError, ValueError, OSError):
        raise _Invalid(
            f'{_q(value)} is not a known time zone like "UTC" or "Europe/Berlin"'
        ) from None
    return value


_DAYS = ("daily", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _schedule(value: Any, ctx: _Context) -> tuple[str, int, int] | None:
    """ "daily 08:00", "monday 08:00" or "off"."""
    text = _str(value, ctx).strip().lower()
    if text == "off":
        return None
    match = re.fullmatch(r"(\w+)\s+(\d{1,2}):(\d{2})", text)
    if not match or match.group(1) not in _DAYS or int(match.group(2)) > 23 or int(match.group(3)) > 59:
        raise _Invalid(f'{_q(value)} is not a schedule like "daily 08:00", "monday 08:00" or "off"')
    return match.group(1), int(match.group(2)), int(match.group(3))


def _durations(value: Any, ctx: _Context) -> tuple[dt.timedelta, ...]:
    if not isinstance(value, list):
        raise _Invalid(f'expected a list of durations like ["24h", "6h"], got {_show(value)}')
    return tuple(_duration(item, ctx) for item in value)


def _reasons(value: Any, ctx: _Context) -> tuple[str, ...]:
    # normalised as a sender's "Reason:" line is, or a reason with "-", "_" or a final "." never matches
    if not isinstance(value, list) or not value:
        raise _Invalid(f"expected a non-empty list of reasons, got {_show(value)}")
    reasons = tuple(normalise_reason(_text(item, ctx)) for item in value)
    if not all(reasons):
        raise _Invalid("a reason is empty once punctuation is left out")
    twice = next((r for n, r in enumerate(reasons) if r in reasons[:n]), None)
    if twice is not None:
        raise _Invalid(f'lists the reason "{twice}" twice (compared in lower case, with "-" and "_" '
                       "as spaces and without quotes or final punctuation)")
    return reasons


def _env_name(value: Any, ctx: _Context) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", _str(value, ctx)):
        raise _Invalid(f"{_q(value)} is not an environment variable name")
    return value


_NAME_RE = re.compile(r"[a-z0-9_-]+")
_LOCAL_RE = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_DOMAIN_RE = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
_ADDRESS_RE = re.compile(f"{_LOCAL_RE}@{_DOMAIN_RE}")


def _name(value: Any, ctx: _Context) -> str:
    if not _NAME_RE.fullmatch(_str(value, ctx)):
        raise _Invalid(
            f'{_q(value)} must be made of lower-case letters, digits, "_" and "-"'
        )
    return value


def _address(allow_plus: bool) -> Converter:
    def convert(value: Any, ctx: _Context) -> str:
        if not _ADDRESS_RE.fullmatch(_str(value, ctx).strip()):
            raise _Invalid(
                f'{_q(value)} is not a bare address like "support@example.com"'
            )
        if not allow_plus and "+" in value.partition("@")[0]:
            raise _Invalid(
                f'{_q(value)} must not contain "+" (tagged addresses match anyway)'
            )
        return value.strip().lower()

    return convert


def _resolve(raw: str, ctx: _Context) -> Path:
    path = Path(raw).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else ctx.base_dir / path))


def _path(value: Any, ctx: _Context) -> Path:
    return _resolve(_text(value, ctx), ctx)


def _check_readable(path: Path) -> None:
    if path.exists() and not path.is_file():
        raise _Invalid(f"{_q(str(path))} is not a regular file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise _Invalid(f"cannot read {_q(str(path))}: {_oserror(exc)}") from None


def _readable_file(value: Any, ctx: _Context) -> Path:
    path = _path(value, ctx)
    _check_readable(path)
    return path


def _secret_key_file(value: Any, ctx: _Context) -> Path:
    path = _path(value, ctx)
    if path.exists():
        _check_readable(path)
    return path


def _database_url(value: Any, ctx: _Context) -> str:
    url = _text(value, ctx)
    if url.startswith(("postgresql://", "postgres://")) or url == "sqlite:///:memory:":
        return url
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
        raise _Invalid(
            f'{_q(url)} is not a database URL like "sqlite:///var/helpdesk.db" or "postgresql://host/db"'
        )
    path, sep, query = url[len("sqlite:///") :].partition("?")
    return f"sqlite:///{_resolve(path, ctx)}{sep}{query}"


def _listen(value: Any, ctx: _Context) -> tuple[str, int]:
    host, _, port = _str(value, ctx).strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""
    if not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise _Invalid(
            f'{_q(value)} is not a host:port like "127.0.0.1:2525" or "[::1]:2525"'
        )
    return host, int(port)


def _url_parts(url: str, what: str) -> tuple[str, int | None, str | None, str]:
    """host, port, user (percent-decoded), path of a ``scheme://`` URL."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise _Invalid(f"{_q(url)} has a bad port number") from None
    if not parts.hostname:
        raise _Invalid(f"{_q(url)} has no host, expected a URL like {what}")
    if parts.password is not None:
        raise _Invalid(
            f"{_q(url)} contains a password: use password_env or password_file"
        )
    user = unquote(parts.username) if parts.username else None
    return parts.hostname, port, user, unquote(parts.path)


_IMAP_EXAMPLE = '"imaps://user@host:993/INBOX"'


def _source(value: Any, ctx: _Context) -> dict[str, Any]:
    """``source`` plus the fields parsed from it, for ``Mailbox``."""
    raw = _text(value, ctx).strip()
    scheme = raw.partition(":")[0]
    fields: dict[str, Any] = {"source": raw, "source_kind": scheme, "maildir": None}
    fields.update(imap_host=None, imap_port=None, imap_user=None, imap_folder=None)
    if raw == "none":
        return fields
    if scheme == "maildir" and raw[len("maildir:") :].strip():
        return {**fields, "maildir": _resolve(raw[len("maildir:") :].strip(), ctx)}
    if scheme in ("imap", "imaps") and raw.startswith(f"{scheme}://"):
        host, port, user, path = _url_parts(raw, _IMAP_EXAMPLE)
        if not user:
            raise _Invalid(
                f"{_q(raw)} has no user, expected a URL like {_IMAP_EXAMPLE}"
            )
        port = port or (993 if scheme == "imaps" else 143)
        folder = path.strip("/") or "INBOX"
        return {
            **fields,
            "imap_host": host,
            "imap_port": port,
            "imap_user": user,
            "imap_folder": folder,
        }
    raise _Invalid(
        f'{_q(raw)} is not a source like "maildir:mailboxes/support", {_IMAP_EXAMPLE} or "none"'
    )


_SMTP_SCHEMES = ("smtp://", "smtps://", "smtp+plain://")


def _transport(value: Any, ctx: _Context) -> str:
    raw = _text(value, ctx).strip()
    if raw.startswith("maildir:") and raw[len("maildir:") :].strip():
        return f"maildir:{_resolve(raw[len('maildir:') :].strip(), ctx)}"
    if raw.startswith(_SMTP_SCHEMES):
        _url_parts(raw, '"smtp://host:25"')
        return raw
    raise _Invalid(
        f'{_q(raw)} is not a transport like "maildir:mailboxes/outgoing", "smtp://host:25", '
        '"smtps://host:465" or "smtp+plain://host:25"'
    )


# --------------------------------------------------------------- section builders


def _one_password(values: dict[str, Any]) -> None:
    if values["password_env"] is not None and values["password_file"] is not None:
        raise _Invalid("give password_env or password_file, not both", "password_file")


def _build_mailbox(values: dict[str, Any], ctx: _Context, where: str) -> Mailbox:
    _one_password(values)
    fields = {**values, **values["source"]}
    is_imap = fields["source_kind"] in ("imap", "imaps")
    if is_imap and fields["password_env"] is None and fields["password_file"] is None:
        raise _Invalid(
            "missing (an IMAP source needs password_env or password_file)",
            "password_env",
        )
    if is_imap and fields["processed_folder"] == fields["imap_folder"]:
        raise _Invalid(f"{_q(fields['processed_folder'])} is the folder that is read", "processed_folder")
    fields["starttls"] = fields["starttls"] and fields["source_kind"] == "imap"
    return Mailbox(**fields, _origin=f"{ctx.label}: {where}")


def _build_outgoing(
    values: dict[str, Any], ctx: _Context, where: str
) -> OutgoingSettings:
    _one_password(values)
    has_password = (
        values["password_env"] is not None or values["password_file"] is not None
    )
    if has_password and values["username"] is None:
        raise _Invalid(
            "missing (needed with password_env or password_file)", "username"
        )
    return OutgoingSettings(**values, _origin=f"{ctx.label}: {where}")


def _build_smtp_server(
    values: dict[str, Any], ctx: _Context, where: str
) -> SmtpServerSettings:
    host, port = values["listen"]
    return SmtpServerSettings(enabled=values["enabled"], host=host, port=port)


def _unique(ctx: _Context, section: str, items: tuple, key: str, noun: str) -> None:
    seen: dict[str, int] = {}
    for number, item in enumerate(items, 1):
        value = getattr(item, key)
        if value in seen:
            where = _item_where(
                section,
                number,
                getattr(item, "name", None) if section == "mailboxes" else None,
            )
            raise ctx.error(
                where, key, f"{_q(value)} is already used by {noun} #{seen[value]}"
            )
        seen[value] = number


def _check_mailboxes(items: tuple, ctx: _Context) -> None:
    if not items:
        raise ctx.error("[[mailboxes]]", None, "at least one mailbox is required")
    _unique(ctx, "mailboxes", items, "name", "mailbox")
    _unique(ctx, "mailboxes", items, "address", "mailbox")


def _check_staff(items: tuple, ctx: _Context) -> None:
    _unique(ctx, "staff", items, "address", "staff member")
    own = {m.address for m in ctx.done["mailboxes"]}
    for number, member in enumerate(items, 1):
        if _untagged(member.address) in own:
            raise ctx.error(
                _item_where("staff", number, None),
                "address",
                f"{_q(member.address)} is a mailbox address",
            )


# --------------------------------------------------------------- the schema

HELPDESK_KEYS = {
    "name": Key(_text, "Helpdesk"),
    "secret_key_file": Key(_secret_key_file, REQUIRED),
    "timezone": Key(_timezone, "UTC"),
    "data_dir": Key(_path, "var"),
    "attachments_dir": Key(_path, lambda ctx, v: str(v["data_dir"] / "attachments")),
    "log_level": Key(_choice("DEBUG", "INFO", "WARNING", "ERROR", fold=True), "INFO"),
}

DATABASE_KEYS = {
    "url": Key(
        _database_url,
        lambda ctx, v: f"sqlite:///{ctx.done['helpdesk'].data_dir / 'helpdesk.db'}",
    ),
}

MAILBOX_KEYS = {
    "name": Key(_name, REQUIRED),
    "address": Key(_address(allow_plus=False), REQUIRED),
    "kind": Key(_choice("tickets", "disputes"), "tickets"),
    "source": Key(_source, lambda ctx, v: f"maildir:mailboxes/{v['name']}"),
    "password_env": Key(_env_name),
    "password_file": Key(_readable_file),
    "processed_folder": Key(_text, "Processed"),
    "starttls": Key(_bool, True),
    "ca_file": Key(_readable_file),
    "poll_interval": Key(_duration, "60s"),
    "timeout": Key(_duration, "60s"),
}

SMTP_SERVER_KEYS = {
    "enabled": Key(_bool, True),
    "listen": Key(_listen, "127.0.0.1:2525"),
}

OUTGOING_KEYS = {
    "transport": Key(_transport, "maildir:mailboxes/outgoing"),
    "username": Key(_text),
    "password_env": Key(_env_name),
    "password_file": Key(_readable_file),
    "ca_file": Key(_readable_file),
    "timeout": Key(_duration, "30s"),
    "max_attempts": Key(_int(1), 8),
    "retry_delay": Key(_duration, "1m"),
    "poll_interval": Key(_duration, "5s"),
}

STAFF_KEYS = {
    "address": Key(_address(allow_plus=True), REQUIRED),
    "name": Key(_text, REQUIRED),
    "role": Key(_choice("agent", "admin"), "agent"),
}

TICKET_KEYS = {
    "first_response": Key(_duration, "4h"),
    "next_response": Key(_duration, "24h"),
    "reminder_at": Key(_int(1, 99), 75),
    "auto_close": Key(_duration, "7d"),
    "tick_interval": Key(_duration, "30s"),
}

DIGEST_KEYS = {
    "schedule": Key(_schedule, "daily 08:00"),
    "timezone": Key(_timezone, lambda ctx, values: ctx.done["helpdesk"].timezone),
    "overdue_limit": Key(_int(1, 1000), 20),
}

DISPUTE_KEYS = {
    "seller_response": Key(_duration, "48h"),
    "seller_reminders": Key(_durations, ["24h", "6h"]),
    "negotiation": Key(_duration, "3d"),
    "admin_after": Key(_duration, "72h"),
    "reasons": Key(_reasons, ["not received", "key does not work", "not as described", "other"]),
}

LIMIT_KEYS = {
    "max_message_size": Key(_size, "25MB"),
    "max_attachment_size": Key(_size, "10MB"),
    "max_attachments_total": Key(_size, "20MB"),
    "ack_rate_limit": Key(_int(0), 5),
    "ack_rate_window": Key(_duration, "1h"),
}

INTAKE_KEYS = {
    "poll_interval": Key(_duration, "5s"),
    "batch_size": Key(_int(1, 10000), 200),
    "parse_workers": Key(_int(0, 64), 2),
}

# Order matters: a section's defaults may use the sections above it (ctx.done).
SECTIONS = {
    "helpdesk": Section(HelpdeskSettings, HELPDESK_KEYS),
    "database": Section(DatabaseSettings, DATABASE_KEYS),
    "mailboxes": Section(
        Mailbox, MAILBOX_KEYS, many=True, build=_build_mailbox, check=_check_mailboxes
    ),
    "smtp_server": Section(
        SmtpServerSettings, SMTP_SERVER_KEYS, build=_build_smtp_server
    ),
    "outgoing": Section(OutgoingSettings, OUTGOING_KEYS, build=_build_outgoing),
    "staff": Section(StaffMember, STAFF_KEYS, many=True, check=_check_staff),
    "tickets": Section(TicketSettings, TICKET_KEYS),
    "limits": Section(LimitSettings, LIMIT_KEYS),
    "intake": Section(IntakeSettings, INTAKE_KEYS),
    "digest": Section(DigestSettings, DIGEST_KEYS),
    "disputes": Section(DisputeSettings, DISPUTE_KEYS),
}


# --------------------------------------------------------------- loading


def load_config(path: str | os.PathLike) -> Config:
    """Read and check ``path``; ConfigError (one line) for every problem."""
    label = os.fspath(path)
    absolute = Path(os.path.abspath(label))
    ctx = _Context(label=label, base_dir=absolute.parent)
    document = _read_toml(ctx, absolute)
    _reject_unknown_sections(ctx, document)
    for name, section in SECTIONS.items():
        ctx.done[name] = _parse_section(ctx, name, section, document.get(name))
    return Config(path=absolute, base_dir=absolute.parent, **ctx.done)


def _read_toml(ctx: _Context, path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{ctx.label}: cannot read: {_oserror(exc)}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{ctx.label}: not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            " ".join(f"{ctx.label}: not valid TOML: {exc}".splitlines())
        ) from None


def _reject_unknown_sections(ctx: _Context, document: dict[str, Any]) -> None:
    for name, value in document.items():
        if name in SECTIONS:
            continue
        if isinstance(value, dict):
            raise ConfigError(f"{ctx.label}: unknown section [{name}]")
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, dict) for v in value)
        ):
            raise ConfigError(f"{ctx.label}: unknown section [[{name}]]")
        raise ConfigError(f"{ctx.label}: unknown key {_q(name)} outside any section")


def _parse_section(ctx: _Context, name: str, section: Section, value: Any) -> Any:
    if not section.many:
        return _parse_table(ctx, f"[{name}]", section, {} if value is None else value)
    if value is None:
        value = []
    if not isinstance(value, list):
        raise ctx.error(
            f"[[{name}]]", None, f"expected an array of tables, got {_show(value)}"
        )
    items = tuple(
        _parse_table(ctx, _item_where(name, number, _label_name(item)), section, item)
        for number, item in enumerate(value, 1)
    )
    if section.check:
        section.check(items, ctx)
    return items


def _item_where(section: str, number: int, name: str | None) -> str:
    return f"[[{section}]] #{number}" + (f" ({name})" if name else "")


def _label_name(item: Any) -> str | None:
    name = item.get("name") if isinstance(item, dict) else None
    return name if isinstance(name, str) and _NAME_RE.fullmatch(name) else None


def _parse_table(ctx: _Context, where: str, section: Section, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ctx.error(where, None, f"expected a table, got {_show(table)}")
    for key in table:
        if key not in section.keys:
            raise ConfigError(f"{ctx.label}: {where} unknown key {_q(key)}")
    values: dict[str, Any] = {}
    for key, spec in section.keys.items():
        values[key] = _parse_key(ctx, where, key, spec, table, values)
    try:
        return (
            section.build(values, ctx, where)
            if section.build
            else section.cls(**values)
        )
    except _Invalid as exc:
        raise ctx.error(where, exc.key, exc.message) from None


def _parse_key(
    ctx: _Context, where: str, key: str, spec: Key, table: dict, values: dict
) -> Any:
    if key in table:
        raw = table[key]
    elif spec.default is REQUIRED:
        raise ctx.error(where, key, "missing (required)")
    elif callable(spec.default):
        raw = spec.default(ctx, values)
    else:
        raw = spec.default
    if raw is None:
        return None
    try:
        return spec.convert(raw, ctx)
    except _Invalid as exc:
        raise ctx.error(where, key, exc.message) from None
