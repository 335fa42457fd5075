"""A ticket's status and deadlines move together: new → open → waiting_on_customer
→ resolved → closed, and each move starts or stops its timers.

Every function runs inside the caller's transaction, so a status and the
deadlines that belong to it are never out of step (an answered ticket can't
keep a pending escalation, a reopened one can't close itself).
"""

from __future__ import annotations

import datetime as dt

from helpdesk.config.settings import TicketSettings
from helpdesk.store import timers

STATUSES = ("new", "open", "waiting_on_customer", "resolved", "closed")   # in the order they follow
AWAITING_ANSWER = frozenset({"new", "open"})
RESPONSE_KINDS = ("first_response", "first_response.reminder", "next_response", "next_response.reminder")
PRIORITIES = ("low", "normal", "high", "urgent")


def response_timers(kind: str, start: dt.datetime, span: dt.timedelta, reminder_at: int):
    """The reminder at ``reminder_at`` % of the span, and the deadline itself."""
    return [(f"{kind}.reminder", start + span * reminder_at / 100), (kind, start + span)]


def opened(ticket_id: int, now: dt.datetime, settings: TicketSettings) -> None:
    timers.schedule("ticket", ticket_id, now, response_timers(
        "first_response", now, settings.first_response, settings.reminder_at))


def customer_wrote(ticket_id: int, status: str, now: dt.datetime, settings: TicketSettings) -> str:
    """A customer's reply re-opens the ticket and, unless an answer is already
    due, starts the next-response clock. Returns the new status."""
    if status == "resolved":
        timers.cancel("ticket", ticket_id, ["auto_close"])
    new_status = "open" if status in ("waiting_on_customer", "resolved") else status
    if not any(kind in RESPONSE_KINDS for kind, _ in timers.pending("ticket", ticket_id)):
        timers.schedule("ticket", ticket_id, now, response_timers(
            "next_response", now, settings.next_response, settings.reminder_at))
    return new_status


def answered(ticket_id: int) -> None:
    """Staff answered: no reminder or escalation for this round any more."""
    timers.cancel("ticket", ticket_id, RESPONSE_KINDS)


def resolved(ticket_id: int, now: dt.datetime, settings: TicketSettings) -> None:
    timers.cancel("ticket", ticket_id, RESPONSE_KINDS + ("auto_close",))
    timers.schedule("ticket", ticket_id, now, [("auto_close", now + settings.auto_close)])


def reopened(ticket_id: int, now: dt.datetime, settings: TicketSettings) -> None:
    """Reopened by staff: the ticket awaits staff again, with a fresh deadline."""
    timers.cancel("ticket", ticket_id)
    timers.schedule("ticket", ticket_id, now, response_timers(
        "next_response", now, settings.next_response, settings.reminder_at))


def raised(priority: str) -> str:
    index = PRIORITIES.index(priority) if priority in PRIORITIES else 1
    return PRIORITIES[min(index + 1, len(PRIORITIES) - 1)]
