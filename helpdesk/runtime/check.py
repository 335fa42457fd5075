"""``helpdesk check``: is this installation ready to take mail? One line per check.

Each check is a small function that returns ``Result`` lines and changes
nothing: the database is read, never upgraded; IMAP folders are looked at,
never created; the relay gets EHLO, STARTTLS and a login, never a mail. Only
``--send-test`` acts: it queues one mail and delivers. IMAP mailboxes and the
relay log in exactly as the service does, with a password or OAuth2 tokens.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2
from imapclient import IMAPClient

from helpdesk.clock import Clock, naive_utc
from helpdesk.config.loader import load_config
from helpdesk.config.settings import Config, Mailbox
from helpdesk.errors import ConfigError, DeliveryError, HelpdeskError, StoreError
from helpdesk.intake import imap
from helpdesk.mail.loop import loop_id
from helpdesk.outbound.notify import LOOP_HEADER, Renderer, new_message_id
from helpdesk.runtime import app as app_module
from helpdesk.runtime import samples
from helpdesk.store import health
from helpdesk.store import outbox as outbox_rows
from helpdesk.store.db import redact, write_transaction

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Result:
    level: str          # ok | warn | FAIL: only FAIL makes the command exit 1
    name: str           # what was checked: "config", "templates", "mailbox support", ...
    detail: str

    def line(self) -> str:
        return f"{self.level:<5} {self.name}: {self.detail}"


def run(config_path: str, send_test: str | None = None,
        templates_dir: Path = app_module.TEMPLATES) -> Iterator[Result]:
    """Every check, in the order a mail needs them; the caller prints each line as it comes."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        yield Result(FAIL, "config", str(exc))
        return
    yield Result(OK, "config", f"{config.path} ({len(config.mailboxes)} mailboxes, {len(config.staff)} staff)")
    yield secret_key(config)
    yield from templates(config, templates_dir)
    ready = yield from database(config)
    for mailbox in config.mailboxes:
        if mailbox.source_kind in ("imap", "imaps"):
            yield imap_login(mailbox)
    yield relay(config)
    if send_test is not None:
        yield send_test_mail(config_path, send_test) if ready else Result(
            FAIL, "send-test", "not sent: the database is not ready (see above)")


# --- config and files ----------------------------------------------------------------

def secret_key(config: Config) -> Result:
    path = config.helpdesk.secret_key_file
    if not path.exists():
        return Result(WARN, "secret key", f"{path} is not there yet: it is made (0600) at the first start")
    try:
        key = path.read_text().strip()
    except OSError as exc:
        return Result(FAIL, "secret key", f"cannot read {path}: {exc.strerror or exc}")
    if len(key) < 16:
        return Result(FAIL, "secret key", f"{path} holds a key shorter than 16 characters")
    return Result(OK, "secret key", str(path))


def templates(config: Config, templates_dir: Path) -> Iterator[Result]:
    """Every template file compiles, and renders with its event's sample context under
    StrictUndefined: a misspelt variable fails here, not in a customer's mail."""
    own = config.helpdesk.templates_dir       # searched first, as the service does
    env = Renderer([own, templates_dir] if own else [templates_dir]).env
    wanted = samples.contexts(config)
    names = env.list_templates(extensions=["j2"])
    failed = 0
    for audience, event in sorted(wanted):
        for part in ("subject", "txt"):
            if f"{audience}/{event}.{part}.j2" not in names:
                failed += 1
                yield Result(FAIL, "templates", f"{audience}/{event}.{part}.j2 is missing from {templates_dir}")
    for name in names:
        problem = _render(env, name, wanted)
        if problem is not None:
            failed += problem.level == FAIL
            yield problem
    if not failed:
        yield Result(OK, "templates", f"{len(names)} files in {templates_dir} render with their sample context")


def _render(env: jinja2.Environment, name: str, wanted: dict) -> Result | None:
    audience, _, file = name.rpartition("/")
    event = file.split(".", 1)[0]
    context = wanted.get((audience, event))
    try:
        template = env.get_template(name)     # compiles: a syntax error names its file and line
        if event.startswith("_"):
            return None                       # a partial: rendered through the templates that include it
        if context is None:
            return Result(WARN, "templates", f"{name}: no mail of the helpdesk uses it (unknown event)")
        template.render(context)
    except jinja2.TemplateSyntaxError as exc:
        return Result(FAIL, "templates", f"{exc.name or name} line {exc.lineno}: {exc.message}")
    except Exception as exc:  # noqa: BLE001 - whatever a template raises, it is this file's failure
        return Result(FAIL, "templates", f"{_where(exc, env, name)}: {_said(exc)}")
    return None


def _where(exc: Exception, env: jinja2.Environment, name: str) -> str:
    """The template file and line the error happened in (Jinja puts them in the traceback)."""
    roots = _roots(env.loader)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        if path.suffix == ".j2":
            root = next((r for r in roots if path.is_relative_to(r)), None)
            return f"{path.relative_to(root) if root else path} line {frame.lineno}"
    return name


def _roots(loader) -> list[Path]:
    """The folders templates come from, whether one folder or a choice of them (an override first)."""
    if isinstance(loader, jinja2.ChoiceLoader):
        return [root for inner in loader.loaders for root in _roots(inner)]
    return [Path(p).resolve() for p in getattr(loader, "searchpath", ())]


def _said(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, jinja2.UndefinedError) else f"{type(exc).__name__}: {text}"


