"""``config.toml`` -> :class:`Config`: the helpdesk's sections and keys, and the
checks across them.

Every section is described by a small schema (key -> converter + default); a
new key is one line in its section's ``*_KEYS`` dict (plus the dataclass field),
a new section is one line in ``SECTIONS`` (plus its dataclass and ``Config``
field).  Unknown sections and keys are rejected, and every problem is one
:class:`ConfigError` line naming file, section and key (see
:mod:`helpdesk.config.schema`).

Relative paths are relative to the config file's folder.  Loading creates
nothing on disk.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import shutil
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from helpdesk.config import schema
from helpdesk.config.schema import REQUIRED, Context, Invalid, Key, Section, item_where, quote
from helpdesk.config.settings import (
    Config,
    DatabaseSettings,
    DigestSettings,
    DisputeSettings,
    HelpdeskSettings,
    IntakeSettings,
    LimitSettings,
    Mailbox,
    MetricsSettings,
    OAuth2Settings,
    OutgoingSettings,
    SmtpServerSettings,
    StaffMember,
    StatusSettings,
    TicketSettings,
    TrustSettings,
    untagged,
)
from helpdesk.errors import ConfigError
from helpdesk.units import normalise_reason

__all__ = ["load_config"]


# --------------------------------------------------------------- loading


def load_config(path: str | os.PathLike) -> Config:
    """Read and check ``path``; ConfigError (one line) for every problem."""
    label = os.fspath(path)
    absolute = Path(os.path.abspath(label))
    ctx = Context(label=label, base_dir=absolute.parent)
    document = _read_toml(ctx, absolute)
    sections = schema.parse_sections(ctx, SECTIONS, document)
    return Config(path=absolute, base_dir=absolute.parent, **sections)


def _read_toml(ctx: Context, path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{ctx.label}: cannot read: {schema.os_error(exc)}") from None
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


# --------------------------------------------------------------- the helpdesk's own converters


def _secret_key_file(value: Any, ctx: Context) -> Path:
    # it may not exist yet: the helpdesk creates it on first start
    path = schema.resolved_path(value, ctx)
    if path.exists():
        schema.check_readable(path)
    return path


def _database_url(value: Any, ctx: Context) -> str:
    url = schema.text(value, ctx)
    if url.startswith(("postgresql://", "postgres://")) or url == "sqlite:///:memory:":
        return url
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
        raise Invalid(
            f'{quote(url)} is not a database URL like "sqlite:///var/helpdesk.db" or "postgresql://host/db"'
        )
    path, sep, query = url[len("sqlite:///") :].partition("?")
    return f"sqlite:///{schema.resolve(path, ctx)}{sep}{query}"


def _templates_dir(value: Any, ctx: Context) -> Path:
    path = schema.resolved_path(value, ctx)
    if not path.is_dir():
        raise Invalid(f"{quote(str(path))} {'is not a folder' if path.exists() else 'does not exist'}")
    return path


_IMAP_EXAMPLE = '"imaps://user@host:993/INBOX"'


def _source(value: Any, ctx: Context) -> dict[str, Any]:
    """``source`` plus the fields parsed from it, for ``Mailbox``."""
    raw = schema.text(value, ctx).strip()
    scheme = raw.partition(":")[0]
    fields: dict[str, Any] = {"source": raw, "source_kind": scheme, "maildir": None}
    fields.update(imap_host=None, imap_port=None, imap_user=None, imap_folder=None)
    if raw == "none":
        return fields
    if scheme == "maildir" and raw[len("maildir:") :].strip():
        return {**fields, "maildir": schema.resolve(raw[len("maildir:") :].strip(), ctx)}
    if scheme in ("imap", "imaps") and raw.startswith(f"{scheme}://"):
        host, port, user, path = schema.url_parts(raw, _IMAP_EXAMPLE)
        if not user:
            raise Invalid(
                f"{quote(raw)} has no user, expected a URL like {_IMAP_EXAMPLE}"
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
    raise Invalid(
        f'{quote(raw)} is not a source like "maildir:mailboxes/support", {_IMAP_EXAMPLE} or "none"'
    )


_SMTP_SCHEMES = ("smtp://", "smtps://", "smtp+plain://")


def _transport(value: Any, ctx: Context) -> str:
    raw = schema.text(value, ctx).strip()
    if raw.startswith("maildir:") and raw[len("maildir:") :].strip():
        return f"maildir:{schema.resolve(raw[len('maildir:') :].strip(), ctx)}"
    if raw.startswith(_SMTP_SCHEMES):
        schema.url_parts(raw, '"smtp://host:25"')
        return raw
    raise Invalid(
        f'{quote(raw)} is not a transport like "maildir:mailboxes/outgoing", "smtp://host:25", '
        '"smtps://host:465" or "smtp+plain://host:25"'
    )


# the names helpdesk.oauth2.presets knows (a test keeps the two lists equal)
PROVIDERS = ("microsoft", "google")
_LOOPBACK = re.compile(r"127\.\d+\.\d+\.\d+|localhost|::1")


def _token_url(value: Any, ctx: Context) -> str:
    """https only: the client secret and the refresh token travel in the request body.
    Plain http is allowed to this machine (a local token service, the tests)."""
    url = schema.text(value, ctx).strip()
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is not None and "@" in parts.netloc:     # not echoed: it may hold the secret
        raise Invalid("must not hold a user or password (the client secret goes in client_secret_env "
                      "or client_secret_file)")
    if host and (parts.scheme == "https" or (parts.scheme == "http" and _LOOPBACK.fullmatch(host))):
        return url
    raise Invalid(f'{quote(url)} is not a token URL like "https://login.example.com/oauth2/token" '
                  "(https; plain http only to 127.0.0.1 or localhost)")


def _tenant(value: Any, ctx: Context) -> str:
    """It becomes part of the token URL's path: a directory id or a domain, nothing else."""
    tenant = schema.text(value, ctx).strip()
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", tenant):
        raise Invalid(f'{quote(tenant)} is not a tenant like "contoso.onmicrosoft.com" or a directory id')
    return tenant


