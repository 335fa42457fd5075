"""``helpdesk ingest -``: pipe mode, one mail from an MTA on stdin (as RT's rt-mailgate).

The exit status is the only answer an MTA hears, so it says one thing: is the
raw mail durably stored?

- 0: it is (committed with the database's full durability), or it was already;
  a mail that cannot be parsed is stored too and quarantined by the pipeline.
- 75 EX_TEMPFAIL: it is not, for a reason that can heal: the database locked
  past ``[intake] pipe_wait`` or unreachable, a full disk, a config that does
  not load, a ``--mailbox`` the config does not name, anything unexpected. The
  MTA keeps the mail and retries (Postfix for ``maximal_queue_lifetime``).
- 66 EX_NOINPUT: stdin is empty; 65 EX_DATAERR: the mail is larger than
  ``[limits] max_message_size``. No retry mends these, so the MTA bounces them.

Not EX_CONFIG (78) for a broken config: Postfix maps 78 to 5.3.5 and bounces, as
Exim does with every status but 75 and 73, so an operator's typo would send
customers' mail back to them; 75 keeps it queued until the config is fixed.

Once stored, the mail is processed here (only this one, never the backlog: a
burst of concurrent deliveries must not each work through the same pending
mail), so it is a ticket by the time the MTA hears 0. Processing cannot change
the status: if it fails, the mail stays pending and ``helpdesk run`` processes
it. What it causes is delivered by ``helpdesk run`` too, not here: delivery
talks to the relay, often the very MTA waiting on this command, and retries
belong to the service.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from helpdesk.clock import Clock
from helpdesk.config.loader import load_config
from helpdesk.errors import ConfigError, HelpdeskError, UnknownMailbox
from helpdesk.intake import files, spool
from helpdesk.pipeline.batches import Tally
from helpdesk.runtime import app as app_module
from helpdesk.runtime import logs
from helpdesk.store.db import connect

EX_OK = 0
EX_DATAERR = 65
EX_NOINPUT = 66
EX_TEMPFAIL = 75

log = logging.getLogger("helpdesk.pipe")


@dataclass
class PipeResult:
    status: int                         # the exit status the MTA acts on
    problem: str | None = None          # one line for stderr when the status is not 0
    raw_id: int | None = None           # the stored message; None when not stored or a duplicate
    duplicate: bool = False
    tally: Tally = field(default_factory=Tally)


def take(config_path: str, mailbox_name: str | None, stdin: BinaryIO | None) -> PipeResult:
    """Store the mail on ``stdin``, then process it; the status depends on the storing only."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return PipeResult(EX_TEMPFAIL, str(exc))
    try:
        named = None if mailbox_name is None else config.mailbox(mailbox_name)
    except UnknownMailbox:
        known = ", ".join(m.name for m in config.mailboxes)
        return PipeResult(EX_TEMPFAIL, f"no mailbox named {mailbox_name!r} (configured: {known})")
    logs.configure(config.helpdesk.log_level, config.helpdesk.log_format)
    limit = config.limits.max_message_size
    try:
        raw, size = _read(stdin, limit)
    except OSError as exc:
        return PipeResult(EX_TEMPFAIL, f"cannot read standard input: {exc.strerror or exc}")
    if size > limit:
        return PipeResult(EX_DATAERR, f"the mail ({size} bytes) is larger than [limits] "
                                      f"max_message_size ({limit} bytes); not stored")
    if not raw.strip():
        return PipeResult(EX_NOINPUT, "no mail on standard input (it is empty); nothing stored")
    wait = config.intake.pipe_wait.total_seconds()
    try:
        _database_folder(config)
        connect(config.database.url, wait)
        mailbox = files.mailbox_for(raw, config, named).name
        [stored] = spool.store([spool.Incoming(raw, mailbox, "pipe")], Clock())
    except Exception as exc:  # whatever it is, the mail is not stored: the MTA keeps it
        log.debug("pipe: not stored", exc_info=True)
        return PipeResult(EX_TEMPFAIL, f"the mail was not stored, try again later: {_line(exc)}")
    result = PipeResult(EX_OK, raw_id=stored.raw_id, duplicate=stored.duplicate)
    if not stored.duplicate:
        _process(config_path, stored.raw_id, wait, result.tally)
    return result


def _database_folder(config) -> None:
    """Made as ``helpdesk run`` makes it, so the first mail of a new install is stored, not deferred."""
    url = config.database.url
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def _read(stdin: BinaryIO | None, limit: int) -> tuple[bytes, int]:
    """The mail and its size; above ``limit`` the rest is read and dropped, so the MTA
    sees our exit status rather than a broken pipe, and memory stays at ``limit``."""
    if stdin is None:
        return b"", 0
    raw = stdin.read(limit + 1)
    size = len(raw)
    if size <= limit:
        return raw, size
    while chunk := stdin.read(1 << 20):
        size += len(chunk)
    return b"", size


def _process(config_path: str, raw_id: int, wait: float, tally: Tally) -> None:
    """The mail just stored, through the pipeline; a failure is logged and leaves it pending."""
    try:
        app = app_module.build(config_path, wait=wait)
    except Exception as exc:  # noqa: BLE001 - the mail is stored: the service processes it later
        log.warning("message %s stored; not processed now (helpdesk run will): %s", raw_id, _line(exc))
        return
    try:
        outcome = app.pipeline.process_one(raw_id)
        if outcome is not None:
            tally.add(outcome)
    except Exception as exc:  # noqa: BLE001 - same: stored, so the MTA's answer stays 0
        log.warning("message %s stored; not processed now (helpdesk run will): %s", raw_id, _line(exc))
    finally:
        app.close()


def _line(exc: BaseException) -> str:
    """Our own errors say it all in their first line; anything else is named by its type too."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, HelpdeskError) else f"{type(exc).__name__}: {text}".rstrip(": ")
