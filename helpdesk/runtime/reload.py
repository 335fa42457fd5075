"""SIGHUP: read ``config.toml`` again and apply what may change while the service runs.

Live, at once: ``[[staff]]``, ``[tickets]``, ``[digest]``, ``[disputes]``,
``[limits]``, ``[helpdesk]`` name, timezone, log_level and log_format,
``[intake]`` poll_interval, batch_size and pipe_wait, ``[outgoing]`` max_attempts,
retry_delay and poll_interval — and the templates, read from disk again. Every key
not named in ``FIXED`` is live: a new key is, unless it is added there.

Fixed until a restart, because something was built from them at start: the
database connection (``[database] url``), the sources and their threads, the
routing of addresses and the key that signs reply addresses (``[[mailboxes]]``,
``[helpdesk] secret_key_file``), the listening socket (``[smtp_server]``), the
folders (``data_dir``, ``attachments_dir``, ``templates_dir``), the relay connection (``[outgoing]``
transport and its credentials, password or OAuth2), the parse workers, the
metrics listener. A changed fixed key is said
in one log line each and keeps its old value; the rest of the file still applies.

A file that does not load (or a template that does not compile) changes nothing:
the running configuration stays, and one log line says why.
"""

from __future__ import annotations

import dataclasses
import logging

from helpdesk.config.loader import MAILBOX_KEYS, load_config
from helpdesk.config.settings import Config
from helpdesk.disputes.rules import Rules
from helpdesk.errors import ConfigError
from helpdesk.pipeline.workers import ParseLimits
from helpdesk.runtime import logs, sdnotify
from helpdesk.runtime.app import App

log = logging.getLogger("helpdesk.reload")

# section -> key as written in config.toml -> the settings' fields it fills
FIXED: dict[str, dict[str, tuple[str, ...]]] = {
    "helpdesk": {"secret_key_file": ("secret_key_file",), "data_dir": ("data_dir",),
                 "attachments_dir": ("attachments_dir",), "templates_dir": ("templates_dir",)},
    "database": {"url": ("url",)},
    "smtp_server": {"enabled": ("enabled",), "listen": ("host", "port")},
    "outgoing": {key: (key,) for key in ("transport", "username", "password_env", "password_file",
                                         "ca_file", "timeout", "auth", "oauth2")},
    "metrics": {"listen": ("host", "port")},
    "intake": {"parse_workers": ("parse_workers",)},
}


def reload(app: App, smtp=None) -> bool:
    """Apply the config file as it is now; False (and one log line) when it cannot be used."""
    sdnotify.reloading()
    try:
        fresh = load_config(app.config.path)
        config, kept = merged(app.config, fresh)
        renderer = _any_renderer(app).reread()
    except ConfigError as exc:
        log.error("%s; keeping the running configuration", exc)
        return _ready(False)
    except Exception as exc:  # noqa: BLE001 - a template that does not compile: nothing applied
        log.error("%s; keeping the running configuration", _problem(exc))
        return _ready(False)
    for line in kept:
        log.warning("%s: %s", app.config.path.name, line)
    apply(app, config, renderer, smtp)
    log.info("configuration reloaded from %s", app.config.path)
    return _ready(True)


def merged(old: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with every fixed key at its ``old`` value, and one line per fixed key that changed."""
    kept: list[str] = []
    sections = {}
    for section, keys in FIXED.items():
        before, after = getattr(old, section), getattr(new, section)
        back = {}
        for key, fields in keys.items():
            if any(getattr(before, f) != getattr(after, f) for f in fields):
                kept.append(_kept(f"[{section}] {key}"))
                back.update({f: getattr(before, f) for f in fields})
        if back:
            sections[section] = dataclasses.replace(after, **back)
    kept += _mailboxes_changed(old.mailboxes, new.mailboxes)
    return dataclasses.replace(new, mailboxes=old.mailboxes, **sections), kept


def _mailboxes_changed(old: tuple, new: tuple) -> list[str]:
    if [m.name for m in old] != [m.name for m in new]:
        return [_kept(f"[[mailboxes]] ({', '.join(m.name for m in old)} -> {', '.join(m.name for m in new)})")]
    return [_kept(f"[[mailboxes]] ({before.name}) {key}")
            for before, after in zip(old, new) for key in MAILBOX_KEYS
            if getattr(before, key) != getattr(after, key)]


def _kept(what: str) -> str:
    return f"{what} changed, but it cannot change while the service runs: the old value stays until a restart"


def apply(app: App, config: Config, renderer, smtp=None) -> None:
    """Hand ``config`` to everything that holds it, and rebuild what was derived from it."""
    for holder in (app, app.desk, app.disputes, app.pipeline):
        holder.config = config
    app.disputes.rules = Rules(config.disputes, config.helpdesk.timezone)
    tickets_inbox = app.pipeline.domains.get("tickets")
    if tickets_inbox is not None:
        tickets_inbox.staff = frozenset(member.address for member in config.staff)
    for notifier in app.desk.notifiers.values():      # the disputes desk shares this dict
        notifier.renderer = renderer
        notifier.sender_name = config.helpdesk.name
    app.desk.attachments.max_size = config.limits.max_attachment_size
    app.desk.attachments.max_total = config.limits.max_attachments_total
    app.pipeline.parser.max_size = config.limits.max_message_size
    app.desk.attachments.max_count = config.limits.max_attachments
    app.pipeline.parser.reconfigure(ParseLimits.of(config.limits))
    if smtp is not None:
        smtp.reconfigure(config)
    logs.configure(config.helpdesk.log_level, config.helpdesk.log_format)


def _problem(exc: Exception) -> str:
    """One line; a template's error names its file and line (Jinja's errors carry them)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    where = getattr(exc, "filename", None) or getattr(exc, "name", None)
    line = getattr(exc, "lineno", None)
    prefix = f"template {where}{f', line {line}' if line else ''}: " if where else ""
    return f"{prefix}{type(exc).__name__}: {text}"


def _any_renderer(app: App):
    return next(iter(app.desk.notifiers.values())).renderer


def _ready(done: bool) -> bool:
    sdnotify.ready("running")
    return done
