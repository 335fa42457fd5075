"""``helpdesk status``: the service's health in figures, judged the way Nagios wants it.

The figures (outbox by status and the age of its oldest queued mail,
quarantine, each IMAP mailbox's last pass and fault, the last deadline tick,
overdue timers, the schema version) are read through ``store.health``, one
query each, in one read snapshot so they agree with each other. ``judge``
turns them into a level with ``[status]``'s thresholds: 0 ok, 1 warning,
2 critical; the same figures feed the Prometheus metrics (``runtime.metrics``).
Reading never writes: status may run as a monitoring user, every few seconds,
next to the service.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from helpdesk.clock import Clock, naive_utc
from helpdesk.config.loader import load_config
from helpdesk.config.settings import Config, StatusSettings
from helpdesk.errors import ConfigError, StoreError
from helpdesk.reports.digest import short_duration
from helpdesk.store import digest as digest_store
from helpdesk.store import health, imap_cursor
from helpdesk.store.db import read_snapshot
from helpdesk.units import format_duration

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
LEVELS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


@dataclass(frozen=True)
class MailboxHealth:
    name: str
    source: str
    passed_at: dt.datetime | None       # naive UTC
    failed_at: dt.datetime | None
    fault: str | None


@dataclass(frozen=True)
class Figures:
    now: dt.datetime                     # naive UTC
    schema: health.Schema
    outbox: dict[str, int] = field(default_factory=dict)
    oldest_queued: dt.datetime | None = None
    quarantine: int = 0
    mailboxes: tuple[MailboxHealth, ...] = ()
    last_tick: dt.datetime | None = None
    overdue_timers: int = 0

    def age(self, moment: dt.datetime | None) -> dt.timedelta | None:
        return None if moment is None else max(self.now - moment, dt.timedelta(0))


@dataclass(frozen=True)
class Problem:
    level: int
    text: str


@dataclass(frozen=True)
class Report:
    figures: Figures | None              # None: the database could not be read
    problems: tuple[Problem, ...]

    @property
    def level(self) -> int:
        return max((p.level for p in self.problems), default=OK)


def command(config_path: str, now: dt.datetime | None, as_json_output: bool) -> tuple[str, int]:
    """``helpdesk status``: what to print and the exit status. A config that cannot be
    read is UNKNOWN (3), as Nagios has it: the plugin could not judge."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        report = Report(None, (Problem(UNKNOWN, str(exc)),))
    else:
        report = gather(config, Clock(now))
    return (as_json(report) if as_json_output else as_text(report)), report.level


# --- reading ---------------------------------------------------------------------------

def gather(config: Config, clock: Clock) -> Report:
    """Attach to the database (never upgrading it), read the figures and judge them."""
    try:
        health.attach(config.database.url)
    except (StoreError, ConfigError) as exc:
        return Report(None, (Problem(CRITICAL, str(exc)),))
    return evaluate(config, clock)


def evaluate(config: Config, clock: Clock) -> Report:
    """Read and judge on the database the store is bound to already (the service's, for metrics)."""
    try:
        figures = read(config, naive_utc(clock.now()))
    except StoreError as exc:
        return Report(None, (Problem(CRITICAL, str(exc)),))
    return Report(figures, judge(figures, config.status))


def read(config: Config, now: dt.datetime) -> Figures:
    """One read snapshot, so the figures agree; against another schema only its version is
    read (the tables may not be what the queries expect)."""
    imap = [m for m in config.mailboxes if m.source_kind in ("imap", "imaps")]
    try:
        with read_snapshot():
            schema = health.schema()
            if not schema.current:
                return Figures(now, schema)
            records = imap_cursor.health() if imap else {}
            return Figures(
                now, schema, health.outbox_counts(), health.oldest_queued(),
                digest_store.quarantine_waiting(),
                tuple(_mailbox(m.name, m.source, records.get(m.name)) for m in imap),
                health.last_tick(), health.overdue_timers(now - config.status.tick_warning))
    except Exception as exc:   # whatever the driver raises: the database is the critical figure then
        raise StoreError(f"database: {type(exc).__name__}: {exc}".splitlines()[0]) from exc


def _mailbox(name: str, source: str, record: imap_cursor.Health | None) -> MailboxHealth:
    record = record or imap_cursor.Health()
    return MailboxHealth(name, source, record.passed_at, record.failed_at, record.fault)


# --- judging ---------------------------------------------------------------------------

def judge(f: Figures, limits: StatusSettings) -> tuple[Problem, ...]:
    """Every figure past a threshold, worst first."""
    if not f.schema.current:
        return (Problem(CRITICAL, _schema_text(f.schema)),)
    found = [
        _timespan(f.age(f.oldest_queued), limits.outbox_age_warning, limits.outbox_age_critical,
                  "the oldest queued mail waits for {age}"),
        _count(f.outbox.get("failed", 0), limits.failed_warning, limits.failed_critical,
               "{n} outgoing mail(s) failed (see `helpdesk outbox --status failed`)"),
        _count(f.quarantine, limits.quarantine_warning, limits.quarantine_critical,
               "{n} message(s) in quarantine (`helpdesk quarantine`)"),
        _count(f.overdue_timers, limits.overdue_warning, limits.overdue_critical,
               "{n} timer(s) overdue by more than " + format_duration(limits.tick_warning)),
        _tick(f, limits),
    ]
    found += [_imap(f, m, limits) for m in f.mailboxes]
    return tuple(sorted((p for p in found if p is not None), key=lambda p: -p.level))


