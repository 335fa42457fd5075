"""Checking raw TOML values against a table of keys, with one-line errors.

A converter sees only the value it is given: it complains by raising
:class:`Invalid`, and the engine, which knows where that value came from, turns
the complaint into a single :class:`ConfigError` line naming the file (as given
by the caller), the section and the key::

    config.toml: [limits] ack_rate_limit: expected an integer, got "five"

So every message has the same shape, no converter repeats the location, and a
converter can be reused by any key.  Nothing here knows the helpdesk's own
sections; :mod:`helpdesk.config.loader` describes those with these parts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from helpdesk.errors import ConfigError
from helpdesk.units import parse_duration, parse_size

# --------------------------------------------------------------- how values are shown


def quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def show(value: Any) -> str:
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)


def os_error(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc)


# --------------------------------------------------------------- keys and sections

REQUIRED = object()


class Invalid(Exception):
    """A converter's complaint; the engine adds file, section and key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


@dataclass
class Context:
    label: str
    base_dir: Path
    done: dict[str, Any] = field(default_factory=dict)

    def error(self, where: str, key: str | None, message: str) -> ConfigError:
        line = (
            f"{self.label}: {where} {key}: {message}"
            if key
            else f"{self.label}: {where}: {message}"
        )
        return ConfigError(" ".join(line.splitlines()))


Converter = Callable[[Any, Context], Any]


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
    build: Callable[[dict[str, Any], Context, str], Any] | None = None
    check: Callable[[tuple, Context], None] | None = None


# --------------------------------------------------------------- the engine


def parse_sections(ctx: Context, sections: dict[str, Section], document: dict[str, Any]) -> dict[str, Any]:
    """Every section of ``document``, in the order of ``sections``, into ``ctx.done``:
    a section's defaults may use the sections parsed before it."""
    _reject_unknown_sections(ctx, sections, document)
    for name, section in sections.items():
        ctx.done[name] = _parse_section(ctx, name, section, document.get(name))
    return ctx.done


def _reject_unknown_sections(ctx: Context, sections: dict[str, Section], document: dict[str, Any]) -> None:
    for name, value in document.items():
        if name in sections:
            continue
        if isinstance(value, dict):
            raise ConfigError(f"{ctx.label}: unknown section [{name}]")
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, dict) for v in value)
        ):
            raise ConfigError(f"{ctx.label}: unknown section [[{name}]]")
        raise ConfigError(f"{ctx.label}: unknown key {quote(name)} outside any section")


def _parse_section(ctx: Context, name: str, section: Section, value: Any) -> Any:
    if not section.many:
        return _parse_table(ctx, f"[{name}]", section, {} if value is None else value)
    if value is None:
        value = []
    if not isinstance(value, list):
        raise ctx.error(
            f"[[{name}]]", None, f"expected an array of tables, got {show(value)}"
        )
    items = tuple(
        _parse_table(ctx, item_where(name, number, _label_name(item)), section, item)
        for number, item in enumerate(value, 1)
    )
    if section.check:
        section.check(items, ctx)
    return items


def item_where(section: str, number: int, name: str | None) -> str:
    """``[[mailboxes]] #2 (sales)``: where an item of an array of tables is."""
    return f"[[{section}]] #{number}" + (f" ({name})" if name else "")


def _label_name(item: Any) -> str | None:
    name = item.get("name") if isinstance(item, dict) else None
    return name if isinstance(name, str) and _NAME_RE.fullmatch(name) else None


