"""Answers to whoever wrote, not as a dispute's participant: refusals to open a
dispute, "this dispute is not yours", and the list of the sender's disputes.

They go to the From address, which may be forged: they are rate-limited like
acknowledgements, so the helpdesk never becomes a source of backscatter, and
relay nothing to anybody else.
"""

from __future__ import annotations

import datetime as dt

from helpdesk.clock import naive_utc
from helpdesk.config.settings import Mailbox
from helpdesk.disputes.desk import DisputeDesk
from helpdesk.disputes.masking import masked, masker
from helpdesk.disputes.parties import label
from helpdesk.disputes.route import NotYours
from helpdesk.disputes.rules import Snapshot
from helpdesk.mail.parse import InboundMail
from helpdesk.outbound.notify import Notice
from helpdesk.routing import Applied
from helpdesk.store import disputes as store
from helpdesk.store import orders

TO_STRANGERS = ("dispute_refused", "dispute_not_yours", "dispute_status")
STATUS_LIMIT = 100      # disputes in one status list
FIELDS_HELP = [
    "the order id, in the subject or the text (e.g. \"Order 100234\")",
    "a line \"Reason: ...\" with one of the reasons below",
    "a description of the problem (the rest of your text)",
    "images or other files, attached (optional)",
]


def not_yours(desk: DisputeDesk, found: NotYours, mail: InboundMail, mailbox: Mailbox) -> Applied:
    now = naive_utc(desk.clock.now())
    sent = answer(desk, mail, mailbox, "dispute_not_yours", {"dispute_id": label(found.dispute_id)}, now)
    note = "" if sent else " (not answered: rate limit)"
    return Applied("dispute_refused", found.ticket_id,
                   f"{label(found.dispute_id)}: {mail.from_addr} is not a participant ({found.rule}){note}")


def status(desk: DisputeDesk, mail: InboundMail, mailbox: Mailbox) -> Applied:
    now = naive_utc(desk.clock.now())
    listed = _status_list(desk, mail.from_addr, now)
    sent = answer(desk, mail, mailbox, "dispute_status", {"disputes": listed}, now)
    return Applied("dispute_status", None,
                   f"{len(listed)} disputes" + ("" if sent else " (not answered: rate limit)"))


def _status_list(desk: DisputeDesk, address: str, now: dt.datetime) -> list[dict]:
    """The sender's disputes, each with the other side's address masked."""
    rows = store.of_participant(address, STATUS_LIMIT)
    products = orders.products([row.order_id for row, _ in rows])
    listed = []
    for row, role in rows:
        snap = Snapshot(row.id, row.status, row.seller_due_at, row.seller_answered_at,
                        row.window_closes_at, row.admin_due_at)
        hidden = tuple(a for a in (row.buyer, row.seller) if a != address)
        listed.append(masked({**desk.dispute_context(row, products.get(row.order_id, ""), snap, now),
                              "role": role, "deadline": desk.deadline(snap)}, masker(hidden)))
    return listed


def answer(desk: DisputeDesk, mail: InboundMail, mailbox: Mailbox, event: str, context: dict,
           now: dt.datetime) -> bool:
    """A reply to whoever wrote, unless the rate limit says no more; whether it was sent."""
    limits = desk.config.limits
    if limits.ack_rate_limit <= 0:
        return False
    if store.sent_to(mail.from_addr, TO_STRANGERS, now - limits.ack_rate_window) >= limits.ack_rate_limit:
        return False
    full = {"helpdesk_name": desk.config.helpdesk.name, "recipient": mail.from_addr,
            "recipient_name": mail.from_name, "address": mailbox.address,
            "fields": FIELDS_HELP, **context}
    desk.notifiers[mailbox.name].queue(Notice(
        event=event, audience="buyer", recipient=mail.from_addr, recipient_name=mail.from_name,
        context=full, in_reply_to=mail.message_id, references=mail.references))
    return True