def _schema_text(schema: health.Schema) -> str:
    if schema.version < schema.expected:
        return (f"database schema {schema.version}, expected {schema.expected}: "
                "run `helpdesk run` once to upgrade it")
    return (f"database schema {schema.version} is newer than this helpdesk's {schema.expected}: "
            "upgrade the helpdesk")


def _count(n: int, warning: int, critical: int, text: str) -> Problem | None:
    level = CRITICAL if critical and n >= critical else WARNING if warning and n >= warning else OK
    return Problem(level, text.format(n=n)) if level else None


def _timespan(age: dt.timedelta | None, warning: dt.timedelta, critical: dt.timedelta,
              text: str) -> Problem | None:
    if age is None:
        return None
    level = CRITICAL if age >= critical else WARNING if age >= warning else OK
    return Problem(level, text.format(age=short_duration(age))) if level else None


def _tick(f: Figures, limits: StatusSettings) -> Problem | None:
    if f.last_tick is None:
        return Problem(WARNING, "no deadline tick recorded yet (is `helpdesk run` running?)")
    return _timespan(f.age(f.last_tick), limits.tick_warning, limits.tick_critical,
                     "no deadline tick for {age} (is `helpdesk run` running?)")


def _imap(f: Figures, m: MailboxHealth, limits: StatusSettings) -> Problem | None:
    failing = m.failed_at is not None and (m.passed_at is None or m.failed_at > m.passed_at)
    fault = f": {m.fault}" if failing and m.fault else ""
    if m.passed_at is None:
        return Problem(WARNING, f"mailbox {m.name}: no successful pass recorded yet{fault}")
    found = _timespan(f.age(m.passed_at), limits.imap_warning, limits.imap_critical,
                      f"mailbox {m.name}: no successful pass for {{age}}{fault}")
    if found is None and failing:
        return Problem(WARNING, f"mailbox {m.name}: failing since {_moment(m.failed_at)}{fault}")
    return found


def _moment(at: dt.datetime | None) -> str:
    return "never" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


# --- showing ---------------------------------------------------------------------------

def as_text(report: Report) -> str:
    """Nagios's shape: ``HELPDESK <LEVEL> - <problems> | <perfdata>``, then one line per figure."""
    f = report.figures
    summary = "; ".join(p.text for p in report.problems) or "all figures within their thresholds"
    lines = [f"HELPDESK {LEVELS[report.level]} - {summary}" + (f" | {_perfdata(f)}" if f else "")]
    if f is None or not f.schema.current:
        return "\n".join(lines + ([f"schema: {f.schema.version} (expected {f.schema.expected})"] if f else []))
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(f.outbox.items())) or "empty"
    oldest = f"; oldest queued {short_duration(f.age(f.oldest_queued))} ago" if f.oldest_queued else ""
    lines.append(f"outbox: {by_status}{oldest}")
    lines.append(f"quarantine: {f.quarantine}")
    for m in f.mailboxes:
        fault = f"; last fault {_moment(m.failed_at)}: {m.fault}" if m.failed_at else "; no fault"
        lines.append(f"mailbox {m.name}: last pass {_ago(f, m.passed_at)}{fault}")
    lines.append(f"deadline tick: {_ago(f, f.last_tick)}; overdue timers: {f.overdue_timers}")
    lines.append(f"schema: {f.schema.version} (current)")
    return "\n".join(lines)


def _ago(f: Figures, at: dt.datetime | None) -> str:
    return "never" if at is None else f"{_moment(at)} ({short_duration(f.age(at))} ago)"


def _perfdata(f: Figures) -> str:
    age = f.age(f.oldest_queued)
    return (f"queued={f.outbox.get('queued', 0)} failed={f.outbox.get('failed', 0)} "
            f"quarantine={f.quarantine} oldest_queued={int(age.total_seconds()) if age else 0}s "
            f"overdue_timers={f.overdue_timers}")


def as_json(report: Report) -> str:
    f = report.figures
    document: dict = {"status": LEVELS[report.level].lower(), "exit": report.level,
                      "problems": [{"level": LEVELS[p.level].lower(), "text": p.text} for p in report.problems]}
    if f is not None:
        document.update(now=_iso(f.now), schema={"version": f.schema.version, "expected": f.schema.expected})
    if f is not None and f.schema.current:
        age = f.age(f.oldest_queued)
        document.update({
            "outbox": f.outbox, "oldest_queued_at": _iso(f.oldest_queued),
            "oldest_queued_seconds": int(age.total_seconds()) if age is not None else None,
            "quarantine": f.quarantine,
            "mailboxes": [{"name": m.name, "source": m.source, "last_pass_at": _iso(m.passed_at),
                           "last_fault_at": _iso(m.failed_at), "last_fault": m.fault} for m in f.mailboxes],
            "last_tick_at": _iso(f.last_tick), "overdue_timers": f.overdue_timers})
    return json.dumps(document, indent=2, ensure_ascii=False)


def _iso(at: dt.datetime | None) -> str | None:
    return None if at is None else at.isoformat() + "Z"
