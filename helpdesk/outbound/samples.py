"""A sample context for every template event the helpdesk sends, as its code fills it in.

Rendering each event with its sample under ``StrictUndefined`` before any mail is
taken turns a missing template, a syntax error or a misspelt variable (in a shipped
file or in a deployment's ``[helpdesk] templates_dir``) into a start-up error that
names the file, instead of a customer's mail quarantined in the middle of the night.
The keys are the events the code queues; ``templates/README.md`` documents the
variables. Lists hold an item each, so that loop bodies are rendered too.
"""

from __future__ import annotations

_FILE = {"filename": "invoice.pdf", "size": 2048, "content_type": "application/pdf", "refused": None}
_REFUSED = {"filename": "movie.iso", "size": 10**8, "content_type": "application/octet-stream",
            "refused": "larger than the 10 MB limit per attachment"}
_TICKET = {"id": "T-42", "number": 42, "subject": "My key does not work", "status": "open",
           "requester": "bob@example.com"}
_BASE = {"helpdesk_name": "Difmark Support", "recipient": "bob@example.com", "recipient_name": "Bob"}
_HELP = ["#close                 resolve the ticket", "#help                  this list"]
_SUMMARY = {"status": "open", "priority": "normal", "assignee": "nobody", "requester": "bob@example.com"}
_ALERT = {"id": "T-42", "subject": "My key does not work", "deadline": "first_response",
          "due_at": "2026-11-26 13:00 UTC", "priority": "high", "assignee": "nobody", "late_by": "1:00:00"}

_DISPUTE = {"id": "D-7", "number": 7, "order": "100234", "product": "Game key", "amount": "19.99",
            "currency": "EUR", "reason": "key does not work", "description": "The key is rejected.",
            "status": "negotiation", "status_text": "negotiating", "created": "Thursday 26 November 2026",
            "seller_due": "Saturday 28 November 2026, 09:00 UTC", "window_closes": "-", "admin_due": "-",
            "decided_for": "", "decision": "", "seller_late": False}
_DISPUTE_FILE = {**_FILE, "withheld": False}
_PROPOSAL = {"number": 1, "author": "seller", "text": "a new key"}
_PARTICIPANT = {
    **_BASE, "role": "buyer", "dispute": _DISPUTE, "address": "disputes@shop.example",
    "deadline": {"kind": "seller_due", "what": "the seller must answer", "at": "Saturday 28 November 2026"},
    "commands": [{"command": "help", "usage": "#help", "does": "this list"}],
    "durations": {"seller_response": "2 days", "negotiation": "3 days", "admin_after": "3 days"},
    "event": "proposed", "by": "seller", "who": "the seller", "offer": _PROPOSAL, "accepted": None,
    "text": "Here is a new key.", "attachments": [_DISPUTE_FILE], "passed_on": True, "empty": False,
    "command": "#accept 9", "why": "there is no proposal #9", "left": "1 day", "when": "in 6 hours",
    "chat": [{"at": "Thursday 26 November 2026", "role": "buyer", "text": "It is rejected.",
              "attachments": [_DISPUTE_FILE]}],
    "proposals": [{**_PROPOSAL, "accepted": False}],
}
_STRANGER = {
    **_BASE, "address": "disputes@shop.example", "fields": ["the order id"], "reasons": ["other"],
    "reason_given": "lost", "order": "100234", "problem": "no_order", "problems": ["no_order"],
    "existing": {"id": "D-7", "status": "negotiation", "status_text": "negotiating"}, "dispute_id": "D-7",
    "disputes": [{**_DISPUTE, "role": "buyer", "deadline": None}],
}
_DIGEST = {
    **_BASE, "generated_at": "Tue 01 Dec 2026 08:00", "new_tickets": 1, "open_total": 1,
    "period": {"key": "daily:2026-12-01", "start": "Mon 30 Nov 2026 08:00", "end": "Tue 01 Dec 2026 08:00",
               "date": "Tue 01 Dec 2026", "timezone": "UTC", "catch_up": False},
    "open_by_status": [{"status": "open", "label": "open", "count": 1, "width": 100, "bar": "#"}],
    "responses": {"target": "4 hours", "answered": 1, "within_target": 1, "missed_unanswered": 0,
                  "attainment": "100 %", "attainment_width": 100, "median": "1h 20m", "p90": "1h 20m"},
    "overdue": [{"id": "T-42", "number": 42, "subject": "My key does not work", "status": "open",
                 "status_label": "open", "priority": "high", "assignee": "alice@shop.example",
                 "assignee_name": "Alice", "created_at": "2026-11-26", "age": "3d 4h"}],
    "overdue_total": 1, "overdue_more": 0,
    "assignees": [{"assignee": "alice@shop.example", "name": "Alice", "count": 1, "by_status": "1 open",
                   "width": 100, "bar": "#"}],
    "quarantined": 0, "quarantine_waiting": 0, "bounced": 0,
    "disputes": [{"status": "negotiation", "label": "negotiating", "count": 1}],
}

