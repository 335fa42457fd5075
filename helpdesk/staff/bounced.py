"""Telling a staff member that the customer they just answered bounced hard lately.

Automatic mail to such an address is held back (``outbound.suppression``); a
person's answer is not: it is relayed all the same, since the address may work
again, but the one who wrote it gets ``staff/reply_bounced`` in the same
transaction, so they know to reach the customer another way. One query for
all the recipients of the answer.
"""

from __future__ import annotations

from helpdesk.clock import naive_utc
from helpdesk.config.settings import Mailbox, StaffMember
from helpdesk.store import bounces
from helpdesk.store.tickets import TicketRow
from helpdesk.tickets.desk import Desk, TicketView


def warn(desk: Desk, ticket: TicketRow, member: StaffMember, mailbox: Mailbox, mail,
         addresses: list[str]) -> None:
    """``mail``: the staff member's own mail (the notice threads to it), or None."""
    window = desk.config.limits.bounce_suppression
    if not window or not addresses or desk.config.staff_member(member.address) is None:
        return
    found = bounces.hard_since(addresses, naive_utc(desk.clock.now()) - window)
    if not found:
        return
    listed = [{"address": b.address, "status": b.status, "diagnostic": b.diagnostic, "at": _moment(b.at),
               "until": _moment(b.at + window)} for b in sorted(found.values(), key=lambda b: b.address)]
    person = desk.person(ticket.id, member.address, member.name, "staff")
    desk.queue(mailbox, "reply_bounced", TicketView.of(ticket), person, mail, {"bounces": listed},
               audience="staff", auto="auto-generated")


def _moment(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
