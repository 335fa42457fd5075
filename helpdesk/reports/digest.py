"""The admin digest: what happened since the last one, and what is waiting now.

Three parts, kept apart so each can be tested alone:

* **the period** (pure): the latest scheduled moment at or before now, in the
  digest's time zone, names the period (``"daily:2026-12-01"``,
  ``"monday:2026-11-30"``); the digest covers from the scheduled moment before
  it up to it. When the previous period's digest was never sent (the service
  was down), the figures of the period reach back to the last digest that was
  sent, at most ``MAX_CATCH_UP``.
* **the content** (``build``): plain dataclasses from a fixed number of
  aggregate queries over indexed columns, one per figure (``store.digest``).
  Nothing loads all tickets: counts are ``COUNT``/``GROUP BY`` in the
  database, the overdue list is ``ORDER BY ... LIMIT``, and only the tickets
  first answered in the period are read to compute percentiles (time
  differences in Python, so the SQL stays portable between SQLite and
  PostgreSQL).
* **sending** (``send``, ``run_due``): one ``DigestRun`` row per period, inserted
  with ``ON CONFLICT DO NOTHING`` in the same transaction as the mail to the
  admins; only the transaction that inserted it queues the mail, so a digest
  goes out once per period, whatever the number of workers or restarts.

Only tickets of kind "ticket" are counted; disputes get a line of their own,
by status, from the ``dispute`` table.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import statistics
import zoneinfo
from collections import Counter
from dataclasses import dataclass

from helpdesk.clock import UTC, naive_utc, to_utc
from helpdesk.config.settings import Config
from helpdesk.disputes.rules import OPEN as DISPUTE_OPEN
from helpdesk.disputes.rules import STATES as DISPUTE_STATES
from helpdesk.outbound import failures
from helpdesk.outbound.notify import Notice, Notifier
from helpdesk.store import digest as digest_store
from helpdesk.store.db import read_snapshot, write_transaction
from helpdesk.units import format_duration

log = logging.getLogger("helpdesk.digest")

OPEN_STATUSES = ("new", "open", "waiting_on_customer")
ALL_STATUSES = OPEN_STATUSES + ("resolved", "closed")
STAFF_TURN = ("new", "open")                 # the ball is in the staff's court
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MAX_CATCH_UP = dt.timedelta(days=31)
UNASSIGNED = "unassigned"
FAILED_LISTED = 5            # failed outgoing mails named, the longest failed first


# --------------------------------------------------------------- the period


@dataclass(frozen=True)
class Period:
    key: str                  # "daily:2026-12-01": unique per digest
    start: dt.datetime        # aware UTC: the scheduled moment before ``end``
    end: dt.datetime          # aware UTC: the scheduled moment that names the period
    since: dt.datetime        # aware UTC: where the figures start (``start``, or earlier on catch-up)
    timezone: str


def period_at(schedule: tuple[str, int, int], timezone: str, now: dt.datetime) -> Period:
    """The period whose scheduled moment is the latest one at or before ``now``.

    ``schedule`` is ``("daily"|"monday".."sunday", hour, minute)`` in local time
    of ``timezone``; a local time that does not exist (a DST gap) is taken with
    the offset before the change, as ``zoneinfo`` does.
    """
    day, hour, minute = schedule
    tz = zoneinfo.ZoneInfo(timezone)
    now = to_utc(now)
    step = dt.timedelta(days=1 if day == "daily" else 7)
    date = now.astimezone(tz).date()
    if day != "daily":
        date -= dt.timedelta(days=(date.weekday() - WEEKDAYS.index(day)) % 7)
    if _moment(date, hour, minute, tz) > now:
        date -= step
    end = _moment(date, hour, minute, tz)
    start = _moment(date - step, hour, minute, tz)
    return Period(f"{day}:{date.isoformat()}", start, end, start, timezone)


def rolling_period(timezone: str, now: dt.datetime) -> Period:
    """The last 24 hours, for ``helpdesk digest`` when no schedule is set."""
    end = to_utc(now)
    start = end - dt.timedelta(days=1)
    return Period(f"now:{end.isoformat()}", start, end, start, timezone)


def current_period(config: Config, now: dt.datetime) -> Period | None:
    """The configured schedule's current period, reaching back to the last
    digest sent if the previous one was missed; None when the digest is off."""
    settings = config.digest
    if settings.schedule is None:
        return None
    period = period_at(settings.schedule, settings.timezone, now)
    return _with_catch_up(period, settings.schedule)


def _moment(date: dt.date, hour: int, minute: int, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(date, dt.time(hour, minute), tzinfo=tz).astimezone(UTC)


def _with_catch_up(period: Period, schedule: tuple[str, int, int]) -> Period:
    """``since`` = the end of the last digest sent under this schedule, when that
    is before the period's start (missed periods), but at most MAX_CATCH_UP back.

    Keys of one schedule are ``<day>:<ISO date>``, so they sort by date: the
    last one before this period is one indexed range lookup.
    """
    day, hour, minute = schedule
    prefix = f"{day}:"
    last = digest_store.last_period(prefix, period.key)
    if last is None:
        return period
    try:
        date = dt.date.fromisoformat(last[len(prefix):])
    except ValueError:
        return period
    previous_end = _moment(date, hour, minute, zoneinfo.ZoneInfo(period.timezone))
    since = max(min(previous_end, period.start), period.end - MAX_CATCH_UP)
    return Period(period.key, period.start, period.end, since, period.timezone)


# --------------------------------------------------------------- the content


@dataclass(frozen=True)
class StatusCount:
    status: str
    count: int


@dataclass(frozen=True)
class AssigneeLoad:
    assignee: str | None       # address, None for unassigned
    name: str                  # staff display name, the address, or "unassigned"
    count: int
    by_status: tuple[StatusCount, ...]


@dataclass(frozen=True)
class OverdueTicket:
    number: int
    subject: str
    status: str
    priority: str
    assignee: str | None
    assignee_name: str
    created_at: dt.datetime    # aware UTC
    age: dt.timedelta


@dataclass(frozen=True)
class ResponseStats:
    """First responses given in the period (tickets first answered in it)."""

    target: dt.timedelta
    answered: int
    within_target: int
    median: dt.timedelta | None
    p90: dt.timedelta | None
    missed_unanswered: int = 0   # first-response deadline fell in the period, still no answer

    @property
    def attainment(self) -> float | None:
        """Percent of the period's first responses that met the target, counting the
        tickets whose deadline passed in the period without any answer as misses;
        None when there was nothing to count."""
        due = self.answered + self.missed_unanswered
        return 100.0 * self.within_target / due if due else None


@dataclass(frozen=True)
class FailedMail:
    """An outgoing mail given up (``helpdesk outbox retry ID`` sends it again)."""

    id: int
    kind: str
    recipient: str
    ticket: str | None         # "T-42", "D-7"
    failed_at: dt.datetime | None   # aware UTC; None for mail failed before it was kept
    last_error: str


@dataclass(frozen=True)
class Digest:
    period: Period
    generated_at: dt.datetime               # aware UTC
    new_tickets: int                        # created in [period.since, period.end)
    open_by_status: tuple[StatusCount, ...]  # now, in lifecycle order, zeros included
    responses: ResponseStats
    overdue: tuple[OverdueTicket, ...]      # now, oldest first, at most overdue_limit
    overdue_total: int
    assignees: tuple[AssigneeLoad, ...]     # open tickets now; unassigned first, then most loaded
    quarantined: int                        # received in the period and quarantined
    quarantine_waiting: int                 # everything in quarantine now
    bounced: int                            # bounce reports received in the period
    disputes: tuple[StatusCount, ...]       # disputes not finished, by status
    failed: int = 0                         # outgoing mail given up in the period, still failed
    failed_waiting: int = 0                 # outgoing mail failed now
    failed_oldest: tuple[FailedMail, ...] = ()   # the longest failed, at most FAILED_LISTED
    held: int = 0                           # mail from claimed senders held in the period (docs/trust.md)
    sender_failed: int = 0                  # mail our MTA said failed DMARC/SPF: not acknowledged

    @property
    def open_total(self) -> int:
        return sum(s.count for s in self.open_by_status)


def build(config: Config, now: dt.datetime, period: Period) -> Digest:
    """The digest's content at ``now`` for ``period``: a fixed number of queries."""
    now = to_utc(now)
    since, end = naive_utc(period.since), naive_utc(period.end)
    names = {s.address: s.name for s in config.staff}
    with read_snapshot():   # one snapshot for every figure
        return _build(config, now, period, since, end, names)


