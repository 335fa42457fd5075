"""The door to remembered bounces: which addresses failed hard, lately, and which a ticket met.

Bounces are written by the tickets desk (``store.tickets.add_bounces``) as
they arrive; this reads them back for the outbox (automatic mail to an
address that failed hard is held back for a while), for the staff (told when
their answer goes to such an address) and for ``helpdesk show``. A bounce is
hard when its DSN status is permanent (``5.x.x``, RFC 3463); a bounce without
a status proves nothing and never holds mail back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from helpdesk.store.schema import Bounce, Participant

HARD = "5."          # the class digit of a permanent failure (RFC 3463)
STAFF_ROLES = ("staff", "admin")


@dataclass(frozen=True)
class BounceRow:
    address: str
    status: str              # "5.1.1", "4.2.2", or "" when the report had none
    diagnostic: str
    at: dt.datetime          # naive UTC, when the report arrived
    ticket_id: int | None

    @property
    def hard(self) -> bool:
        return self.status.startswith(HARD)


def hard_since(addresses: Iterable[str], since: dt.datetime) -> dict[str, BounceRow]:
    """The newest hard bounce since ``since`` of each of these addresses that has one:
    one query (the address index) per 500 addresses, whatever the number of bounces."""
    wanted = sorted({a.lower() for a in addresses})
    found: dict[str, BounceRow] = {}
    for start in range(0, len(wanted), 500):
        query = (Bounce.select(Bounce.address, Bounce.status, Bounce.diagnostic, Bounce.created_at,
                               Bounce.ticket)
                 .where(Bounce.address.in_(wanted[start:start + 500]) & (Bounce.created_at >= since)
                        & Bounce.status.startswith(HARD))
                 .order_by(Bounce.created_at, Bounce.id).tuples())
        found.update({row[0]: BounceRow(*row) for row in query})   # the newest wins
    return found


def of_ticket(ticket_id: int, limit: int = 20) -> list[BounceRow]:
    """Bounces recorded against the ticket, or of the addresses of its customer-side
    participants (requester, copied, buyer, seller), newest first, at most ``limit``."""
    people = (Participant.select(Participant.address)
              .where((Participant.ticket == ticket_id) & Participant.role.not_in(STAFF_ROLES)))
    query = (Bounce.select(Bounce.address, Bounce.status, Bounce.diagnostic, Bounce.created_at, Bounce.ticket)
             .where((Bounce.ticket == ticket_id) | Bounce.address.in_(people))
             .order_by(Bounce.created_at.desc(), Bounce.id.desc()).limit(limit).tuples())
    return [BounceRow(*row) for row in query]
