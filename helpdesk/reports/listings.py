"""The read side for the command line: tickets, disputes and quarantine as plain dicts.

Each listing is a fixed number of queries whatever its length (message counts
come from one grouped query), so ``tickets`` stays fast on a large database.
"""

from __future__ import annotations

import datetime as dt
import re

from helpdesk.clock import to_utc
from helpdesk.disputes import rules as dispute_rules
from helpdesk.errors import NotFound, UserError
from helpdesk.store import bounces, orders, timers
from helpdesk.store import listings as rows
from helpdesk.store.disputes import DisputeRow
from helpdesk.store.listings import MessageRow, SentRow, TicketListing

_TICKET_ID = re.compile(r"^(?:T-?)?(\d{1,12})$", re.IGNORECASE)
MAX_ID = 2**31 - 1   # ids are 32-bit on PostgreSQL; larger ones name nothing


def ticket_number(text: str) -> int:
    match = _TICKET_ID.match(text.strip())
    if match is None:
        raise UserError(f"not a ticket id: {text!r} (expected e.g. T-42)")
    return int(match.group(1))


def list_tickets(status: str | None = None) -> list[dict]:
    tickets = rows.tickets(status)     # not disputes' chats
    counts = rows.message_counts([t.id for t in tickets])
    return [_ticket_summary(t, counts.get(t.id, 0)) for t in tickets]


def ticket_detail(text: str, now: dt.datetime | None = None, held_for: dt.timedelta | None = None) -> dict:
    """One ticket; ``now`` and ``held_for`` (``[limits] bounce_suppression``) say until when
    automatic mail to an address that bounced is held back."""
    number = ticket_number(text)
    ticket = rows.ticket(number) if number <= MAX_ID else None
    if ticket is None:
        raise NotFound(f"no ticket T-{number}")
    if ticket.kind == "dispute":
        found = rows.dispute_of_chat(number)
        raise NotFound(f"no ticket T-{number}" + (f" (it is the chat of D-{found}: "
                                                  f"helpdesk show D-{found})" if found else ""))
    messages = rows.messages(number)
    sent = rows.sent(number)
    files = _attachments([m.id for m in messages])
    detail = _ticket_summary(ticket, len(messages))
    # an agent's answer is a message of its own (direction "out"); its relayed copies are in "outbox"
    conversation = ([_message(m, files.get(m.id, [])) for m in messages]
                    + [_sent(o) for o in sent if o.kind != "agent_reply"])
    detail["messages"] = sorted(conversation, key=lambda m: m["created_at"] or "")
    detail["outbox"] = [_outgoing(o) for o in sent]
    detail["bounces"] = bounced(number, now, held_for)
    return detail


def bounced(ticket_id: int, now: dt.datetime | None, held_for: dt.timedelta | None) -> list[dict]:
    """The bounces the ticket met (its own, and its customers' addresses'), newest first:
    ``held_until`` is when automatic mail to the address goes again, if it is held back now."""
    found = []
    for b in bounces.of_ticket(ticket_id):
        until = b.at + held_for if b.hard and held_for and now is not None else None
        found.append({"address": b.address, "status": b.status, "hard": b.hard, "diagnostic": b.diagnostic,
                      "at": _iso(b.at), "held_until": _iso(until) if until and until > now else None})
    return found


def bounce_lines(found: list[dict]) -> list[str]:
    """``helpdesk show``'s lines for the bounces, under the requester."""
    lines = []
    for b in found:
        held = f"; automatic mail held back until {b['held_until']}" if b["held_until"] else ""
        lines.append(f"bounced: {b['address']} {b['status'] or '(no status)'} at {b['at']}{held}"
                     + (f": {b['diagnostic']}" if b["diagnostic"] else ""))
    return lines


def quarantined() -> list[dict]:
    return [{"id": r.id, "mailbox": r.mailbox, "source": r.source, "reason": r.reason,
             "received_at": _iso(r.received_at), "message_id": r.message_id, "size": r.size}
            for r in rows.quarantined()]


def quarantine_id(text: str) -> int:
    if not text.strip().isdigit():
        raise UserError(f"not a quarantine id: {text!r} (expected a number from 'helpdesk quarantine')")
    number = int(text)
    status = rows.raw_status(number) if number <= MAX_ID else None
    if status != "quarantined":
        raise NotFound(f"no quarantined message {number}")
    return number


def _attachments(message_ids: list[int]) -> dict[int, list[dict]]:
    found: dict[int, list[dict]] = {}
    for a in rows.files(message_ids):
        found.setdefault(a.message_id, []).append({
            "filename": a.filename, "content_type": a.content_type, "size": a.size,
            "sha256": a.sha256, "inline": a.inline, "refused": a.refused})
    return found


def _ticket_summary(t: TicketListing, messages: int) -> dict:
    return {"id": f"T-{t.id}", "status": t.status, "subject": t.subject, "requester": t.requester,
            "requester_name": t.requester_name, "mailbox": t.mailbox, "priority": t.priority,
            "assignee": t.assignee, "messages": messages, "created_at": _iso(t.created_at),
            "updated_at": _iso(t.updated_at), "first_response_at": _iso(t.first_response_at),
            "overdue": t.overdue, "reply_to_unverified": t.reply_to,
            "follow_up_of": f"T-{t.follow_up_of}" if t.follow_up_of else None}


