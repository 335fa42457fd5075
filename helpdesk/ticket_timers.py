"""What a ticket's timer does when it fires: remind, escalate, or close.

Runs inside the transaction that claimed the timer (``deadlines.tick``). The
ticket's status is checked again: a timer whose reason has passed (an answered
ticket, a reopened one) does nothing, even if it was not cancelled in time.

Reminders and escalations are returned as ``Alert`` items and sent by
``flush`` once per chunk: a recipient with one alert gets the usual mail about
that ticket (with its reply address); one with several gets a single list,
so a backlog after an outage doesn't bury an admin under hundreds of mails.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from helpdesk import lifecycle, statements
from helpdesk.clock import to_utc
from helpdesk.config import StaffMember, format_duration
from helpdesk.errors import NotFound
from helpdesk.models import Timer
from helpdesk.notify import Notice
from helpdesk.staff import TicketRow, read_ticket
from helpdesk.tickets import Desk, label
from helpdesk.timers import Due


@dataclass(frozen=True)
class Alert:
    event: str              # "reminder" | "escalation"
    audience: str           # "staff" | "admin"
    member: StaffMember
    ticket: TicketRow
    context: dict


def handler(desk: Desk):
    def fire(due: Due, now: dt.datetime) -> list[Alert]:
        try:
            ticket = read_ticket(due.subject_id)
        except NotFound:
            return []
        kind, _, step = due.kind.partition(".")
        if kind in ("first_response", "next_response") and ticket.status in lifecycle.AWAITING_ANSWER:
            if step == "reminder":
                return _remind(desk, ticket, kind)
            return _escalate(desk, ticket, kind, due.fire_at, now)
        if kind == "auto_close" and ticket.status == "resolved":
            _close(desk, ticket, now)
        return []
    return fire


def flusher(desk: Desk):
    def flush(alerts: list[Alert], now: dt.datetime) -> None:
        grouped: dict[tuple[str, str], list[Alert]] = defaultdict(list)
        for alert in alerts:
            grouped[(alert.member.address, alert.event)].append(alert)
        for group in grouped.values():
            if len(group) == 1:
                _tell(desk, group[0])
            else:
                _tell_many(desk, group)
    return flush


def _remind(desk: Desk, ticket: TicketRow, kind: str) -> list[Alert]:
    due_at = _pending_deadline(ticket.id, kind)
    staff = desk.config.staff
    targets = [s for s in staff if s.address == ticket.assignee] or \
        [s for s in staff if s.role == "agent"] or list(staff)
    context = {"deadline": kind, "due_at": _moment(due_at) if due_at else "soon",
               "priority": ticket.priority}
    return [Alert("reminder", "staff", member, ticket, context) for member in targets]


def _escalate(desk: Desk, ticket: TicketRow, kind: str, due_at: dt.datetime,
              now: dt.datetime) -> list[Alert]:
    priority = lifecycle.raised(ticket.priority)
    lifecycle.update(ticket.id, overdue=True, priority=priority, updated_at=now)
    ticket.priority = priority
    context = {"deadline": kind, "due_at": _moment(due_at), "late_by": str(now - due_at).split(".")[0],
               "assignee": ticket.assignee or "nobody", "priority": priority}
    admins = [s for s in desk.config.staff if s.role == "admin"] or list(desk.config.staff)
    return [Alert("escalation", "admin", member, ticket, context) for member in admins]


def _close(desk: Desk, ticket: TicketRow, now: dt.datetime) -> None:
    lifecycle.update(ticket.id, status="closed", closed_at=now, updated_at=now)
    ticket.status = "closed"
    person = desk._person(ticket.id, ticket.requester, "", "requester")
    desk._queue(desk.config.mailbox(ticket.mailbox), "closed", ticket.view(), person, None,
                {"auto_close": format_duration(desk.config.tickets.auto_close)})


def _tell(desk: Desk, alert: Alert) -> None:
    member, ticket = alert.member, alert.ticket
    person = desk._person(ticket.id, member.address, member.name, "staff")
    desk._queue(desk.config.mailbox(ticket.mailbox), alert.event, ticket.view(), person, None,
                alert.context, audience=alert.audience, auto="auto-generated")


def _tell_many(desk: Desk, alerts: list[Alert]) -> None:
    """One mail listing several tickets; each keeps its [T-n] so staff can answer by subject."""
    first = alerts[0]
    tickets = [{"id": label(a.ticket.id), "subject": a.ticket.subject, **a.context} for a in alerts]
    mailbox = desk.config.mailbox(first.ticket.mailbox)
    context = {"helpdesk_name": desk.config.helpdesk.name, "recipient_name": first.member.name,
               "tickets": tickets}
    desk.notifiers[mailbox.name].queue(Notice(
        event=f"{first.event}s", audience=first.audience, recipient=first.member.address,
        recipient_name=first.member.name, context=context, auto="auto-generated"))


def _pending_deadline(ticket_id: int, kind: str) -> dt.datetime | None:
    rows = statements.select(Timer, ["fire_at"], {"subject": "ticket", "subject_id": ticket_id,
                                                  "kind": kind, "status": "pending"})
    return Timer.fire_at.python_value(rows[0][0]) if rows else None


def _moment(moment: dt.datetime) -> str:
    return to_utc(moment).strftime("%Y-%m-%d %H:%M UTC")