# --- the database ----------------------------------------------------------------------

def database(config: Config):
    """Reachable, and its schema the one this code needs (a generator: its value says whether
    mail can be queued, for ``--send-test``)."""
    where = redact(config.database.url)
    try:
        schema = health.attach(config.database.url)
    except (StoreError, ConfigError) as exc:
        yield Result(FAIL, "database", str(exc).removeprefix("database "))
        return False
    finally:
        health.release()
    if schema.version < schema.expected:
        yield Result(FAIL, "database", f"{where}: schema {schema.version}, expected {schema.expected}: "
                                       "run `helpdesk run` once to upgrade it")
        return False
    if schema.version > schema.expected:
        yield Result(FAIL, "database", f"{where}: schema {schema.version} is newer than this helpdesk's "
                                       f"{schema.expected}: upgrade the helpdesk")
        return False
    yield Result(OK, "database", f"{where}: schema {schema.version} (current)")
    return True


# --- IMAP ------------------------------------------------------------------------------

def imap_login(mailbox: Mailbox) -> Result:
    """Log in as the watcher would, and look for the folder read and the processed folder."""
    name = f"mailbox {mailbox.name}"
    try:
        with _imap_session(mailbox) as client:
            missing = [f for f in (mailbox.imap_folder, mailbox.processed_folder) if not client.folder_exists(f)]
    except Exception as exc:  # noqa: BLE001 - every fault is one line, as the watcher logs it
        return Result(FAIL, name, str(imap.describe(exc, mailbox)))
    at = f"{imap.where(mailbox)} as {mailbox.imap_user}"
    if mailbox.imap_folder in missing:
        return Result(FAIL, name, f"{at}: folder {mailbox.imap_folder!r} does not exist; "
                                  "check the folder at the end of source")
    if missing:
        return Result(WARN, name, f"{at}: logged in; processed_folder {mailbox.processed_folder!r} does not "
                                  "exist yet (the first pass creates it)")
    return Result(OK, name, f"{at}: logged in; {mailbox.imap_folder!r} and {mailbox.processed_folder!r} exist")


@contextlib.contextmanager
def _imap_session(mailbox: Mailbox) -> Iterator[IMAPClient]:
    """Logged in as the watcher logs in (password, or OAuth2 tokens), without creating the
    processed folder: a check changes nothing."""
    with imap.logged_in(mailbox, imap.Login(mailbox)) as client:
        yield client


# --- outgoing --------------------------------------------------------------------------

def relay(config: Config) -> Result:
    """The relay answers EHLO, STARTTLS and the login as a delivery would; a Maildir is writable."""
    out = config.outgoing
    if out.transport.startswith("maildir:"):
        return _maildir(Path(out.transport.removeprefix("maildir:")))   # looked at, not made
    try:
        transport = app_module.build_transport(config)    # password or OAuth2, as delivery logs in
        with transport:
            return Result(OK, "outgoing", f"{out.transport}: {transport.probe()}")
    except (ConfigError, ValueError) as exc:
        return Result(FAIL, "outgoing", str(exc))
    except DeliveryError as exc:
        return Result(FAIL, "outgoing", f"{out.transport}: {exc}")


def _maildir(path: Path) -> Result:
    if not path.exists():
        return Result(WARN, "outgoing", f"maildir {path} is not there yet (made at the first delivery)")
    for sub in ("tmp", "new"):
        if not os.access(path / sub, os.W_OK | os.X_OK):
            return Result(FAIL, "outgoing", f"maildir {path}/{sub} is not writable for this user")
    return Result(OK, "outgoing", f"maildir {path} is writable")


# --- one real mail ---------------------------------------------------------------------

def send_test_mail(config_path: str, address: str) -> Result:
    """Queue one mail to ``address`` and deliver what is due; its row says what happened."""
    app = app_module.build(config_path, Clock())
    try:
        message_id = _queue_test(app.config, address, naive_utc(app.clock.now()), loop_id(app.desk.secret))
        app.deliver()
        status, attempts, error = health.mail_status(message_id)
    except HelpdeskError as exc:
        return Result(FAIL, "send-test", str(exc))
    finally:
        app.close()
    if status == "sent":
        return Result(OK, "send-test", f"a test mail to {address} was handed to "
                                       f"{app.config.outgoing.transport} ({attempts} attempt(s))")
    if status == "queued":
        return Result(FAIL, "send-test", f"the test mail to {address} was not delivered ({error}); it stays "
                                         "queued and `helpdesk run` tries again")
    return Result(FAIL, "send-test", f"the test mail to {address} {status}: {error}")


def _queue_test(config: Config, address: str, now: dt.datetime, own_loop_id: str) -> str:
    mailbox = next((m for m in config.mailboxes if m.kind == "tickets"), config.mailboxes[0])
    message_id = new_message_id(mailbox.address)
    headers = {"From": [config.helpdesk.name, mailbox.address], "To": ["", address],
               LOOP_HEADER: own_loop_id, "Auto-Submitted": "auto-generated"}
    text = (f"This mail was sent by `helpdesk check --send-test` on {socket.gethostname()} at "
            f"{now:%Y-%m-%d %H:%M:%S} UTC, to try the way out. It needs no answer.\n")
    with write_transaction():
        outbox_rows.queue([outbox_rows.Draft("test", None, message_id, mailbox.address, address,
                                             json.dumps(headers), f"{config.helpdesk.name}: test mail",
                                             text, None)], now)
    return message_id