def _build(config: Config, now: dt.datetime, period: Period, since: dt.datetime, end: dt.datetime,
           names: dict[str, str]) -> Digest:
    by_status, assignees = _open_tickets(config, names)
    overdue, overdue_total = _overdue(config.digest.overdue_limit, now, names)
    quarantined, waiting = _quarantine(since, end)
    return Digest(
        period=period, generated_at=now,
        new_tickets=digest_store.new_tickets(since, end),
        open_by_status=by_status,
        responses=_responses(config.tickets.first_response, since, end),
        overdue=overdue, overdue_total=overdue_total, assignees=assignees,
        quarantined=quarantined, quarantine_waiting=waiting,
        bounced=digest_store.bounces(since, end),
        disputes=_disputes(),
        failed=digest_store.failed(since, end), failed_waiting=digest_store.failed_waiting(),
        failed_oldest=_failed_oldest(),
        held=digest_store.held(since, end), sender_failed=digest_store.sender_failed(since, end))


def _open_tickets(config: Config, names: dict[str, str]):
    """Open tickets by status and by assignee.

    Every query here reads only the (status, updated_at) or (assignee, status)
    index, never the table: the 100,000 row lookups a ``kind`` filter would
    cost are replaced by subtracting the open dispute chats, found from the
    small ``dispute`` table.
    """
    statuses = Counter(digest_store.by_status(OPEN_STATUSES))
    loads: dict[str | None, Counter] = {s.address: Counter() for s in config.staff if s.role == "agent"}
    for assignee, status, count in digest_store.by_assignee(digest_store.assignees(), OPEN_STATUSES):
        loads.setdefault(assignee, Counter())[status] += count
    loads.setdefault(None, Counter()).update(digest_store.unassigned(OPEN_STATUSES))
    for status, assignee, count in digest_store.dispute_chats(OPEN_STATUSES):
        statuses[status] -= count
        loads.setdefault(assignee, Counter())[status] -= count
    by_status = tuple(StatusCount(s, statuses[s]) for s in OPEN_STATUSES)
    result = []
    for assignee, counts in loads.items():
        total = sum(counts[s] for s in OPEN_STATUSES)
        if assignee is not None and not total and assignee not in names:
            continue   # someone who no longer works here and has nothing open
        ordered = tuple(StatusCount(s, counts[s]) for s in OPEN_STATUSES if counts[s])
        name = UNASSIGNED if assignee is None else names.get(assignee, assignee)
        result.append(AssigneeLoad(assignee, name, total, ordered))
    result.sort(key=lambda a: (a.assignee is not None, -a.count, a.name.lower()))
    return by_status, tuple(result)


