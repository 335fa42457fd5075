"""``helpdesk outbox``: the operator's ``mailq`` and ``postsuper`` for outgoing mail.

List it, put failed mail back in line (``retry``: its attempts and queue
lifetime start again, as a requeued mail does in an MTA), or cancel mail that
should not go (queued or failed). Each answer is a plain dict or a number;
a wrong id or a mail in the wrong state is a ``UserError`` (one line, exit 1).
"""

from __future__ import annotations

import re

from helpdesk.clock import Clock, naive_utc, to_utc
from helpdesk.errors import NotFound, UserError
from helpdesk.outbound.failures import label
from helpdesk.store import outbox as outbox_rows
from helpdesk.store.db import write_transaction
from helpdesk.store.outbox import STATUSES, OutgoingRow

WAITING = ("queued", "failed")        # the default listing: mail that has not left and may still
CHOICES = (*STATUSES, "all")
MAX_ID = 2**31 - 1
_ID = re.compile(r"^#?(\d{1,12})$")


def listing(status: str | None, limit: int) -> tuple[list[dict], int]:
    """The rows in ``status`` (default: queued and failed; "all"), oldest first, at most
    ``limit``; and how many there are in all."""
    statuses = WAITING if status is None else STATUSES if status == "all" else (status,)
    return [shown(row) for row in outbox_rows.listing(statuses, limit)], outbox_rows.count(statuses)


def shown(row: OutgoingRow) -> dict:
    return {"id": row.id, "status": row.status, "recipient": row.recipient, "kind": row.kind,
            "subject": row.subject, "attempts": row.attempts, "next_attempt_at": _iso(row.next_attempt_at),
            "last_answer": row.last_error, "ticket": label(row.ticket_id, row.dispute_id),
            "created_at": _iso(row.created_at), "queued_at": _iso(row.queued_at or row.created_at),
            "sent_at": _iso(row.sent_at), "failed_at": _iso(row.failed_at)}


def retry(text: str, clock: Clock) -> int:
    """Put one failed mail back in line, due now; returns its id."""
    row_id = outbox_id(text)
    with write_transaction():
        if outbox_rows.requeue(row_id, naive_utc(clock.now())) != 1:
            raise _wrong_state(row_id, "retried", "failed")
    return row_id


def retry_all_failed(clock: Clock) -> int:
    """Every failed mail back in line; returns how many."""
    with write_transaction():
        return outbox_rows.requeue(None, naive_utc(clock.now()))


def cancel(text: str) -> int:
    """Cancel one queued or failed mail (it is kept, never sent); returns its id.

    A mail being handed over at this very moment may still go: the record then says sent.
    """
    row_id = outbox_id(text)
    with write_transaction():
        if not outbox_rows.cancel(row_id, WAITING):
            raise _wrong_state(row_id, "cancelled", "queued or failed")
    return row_id


def outbox_id(text: str) -> int:
    match = _ID.match(text.strip())
    if match is None:
        raise UserError(f"not an outbox id: {text!r} (expected a number from 'helpdesk outbox')")
    if int(match.group(1)) > MAX_ID:     # ids are 32-bit on PostgreSQL: a larger one names nothing
        raise _unknown(int(match.group(1)))
    return int(match.group(1))


def _unknown(row_id: int) -> NotFound:
    return NotFound(f"no outgoing mail {row_id} (see 'helpdesk outbox --status all')")


def _wrong_state(row_id: int, done: str, allowed: str) -> UserError:
    status = outbox_rows.status_of(row_id)
    if status is None:
        return _unknown(row_id)
    return UserError(f"mail {row_id} is {status}: only {allowed} mail can be {done}")


def _iso(moment) -> str | None:
    return to_utc(moment).replace(microsecond=0).isoformat().replace("+00:00", "Z") if moment else None


def lines(rows: list[dict], total: int, status: str | None) -> list[str]:
    """The listing as ``helpdesk outbox`` prints it: one line per mail, its last answer below."""
    out = []
    for r in rows:
        out.append(f"{r['id']:>7}  {r['status']:<10} {r['attempts']:>3}x  next {r['next_attempt_at'] or '-':<20}  "
                   f"{r['kind']:<20} {r['ticket'] or '-':<8} {r['recipient']}")
        if r["last_answer"] and r["status"] != "sent":
            out.append(f"{'':>9}last answer: {r['last_answer']}")
    if not rows:
        out.append("no outgoing mail" + (f" with status {status}" if status else " queued or failed"))
    elif total > len(rows):
        out.append(f"... {total - len(rows)} more (--limit)")
    return out
