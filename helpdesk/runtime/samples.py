"""A sample context for every template the helpdesk renders: what ``helpdesk check`` renders them with.

Each context has exactly the variables the code passes for that event
(``templates/README.md`` lists them), with plausible values, lists of two so
loops run, and optional values set, so an edited template that uses a
variable the code never passes fails the check (``StrictUndefined``) instead
of a customer's mail. Where the code has a function that builds the
variables (a ticket's, the digest's), it is called here, so the samples
follow it; ``tests/runtime/test_samples.py`` compares the rest with the
contexts real conversations produce.
"""

from __future__ import annotations

import datetime as dt

from helpdesk.clock import UTC
from helpdesk.config.settings import Config
from helpdesk.disputes.strangers import FIELDS_HELP
from helpdesk.reports import digest
from helpdesk.staff.commands import HELP
from helpdesk.tickets.desk import TicketView

NAME = "Difmark Support"
FILES = [{"filename": "screenshot.png", "size": 48213, "content_type": "image/png", "refused": None},
         {"filename": "setup.exe", "size": 9_000_000, "content_type": "application/octet-stream",
          "refused": "not accepted: executable files"}]


def contexts(config: Config) -> dict[tuple[str, str], dict]:
    """(audience, event) -> its sample context."""
    found = {**_ticket_mail(), **_staff_mail(), **_dispute_mail(), **_stranger_mail()}
    found[("admin", "digest")] = _digest(config)
    return found


def _person(address: str, name: str) -> dict:
    return {"helpdesk_name": NAME, "recipient": address, "recipient_name": name}


def _held(subject: str) -> dict:
    """What a confirmation mail quotes of the held mail (tickets/holds.quote)."""
    return {"held_subject": subject, "held_from": "alice@shop.example", "held_at": "2026-12-01 09:00 UTC",
            "held_commands": ["#close", "#priority low"],
            "held_text": "#close\n#priority low\nConfirm your card at hxxps://verify[.]evil[.]example"}


def _held_list(address: str, name: str, thread: str) -> dict:
    """The combined mail past the confirmation cap (tickets/held_mail)."""
    one = {"thread": thread, "confirm_address": "support+c.1.2.sig@shop.example", **_held(f"Re: [{thread}] x")}
    return {**_person(address, name), "holds": [one, one], "more": 3, "confirm_within": "3 days"}


def _about_ticket(address: str = "bob@example.com", name: str = "Bob Buyer") -> dict:
    ticket = TicketView(42, "My key does not work", "open", "bob@example.com")
    return {**_person(address, name), "ticket": ticket.context()}


def _ticket_mail() -> dict:
    customer = _about_ticket()
    return {
        ("customer", "ack"): {**customer, "first_response": "4 hours", "text": "Hello,\nmy key is rejected.",
                              "attachments": FILES[:1], "refused": FILES[1:]},
        ("customer", "attachments_refused"): {**customer, "refused": FILES[1:]},
        ("customer", "agent_reply"): {**customer, "text": "Here is a new key.", "agent_name": "Alice",
                                      "attachments": [{"filename": "key.txt", "size": 64}] * 2},
        ("customer", "closed"): {**customer, "auto_close": "7 days"},
        ("customer", "status"): {
            "helpdesk_name": NAME, "recipient_name": "Bob Buyer",
            "tickets": [{"id": "T-42", "subject": "My key does not work", "status": "open",
                         "created_at": "2026-11-26"}] * 2,
            "disputes": [{"id": "D-7", "order": "100234", "status": "negotiation", "role": "buyer"}] * 2},
    }


