"""Deliver queued mail through a transport, with retries and a visible record.

Rows are claimed in groups with a lease (so two deliverers never take the same
row), composed at send time (the stored row stays the source of truth) and
marked per group: a crash between hand-over and marking can send one group
again after the lease, never lose a mail. Temporary failures wait
``retry_delay * 2**(attempts - 1)``; permanent ones, or running out of attempts,
leave the row ``failed`` with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from helpdesk.clock import Clock, naive_utc
from helpdesk.errors import PermanentDeliveryError, TemporaryDeliveryError
from helpdesk.mail.compose import compose
from helpdesk.store import outbox as outbox_rows
from helpdesk.store.db import write_transaction
from helpdesk.store.outbox import Attempt, Queued

log = logging.getLogger("helpdesk.outbox")
GROUP = 50
PASS = 1000
LEASE = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    retry_delay: dt.timedelta = dt.timedelta(minutes=1)

    def next_attempt(self, now: dt.datetime, attempts: int) -> dt.datetime | None:
        if attempts >= self.max_attempts:
            return None
        return now + self.retry_delay * (2 ** (attempts - 1))


@dataclass
class DeliveryReport:
    sent: int = 0
    deferred: int = 0
    failed: int = 0

    @property
    def handled(self) -> int:
        return self.sent + self.deferred + self.failed

    def add(self, other: DeliveryReport) -> None:
        self.sent += other.sent
        self.deferred += other.deferred
        self.failed += other.failed


def deliver_due(transport, clock: Clock, policy: RetryPolicy, limit: int = PASS) -> DeliveryReport:
    report = DeliveryReport()
    now = naive_utc(clock.now())
    due = outbox_rows.due(now, limit)
    for start in range(0, len(due), GROUP):
        rows = outbox_rows.load(_claim(due[start:start + GROUP], now))
        attempts = [_recorded(row, result, now, policy, report)
                    for row, result in zip(rows, _send_group(rows, transport, now))]
        with write_transaction():
            outbox_rows.record(attempts)
    return report


def _send_group(rows: list[Queued], transport, now: dt.datetime) -> list[str | Exception]:
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
    for (index, _), result in zip(ready, _hand_over(transport, [item for _, item in ready])):
        results[index] = result
    return results


def _hand_over(transport, items: list) -> list[str | Exception]:
    """One result per item, whatever the transport does; never a mail counted sent by default."""
    send_many = getattr(transport, "send_many", None)
    if send_many is None:
        return [_send_one(transport, item) for item in items]
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
    attempts = row.attempts + 1
    if isinstance(result, TemporaryDeliveryError):
        retry_at = policy.next_attempt(now, attempts)
        if retry_at is None:
            return _failed(row, attempts, f"gave up after {attempts} attempts: {result}", report)
        report.deferred += 1
        log.warning("deferred mail %s to %s (attempt %d): %s", row.id, row.recipient, attempts, result)
        return Attempt(row.id, attempts, "deferred", retry_at, str(result))
    if isinstance(result, Exception):
        return _failed(row, attempts, str(result), report)
    report.sent += 1
    log.info("sent %s mail to %s [%s] subject=%r via %s", row.kind, row.recipient,
             _ticket_label(row), row.subject, result)
    return Attempt(row.id, attempts, "sent", now)


def _failed(row: Queued, attempts: int, reason: str, report: DeliveryReport) -> Attempt:
    report.failed += 1
    log.error("failed mail %s to %s: %s", row.id, row.recipient, reason)
    return Attempt(row.id, attempts, "failed", None, reason)


def _ticket_label(row: Queued) -> str:
    return f"T-{row.ticket_id}" if row.ticket_id else "-"
