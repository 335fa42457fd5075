"""Telling the staff about mail given up: one notice per delivery run, listing every failure.

A mail that fails (given up after ``give_up_after``, refused with a 5xx, or
impossible to compose) is only a row until somebody looks; the admins (or,
without admins, every staff member: the same people escalations go to) get
``admin/delivery_failed`` listing the failures of the run. The failed rows are
marked reported in the same transaction as the notice is queued, so each is
told once, whatever the number of deliverers, and a crash in between only
delays the notice to the next run.

The notice's own failure is never told (it would only fail again, in a loop);
it shows in ``helpdesk outbox`` and the digest like any failed mail.
"""

from __future__ import annotations

import dataclasses
import logging

from helpdesk.clock import Clock, naive_utc, to_utc
from helpdesk.config.settings import Config, StaffMember
from helpdesk.outbound.notify import Notice, Notifier
from helpdesk.store import outbox as outbox_rows
from helpdesk.store.db import write_transaction
from helpdesk.store.outbox import Failure

log = logging.getLogger("helpdesk.outbox")
KIND = "delivery_failed"
LIST_LIMIT = 50


@dataclasses.dataclass
class Reporter:
    """Kept by the app: ``notifiers`` by mailbox name; ``checked`` once this process looked
    for failures an earlier one left untold (a crash between a failure and its notice)."""

    notifiers: dict[str, Notifier]
    checked: bool = False

    def tell(self, config: Config, clock: Clock, failed_now: int) -> int:
        """Queue the notice if mail failed since the last one; returns how many failures it lists."""
        if not failed_now and self.checked:
            return 0     # nothing failed in this run: no query at all
        self.checked = True
        staff = told(config)
        with write_transaction():
            failures = [f for f in outbox_rows.report_failures(naive_utc(clock.now())) if f.kind != KIND]
            if failures and staff:
                self._notifier(config).queue_many([_notice(config, member, failures) for member in staff])
        if failures and not staff:
            log.warning("%d mail(s) failed and there is no [[staff]] to tell", len(failures))
        elif failures:
            log.info("told %s of %d failed mail(s)", ", ".join(m.address for m in staff), len(failures))
        return len(failures) if staff else 0

    def _notifier(self, config: Config) -> Notifier:
        """The first tickets mailbox's (its address sends the digest too)."""
        chosen = next((m for m in config.mailboxes if m.kind == "tickets"), config.mailboxes[0])
        return self.notifiers[chosen.name]


def told(config: Config) -> tuple[StaffMember, ...]:
    """Who hears of failed mail: the admins, or every staff member when there is no admin."""
    return tuple(s for s in config.staff if s.role == "admin") or tuple(config.staff)


def _notice(config: Config, member: StaffMember, failures: list[Failure]) -> Notice:
    context = {"helpdesk_name": config.helpdesk.name, "recipient": member.address,
               "recipient_name": member.name, "failed": [listed(f) for f in failures[:LIST_LIMIT]],
               "total": len(failures), "more": max(0, len(failures) - LIST_LIMIT)}
    return Notice(event=KIND, audience="admin", recipient=member.address, recipient_name=member.name,
                  context=context, auto="auto-generated")


def listed(failure: Failure) -> dict:
    """A failed mail as the notice (and the digest) shows it."""
    return {"id": failure.id, "kind": failure.kind, "recipient": failure.recipient, "subject": failure.subject,
            "ticket": label(failure.ticket_id, failure.dispute_id), "attempts": failure.attempts,
            "queued_at": _moment(failure.queued_at), "failed_at": _moment(failure.failed_at),
            "last_error": failure.last_error}


def label(ticket_id: int | None, dispute_id: int | None) -> str | None:
    """What the mail is about, as ``helpdesk show`` takes it: D-7 for a dispute's chat, T-42."""
    if dispute_id:
        return f"D-{dispute_id}"
    return f"T-{ticket_id}" if ticket_id else None


def _moment(moment) -> str:
    return to_utc(moment).strftime("%Y-%m-%d %H:%M UTC")
