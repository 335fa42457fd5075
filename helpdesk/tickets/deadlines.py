"""What a ticket's timer does when it fires: remind, escalate, or close.

Runs inside the transaction that claimed the timer (``runtime.tick``). The
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

from helpdesk.clock import to_utc
from helpdesk.config.settings import StaffMember
from helpdesk.outbound.notify import Notice
from helpdesk.store import tickets, timers
from helpdesk.store.tickets import TicketRow
from helpdesk.store.timers import Due
from helpdesk.tickets import lifecycle
from helpdesk.tickets.desk import Desk, TicketView, label
from helpdesk.units import format_duration

LIST_LIMIT = 50   # tickets named in one list mail; the rest are counted ("and 450 more")


@dataclass(frozen=True)
class Alert:
    event: str              # "reminder" | "escalation"
    audience: str           # "staff" | "admin"
    member: StaffMember
    ticket: TicketRow
    context: dict


class Handler:
    """The ticket timers' handler; ``prefetch`` reads a chunk's tickets in one query."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.tickets: dict[int, TicketRow] = {}

    def prefetch(self, dues: list[Due]) -> None:
        self.tickets = tickets.read_many(d.subject_id for d in dues)

    def __call__(self, due: Due, now: dt.datetime) -> list[Alert]:
        ticket = self.tickets.get(due.subject_id) or tickets.read(due.subject_id)
        if ticket is None:
            return []
        kind, _, step = due.kind.partition(".")
        if kind in ("first_response", "next_response") and ticket.status in lifecycle.AWAITING_ANSWER:
            if step == "reminder":
                return _remind(self.desk, ticket, kind)
            return _escalate(self.desk, ticket, kind, due.fire_at, now)
        if kind == "auto_close" and ticket.status == "resolved":
            _close(self.desk, ticket, now)
        return []


def handler(desk: Desk) -> Handler:
    return Handler(desk)


def flusher(desk: Desk):
    def flush(alerts: list[Alert], now: dt.datetime) -> None:
        escalated = {a.ticket.id: a.ticket.priority for a in alerts if a.event == "escalation"}
        tickets.mark_overdue(escalated, now)
        # a backlog brings a reminder and its missed deadline together: the escalation says it all
        alerts = [a for a in alerts if not (a.event == "reminder" and a.ticket.id in escalated)]
        _fill_deadlines([a for a in alerts if a.context["due_at"] is None])
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
    staff = desk.config.staff
    targets = [s for s in staff if s.address == ticket.assignee] or \
        [s for s in staff if s.role == "agent"] or list(staff)
    context = {"deadline": kind, "due_at": None, "priority": ticket.priority}   # due_at: see flush
    return [Alert("reminder", "staff", member, ticket, context) for member in targets]


def _escalate(desk: Desk, ticket: TicketRow, kind: str, due_at: dt.datetime,
              now: dt.datetime) -> list[Alert]:
    priority = lifecycle.raised(ticket.priority)
    ticket.priority = priority      # written for the whole chunk at once by flush()
    context = {"deadline": kind, "due_at": _moment(due_at), "late_by": str(now - due_at).split(".")[0],
               "assignee": ticket.assignee or "nobody", "priority": priority}
    admins = [s for s in desk.config.staff if s.role == "admin"] or list(desk.config.staff)
    return [Alert("escalation", "admin", member, ticket, context) for member in admins]


def _close(desk: Desk, ticket: TicketRow, now: dt.datetime) -> None:
    tickets.update(ticket.id, status="closed", closed_at=now, updated_at=now)
    ticket.status = "closed"
    person = desk.person(ticket.id, ticket.requester, "", "requester")
    desk.queue(desk.config.mailbox_or_default(ticket.mailbox), "closed", TicketView.of(ticket), person, None,
                {"auto_close": format_duration(desk.config.tickets.auto_close)}, auto="auto-generated")


def _tell(desk: Desk, alert: Alert) -> None:
    member, ticket = alert.member, alert.ticket
    person = desk.person(ticket.id, member.address, member.name, "staff")
    desk.queue(desk.config.mailbox_or_default(ticket.mailbox), alert.event, TicketView.of(ticket), person, None,
                alert.context, audience=alert.audience, auto="auto-generated")


def _tell_many(desk: Desk, alerts: list[Alert]) -> None:
    """One mail listing several tickets; each keeps its [T-n] so staff can answer by subject."""
    first = alerts[0]
    listed = [{"id": label(a.ticket.id), "subject": a.ticket.subject, **a.context}
              for a in alerts[:LIST_LIMIT]]
    mailbox = desk.config.mailbox_or_default(first.ticket.mailbox)
    context = {"helpdesk_name": desk.config.helpdesk.name, "recipient_name": first.member.name,
               "tickets": listed, "total": len(alerts), "more": max(0, len(alerts) - LIST_LIMIT)}
    desk.notifiers[mailbox.name].queue(Notice(
        event=f"{first.event}s", audience=first.audience, recipient=first.member.address,
        recipient_name=first.member.name, context=context, auto="auto-generated"))


def _fill_deadlines(reminders: list[Alert]) -> None:
    """The deadline each reminder announces, for the whole chunk in one query.
    (The alerts of one ticket share one context: each is filled once.)"""
    contexts = {id(a.context): (a.ticket.id, a.context) for a in reminders}
    found = timers.latest("ticket", (ticket_id for ticket_id, _ in contexts.values()),
                          ("first_response", "next_response"))
    for ticket_id, context in contexts.values():
        due_at = found.get((ticket_id, context["deadline"]))
        context["due_at"] = _moment(due_at) if due_at else "soon"


def _moment(moment: dt.datetime) -> str:
    return to_utc(moment).strftime("%Y-%m-%d %H:%M UTC")
