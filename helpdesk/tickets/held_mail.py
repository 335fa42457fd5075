"""Held mail past the confirmation cap: one combined mail a day per person, never silence.

``[trust] confirm_rate_limit`` caps the confirmation mails a person gets a day,
so forgeries in their name cannot flood them. Without more, five forged
``#close`` would make the helpdesk silent for the rest of the day: the real
person's own fresh mail held, and nobody told. So the tick gathers the holds
the cap left unmailed and sends each person at most one mail a day listing
them, each with its own signed one-time confirmation address, whose window
starts when they are told. The mail volume stays bounded (cap + 1 a day), and
no held mail of a real person goes unannounced.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from helpdesk.mail import replyaddr
from helpdesk.outbound.notify import Notice
from helpdesk.routing import CONFIRM_TOKEN
from helpdesk.store import holds
from helpdesk.store.db import write_transaction
from helpdesk.tickets.desk import Desk, label
from helpdesk.tickets.holds import quote
from helpdesk.units import format_duration

PERIOD = dt.timedelta(days=1)   # the cap's period: one combined mail per person in it
LISTED = 20                     # holds one mail lists; the rest wait for the next period
SCAN = 5000                     # holds read per tick: a flood costs bounded work


def announce(desk: Desk, now: dt.datetime) -> int:
    """Send the combined mails due now; returns how many went (one transaction)."""
    with write_transaction():
        known = {m.name for m in desk.config.mailboxes}
        # a mailbox since removed from the config cannot sign a reply address: its holds wait
        waiting = [row for row in holds.unannounced(now, now - PERIOD, SCAN) if row.mailbox in known]
        by_person: dict[str, list[holds.Unannounced]] = defaultdict(list)
        for row in waiting:
            by_person[row.address].append(row)
        told: list[int] = []
        for rows in by_person.values():
            listed = rows[:LISTED]
            _queue(desk, listed, len(rows) - len(listed))
            told += [row.id for row in listed]
        holds.announced(told, now, now + desk.config.trust.confirm_within)
    return len(by_person)


def _queue(desk: Desk, rows: list[holds.Unannounced], more: int) -> None:
    first = rows[0]
    mailboxes = {m.name: m for m in desk.config.mailboxes}
    audience = first.role if first.dispute_id is not None else "staff"
    entries = []
    for row in rows:
        token = replyaddr.ReplyToken(CONFIRM_TOKEN, row.id, row.participant_id)
        entries.append({"thread": _thread(row), **quote(row.sender, row.subject, row.body, row.received),
                        "confirm_address": replyaddr.reply_address(
                            desk.secret, mailboxes[row.mailbox].address, token)})
    context = {"helpdesk_name": desk.config.helpdesk.name, "recipient_name": first.name,
               "recipient": first.address, "holds": entries, "more": more,
               "confirm_within": format_duration(desk.config.trust.confirm_within)}
    desk.notifiers[first.mailbox].queue(Notice(
        event="confirm_holds", audience=audience, recipient=first.address, recipient_name=first.name,
        context=context, ticket_id=first.ticket_id))


def _thread(row: holds.Unannounced) -> str:
    return f"D-{row.dispute_id}" if row.dispute_id is not None else label(row.ticket_id)
