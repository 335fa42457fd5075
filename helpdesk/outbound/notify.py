"""Domain events → rendered mail in the outbox, inside the caller's transaction.

Templates live in ``templates/<audience>/<event>.{subject,txt,html}.j2`` and
are rendered with ``StrictUndefined`` (a missing variable is a bug, not an
empty string) and autoescaping for HTML only. Nothing here talks SMTP: the
row written here is delivered later by ``outbox``.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from helpdesk.clock import Clock, naive_utc
from helpdesk.mail import loop
from helpdesk.mail.compose import ATTACHMENTS, clip
from helpdesk.store import outbox as outbox_rows

_BLANKS = re.compile(r"\s+")
LOOP_HEADER = loop.HEADER


@dataclass(frozen=True)
class Notice:
    """One mail to one recipient, as business code asks for it."""

    event: str                        # template name, e.g. "ack"
    audience: str                     # template folder: customer, staff, ...
    recipient: str
    recipient_name: str
    context: dict
    ticket_id: int | None = None
    reply_to: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    auto: str | None = "auto-replied"  # Auto-Submitted value; None for human mail
    token: str = ""                    # "[T-42]": kept in every subject of the thread
    sender_name: str | None = None     # display name instead of the helpdesk's ("Alice — Difmark Support")
    attachments: tuple[tuple[str, str, str], ...] = ()  # (file name, content type, stored file) to pass on


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


class Renderer:
    def __init__(self, templates_dir: Path | Sequence[Path], cache_dir: Path | None = None) -> None:
        """``templates_dir``: one folder, or several searched in order, file by file (a
        deployment's own folder first, the shipped one last, so each file found there
        overrides the shipped one, includes too). ``cache_dir``: where Jinja keeps compiled
        templates, so a new process (every CLI command, every restart) does not compile
        them again."""
        self.search_path = (templates_dir,) if isinstance(templates_dir, Path) else tuple(templates_dir)
        loader = jinja2.FileSystemLoader([str(folder) for folder in self.search_path])
        cache = None
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            cache = jinja2.FileSystemBytecodeCache(str(cache_dir))
        self.env = jinja2.Environment(
            loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
            bytecode_cache=cache,
            auto_reload=False,  # templates are read once per process: no stat per mail
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                                default_for_string=False, default=False))
        self._cache: dict[tuple[str, str], tuple] = {}

    def render(self, audience: str, event: str, context: dict) -> Rendered:
        subject, text, html = self._templates(audience, event)
        try:
            # One variables dict for the three parts: ``Template.render`` would
            # copy the context and merge the globals into it once per part, which
            # was half the cost of rendering a notice.
            shared = {**subject.globals, **context}
            parts = [None if t is None else self.env.concat(t.root_render_func(t.new_context(shared, shared=True)))
                     for t in (subject, text, html)]
        except Exception:  # noqa: BLE001 - rendered again below, which raises it properly
            # Again the documented way, so the error carries Jinja's template traceback.
            parts = [None if t is None else t.render(context) for t in (subject, text, html)]
        return Rendered(_BLANKS.sub(" ", parts[0]).strip(), parts[1], parts[2])

    def preload(self) -> int:
        """Compile every template now (``helpdesk run`` at start), so the first
        mail of each kind does not pay for it in the middle of a tick."""
        events = {name.rsplit("/", 1)[0] + "/" + name.rsplit("/", 1)[1].split(".", 1)[0]
                  for name in self.env.list_templates(extensions=["j2"])
                  if "/" in name and name.endswith(".subject.j2")}
        for name in sorted(events):
            self._templates(*name.split("/", 1))
        return len(events)

    def reread(self) -> Renderer:
        """The same templates read from disk again (SIGHUP), each compiled now, so a template
        that no longer compiles is found before it replaces this renderer's."""
        fresh = copy.copy(self)
        fresh.env = self.env.overlay(cache_size=400)    # its own, empty cache: nothing kept
        fresh._cache = {}
        fresh.preload()
        return fresh

    def _templates(self, audience: str, event: str):
        """The three templates of an event, looked up once (the HTML one is optional)."""
        found = self._cache.get((audience, event))
        if found is None:
            found = self._cache[(audience, event)] = self._load(audience, event)
        return found

    def _load(self, audience: str, event: str):
        base = f"{audience}/{event}"
        try:
            html = self.env.get_template(f"{base}.html.j2")
        except jinja2.TemplateNotFound:
            html = None
        return (self.env.get_template(f"{base}.subject.j2"), self.env.get_template(f"{base}.txt.j2"), html)


@dataclass
class Notifier:
    renderer: Renderer
    clock: Clock
    sender_address: str
    sender_name: str
    loop_id: str                      # this installation's X-Helpdesk-Loop value (``mail.loop``)

    def queue(self, notice: Notice) -> str:
        """Render and insert into the outbox; returns the new Message-ID."""
        return self.queue_many([notice])[0]

    def queue_many(self, notices: list[Notice]) -> list[str]:
        """Render each and insert them all with one statement per table (a new
        ticket's acknowledgement and staff notices go together); returns the
        new Message-IDs, in order."""
        now = naive_utc(self.clock.now())
        drafts = []
        for notice in notices:
            rendered = self.renderer.render(notice.audience, notice.event, echoed(notice.context))
            drafts.append(outbox_rows.Draft(
                notice.event, notice.ticket_id, new_message_id(self.sender_address),
                self.sender_address, notice.recipient, json.dumps(self._headers(notice)),
                _with_token(rendered.subject, notice.token), rendered.text, rendered.html))
        outbox_rows.queue(drafts, now)
        return [draft.message_id for draft in drafts]

    def _headers(self, notice: Notice) -> dict:
        headers = {
            "From": [notice.sender_name or self.sender_name, self.sender_address],
            "To": [clip(notice.recipient_name), notice.recipient],
            LOOP_HEADER: self.loop_id,
        }
        if notice.reply_to:
            headers["Reply-To"] = [notice.sender_name or self.sender_name, notice.reply_to]
        if notice.in_reply_to:
            headers["In-Reply-To"] = f"<{notice.in_reply_to}>"
        refs = tuple(dict.fromkeys(notice.references + ((notice.in_reply_to,) if notice.in_reply_to else ())))
        if refs:
            headers["References"] = " ".join(f"<{r}>" for r in refs[-20:])
        if notice.auto:
            headers["Auto-Submitted"] = notice.auto
            headers["X-Auto-Response-Suppress"] = "All"
        if notice.attachments:
            headers[ATTACHMENTS] = [list(item) for item in notice.attachments]
        return headers


def echoed(context: dict) -> dict:
    """The context with every subject and name clipped (``compose.clip``), at any depth.

    A subject or display name is the sender's own words, as long as they like:
    whatever a notice echoes of them stays short, whichever template (a
    deployment's own too) puts it where.
    """
    return {key: _clipped(key, value) for key, value in context.items()}


def _clipped(key, value):
    if isinstance(value, str):
        return clip(value) if key == "subject" or str(key).endswith("name") else value
    if isinstance(value, dict):
        return echoed(value)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):
        return [echoed(item) if isinstance(item, dict) else item for item in value]
    return value


def new_message_id(address: str) -> str:
    """Unguessable, so knowing a Message-ID is as good as being in the thread."""
    domain = address.rpartition("@")[2] or "helpdesk.invalid"
    return f"{secrets.token_hex(12)}@{domain}"


def _with_token(subject: str, token: str) -> str:
    if not token or token.lower() in subject.lower():
        return subject
    return f"{token} {subject}"