def _overdue(limit: int, now: dt.datetime, names: dict[str, str]):
    rows = digest_store.overdue(STAFF_TURN, limit)
    overdue = tuple(
        OverdueTicket(number, subject, status, priority, assignee,
                      names.get(assignee, assignee) if assignee else UNASSIGNED,
                      to_utc(created), now - to_utc(created))
        for number, subject, status, priority, assignee, created in rows)
    total = len(overdue) if len(overdue) < limit else digest_store.overdue_count(STAFF_TURN)
    return overdue, total


def _responses(target: dt.timedelta, since: dt.datetime, end: dt.datetime) -> ResponseStats:
    """Over the tickets first answered in the period: only those rows are read
    (see ``store.digest.first_responses`` for how the index finds them)."""
    rows = digest_store.first_responses(ALL_STATUSES, since, end)
    times = sorted(max(answered - created, dt.timedelta(0)) for created, answered in rows)
    # unanswered tickets whose deadline (created + target) fell in the period: (created_at) index
    missed = digest_store.unanswered(since - target, end - target, ("new", "open"))
    return ResponseStats(
        target=target, answered=len(times), within_target=sum(1 for t in times if t <= target),
        median=_median(times), p90=_nearest_rank(times, 90), missed_unanswered=missed)


def _median(ordered: list[dt.timedelta]) -> dt.timedelta | None:
    if not ordered:
        return None
    return dt.timedelta(seconds=round(statistics.median(t.total_seconds() for t in ordered)))