SAMPLES: dict[tuple[str, str], dict] = {
    ("customer", "ack"): {**_BASE, "ticket": _TICKET, "first_response": "4 hours", "attachments": [_FILE],
                          "refused": [_REFUSED], "text": "Hello, my key does not work."},
    ("customer", "attachments_refused"): {**_BASE, "ticket": _TICKET, "refused": [_REFUSED]},
    ("customer", "agent_reply"): {**_BASE, "ticket": _TICKET, "text": "Here is a new key.",
                                  "agent_name": "Alice", "attachments": [_FILE]},
    ("customer", "closed"): {**_BASE, "ticket": _TICKET, "auto_close": "7 days"},
    ("customer", "status"): {**_BASE, "tickets": [{"id": "T-42", "subject": "My key does not work",
                                                   "status": "open", "created_at": "2026-11-26"}],
                             "disputes": [{"id": "D-7", "order": "100234", "status": "negotiation",
                                           "role": "buyer"}]},
    ("staff", "new_ticket"): {**_BASE, "ticket": _TICKET, "text": "Hello, my key does not work.",
                              "attachments": [_FILE, _REFUSED], "requester": "bob@example.com",
                              "requester_name": "Bob"},
    ("staff", "command_error"): {**_BASE, "ticket": _TICKET, "error": "unknown command #clos", "help": _HELP},
    ("staff", "help"): {**_BASE, "ticket": _TICKET, "help": _HELP, "summary": _SUMMARY},
    ("staff", "ticket_status"): {**_BASE, "ticket": _TICKET, "help": _HELP, "summary": _SUMMARY},
    ("staff", "reminder"): {**_BASE, "ticket": _TICKET, "deadline": "first_response",
                            "due_at": "2026-11-26 13:00 UTC", "priority": "normal"},
    ("staff", "reminders"): {**_BASE, "tickets": [_ALERT], "total": 1, "more": 0},
    ("admin", "escalation"): {**_BASE, "ticket": _TICKET, "deadline": "first_response",
                              "due_at": "2026-11-26 13:00 UTC", "late_by": "1:00:00", "assignee": "nobody",
                              "priority": "high"},
    ("admin", "escalations"): {**_BASE, "tickets": [_ALERT], "total": 1, "more": 0},
    ("admin", "digest"): _DIGEST,
    ("buyer", "dispute_refused"): _STRANGER,
    ("buyer", "dispute_not_yours"): _STRANGER,
    ("buyer", "dispute_status"): _STRANGER,
}
for _role, _events in {
    "buyer": ("dispute_opened", "dispute_message", "dispute_update", "dispute_help", "dispute_command_refused"),
    "seller": ("dispute_opened", "dispute_reminder", "dispute_message", "dispute_update", "dispute_help",
               "dispute_command_refused"),
    "admin": ("dispute_seller_missed", "dispute_review", "dispute_message", "dispute_update", "dispute_help",
              "dispute_command_refused"),
}.items():
    for _event in _events:
        SAMPLES[(_role, _event)] = {**_PARTICIPANT, "role": _role}