def _parse_table(ctx: Context, where: str, section: Section, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ctx.error(where, None, f"expected a table, got {show(table)}")
    for key in table:
        if key not in section.keys:
            raise ConfigError(f"{ctx.label}: {where} unknown key {quote(key)}")
    values: dict[str, Any] = {}
    for key, spec in section.keys.items():
        values[key] = _parse_key(ctx, where, key, spec, table, values)
    try:
        return (
            section.build(values, ctx, where)
            if section.build
            else section.cls(**values)
        )
    except Invalid as exc:
        raise ctx.error(where, exc.key, exc.message) from None


def _parse_key(
    ctx: Context, where: str, key: str, spec: Key, table: dict, values: dict
) -> Any:
    try:
        return _value(ctx, key, spec, table, values)
    except Invalid as exc:
        raise ctx.error(where, exc.key or key, exc.message) from None


def _value(ctx: Context, key: str, spec: Key, table: dict, values: dict) -> Any:
    if key in table:
        raw = table[key]
    elif spec.default is REQUIRED:
        raise Invalid("missing (required)")
    elif callable(spec.default):
        raw = spec.default(ctx, values)
    else:
        raw = spec.default
    if raw is None:
        return None
    return spec.convert(raw, ctx)


def subtable(name: str, section: Section) -> Converter:
    """A table inside a section (``[outgoing.oauth2]``), checked like a section.

    Its keys are named ``oauth2.client_id`` in errors, so the one-line message
    still says exactly which line of the file to fix.
    """

    def convert(value: Any, ctx: Context) -> Any:
        if not isinstance(value, dict):
            raise Invalid(f"expected a table, got {show(value)}")
        unknown = next((key for key in value if key not in section.keys), None)
        if unknown is not None:
            raise Invalid(f"unknown key {quote(unknown)}")
        values: dict[str, Any] = {}
        key = None
        try:
            for key, spec in section.keys.items():
                values[key] = _value(ctx, key, spec, value, values)
            key = None
            return section.build(values, ctx, name) if section.build else section.cls(**values)
        except Invalid as exc:
            inner = exc.key or key
            raise Invalid(exc.message, f"{name}.{inner}" if inner else name) from None

    return convert


# --------------------------------------------------------------- converters


def typed(kind: type, noun: str) -> Converter:
    def convert(value: Any, ctx: Context) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise Invalid(f"expected {noun}, got {show(value)}")
        return value

    return convert


string = typed(str, "a string")
integer = typed(int, "an integer")
boolean = typed(bool, "true or false")


def text(value: Any, ctx: Context) -> str:
    """A string that is not empty or blank."""
    if not string(value, ctx).strip():
        raise Invalid("must not be empty")
    return value


def int_range(low: int, high: int | None = None) -> Converter:
    def convert(value: Any, ctx: Context) -> int:
        value = integer(value, ctx)
        if value < low or (high is not None and value > high):
            limits = f"at least {low}" if high is None else f"between {low} and {high}"
            raise Invalid(f"must be {limits}, got {value}")
        return value

    return convert


def choice(*options: str, fold: bool = False) -> Converter:
    def convert(value: Any, ctx: Context) -> str:
        raw = string(value, ctx)
        found = raw.upper() if fold else raw
        if found not in options:
            raise Invalid(f"{quote(value)} is not one of {', '.join(map(quote, options))}")
        return found

    return convert


def duration(value: Any, ctx: Context) -> dt.timedelta:
    try:
        result = parse_duration(value)
    except ValueError:
        raise Invalid(
            f'{show(value)} is not a duration like "30m", "4h", "48h" or "3d"'
        ) from None
    if not result:
        raise Invalid(f"{show(value)} must be longer than zero")
    return result


def durations(value: Any, ctx: Context) -> tuple[dt.timedelta, ...]:
    if not isinstance(value, list):
        raise Invalid(f'expected a list of durations like ["24h", "6h"], got {show(value)}')
    return tuple(duration(item, ctx) for item in value)


def size(value: Any, ctx: Context) -> int:
    try:
        result = parse_size(value)
    except (ValueError, TypeError):
        raise Invalid(
            f'{show(value)} is not a size like "512KB", "25MB" or "1GB"'
        ) from None
    if not result:
        raise Invalid(f"{show(value)} must be larger than zero")
    return result


def timezone(value: Any, ctx: Context) -> str:
    try:
        zoneinfo.ZoneInfo(text(value, ctx))
    except (KeyError, ValueError, OSError):
        raise Invalid(
            f'{quote(value)} is not a known time zone like "UTC" or "Europe/Berlin"'
        ) from None
    return value


def env_name(value: Any, ctx: Context) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", string(value, ctx)):
        raise Invalid(f"{quote(value)} is not an environment variable name")
    return value


_NAME_RE = re.compile(r"[a-z0-9_-]+")
_LOCAL_RE = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_DOMAIN_RE = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
_ADDRESS_RE = re.compile(f"{_LOCAL_RE}@{_DOMAIN_RE}")


def short_name(value: Any, ctx: Context) -> str:
    """Safe in a file path and a log line; an array item's ``name`` like this labels it in errors."""
    if not _NAME_RE.fullmatch(string(value, ctx)):
        raise Invalid(
            f'{quote(value)} must be made of lower-case letters, digits, "_" and "-"'
        )
    return value


def address(allow_plus: bool) -> Converter:
    def convert(value: Any, ctx: Context) -> str:
        if not _ADDRESS_RE.fullmatch(string(value, ctx).strip()):
            raise Invalid(
                f'{quote(value)} is not a bare address like "support@example.com"'
            )
        if not allow_plus and "+" in value.partition("@")[0]:
            raise Invalid(
                f'{quote(value)} must not contain "+" (tagged addresses match anyway)'
            )
        return value.strip().lower()

    return convert


def host_port(value: Any, ctx: Context) -> tuple[str, int]:
    host, _, port = string(value, ctx).strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""
    if not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise Invalid(
            f'{quote(value)} is not a host:port like "127.0.0.1:2525" or "[::1]:2525"'
        )
    return host, int(port)


def url_parts(url: str, what: str) -> tuple[str, int | None, str | None, str]:
    """host, port, user (percent-decoded), path of a ``scheme://`` URL;
    ``what`` is an example URL for the complaint."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise Invalid(f"{quote(url)} has a bad port number") from None
    if not parts.hostname:
        raise Invalid(f"{quote(url)} has no host, expected a URL like {what}")
    if parts.password is not None:
        raise Invalid(
            f"{quote(url)} contains a password: use password_env or password_file"
        )
    user = unquote(parts.username) if parts.username else None
    return parts.hostname, port, user, unquote(parts.path)


# --------------------------------------------------------------- paths


def resolve(raw: str, ctx: Context) -> Path:
    """``raw`` relative to the config file's folder; ``~`` expanded."""
    path = Path(raw).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else ctx.base_dir / path))


def resolved_path(value: Any, ctx: Context) -> Path:
    return resolve(text(value, ctx), ctx)


def check_readable(path: Path) -> None:
    if path.exists() and not path.is_file():
        raise Invalid(f"{quote(str(path))} is not a regular file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise Invalid(f"cannot read {quote(str(path))}: {os_error(exc)}") from None


def readable_file(value: Any, ctx: Context) -> Path:
    path = resolved_path(value, ctx)
    check_readable(path)
    return path