def _nearest_rank(ordered: list[dt.timedelta], percent: int) -> dt.timedelta | None:
    """The smallest value with at least ``percent`` % of the values at or below it."""
    if not ordered:
        return None
    return ordered[max(math.ceil(percent / 100 * len(ordered)), 1) - 1]


def _quarantine(since: dt.datetime, end: dt.datetime) -> tuple[int, int]:
    """Quarantined in the period, and in quarantine now (the status index finds them)."""
    return digest_store.quarantined(since, end), digest_store.quarantine_waiting()


def _failed_oldest() -> tuple[FailedMail, ...]:
    return tuple(FailedMail(row_id, kind, recipient, failures.label(ticket, dispute),
                            to_utc(failed_at) if failed_at else None, last_error or "")
                 for row_id, kind, recipient, ticket, dispute, failed_at, last_error
                 in digest_store.oldest_failed(FAILED_LISTED))


def _disputes() -> tuple[StatusCount, ...]:
    """Disputes in an open state, by state (in the order of the state machine)."""
    rows = digest_store.disputes(sorted(DISPUTE_OPEN))
    return tuple(StatusCount(status, rows[status]) for status in DISPUTE_STATES if rows.get(status))


# --------------------------------------------------------------- rendering


def context(digest: Digest, config: Config) -> dict:
    """The template variables (see templates/README.md): display-ready values."""
    tz = zoneinfo.ZoneInfo(digest.period.timezone)
    responses = digest.responses
    most_open = max((s.count for s in digest.open_by_status), default=0)
    most_load = max((a.count for a in digest.assignees), default=0)
    return {
        "helpdesk_name": config.helpdesk.name,
        "period": {
            "key": digest.period.key,
            "start": _local(digest.period.since, tz),
            "end": _local(digest.period.end, tz),
            "date": digest.period.end.astimezone(tz).strftime("%a %d %b %Y"),
            "timezone": digest.period.timezone,
            "catch_up": digest.period.since < digest.period.start,
        },
        "generated_at": _local(digest.generated_at, tz),
        "new_tickets": digest.new_tickets,
        "open_total": digest.open_total,
        "open_by_status": [
            {"status": s.status, "label": status_label(s.status), "count": s.count,
             **_bar(s.count, most_open)} for s in digest.open_by_status],
        "responses": {
            "target": format_duration(responses.target),
            "answered": responses.answered,
            "within_target": responses.within_target,
            "missed_unanswered": responses.missed_unanswered,
            "attainment": None if responses.attainment is None else f"{responses.attainment:.0f} %",
            "attainment_width": round(responses.attainment or 0),
            "median": short_duration(responses.median) if responses.median is not None else None,
            "p90": short_duration(responses.p90) if responses.p90 is not None else None,
        },
        "overdue": [
            {"id": f"T-{t.number}", "number": t.number, "subject": t.subject, "status": t.status,
             "status_label": status_label(t.status), "priority": t.priority,
             "assignee": t.assignee, "assignee_name": t.assignee_name,
             "created_at": _local(t.created_at, tz), "age": short_duration(t.age)}
            for t in digest.overdue],
        "overdue_total": digest.overdue_total,
        "overdue_more": digest.overdue_total - len(digest.overdue),
        "assignees": [
            {"assignee": a.assignee, "name": a.name, "count": a.count,
             "by_status": ", ".join(f"{s.count} {status_label(s.status)}" for s in a.by_status),
             **_bar(a.count, most_load)} for a in digest.assignees],
        "quarantined": digest.quarantined,
        "quarantine_waiting": digest.quarantine_waiting,
        "bounced": digest.bounced,
        "held": digest.held,
        "sender_failed": digest.sender_failed,
        "disputes": [{"status": s.status, "label": status_label(s.status), "count": s.count}
                     for s in digest.disputes],
        "failed": digest.failed,
        "failed_waiting": digest.failed_waiting,
        "failed_oldest": [
            {"id": m.id, "kind": m.kind, "recipient": m.recipient, "ticket": m.ticket,
             "failed_at": _local(m.failed_at, tz) if m.failed_at else "-",
             "age": short_duration(digest.generated_at - m.failed_at) if m.failed_at else "-",
             "last_error": m.last_error} for m in digest.failed_oldest],
    }


