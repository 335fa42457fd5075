"""What the dispute modules share: who takes part in a dispute (``Party``), one
dispute as read for its notices (``Loaded``), and how a notice says what happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from helpdesk.config.settings import Mailbox
from helpdesk.disputes.rules import Change, Offer, Snapshot
from helpdesk.store.disputes import DisputeRow
from helpdesk.store.orders import OrderRow

SUBJECT = "dispute"                   # the timers' subject
WHO = {"buyer": "the buyer", "seller": "the seller", "admin": "the administration"}


def label(dispute_id: int) -> str:
    return f"D-{dispute_id}"


@dataclass(frozen=True)
class Party:
    participant_id: int
    address: str
    name: str
    role: str           # buyer | seller | admin


@dataclass
class Loaded:
    """One dispute with everything its notices need, read in a fixed number of queries."""

    row: DisputeRow
    order: OrderRow | None
    parties: list[Party]
    offers: list[Offer]                 # the latest proposal of each side
    mailbox: Mailbox
    anchors: dict[str, str] | None = None   # recipient -> our first Message-ID to them
    chat: dict | None = None                 # the whole chat, once read for the admins

    @property
    def snap(self) -> Snapshot:
        r = self.row
        return Snapshot(r.id, r.status, r.seller_due_at, r.seller_answered_at, r.window_closes_at,
                        r.admin_due_at, tuple(self.offers))

    def party(self, participant_id: int) -> Party:
        return next(p for p in self.parties if p.participant_id == participant_id)

    def having(self, *roles: str) -> list[Party]:
        return [p for p in self.parties if p.role in roles]


def happened(change: Change | None, by: str, offer: Offer | None) -> dict:
    """What templates need to say what happened; ``by`` is a role or "system"."""
    return {"event": change.event if change else None, "by": by, "who": WHO.get(by, ""),
            "offer": offer.__dict__ if offer else None,
            "accepted": change.accepts.__dict__ if change and change.accepts else None}
