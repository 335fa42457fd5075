"""The disputes mailbox as a routing domain: its rule table, its context, and what applies a decision.

The pipeline treats every kind of mailbox alike (``routing.Domain``); this is
where a dispute route is handed to the module whose job it is. It sits above
them all, so ``desk`` and the job modules never import each other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from helpdesk import routing
from helpdesk.config.settings import Mailbox
from helpdesk.disputes import opening, relay, strangers
from helpdesk.disputes.desk import DisputeDesk
from helpdesk.disputes.route import (
    RULES,
    DisputeContext,
    DisputeMessage,
    DisputesStatusRequest,
    NotYours,
    OpenRequest,
)
from helpdesk.mail.parse import InboundMail
from helpdesk.routing import Applied, ConfirmHold, Decision, RecordBounce
from helpdesk.store import tickets
from helpdesk.store.attachments import StoredAttachment
from helpdesk.store.index import StoreDisputeIndex
from helpdesk.tickets import holds
from helpdesk.tickets.desk import Person


@dataclass
class DisputeInbox:
    desk: DisputeDesk
    table: tuple = RULES
    index: StoreDisputeIndex = field(default_factory=StoreDisputeIndex)

    def context(self) -> DisputeContext:
        config = self.desk.config
        return DisputeContext(config.own_addresses, self.desk.secret, config.disputes.reasons, self.index,
                              config.trust.authserv_ids)

    def apply(self, decision: Decision, mail: InboundMail, stored: tuple[StoredAttachment, ...],
              raw_id: int, mailbox: Mailbox) -> Applied:
        """One routed mail to a disputes mailbox, inside the pipeline's transaction."""
        chosen, desk = decision.route, self.desk
        if isinstance(chosen, DisputeMessage):
            if chosen.proof is None and holds.confirmed(raw_id) is None:
                return _hold(desk, chosen, mail, stored, raw_id, mailbox)
            return relay.message(desk, chosen, mail, stored, raw_id)
        if isinstance(chosen, ConfirmHold):
            return holds.confirm(desk.tickets, chosen, mail)
        if isinstance(chosen, NotYours):
            return strangers.not_yours(desk, chosen, mail, mailbox)
        if isinstance(chosen, DisputesStatusRequest):
            return strangers.status(desk, mail, mailbox)
        if isinstance(chosen, OpenRequest):
            return opening.by_mail(desk, chosen, mail, stored, raw_id, mailbox)
        if isinstance(chosen, RecordBounce):
            return routing.bounced(chosen, mail, desk.tickets.bounce(chosen, mail, stored, raw_id))
        return routing.settled(chosen)


def _hold(desk: DisputeDesk, chosen: DisputeMessage, mail: InboundMail, stored, raw_id: int,
          mailbox: Mailbox) -> Applied:
    """A claimed buyer, seller or admin: no command, no relay; the party is asked at the
    address the dispute holds for them (docs/trust.md)."""
    [(pid, address, name)] = [p for p in tickets.participants(chosen.ticket_id, (chosen.role,))
                              if p[0] == chosen.participant_id]
    return holds.hold(desk.tickets, chosen.ticket_id, Person(pid, address, name), chosen.role, mail, stored,
                      raw_id, mailbox, thread_label=f"D-{chosen.dispute_id}")
