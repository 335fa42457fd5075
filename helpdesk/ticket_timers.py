"""What a ticket's timer does when it fires: remind, escalate, or close.

Runs inside the transaction that claimed the timer (``deadlines.tick``). The
ticket's status is checked again: a timer whose reason has passed (an answered
ticket, a reopened one) does nothing, even if it was not cancelled in time.
"""

from __future__ import annotations

import datetime as dt

from helpdesk import lifecycle, statements
from helpdesk.clock import to_utc
from helpdesk.config import format_duration
from helpdesk.errors import NotFound
from helpdesk.models import Timer
from helpdesk.staff import TicketRow, read_ticket
from helpdesk.tickets import Desk, Person
from helpdesk.timers import Due


def handler(desk: Desk):
    def fire(due: Due, now: dt.datetime) -> None:
        try:
            ticket = read_ticket(due.subject_id)
        except NotFound:
            return
        kind, _, step = due.kind.partition(".")
        if kind in ("first_response", "next_response") and ticket.status in lifecycle.AWAITING_ANSWER:
            if step == "reminder":
                _remind(desk, ticket, kind, now)
            else:
                _escalate(desk, ticket, kind, due.fire_at, now)
        elif kind == "auto_close" and ticket.status == "resolved":
            _close(desk, ticket, now)
    return fire


def _remind(desk: Desk, ticket: TicketRow, kind: str, now: dt.datetime) -> None:
    due_at = _pending_deadline(ticket.id, kind)
    staff = desk.config.staff
    targets = [s for s in staff if s.address == ticket.assignee] or \
        [s for s in staff if s.role == "agent"] or list(staff)
    context = {"deadline": kind, "due_at": _moment(due_at) if due_at else "soon"}
    for member in targets:
        _tell(desk, ticket, member, "reminder", context)


def _escalate(desk: Desk, ticket: TicketRow, kind: str, due_at: dt.datetime, now: dt.datetime) -> None:
    priority = lifecycle.raised(ticket.priority)
    lifecycle.update(ticket.id, overdue=True, priority=priority, updated_at=now)
    ticket.priority = priority
    context = {"deadline": kind, "due_at": _moment(due_at), "late_by": str(now - due_at).split(".")[0],
               "assignee": ticket.assignee or "nobody"}
    admins = [s for s in desk.config.staff if s.role == "admin"] or list(desk.config.staff)
    for member in admins:
        _tell(desk, ticket, member, "escalation", context, audience="admin")


def _close(desk: Desk, ticket: TicketRow, now: dt.datetime) -> None:
    lifecycle.update(ticket.id, status="closed", closed_at=now, updated_at=now)
    ticket.status = "closed"
    person = desk._person(ticket.id, ticket.requester, "", "requester")
    desk._queue(desk.config.mailbox(ticket.mailbox), "closed", ticket.view(), person, None,
                {"auto_close": format_duration(desk.config.tickets.auto_close)})


def _tell(desk: Desk, ticket: TicketRow, member, event: str, context: dict, audience: str = "staff") -> None:
    person: Person = desk._person(ticket.id, member.address, member.name, "staff")
    desk._queue(desk.config.mailbox(ticket.mailbox), event, ticket.view(), person, None,
                {**context, "priority": ticket.priority}, audience=audience, auto="auto-generated")


def _pending_deadline(ticket_id: int, kind: str) -> dt.datetime | None:
    rows = statements.select(Timer, ["fire_at"], {"subject": "ticket", "subject_id": ticket_id,
                                                  "kind": kind, "status": "pending"})
    return Timer.fire_at.python_value(rows[0][0]) if rows else None


def _moment(moment: dt.datetime) -> str:
    return to_utc(moment).strftime("%Y-%m-%d %H:%M UTC")