def _message(m: MessageRow, files: list[dict]) -> dict:
    return {"direction": m.direction, "from": m.sender, "to": m.recipients, "subject": m.subject,
            "body": m.body, "full_text": m.full_text, "message_id": m.message_id, "auto": m.auto,
            "created_at": _iso(m.created_at), "attachments": files,
            "unverified": m.direction == "held"}   # a claimed sender's mail, held (docs/trust.md)


def _sent(o: SentRow) -> dict:
    """Mail we sent, as an entry of the conversation (``direction`` out)."""
    return {"direction": "out", "from": o.envelope_from, "to": o.recipient, "subject": o.subject,
            "body": o.text, "full_text": o.text, "message_id": o.message_id, "auto": o.kind != "reply",
            "created_at": _iso(o.created_at), "attachments": [], "kind": o.kind, "status": o.status}


def _outgoing(o: SentRow) -> dict:
    return {"kind": o.kind, "to": o.recipient, "subject": o.subject, "status": o.status,
            "attempts": o.attempts, "last_error": o.last_error, "message_id": o.message_id,
            "created_at": _iso(o.created_at)}


def _iso(moment) -> str | None:
    return to_utc(moment).isoformat().replace("+00:00", "Z") if moment else None


# --- disputes ------------------------------------------------------------------

_DISPUTE_ID = re.compile(r"^D-?(\d{1,12})$", re.IGNORECASE)


def is_dispute_id(text: str) -> bool:
    return _DISPUTE_ID.match(text.strip()) is not None


def list_disputes(status: str | None = None) -> list[dict]:
    """Every dispute (or those in one status), in a fixed number of queries."""
    disputes = rows.disputes(status)
    products = orders.products([d.order_id for d in disputes])
    counts = rows.message_counts([d.ticket_id for d in disputes])
    return [_dispute_summary(d, products.get(d.order_id, ""), counts.get(d.ticket_id, 0))
            for d in disputes]


def dispute_detail(text: str, now: dt.datetime | None = None, held_for: dt.timedelta | None = None) -> dict:
    """One dispute: its summary, proposals, history, chat and the mail it caused (and the
    bounces, as for a ticket)."""
    match = _DISPUTE_ID.match(text.strip())
    if match is None:
        raise UserError(f"not a dispute id: {text!r} (expected e.g. D-7)")
    number = int(match.group(1))
    dispute = rows.dispute(number) if number <= MAX_ID else None
    if dispute is None:
        raise NotFound(f"no dispute D-{number}")
    messages = rows.messages(dispute.ticket_id)
    sent = rows.sent(dispute.ticket_id)
    roles = rows.roles(dispute.ticket_id)
    files = _attachments([m.id for m in messages])
    detail = _dispute_summary(dispute, orders.products([dispute.order_id]).get(dispute.order_id, ""),
                              len(messages))
    detail.update(_dispute_times(dispute))
    detail["proposals"] = [
        {"number": p.number, "author": p.author, "text": p.text, "created_at": _iso(p.created_at),
         "accepted_at": _iso(p.accepted_at)}
        for p in rows.proposals(number)]
    detail["history"] = [
        {"at": _iso(e.at), "actor": e.actor, "from": e.from_status, "to": e.to_status, "reason": e.reason}
        for e in rows.history(number)]
    chat = [{**_message(m, files.get(m.id, [])), "role": roles.get(m.sender, "")} for m in messages]
    detail["messages"] = sorted(chat + [_sent(o) for o in sent], key=lambda m: m["created_at"] or "")
    detail["outbox"] = [_outgoing(o) for o in sent]
    detail["timers"] = [{"kind": kind, "at": _iso(at)} for kind, at in timers.pending("dispute", number)]
    detail["bounces"] = bounced(dispute.ticket_id, now, held_for)
    return detail


def _dispute_summary(d: DisputeRow, product: str, messages: int) -> dict:
    snap = dispute_rules.Snapshot(d.id, d.status, d.seller_due_at, d.seller_answered_at,
                                  d.window_closes_at, d.admin_due_at)
    due = dispute_rules.next_deadline(snap)
    return {"id": f"D-{d.id}", "status": d.status, "order": d.order_id, "product": product,
            "buyer": d.buyer, "seller": d.seller, "reason": d.reason, "messages": messages,
            "created_at": _iso(d.created_at), "updated_at": _iso(d.updated_at),
            "deadline": {"kind": due[0], "at": _iso(due[1])} if due else None}


def _dispute_times(d: DisputeRow) -> dict:
    return {"description": d.description, "seller_due_at": _iso(d.seller_due_at),
            "seller_answered_at": _iso(d.seller_answered_at), "window_closes_at": _iso(d.window_closes_at),
            "admin_due_at": _iso(d.admin_due_at), "decided_for": d.decided_for, "decision": d.decision}
