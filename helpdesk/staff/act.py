"""Staff at work on a ticket, from their mail client or the command line.

A staff reply is parsed into a ``commands.Plan``; ``act`` applies it in the
caller's transaction: commands first, then the note, then the answer relayed
to the customer from the support address under the agent's name (the agent's
own address never reaches the customer). A plan that fails to parse is
answered to the sender and nothing is applied.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from helpdesk.clock import naive_utc
from helpdesk.config.settings import Mailbox, StaffMember
from helpdesk.errors import NotFound, UserError
from helpdesk.mail.parse import InboundMail
from helpdesk.mail.quotes import strip_reply
from helpdesk.routing import Applied
from helpdesk.staff import bounced, commands
from helpdesk.staff.commands import CommandError, Plan, StaffCommand
from helpdesk.store import tickets
from helpdesk.store.db import write_transaction
from helpdesk.store.tickets import TicketRow
from helpdesk.tickets import holds, lifecycle
from helpdesk.tickets.desk import Desk, Person, TicketView, label
from helpdesk.tickets.route import StaffReply

CUSTOMER_ROLES = ("requester", "cc")


def staff_reply(desk: Desk, route: StaffReply, mail: InboundMail, stored, raw_id: int,
                mailbox: Mailbox) -> Applied:
    member = desk.config.staff_member(mail.from_addr)
    ticket = read_ticket(route.ticket_id)
    if route.proof is None and holds.confirmed(raw_id) is None:
        # a claimed agent: nothing applied, relayed or answered; the real one is asked (docs/trust.md)
        person = desk.person(ticket.id, member.address, member.name, "staff")
        return holds.hold(desk, ticket.id, person, "staff", mail, stored, raw_id, mailbox)
    try:
        plan = commands.parse(strip_reply(mail.text, strict=True), member.role,
                              staff_directory(desk.config.staff), me=member.address)
        if not (plan.text or plan.commands or plan.note or _relayable(stored)):
            raise CommandError("your reply has no new text above the quoted mail; nothing was sent")
        check_allowed(ticket, plan, files=bool(_relayable(stored)))
    except CommandError as exc:
        person = desk.person(ticket.id, member.address, member.name, "staff")
        desk.queue(mailbox, "command_error", TicketView.of(ticket), person, mail,
                    {"error": str(exc), "help": commands.HELP}, audience="staff")
        return Applied("command_error", ticket.id, str(exc))
    act(desk, ticket, member, plan, mailbox, mail=mail, stored=stored, raw_id=raw_id)
    return Applied("staff_reply", ticket.id, _describe(plan))


def check_allowed(ticket: TicketRow, plan: Plan, files: bool = False) -> None:
    """What the ticket's status allows; CommandError explains what is not."""
    where = f"{label(ticket.id)} is {ticket.status.replace('_', ' ')}"
    if plan.has("close") and ticket.status in ("resolved", "closed"):
        raise CommandError(f"#close: {where} already")
    if plan.has("reopen") and ticket.status not in ("resolved", "closed"):
        raise CommandError(f"#reopen: {where}, not resolved or closed")
    if _answers(plan, files) and ticket.status == "closed" and not plan.has("reopen"):
        raise CommandError(f"{where}: start with #reopen to answer the customer on it; nothing was sent")


def act(desk: Desk, ticket: TicketRow, member: StaffMember, plan: Plan, mailbox: Mailbox,
        mail: InboundMail | None = None, stored=(), raw_id: int | None = None) -> None:
    """Apply a plan: the ticket's new state, its timers, the note and the relayed answer."""
    now = naive_utc(desk.clock.now())
    changes = _apply_commands(desk, ticket, member, plan, now)
    if plan.note:
        _record(ticket.id, member, "note", plan.note, now, raw_id, mail)
    if _answers(plan, bool(_relayable(stored))):   # text, or files alone (a screenshot)
        _record(ticket.id, member, "out", plan.text, now, raw_id, mail)
        _relay(desk, ticket, member, plan.text, mailbox, stored, mail)
        lifecycle.answered(ticket.id)
        changes.update(first_response_at=ticket.first_response_at or now, overdue=False)
        changes.setdefault("assignee", ticket.assignee or member.address)
        if not plan.has("close"):
            changes["status"] = "waiting_on_customer"
    elif plan.actions - {"status", "help"} and ticket.status == "new" and "status" not in changes:
        changes["status"] = "open"
    if plan.commands:
        applied = ", ".join(_show(c) for c in plan.commands if c.name not in ("note", "help", "status"))
        if applied:
            _record(ticket.id, member, "event", applied, now, None, None)
    for key, value in changes.items():
        setattr(ticket, key, value)
    tickets.update(ticket.id, updated_at=now, **changes)
    person = None
    for name in ("status", "help"):
        if plan.has(name):
            person = person or desk.person(ticket.id, member.address, member.name, "staff")
            desk.queue(mailbox, f"ticket_{name}" if name == "status" else "help", TicketView.of(ticket),
                        person, mail, _summary(ticket) | {"help": commands.HELP}, audience="staff")


