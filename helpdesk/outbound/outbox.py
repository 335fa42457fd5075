"""Deliver queued mail through a transport, with retries and a visible record.

Rows are claimed in groups with a lease (so two deliverers never take the same
row), composed at send time (the stored row stays the source of truth) and
marked per group: a crash between hand-over and marking can send one group
again after the lease, never lose a mail.

Retries follow an MTA's schedule (``RetryPolicy``): a temporary failure waits
``retry_delay``, doubling after each attempt up to ``retry_max_delay``, a little
shorter at random so that mail deferred together (a relay down) does not come
back together; a mail is given up only once it has been in the queue for
``give_up_after`` (its last attempt falls on that moment). Permanent failures
(5xx), and rows that cannot be made into a mail, fail at once. Automatic mail to
an address that bounced hard lately is held back (``suppression``), checked once
per group.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from dataclasses import dataclass, field

from helpdesk.clock import Clock, naive_utc
from helpdesk.config.settings import OutgoingSettings
from helpdesk.errors import PermanentDeliveryError, StoreError, TemporaryDeliveryError
from helpdesk.mail.compose import compose
from helpdesk.store import outbox as outbox_rows
from helpdesk.store.db import write_transaction
from helpdesk.store.outbox import Attempt, Queued
from helpdesk.units import format_duration

log = logging.getLogger("helpdesk.outbox")
GROUP = 50
PASS = 1000
LEASE = dt.timedelta(minutes=10)
JITTER = 0.1          # a delay is up to this share shorter, at random


@dataclass(frozen=True)
class RetryPolicy:
    """When a temporarily failed mail is tried again, and when it is given up.

    ``max_attempts`` is the schedule before issue 12, kept for configurations
    that set it: a count of attempts instead of a queue lifetime, and delays
    without jitter, so such a deployment keeps the times it knows.
    """

    retry_delay: dt.timedelta = dt.timedelta(minutes=1)
    max_delay: dt.timedelta = dt.timedelta(hours=1)
    give_up_after: dt.timedelta | None = dt.timedelta(days=5)
    max_attempts: int | None = None
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def of(cls, settings: OutgoingSettings) -> RetryPolicy:
        return cls(settings.retry_delay, settings.retry_max_delay, settings.give_up_after,
                   settings.max_attempts)

    def delay(self, attempts: int) -> dt.timedelta:
        """The wait after the ``attempts``-th attempt failed: doubling, capped, jittered."""
        base = min(self.retry_delay * 2 ** min(max(attempts - 1, 0), 20), self.max_delay)
        if self.max_attempts is not None:
            return base
        return base * (1 - JITTER * self.rng.random())

    def next_attempt(self, now: dt.datetime, attempts: int, queued_at: dt.datetime) -> dt.datetime | None:
        """When to try again, or None: give up (never before the queue lifetime is over)."""
        if self.max_attempts is not None:
            return None if attempts >= self.max_attempts else now + self.delay(attempts)
        deadline = queued_at + self.give_up_after
        if now >= deadline:
            return None
        return min(now + self.delay(attempts), deadline)

    def given_up(self, attempts: int) -> str:
        if self.max_attempts is not None:
            return f"gave up after {attempts} attempts"
        return f"gave up after {format_duration(self.give_up_after)} in the queue ({attempts} attempts)"


@dataclass
class DeliveryReport:
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    suppressed: int = 0

    @property
    def handled(self) -> int:
        return self.sent + self.deferred + self.failed + self.suppressed

    def add(self, other: DeliveryReport) -> None:
        self.sent += other.sent
        self.deferred += other.deferred
        self.failed += other.failed
        self.suppressed += other.suppressed


def deliver_all(transport, clock: Clock, policy: RetryPolicy, held=None,
                stopping: threading.Event | None = None) -> DeliveryReport:
    """Everything due now, in passes of ``PASS`` rows; on ``stopping`` up to the mail in hand."""
    total = DeliveryReport()
    while True:
        report = deliver_due(transport, clock, policy, held=held, stopping=stopping)
        total.add(report)
        if report.handled < PASS or _stopped(stopping):
            return total


def deliver_due(transport, clock: Clock, policy: RetryPolicy, limit: int = PASS, held=None,
                stopping: threading.Event | None = None) -> DeliveryReport:
    """One pass. ``held``: a ``suppression.Suppression`` (automatic mail to addresses that
    bounced hard is marked ``suppressed`` instead of sent), or None. ``stopping``: checked
    before each group and each mail, so SIGTERM never waits for a whole pass; a claimed
    mail not tried yet is released (due again at once), not left to its lease."""
    report = DeliveryReport()
    now = naive_utc(clock.now())
    if _broken_off.is_set():        # one deliverer per process: no claim of ours is in flight
        with write_transaction():
            outbox_rows.record(_unrecorded)
            outbox_rows.release_mine(now)
        _unrecorded.clear()
        _broken_off.clear()
    try:
        _deliver_groups(outbox_rows.due(now, limit), transport, now, policy, report, held, stopping)
    except StoreError:
        _broken_off.set()
        raise
    return report


# A pass broke off on a store error (a lost connection, a full disk): its claims may
# be left behind, committed though the answer never came; the next pass frees them.
_broken_off = threading.Event()
# The attempts of a group handed over whose record that error cut off: the next pass
# writes them first, so a database restart does not send the group again.
_unrecorded: list[Attempt] = []


def _deliver_groups(due: list[int], transport, now: dt.datetime, policy: RetryPolicy,
                    report: DeliveryReport, held, stopping: threading.Event | None) -> None:
    for start in range(0, len(due), GROUP):
        if _stopped(stopping):
            break
        rows = outbox_rows.load(_claim(due[start:start + GROUP], now))
        reasons = held.held(rows, now) if held is not None else {}
        attempts = [_suppressed(row, reasons[row.id], now, report) for row in rows if row.id in reasons]
        rows = [row for row in rows if row.id not in reasons]
        attempts += [_recorded(row, result, now, policy, report)
                     for row, result in zip(rows, _send_group(rows, transport, now, stopping))]
        try:
            with write_transaction():
                outbox_rows.record(attempts)
        except StoreError:
            _unrecorded.extend(attempts)
            raise


def _stopped(stopping: threading.Event | None) -> bool:
    return stopping is not None and stopping.is_set()


def _send_group(rows: list[Queued], transport, now: dt.datetime,
                stopping: threading.Event | None = None) -> list[str | Exception]:
    """Compose each row and hand the group over; per row, where it went or what failed.

    A transport with ``send_many`` gets the group at once (the Maildir syncs
    it together); any other is called once per mail.
    """
    results: list[str | Exception] = []
    ready: list[tuple[int, tuple[str, list[str], bytes]]] = []
    for row in rows:
        try:
            data = compose(message_id=row.message_id, subject=row.subject, text=row.text,
                           html=row.html, headers_json=row.headers, date=now.replace(tzinfo=dt.UTC))
        except Exception as exc:  # noqa: BLE001 - one broken row must not stop the queue
            results.append(_ComposeError(f"could not compose: {type(exc).__name__}: {exc}"))
            continue
        ready.append((len(results), (row.envelope_from, [row.recipient], data)))
        results.append(TemporaryDeliveryError("the transport gave no result for this mail"))
    for (index, _), result in zip(ready, _hand_over(transport, [item for _, item in ready], stopping)):
        results[index] = result
    return results


def _hand_over(transport, items: list, stopping: threading.Event | None = None) -> list[str | Exception]:
    """One result per item, whatever the transport does; never a mail counted sent by default."""
    if not items:
        return []       # a group held back or broken whole: nothing to sync or connect for
    send_many = getattr(transport, "send_many", None)
    if send_many is None:
        return [_NotTried() if _stopped(stopping) else _send_one(transport, item) for item in items]
    try:
        handed = list(send_many(items))
    except Exception as exc:  # noqa: BLE001 - every mail of the group is retried later
        return [TemporaryDeliveryError(f"{type(exc).__name__}: {exc}")] * len(items)
    if len(handed) != len(items):
        missing = TemporaryDeliveryError(f"the transport answered {len(handed)} of {len(items)} mails")
        return [missing] * len(items)
    return handed


def _send_one(transport, item: tuple[str, list[str], bytes]) -> str | Exception:
    try:
        return transport.send(*item)
    except (TemporaryDeliveryError, PermanentDeliveryError) as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - recorded against the row, the queue goes on
        return _ComposeError(f"could not send: {type(exc).__name__}: {exc}")


class _NotTried(Exception):
    """The service is stopping: this claimed mail was not handed over and is released."""


class _ComposeError(Exception):
    """The row itself is broken (it could not be made into a mail): never retried."""


def _claim(ids: list[int], now: dt.datetime) -> list[int]:
    """Take the rows nobody else took: each gets a lease instead of a new status.

    Moving ``next_attempt_at`` past the lease hides a row from every other
    deliverer; if this process dies mid-send, the lease runs out and the row
    is due again (sent twice at worst, never lost).
    """
    with write_transaction():
        return outbox_rows.claim(ids, now, now + LEASE)


def _recorded(row: Queued, result: str | Exception, now: dt.datetime, policy: RetryPolicy,
              report: DeliveryReport) -> Attempt:
    """The row's attempt: sent, deferred with backoff, or failed."""
    if isinstance(result, _NotTried):
        return Attempt(row.id, row.attempts, "released", now)
    attempts = row.attempts + 1
    if isinstance(result, TemporaryDeliveryError):
        retry_at = policy.next_attempt(now, attempts, row.queued_at)
        if retry_at is None:
            return _failed(row, attempts, f"{policy.given_up(attempts)}: {result}", now, report)
        report.deferred += 1
        log.warning("deferred mail %s to %s (attempt %d): %s", row.id, row.recipient, attempts, result)
        return Attempt(row.id, attempts, "deferred", retry_at, str(result))
    if isinstance(result, Exception):
        return _failed(row, attempts, str(result), now, report)
    report.sent += 1
    log.info("sent %s mail to %s [%s] subject=%r via %s", row.kind, row.recipient,
             _ticket_label(row), row.subject, result)
    return Attempt(row.id, attempts, "sent", now)


def _failed(row: Queued, attempts: int, reason: str, now: dt.datetime, report: DeliveryReport) -> Attempt:
    report.failed += 1
    log.error("failed mail %s to %s: %s", row.id, row.recipient, reason)
    return Attempt(row.id, attempts, "failed", now, reason)


def _suppressed(row: Queued, reason: str, now: dt.datetime, report: DeliveryReport) -> Attempt:
    report.suppressed += 1
    log.warning("suppressed %s mail %s to %s [%s]: %s", row.kind, row.id, row.recipient, _ticket_label(row),
                reason)
    return Attempt(row.id, row.attempts, "suppressed", now, reason)


def _ticket_label(row: Queued) -> str:
    return f"T-{row.ticket_id}" if row.ticket_id else "-"