def _staff_mail() -> dict:
    staff = _about_ticket("alice@shop.example", "Alice")
    summary = {"summary": {"status": "open", "priority": "high", "assignee": "alice@shop.example",
                           "requester": "bob@example.com"}, "help": HELP}
    reminder = {"deadline": "first_response", "due_at": "2026-11-26 13:00 UTC", "priority": "normal"}
    escalation = {"deadline": "first_response", "due_at": "2026-11-26 13:00 UTC", "late_by": "1:00:00",
                  "assignee": "nobody", "priority": "high"}
    listed = {"helpdesk_name": NAME, "recipient_name": "Alice", "total": 53, "more": 51}
    return {
        ("staff", "new_ticket"): {**staff, "text": "Hello,\nmy key is rejected.", "attachments": FILES,
                                  "requester": "bob@example.com", "requester_name": "Bob Buyer",
                                  "reply_to": "bob.private@example.org"},
        ("staff", "command_error"): {**staff, "error": "#priority: expected one of low, normal, high, urgent",
                                     "help": HELP},
        ("staff", "confirm_hold"): {**_person("alice@shop.example", "Alice"), "thread": "T-42",
                                    "confirm_within": "3 days", **_held("Re: [T-42] My key does not work")},
        ("staff", "confirm_holds"): _held_list("alice@shop.example", "Alice", "T-42"),
        ("staff", "help"): {**staff, **summary},
        ("staff", "ticket_status"): {**staff, **summary},
        ("staff", "reminder"): {**staff, **reminder},
        ("admin", "escalation"): {**_about_ticket("carol@shop.example", "Carol"), **escalation},
        ("staff", "reminders"): {**listed, "tickets": [
            {"id": "T-42", "subject": "My key does not work", **reminder}] * 2},
        ("admin", "escalations"): {**listed, "recipient_name": "Carol", "tickets": [
            {"id": "T-42", "subject": "My key does not work", **escalation}] * 2},
        ("staff", "reply_bounced"): {**staff, "bounces": [
            {"address": "bob@example.com", "status": "5.1.1", "diagnostic": "550 5.1.1 no such user",
             "at": "2026-11-26 09:00 UTC", "until": "2026-12-03 09:00 UTC"}] * 2},
        ("admin", "delivery_failed"): {**_person("carol@shop.example", "Carol"), "total": 53, "more": 51,
                                       "failed": [_failed_mail()] * 2},
    }


def _failed_mail() -> dict:
    return {"id": 17, "kind": "ack", "recipient": "bob@example.com", "subject": "[T-42] My key does not work",
            "ticket": "T-42", "attempts": 12, "queued_at": "2026-11-21 09:00 UTC",
            "failed_at": "2026-11-26 09:00 UTC", "last_error": "451 4.3.0 try again later"}


def _dispute(status: str = "negotiation") -> dict:
    return {"id": "D-7", "number": 7, "order": "100234", "product": "Game key", "amount": "19.99",
            "currency": "EUR", "reason": "key does not work", "description": "The key is rejected.",
            "status": status, "status_text": "buyer and seller are looking for a solution",
            "created": "Thursday 26 November 2026, 09:00 UTC", "seller_due": "Saturday 28 November 2026, 09:00 UTC",
            "window_closes": "Tuesday 01 December 2026, 09:00 UTC", "admin_due": "-",
            "decided_for": "buyer", "decision": "refund", "seller_late": False}


def _deadline() -> dict:
    return {"kind": "window_close", "what": "the negotiation window closes",
            "at": "Tuesday 01 December 2026, 09:00 UTC"}


def _participant(role: str) -> dict:
    """What ``DisputeDesk._context`` gives every mail to a party, with something happened."""
    proposal = {"number": 1, "author": "seller", "text": "a new key"}
    return {
        **_person(f"{role}@example.com", role.title()), "role": role, "dispute": _dispute(),
        "deadline": _deadline(),
        "commands": [{"command": "propose", "usage": "#propose <your solution>", "does": "offer a solution"}] * 2,
        "address": "disputes@shop.example",
        "durations": {"seller_response": "2 days", "negotiation": "3 days", "admin_after": "3 days"},
        "event": "proposed", "by": "seller", "who": "the seller", "offer": proposal, "accepted": proposal,
        "text": "I can send a new key.",
        "attachments": [{**f, "withheld": ""} for f in FILES] + [
            {"filename": "card.vcf", "size": 310, "content_type": "text/vcard", "refused": None,
             "withheld": "it carries its sender's address"}],
        "passed_on": True, "empty": False}


