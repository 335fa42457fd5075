"""The tickets mailbox as a routing domain: its rule table, its context, and what applies a decision.

The pipeline treats every kind of mailbox alike (``routing.Domain``); this is
where a ticket route turns into the call that writes it: a new ticket, a
customer's reply, a staff member's answer or commands, a status list, a bounce.
The staff domain builds on tickets, so its handler for ``StaffReply`` is handed
in by the composition root rather than imported from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from helpdesk import routing
from helpdesk.config.settings import Mailbox
from helpdesk.mail.parse import InboundMail
from helpdesk.routing import Applied, ConfirmHold, Decision, RecordBounce
from helpdesk.store.attachments import StoredAttachment
from helpdesk.store.index import StoreIndex
from helpdesk.tickets import holds
from helpdesk.tickets.desk import Desk
from helpdesk.tickets.route import (
    RULES,
    NewTicket,
    StaffReply,
    TicketContext,
    TicketReply,
    TicketsStatusRequest,
)


@dataclass
class TicketInbox:
    desk: Desk
    staff_reply: Callable[..., Applied]   # staff.act.staff_reply(desk, route, mail, stored, raw_id, mailbox)
    table: tuple = RULES
    index: StoreIndex = field(default_factory=StoreIndex)

    def __post_init__(self) -> None:
        self.staff = frozenset(member.address for member in self.desk.config.staff)

    def context(self) -> TicketContext:
        return TicketContext(self.desk.config.own_addresses, self.desk.secret, self.index, self.staff,
                             self.desk.config.trust.authserv_ids)

    def apply(self, decision: Decision, mail: InboundMail, stored: tuple[StoredAttachment, ...],
              raw_id: int, mailbox: Mailbox) -> Applied:
        chosen = decision.route
        if isinstance(chosen, NewTicket):
            ticket = self.desk.new_ticket(chosen, mail, stored, raw_id, mailbox)
            return Applied("new_ticket", ticket, _explain(chosen))
        if isinstance(chosen, TicketReply):
            ticket = self.desk.reply(chosen, mail, stored, raw_id, mailbox)
            return Applied("reply", ticket, _explain(chosen))
        if isinstance(chosen, StaffReply):
            return self.staff_reply(self.desk, chosen, mail, stored, raw_id, mailbox)
        if isinstance(chosen, TicketsStatusRequest):
            sent = self.desk.status_reply(mail, mailbox)
            return Applied("status_request", None, "answered" if sent else "not answered: rate limit")
        if isinstance(chosen, ConfirmHold):
            return holds.confirm(self.desk, chosen, mail)
        if isinstance(chosen, RecordBounce):
            return routing.bounced(chosen, mail, self.desk.bounce(chosen, mail, stored, raw_id))
        return routing.settled(chosen)


def _explain(chosen: NewTicket | TicketReply) -> str:
    if isinstance(chosen, TicketReply):
        return f"by {chosen.rule}" + (" (auto-reply, recorded silently)" if chosen.silent else "")
    if not chosen.acknowledge:
        return f"no acknowledgement: {chosen.why_silent}"
    return ""
