"""The routers' read-only view of the store: threads, participants, disputes.

Implements the ``TicketIndex`` and ``DisputeIndex`` protocols the rule tables
read through, with prepared statements on the per-message hot path.
"""

from __future__ import annotations

from helpdesk.store import sql
from helpdesk.store.schema import Dispute, Participant, ThreadRef, Ticket

THREAD_IDS = 200     # Message-IDs of a mail a thread is looked up by: a hostile References is long


class StoreIndex:
    """The router's read-only view of threads and participants."""

    def thread_matches(self, msgids: tuple[str, ...]) -> list[tuple[int, bool]]:
        if not msgids:
            return []
        rows = sql.select(ThreadRef, ["ticket", "ours"], {}, in_column="msgid",
                                 in_values=msgids[:THREAD_IDS])
        best: dict[int, bool] = {}
        for ticket, ours in rows:
            best[ticket] = best.get(ticket, False) or bool(ours)
        return sorted(best.items(), reverse=True)

    def participant(self, participant_id: int) -> tuple[int, str] | None:
        rows = sql.select(Participant, ["ticket", "address"], {"id": participant_id})
        return (rows[0][0], rows[0][1]) if rows else None

    def role_of(self, ticket_id: int, address: str) -> str | None:
        rows = sql.select(Participant, ["role"], {"ticket": ticket_id, "address": address})
        return rows[0][0] if rows else None

    def is_participant(self, ticket_id: int, address: str) -> bool:
        return bool(sql.select(Participant, ["id"], {"ticket": ticket_id, "address": address}))

    def ticket_status(self, ticket_id: int) -> str | None:
        """The status of a ticket; None also for a dispute's chat (kind "dispute")."""
        rows = sql.select(Ticket, ["status"], {"id": ticket_id, "kind": "ticket"})
        return rows[0][0] if rows else None


class StoreDisputeIndex(StoreIndex):
    """The dispute router's read-only view of the store."""

    def dispute_participant(self, participant_id: int) -> tuple[int, int, str, str] | None:
        row = (Participant.select(Dispute.id, Participant.ticket, Participant.address, Participant.role)
               .join(Dispute, on=(Dispute.ticket == Participant.ticket))
               .where(Participant.id == participant_id).tuples().first())
        return tuple(row) if row else None

    def disputes_of_tickets(self, ticket_ids: list[int]) -> dict[int, int]:
        rows = Dispute.select(Dispute.ticket, Dispute.id).where(Dispute.ticket.in_(ticket_ids[:200]))
        return dict(rows.tuples())

    def dispute_ticket(self, dispute_id: int) -> int | None:
        rows = sql.select(Dispute, ["ticket"], {"id": dispute_id})
        return rows[0][0] if rows else None

    def role_in(self, ticket_id: int, address: str) -> tuple[int, str] | None:
        rows = sql.select(Participant, ["id", "role"], {"ticket": ticket_id, "address": address})
        return (rows[0][0], rows[0][1]) if rows else None