def _token_command(value: Any, ctx: Context) -> tuple[str, ...]:
    """Split like a shell line, then run without a shell; a relative program path is
    relative to the config file's folder, like every other path."""
    raw = schema.text(value, ctx)
    try:
        argv = shlex.split(raw)
    except ValueError as exc:
        raise Invalid(f"cannot be split into a program and its arguments ({exc})") from None
    if not argv:
        raise Invalid("must not be empty")
    program = argv[0]
    if "/" not in program:
        if shutil.which(program) is None:
            raise Invalid(f"program {quote(program)} is not found on PATH")
        return tuple(argv)
    path = schema.resolve(program, ctx)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise Invalid(f"program {quote(str(path))} is not an executable file")
    return (str(path), *argv[1:])


_DAYS = ("daily", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _schedule(value: Any, ctx: Context) -> tuple[str, int, int] | None:
    """ "daily 08:00", "monday 08:00" or "off"."""
    text = schema.string(value, ctx).strip().lower()
    if text == "off":
        return None
    match = re.fullmatch(r"(\w+)\s+(\d{1,2}):(\d{2})", text)
    if not match or match.group(1) not in _DAYS or int(match.group(2)) > 23 or int(match.group(3)) > 59:
        raise Invalid(f'{quote(value)} is not a schedule like "daily 08:00", "monday 08:00" or "off"')
    return match.group(1), int(match.group(2)), int(match.group(3))


def _reasons(value: Any, ctx: Context) -> tuple[str, ...]:
    # normalised as a sender's "Reason:" line is, or a reason with "-", "_" or a final "." never matches
    if not isinstance(value, list) or not value:
        raise Invalid(f"expected a non-empty list of reasons, got {schema.show(value)}")
    reasons = tuple(normalise_reason(schema.text(item, ctx)) for item in value)
    if not all(reasons):
        raise Invalid("a reason is empty once punctuation is left out")
    twice = next((r for n, r in enumerate(reasons) if r in reasons[:n]), None)
    if twice is not None:
        raise Invalid(f'lists the reason "{twice}" twice (compared in lower case, with "-" and "_" '
                      "as spaces and without quotes or final punctuation)")
    return reasons


_FILE_TYPE = re.compile(r"([a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*)((?:\s+\.[a-z0-9]+)+)")


def _file_types(value: Any, ctx: Context) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """ "image/jpeg .jpg .jpeg": a MIME type and the file name endings a file of it may have."""
    if not isinstance(value, list):
        raise Invalid(f'expected a list like ["image/png .png", "application/pdf .pdf"], got {schema.show(value)}')
    types = []
    for item in value:
        match = _FILE_TYPE.fullmatch(schema.string(item, ctx).strip().lower())
        if not match:
            raise Invalid(f'{quote(item)} is not a MIME type followed by its file name endings, '
                          'like "image/jpeg .jpg .jpeg"')
        types.append((match.group(1), tuple(match.group(2).split())))
    return tuple(types)


# --------------------------------------------------------------- section builders


def _one_password(values: dict[str, Any]) -> None:
    if values["password_env"] is not None and values["password_file"] is not None:
        raise Invalid("give password_env or password_file, not both", "password_file")


_GRANT_ONLY = ("provider", "tenant", "token_url", "scope", "grant", "client_id", "client_secret_env",
               "client_secret_file", "refresh_token_file")


def _build_oauth2(values: dict[str, Any], ctx: Context, where: str) -> OAuth2Settings:
    """The ``oauth2`` table on its own; who it is for is filled in by the section's builder."""
    if values["token_command"] is not None:
        given = next((key for key in _GRANT_ONLY if values[key] is not None), None)
        if given is not None:
            raise Invalid("not used with token_command (the command alone gets the token)", given)
        return OAuth2Settings(**values)
    if values["client_secret_env"] is not None and values["client_secret_file"] is not None:
        raise Invalid("give client_secret_env or client_secret_file, not both", "client_secret_file")
    if values["client_id"] is None:
        raise Invalid("missing (required, unless token_command gets the token)", "client_id")
    _check_provider(values)
    grant = values["grant"] = values["grant"] or "refresh_token"
    if grant == "refresh_token" and values["refresh_token_file"] is None:
        raise Invalid('missing (grant = "refresh_token" needs the file that holds the refresh token)',
                      "refresh_token_file")
    if grant == "client_credentials":
        if values["refresh_token_file"] is not None:
            raise Invalid('not used with grant = "client_credentials"', "refresh_token_file")
        if values["client_secret_env"] is None and values["client_secret_file"] is None:
            raise Invalid('missing (grant = "client_credentials" needs client_secret_env or '
                          "client_secret_file)", "client_secret_env")
    return OAuth2Settings(**values)


def _check_provider(values: dict[str, Any]) -> None:
    provider = values["provider"]
    if provider is None:
        if values["token_url"] is None:
            raise Invalid(f"missing (give provider = {' or '.join(map(quote, PROVIDERS))}, "
                          "or the token_url)", "token_url")
        if values["tenant"] is not None:
            raise Invalid('only used with provider = "microsoft"', "tenant")
    elif provider == "microsoft" and values["tenant"] is None:
        raise Invalid('missing (provider = "microsoft" needs the directory (tenant) id or domain, '
                      'e.g. "contoso.onmicrosoft.com")', "tenant")
    elif provider == "google":
        if values["tenant"] is not None:
            raise Invalid('only used with provider = "microsoft"', "tenant")
        if values["grant"] == "client_credentials":
            raise Invalid('Google has no client-credentials grant for mail: use "refresh_token", '
                          "or a token_command", "grant")


def _auth(values: dict[str, Any], ctx: Context, where: str, protocol: str, label: str) -> None:
    """``auth`` and ``oauth2`` agree, and a token never comes with a password."""
    settings = values["oauth2"]
    if values["auth"] == "password":
        if settings is not None:
            raise Invalid('"password", but an oauth2 table is given: set auth = "oauth2"', "auth")
        return
    if settings is None:
        raise Invalid('missing (auth = "oauth2" needs an oauth2 table: token_command, or provider or '
                      "token_url with client_id)", "oauth2")
    for key in ("password_env", "password_file"):
        if values[key] is not None:
            raise Invalid('not used with auth = "oauth2" (the token replaces the password)', key)
    values["oauth2"] = replace(settings, protocol=protocol, label=label,
                               _origin=f"{ctx.label}: {where}")


def _build_mailbox(values: dict[str, Any], ctx: Context, where: str) -> Mailbox:
    _one_password(values)
    fields = {**values, **values["source"]}
    is_imap = fields["source_kind"] in ("imap", "imaps")
    if fields["auth"] == "oauth2" and not is_imap:
        raise Invalid(f'"oauth2" is for IMAP sources (this one is {quote(fields["source"])})', "auth")
    _auth(fields, ctx, where, "imap", f"mailbox {fields['name']}")
    if is_imap and fields["auth"] == "password" and fields["password_env"] is None \
            and fields["password_file"] is None:
        raise Invalid(
            "missing (an IMAP source needs password_env or password_file)",
            "password_env",
        )
    if is_imap and fields["processed_folder"] == fields["imap_folder"]:
        raise Invalid(f"{quote(fields['processed_folder'])} is the folder that is read", "processed_folder")
    fields["starttls"] = fields["starttls"] and fields["source_kind"] == "imap"
    return Mailbox(**fields, _origin=f"{ctx.label}: {where}")


def _build_outgoing(
    values: dict[str, Any], ctx: Context, where: str
) -> OutgoingSettings:
    _one_password(values)
    has_password = (
        values["password_env"] is not None or values["password_file"] is not None
    )
    if has_password and values["username"] is None:
        raise Invalid(
            "missing (needed with password_env or password_file)", "username"
        )
    if values["auth"] == "oauth2":
        if not values["transport"].startswith(_SMTP_SCHEMES):
            raise Invalid('"oauth2" is for an SMTP relay (the transport is a Maildir)', "auth")
        if values["username"] is None:
            raise Invalid('missing (auth = "oauth2" logs in as this account)', "username")
    _auth(values, ctx, where, "smtp", "outgoing relay")
    _retry_schedule(values)
    return OutgoingSettings(**values, _origin=f"{ctx.label}: {where}")


def _retry_schedule(values: dict[str, Any]) -> None:
    """``max_attempts`` (the old count of attempts) still works, but not with ``give_up_after``."""
    if values["max_attempts"] is not None and values["give_up_after"] is not None:
        raise Invalid("give max_attempts (a count of attempts) or give_up_after (a time), not both",
                      "max_attempts")
    if values["max_attempts"] is None and values["give_up_after"] is None:
        values["give_up_after"] = dt.timedelta(days=5)
    if values["retry_max_delay"] is None:   # 1h, or a longer retry_delay
        values["retry_max_delay"] = max(dt.timedelta(hours=1), values["retry_delay"])
    elif values["retry_max_delay"] < values["retry_delay"]:
        raise Invalid("must not be shorter than retry_delay", "retry_max_delay")


def _duration_or_off(value: Any, ctx: Context) -> dt.timedelta:
    """A duration, or "off": a zero duration."""
    if value == "off":
        return dt.timedelta(0)
    try:
        return schema.duration(value, ctx)
    except Invalid as exc:
        raise Invalid(f'{exc.message}, or "off"') from None


_MIN_PARSE_MEMORY = 64 << 20


def _parse_memory(value: Any, ctx: Context) -> int:
    """A worker with less than this cannot even load the parser: every mail would fail."""
    size = schema.size(value, ctx)
    if size < _MIN_PARSE_MEMORY:
        raise Invalid(f"{schema.show(value)} is too small: a parse worker needs at least 64MB")
    return size


def _build_smtp_server(
    values: dict[str, Any], ctx: Context, where: str
) -> SmtpServerSettings:
    host, port = values["listen"]
    return SmtpServerSettings(enabled=values["enabled"], host=host, port=port,
                              max_line_length=values["max_line_length"],
                              max_connections_per_client=values["max_connections_per_client"],
                              idle_timeout=values["idle_timeout"])


# --------------------------------------------------------------- checks across items


def _unique(ctx: Context, section: str, items: tuple, key: str, noun: str) -> None:
    seen: dict[str, int] = {}
    for number, item in enumerate(items, 1):
        value = getattr(item, key)
        if value in seen:
            where = item_where(
                section,
                number,
                getattr(item, "name", None) if section == "mailboxes" else None,
            )
            raise ctx.error(
                where, key, f"{quote(value)} is already used by {noun} #{seen[value]}"
            )
        seen[value] = number


def _check_mailboxes(items: tuple, ctx: Context) -> None:
    if not items:
        raise ctx.error("[[mailboxes]]", None, "at least one mailbox is required")
    _unique(ctx, "mailboxes", items, "name", "mailbox")
    _unique(ctx, "mailboxes", items, "address", "mailbox")


def _check_staff(items: tuple, ctx: Context) -> None:
    _unique(ctx, "staff", items, "address", "staff member")
    own = {m.address for m in ctx.done["mailboxes"]}
    for number, member in enumerate(items, 1):
        if untagged(member.address) in own:
            raise ctx.error(
                item_where("staff", number, None),
                "address",
                f"{quote(member.address)} is a mailbox address",
            )


# --------------------------------------------------------------- the sections

HELPDESK_KEYS = {
    "name": Key(schema.text, "Helpdesk"),
    "secret_key_file": Key(_secret_key_file, REQUIRED),
    "timezone": Key(schema.timezone, "UTC"),
    "data_dir": Key(schema.resolved_path, "var"),
    "attachments_dir": Key(schema.resolved_path, lambda ctx, v: str(v["data_dir"] / "attachments")),
    "log_level": Key(schema.choice("DEBUG", "INFO", "WARNING", "ERROR", fold=True), "INFO"),
    "log_format": Key(schema.choice("text", "json"), "text"),
    "templates_dir": Key(_templates_dir),
}

DATABASE_KEYS = {
    "url": Key(
        _database_url,
        lambda ctx, v: f"sqlite:///{ctx.done['helpdesk'].data_dir / 'helpdesk.db'}",
    ),
}

OAUTH2_KEYS = {
    "provider": Key(schema.choice(*PROVIDERS)),
    "tenant": Key(_tenant),
    "grant": Key(schema.choice("refresh_token", "client_credentials")),
    "token_url": Key(_token_url),
    "scope": Key(schema.text),
    "client_id": Key(schema.text),
    "client_secret_env": Key(schema.env_name),
    "client_secret_file": Key(schema.readable_file),
    "refresh_token_file": Key(schema.readable_file),
    "token_command": Key(_token_command),
    "timeout": Key(schema.duration, "30s"),
}
_OAUTH2 = schema.subtable("oauth2", Section(OAuth2Settings, OAUTH2_KEYS, build=_build_oauth2))

MAILBOX_KEYS = {
    "name": Key(schema.short_name, REQUIRED),
    "address": Key(schema.address(allow_plus=False), REQUIRED),
    "kind": Key(schema.choice("tickets", "disputes"), "tickets"),
    "source": Key(_source, lambda ctx, v: f"maildir:mailboxes/{v['name']}"),
    "password_env": Key(schema.env_name),
    "password_file": Key(schema.readable_file),
    "processed_folder": Key(schema.text, "Processed"),
    "starttls": Key(schema.boolean, True),
    "ca_file": Key(schema.readable_file),
    "poll_interval": Key(schema.duration, "60s"),
    "timeout": Key(schema.duration, "60s"),
    "auth": Key(schema.choice("password", "oauth2"), "password"),
    "oauth2": Key(_OAUTH2),
}


def _line_length(value: Any, ctx: schema.Context) -> int:
    """RFC 5321 lets a line hold 1,000 bytes with its CRLF; real mail has longer ones."""
    length = schema.size(value, ctx)
    if length < 1000:
        raise schema.Invalid(f"must be at least 1000 bytes (RFC 5321's line), got {length}")
    return length


SMTP_SERVER_KEYS = {
    "enabled": Key(schema.boolean, True),
    "listen": Key(schema.host_port, "127.0.0.1:2525"),
    "max_line_length": Key(_line_length, "64KB"),
    "max_connections_per_client": Key(schema.int_range(1), 20),
    "idle_timeout": Key(schema.duration, "5m"),
}

OUTGOING_KEYS = {
    "transport": Key(_transport, "maildir:mailboxes/outgoing"),
    "username": Key(schema.text),
    "password_env": Key(schema.env_name),
    "password_file": Key(schema.readable_file),
    "ca_file": Key(schema.readable_file),
    "timeout": Key(schema.duration, "30s"),
    "max_attempts": Key(schema.int_range(1)),    # no default: see _retry_schedule
    "retry_delay": Key(schema.duration, "1m"),
    "poll_interval": Key(schema.duration, "5s"),
    "auth": Key(schema.choice("password", "oauth2"), "password"),
    "oauth2": Key(_OAUTH2),
    "retry_max_delay": Key(schema.duration),       # default 1h: see _retry_schedule
    "give_up_after": Key(schema.duration),        # default 5d unless max_attempts is set
    "destination_down": Key(schema.duration, "1m"),
}

STAFF_KEYS = {
    "address": Key(schema.address(allow_plus=True), REQUIRED),
    "name": Key(schema.text, REQUIRED),
    "role": Key(schema.choice("agent", "admin"), "agent"),
}

TICKET_KEYS = {
    "first_response": Key(schema.duration, "4h"),
    "next_response": Key(schema.duration, "24h"),
    "reminder_at": Key(schema.int_range(1, 99), 75),
    "auto_close": Key(schema.duration, "7d"),
    "tick_interval": Key(schema.duration, "30s"),
}

DIGEST_KEYS = {
    "schedule": Key(_schedule, "daily 08:00"),
    "timezone": Key(schema.timezone, lambda ctx, values: ctx.done["helpdesk"].timezone),
    "overdue_limit": Key(schema.int_range(1, 1000), 20),
}

DISPUTE_KEYS = {
    "seller_response": Key(schema.duration, "48h"),
    "seller_reminders": Key(schema.durations, ["24h", "6h"]),
    "negotiation": Key(schema.duration, "3d"),
    "admin_after": Key(schema.duration, "72h"),
    "reasons": Key(_reasons, ["not received", "key does not work", "not as described", "other"]),
    "relay_file_types": Key(_file_types, ["image/png .png", "image/jpeg .jpg .jpeg", "image/gif .gif",
                                          "image/webp .webp", "application/pdf .pdf", "text/plain .txt"]),
}

LIMIT_KEYS = {
    "max_message_size": Key(schema.size, "25MB"),
    "max_attachment_size": Key(schema.size, "10MB"),
    "max_attachments_total": Key(schema.size, "20MB"),
    "ack_rate_limit": Key(schema.int_range(0), 5),
    "ack_rate_window": Key(schema.duration, "1h"),
    "bounce_suppression": Key(_duration_or_off, "7d"),
    "max_parts": Key(schema.int_range(10, 1_000_000), 1000),
    "max_attachments": Key(schema.int_range(1, 100_000), 100),
    "parse_timeout": Key(schema.duration, "30s"),
    "parse_memory": Key(_parse_memory, "1GB"),
}

INTAKE_KEYS = {
    "poll_interval": Key(schema.duration, "5s"),
    "batch_size": Key(schema.int_range(1, 10000), 200),
    "parse_workers": Key(schema.int_range(0, 64), 2),
    "pipe_wait": Key(schema.duration, "5s"),
    "worker_timeout": Key(schema.duration, "30s"),
}

STATUS_KEYS = {
    "outbox_age_warning": Key(schema.duration, "1h"),
    "outbox_age_critical": Key(schema.duration, "6h"),
    "failed_warning": Key(schema.int_range(0), 1),
    "failed_critical": Key(schema.int_range(0), 0),
    "quarantine_warning": Key(schema.int_range(0), 1),
    "quarantine_critical": Key(schema.int_range(0), 0),
    "imap_warning": Key(schema.duration, "15m"),
    "imap_critical": Key(schema.duration, "1h"),
    "tick_warning": Key(schema.duration, "5m"),
    "tick_critical": Key(schema.duration, "30m"),
    "overdue_warning": Key(schema.int_range(0), 1),
    "overdue_critical": Key(schema.int_range(0), 0),
}

def _addresses(value: Any, ctx: Context) -> tuple[str, ...]:
    """A list of bare addresses, lower case."""
    if not isinstance(value, list):
        raise Invalid(f'expected a list of addresses like ["form@shop.example"], got {schema.show(value)}')
    one = schema.address(allow_plus=True)
    return tuple(dict.fromkeys(one(item, ctx) for item in value))


def _authserv_ids(value: Any, ctx: Context) -> tuple[str, ...]:
    """The authserv-ids of the MTAs in front of us (RFC 8601: compared without case)."""
    if not isinstance(value, list):
        raise Invalid(f"expected a list of authserv-ids, got {schema.show(value)}")
    ids = tuple(schema.text(item, ctx).strip().lower() for item in value)
    bad = next((i for i in ids if not i or any(c.isspace() or c in ";()\"" for c in i)), None)
    if bad is not None:
        raise Invalid(f"{schema.quote(bad)} is not an authserv-id (a host name such as \"mx.shop.example\")")
    return ids


TRUST_KEYS = {
    "form_senders": Key(_addresses, []),
    "authserv_ids": Key(_authserv_ids, []),
    "confirm_within": Key(schema.duration, "3d"),
    "confirm_rate_limit": Key(schema.int_range(0, 1000), 5),
}

METRICS_KEYS = {
    "listen": Key(schema.host_port),
}


def _build_status(values: dict[str, Any], ctx: Context, where: str) -> StatusSettings:
    for figure in ("outbox_age", "failed", "quarantine", "imap", "tick", "overdue"):
        warning, critical = values[f"{figure}_warning"], values[f"{figure}_critical"]
        if warning and critical and critical < warning:
            raise Invalid(f"is below {figure}_warning: a figure is critical only after it warned",
                          f"{figure}_critical")
    return StatusSettings(**values)


def _build_metrics(values: dict[str, Any], ctx: Context, where: str) -> MetricsSettings:
    host, port = values["listen"] or (None, None)
    return MetricsSettings(host=host, port=port)


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
    "status": Section(StatusSettings, STATUS_KEYS, build=_build_status),
    "metrics": Section(MetricsSettings, METRICS_KEYS, build=_build_metrics),
    "trust": Section(TrustSettings, TRUST_KEYS),
}