def _dispute_mail() -> dict:
    found = {}
    for role in ("buyer", "seller", "admin"):
        base = _participant(role)
        for event in ("dispute_message", "dispute_update", "dispute_help"):
            found[(role, event)] = base
        found[(role, "dispute_command_refused")] = {**base, "command": "#escalate",
                                                    "why": "the negotiation window is still open",
                                                    "when": "after Tuesday 01 December 2026, 09:00 UTC"}
        found[(role, "confirm_hold")] = {**_person(f"{role}@example.com", role.title()), "thread": "D-7",
                                         "confirm_within": "3 days", **_held("Re: [D-7] Order 100234")}
        found[(role, "confirm_holds")] = _held_list(f"{role}@example.com", role.title(), "D-7")
    found[("buyer", "dispute_opened")] = _participant("buyer")
    found[("seller", "dispute_opened")] = _participant("seller")
    found[("seller", "dispute_reminder")] = {**_participant("seller"), "left": "6 hours"}
    found[("admin", "dispute_seller_missed")] = _participant("admin")
    found[("admin", "dispute_review")] = {
        **_participant("admin"),
        "chat": [{"at": "Thursday 26 November 2026, 09:00 UTC", "role": "buyer", "text": "The key is rejected.",
                  "attachments": _participant("admin")["attachments"]}] * 2,
        "proposals": [{"number": 1, "author": "seller", "text": "a new key", "accepted": False}] * 2}
    return found


def _stranger_mail() -> dict:
    """Replies to whoever writes to the disputes address (``disputes.strangers.answer``)."""
    base = {**_person("bob@example.com", "Bob Buyer"), "address": "disputes@shop.example", "fields": FIELDS_HELP}
    return {
        ("buyer", "dispute_refused"): {
            **base, "problem": "bad_request", "order": "100234",
            "reasons": ["not received", "key does not work"], "reason_given": "broken",
            "problems": ["no_order", "no_reason", "bad_reason", "no_description"],
            "existing": {"id": "D-7", "status": "negotiation", "status_text": "negotiating"}},
        ("buyer", "dispute_not_yours"): {**base, "dispute_id": "D-7"},
        ("buyer", "dispute_status"): {**base, "disputes": [
            {**_dispute(), "role": "buyer", "deadline": _deadline()}] * 2},
    }


def _digest(config: Config) -> dict:
    """The digest's variables from ``reports.digest.context`` itself, on sample figures."""
    end = dt.datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    period = digest.Period("daily:2026-12-01", end - dt.timedelta(days=1), end,
                           end - dt.timedelta(days=2), "UTC")
    count = digest.StatusCount
    sample = digest.Digest(
        period=period, generated_at=end, new_tickets=12,
        open_by_status=(count("new", 3), count("open", 5), count("waiting_on_customer", 2)),
        responses=digest.ResponseStats(dt.timedelta(hours=4), 9, 8, dt.timedelta(minutes=80),
                                       dt.timedelta(hours=3), 1),
        overdue=(digest.OverdueTicket(42, "My key does not work", "open", "high", "alice@shop.example",
                                      "Alice", end - dt.timedelta(days=3), dt.timedelta(days=3)),
                 digest.OverdueTicket(43, "Refund", "new", "normal", None, "unassigned",
                                      end - dt.timedelta(hours=9), dt.timedelta(hours=9))),
        overdue_total=5,
        assignees=(digest.AssigneeLoad(None, "unassigned", 3, (count("new", 3),)),
                   digest.AssigneeLoad("alice@shop.example", "Alice", 7, (count("open", 5),
                                                                          count("waiting_on_customer", 2)))),
        quarantined=1, quarantine_waiting=2, bounced=1,
        disputes=(count("negotiation", 2), count("admin_review", 1)),
        failed=2, failed_waiting=3,
        failed_oldest=(digest.FailedMail(17, "ack", "bob@example.com", "T-42", end - dt.timedelta(days=2),
                                         "451 4.3.0 try again later"),
                       digest.FailedMail(18, "digest", "carol@shop.example", None, None, "")))
    return {**digest.context(sample, config), "recipient": "carol@shop.example", "recipient_name": "Carol"}