def status_label(status: str) -> str:
    return status.replace("_", " ")


def short_duration(td: dt.timedelta) -> str:
    """Compact for tables: ``45s``, ``12m``, ``3h 05m``, ``2d 4h``."""
    seconds = max(int(td.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def _local(moment: dt.datetime, tz: zoneinfo.ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%a %d %b %Y %H:%M")


def _bar(count: int, largest: int, chars: int = 30) -> dict:
    """Bar sizes: ``width`` in percent for HTML (at least 1 when count > 0), ``bar`` in text."""
    if not count or not largest:
        return {"width": 0, "bar": ""}
    return {"width": max(1, round(100 * count / largest)),
            "bar": "#" * max(1, round(chars * count / largest))}


# --------------------------------------------------------------- sending


@dataclass(frozen=True)
class SendResult:
    period: str
    recipients: int           # admins the digest was queued to; 0 when it had been sent already
    already_sent: bool


def admins(config: Config):
    return [s for s in config.staff if s.role == "admin"]


def notifier_for(app) -> Notifier:
    """The notifier of the first tickets mailbox (its address sends the digest)."""
    mailboxes = app.config.mailboxes
    chosen = next((m for m in mailboxes if m.kind == "tickets"), mailboxes[0])
    return app.desk.notifiers[chosen.name]


def render(app, digest: Digest, recipient: str = "", recipient_name: str = ""):
    """The digest as the admins get it (subject, text, HTML)."""
    full = {**context(digest, app.config), "recipient": recipient, "recipient_name": recipient_name}
    return notifier_for(app).renderer.render("admin", "digest", full)


def send(app, digest: Digest) -> SendResult:
    """Queue ``digest`` to every admin, unless its period's digest was sent already.

    The ``DigestRun`` insert and the outbox rows commit together; the insert
    that conflicts (another worker, an earlier run) inserts nothing, and then
    nothing is queued.
    """
    key = digest.period.key
    recipients = admins(app.config)
    notifier = notifier_for(app)
    base = context(digest, app.config)
    with write_transaction():
        if not digest_store.claim(key, naive_utc(app.clock.now()), len(recipients)):
            return SendResult(key, 0, True)
        for admin in recipients:
            notifier.queue(Notice(
                event="digest", audience="admin", recipient=admin.address, recipient_name=admin.name,
                context={**base, "recipient": admin.address, "recipient_name": admin.name},
                auto="auto-generated"))
    log.info("digest %s queued to %d admin(s)", key, len(recipients))
    return SendResult(key, len(recipients), False)


def run_due(app) -> SendResult | None:
    """The scheduler's job: send the current period's digest if not sent yet.

    Cheap when there is nothing to do (one indexed lookup), so it can run every
    few seconds. None when the digest is off, already sent, there are no admins,
    or the period ended before the helpdesk held anything (a new installation
    does not begin with an empty digest about the time before it existed;
    ``helpdesk digest --send`` sends that one all the same).
    """
    now = app.clock.now()
    period = current_period(app.config, now)
    if (period is None or not admins(app.config) or digest_store.already_sent(period.key)
            or not digest_store.existed_before(naive_utc(period.end))):
        return None
    result = send(app, build(app.config, now, period))
    return None if result.already_sent else result