def _apply_commands(desk: Desk, ticket: TicketRow, member: StaffMember, plan: Plan,
                    now: dt.datetime) -> dict:
    settings = desk.config.tickets
    changes: dict = {}
    for command in plan.commands:
        if command.name == "close":
            lifecycle.resolved(ticket.id, now, settings)
            changes.update(status="resolved", resolved_at=now, overdue=False)
        elif command.name == "reopen":
            lifecycle.reopened(ticket.id, now, settings)
            changes.update(status="open", resolved_at=None, closed_at=None, overdue=False)
        elif command.name == "assign":
            changes["assignee"] = member.address if command.argument == "me" else command.argument
        elif command.name == "priority":
            changes["priority"] = command.argument
    return changes


def _relay(desk: Desk, ticket: TicketRow, member: StaffMember, text: str, mailbox: Mailbox,
           stored, mail: InboundMail | None) -> None:
    """The answer goes to every customer-side participant, each with their own reply address."""
    last = tickets.last_inbound_message_id(ticket.id)
    answering = _Answering(last) if last else None
    context = {"text": text, "agent_name": member.name,
               "attachments": [{"filename": a.filename, "size": a.size} for a in stored if not a.refused]}
    files = tuple((a.filename, a.content_type, str(desk.attachments.path_for(a.sha256)))
                  for a in _relayable(stored))
    people = tickets.participants(ticket.id, CUSTOMER_ROLES)
    for pid, address, name in people:
        desk.queue(mailbox, "agent_reply", TicketView.of(ticket), Person(pid, address, name), answering, context,
                    sender_name=f"{member.name} — {desk.config.helpdesk.name}", auto=None,
                    attachments=files)
    bounced.warn(desk, ticket, member, mailbox, mail, [address for _, address, _ in people])


@dataclass(frozen=True)
class _Answering:
    """Threading headers for the relayed answer: it replies to the customer's last mail."""

    message_id: str
    references: tuple[str, ...] = ()


def _relayable(stored) -> list:
    return [a for a in stored if not a.refused and a.sha256]


def _answers(plan: Plan, files: bool) -> bool:
    """Something for the customer: text, or files sent without a note."""
    return bool(plan.text) or (files and plan.note is None)


def _record(ticket_id: int, member: StaffMember, direction: str, body: str, now: dt.datetime,
            raw_id: int | None, mail: InboundMail | None) -> None:
    """The mail's Message-IDs are kept too: whoever answers the staff mail itself still threads here."""
    tickets.add_message(
        ticket_id, now, raw_id=raw_id, direction=direction, sender=member.address,
        recipients="", subject=mail.subject if mail else "", body=body,
        full_text=mail.text if mail else body, message_id=mail.message_id if mail else None,
        auto=False, thread_ids=mail.thread_ids if mail else ())


SERVER = StaffMember(address="command-line", name="Administrator", role="admin")


def from_command_line(desk: Desk, ticket_id: int, member: StaffMember, plan: Plan) -> TicketRow:
    """``helpdesk reply/close/assign``: the same path as a staff mail, one transaction."""
    with write_transaction():
        ticket = read_ticket(ticket_id)
        try:
            check_allowed(ticket, plan)
        except CommandError as exc:
            raise UserError(str(exc)) from None
        act(desk, ticket, member, plan, desk.config.mailbox_or_default(ticket.mailbox))
    return ticket


def find_member(config, who: str) -> StaffMember:
    """A staff member by address or name; NotFound names the configured ones."""
    address = staff_directory(config.staff).get(" ".join(who.lower().split()))
    if address is None:
        names = ", ".join(f"{m.name} <{m.address}>" for m in config.staff) or "none"
        raise NotFound(f"no staff member {who!r} in {config.path.name} (staff: {names})")
    return config.staff_member(address)


def read_ticket(ticket_id: int) -> TicketRow:
    """A ticket to act on; NotFound for an unknown number (or a dispute's chat)."""
    ticket = tickets.read(ticket_id)
    if ticket is None:
        raise NotFound(f"no ticket {label(ticket_id)}")
    return ticket


def staff_directory(staff) -> dict[str, str]:
    """Addresses and lower-cased names → address, for ``#assign <agent>``."""
    found = {}
    for member in staff:
        found[" ".join(member.name.lower().split())] = member.address
        found[member.address] = member.address
    return found


def _summary(ticket: TicketRow) -> dict:
    return {"summary": {"status": ticket.status, "priority": ticket.priority,
                        "assignee": ticket.assignee or "nobody", "requester": ticket.requester}}


def _show(command: StaffCommand) -> str:
    return f"#{command.name}" + (f" {command.argument}" if command.argument else "")


def _describe(plan: Plan) -> str:
    parts = [_show(c) for c in plan.commands]
    if plan.text:
        parts.append("answer relayed")
    return ", ".join(parts) or "empty reply"
