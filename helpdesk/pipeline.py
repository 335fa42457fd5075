"""Stored raw messages → parse → route → apply, a batch per transaction.

Each message gets a savepoint inside the batch's transaction: one that crashes
is rolled back alone and quarantined with the reason, and the batch goes on.
A message is claimed by flipping its status from ``pending`` inside that same
transaction, so two workers on one database never apply it twice, and a crash
before the commit leaves it pending for the next pass.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from helpdesk.clock import naive_utc
from helpdesk.config import Config
from helpdesk.models import RawMessage, write_transaction
from helpdesk.parse import InboundMail, parse
from helpdesk.route import (Decision, Drop, NewTicket, Quarantine, RecordBounce, RouteContext,
                            TicketReply, route)
from helpdesk.tickets import Desk, StoreIndex, label

log = logging.getLogger("helpdesk.pipeline")


@dataclass(frozen=True)
class Outcome:
    raw_id: int
    kind: str            # new_ticket | reply | bounce | dropped | quarantined | skipped
    ticket_id: int | None = None
    detail: str = ""


@dataclass
class Tally:
    """What a run did, for the one-line summary."""

    counts: Counter = field(default_factory=Counter)
    reasons: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.kind] += 1
        if outcome.kind in ("dropped", "quarantined", "bounce"):
            self.reasons[outcome.kind][outcome.detail.split(":")[0]] += 1


class Pipeline:
    def __init__(self, config: Config, desk: Desk) -> None:
        self.config = config
        self.desk = desk
        self.index = StoreIndex()

    def process_pending(self, batch_size: int | None = None, tally: Tally | None = None) -> Tally:
        """Work through every pending message; returns what happened."""
        tally = tally or Tally()
        size = batch_size or self.config.intake.batch_size
        last_id = 0
        while True:
            rows = list(RawMessage.select(RawMessage.id, RawMessage.raw, RawMessage.mailbox,
                                          RawMessage.envelope_to)
                        .where((RawMessage.status == "pending") & (RawMessage.id > last_id))
                        .order_by(RawMessage.id).limit(size))
            if not rows:
                return tally
            last_id = rows[-1].id
            for outcome in self._batch(rows):
                tally.add(outcome)

    def retry(self, raw_id: int) -> Outcome:
        """Put a quarantined message back in line and run it once more."""
        RawMessage.update(status="pending", reason=None).where(RawMessage.id == raw_id).execute()
        row = RawMessage.get_by_id(raw_id)
        return self._batch([row])[0]

    def _batch(self, rows: list[RawMessage]) -> list[Outcome]:
        parsed = [(row, self._parse(row)) for row in rows]
        outcomes = []
        with write_transaction():
            for row, mail in parsed:
                outcomes.append(self._one(row, mail))
        for outcome in outcomes:
            _log(outcome)
        return outcomes

    def _parse(self, row: RawMessage) -> InboundMail | str:
        """The parsed mail, or why it cannot be handled (it is quarantined)."""
        raw = bytes(row.raw)
        limit = self.config.limits.max_message_size
        if len(raw) > limit:
            return f"too large: {len(raw)} bytes is larger than the {limit} byte limit"
        try:
            return parse(raw, tuple(a for a in row.envelope_to.split(",") if a))
        except Exception as exc:  # noqa: BLE001 - quarantined, with the reason
            return _crash("parse", exc)

    def _one(self, row: RawMessage, mail: InboundMail | str) -> Outcome:
        if isinstance(mail, str):
            return self._finish(row.id, Outcome(row.id, "quarantined", None, mail))
        try:
            with write_transaction():
                if not _claim(row.id):
                    return Outcome(row.id, "skipped", None, "already processed elsewhere")
                outcome = self._apply(row, mail)
                self._finish(row.id, outcome)
                return outcome
        except Exception as exc:  # noqa: BLE001 - the savepoint rolled back; keep it, with why
            log.debug("message %s crashed the pipeline", row.id, exc_info=True)
            return self._finish(row.id, Outcome(row.id, "quarantined", None, _crash("apply", exc)))

    def _apply(self, row: RawMessage, mail: InboundMail) -> Outcome:
        mailbox = self.config.mailbox(row.mailbox)
        decision = route(mail, RouteContext(mailbox.kind, self.config.own_addresses,
                                            self.desk.secret, self.index))
        chosen = decision.route
        if isinstance(chosen, NewTicket):
            ticket = self.desk.new_ticket(chosen, mail, row.id, mailbox)
            return Outcome(row.id, "new_ticket", ticket, _explain(decision, mail))
        if isinstance(chosen, TicketReply):
            ticket = self.desk.reply(chosen, mail, row.id, mailbox)
            return Outcome(row.id, "reply", ticket, _explain(decision, mail))
        if isinstance(chosen, RecordBounce):
            ticket = self.desk.bounce(chosen, mail, row.id)
            return Outcome(row.id, "bounce", ticket, "bounce: " + (", ".join(chosen.recipients) or mail.from_addr))
        if isinstance(chosen, Drop):
            return Outcome(row.id, "dropped", None, chosen.reason)
        assert isinstance(chosen, Quarantine)
        return Outcome(row.id, "quarantined", None, chosen.reason)

    def _finish(self, raw_id: int, outcome: Outcome) -> Outcome:
        status = {"quarantined": "quarantined", "dropped": "dropped"}.get(outcome.kind, "done")
        RawMessage.update(status=status, outcome=outcome.kind, ticket_id=outcome.ticket_id,
                          reason=outcome.detail if status != "done" else None,
                          processed_at=naive_utc(self.desk.clock.now())
                          ).where(RawMessage.id == raw_id).execute()
        return outcome


def _claim(raw_id: int) -> bool:
    claimed = (RawMessage.update(status="processing")
               .where((RawMessage.id == raw_id) & (RawMessage.status == "pending")).execute())
    return claimed == 1


def _crash(stage: str, exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{stage} failed: {type(exc).__name__}: {text}"[:500]


def _explain(decision: Decision, mail: InboundMail) -> str:
    chosen = decision.route
    if isinstance(chosen, TicketReply):
        return f"by {chosen.rule}" + (" (auto-reply, recorded silently)" if chosen.silent else "")
    if isinstance(chosen, NewTicket) and not chosen.acknowledge:
        return f"no acknowledgement: {chosen.why_silent}"
    return ""


def _log(outcome: Outcome) -> None:
    where = label(outcome.ticket_id) if outcome.ticket_id else "-"
    level = logging.WARNING if outcome.kind == "quarantined" else logging.INFO
    log.log(level, "message %s: %s %s %s", outcome.raw_id, outcome.kind, where, outcome.detail)
