"""What every dispute job shares: reading a dispute, writing its changes, telling its parties.

``route`` says what a mail is and ``rules`` what may happen; ``inbox`` hands
each route to the module whose job it is — ``opening`` (a new dispute, by mail
or by the marketplace's form), ``relay`` (the chat between the parties, with
its commands), ``strangers`` (refusals and status lists) — and ``deadlines``
says what a dispute's timer does. They all write through this desk: the dispute, its history, its timers, its chat (a
``Ticket`` of kind "dispute", so messages, attachments, participants and
outgoing mail reuse the ticket tables), and the mail it causes, all in the
transaction of the pipeline or of the deadline tick.

Buyer and seller never see each other's address: everything they receive
comes from the disputes address, addressed to them alone, with their own
signed Reply-To, and every string of it has both parties' addresses masked
(``masking.masked``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from helpdesk.clock import Clock
from helpdesk.config.settings import Config
from helpdesk.disputes import eligibility, masking
from helpdesk.disputes.parties import SUBJECT, Loaded, Party, label
from helpdesk.disputes.rules import (
    ADMIN_DUE,
    FINAL,
    SELLER_DUE,
    STATES,
    WINDOW_CLOSE,
    Change,
    Offer,
    Rules,
    Snapshot,
    seller_was_late,
)
from helpdesk.mail import replyaddr
from helpdesk.mail.parse import InboundMail
from helpdesk.outbound.notify import Notice, Notifier
from helpdesk.store import disputes as store
from helpdesk.store import orders, timers
from helpdesk.store.attachments import AttachmentStore
from helpdesk.store.db import write_transaction
from helpdesk.store.disputes import DisputeRow
from helpdesk.tickets.desk import Desk
from helpdesk.units import format_duration

log = logging.getLogger("helpdesk.disputes")
DEADLINES = {SELLER_DUE: "the seller's answer is due", WINDOW_CLOSE: "the negotiation window closes",
             ADMIN_DUE: "the administration steps in"}


class StaleDispute(Exception):
    """The dispute changed since it was read (another worker, a deadline): what was decided
    on the old state must not be written. Rolls the work back; it is decided again."""


@dataclass
class DisputeDesk:
    """What the dispute modules share, built once by the app: reading a dispute, deciding
    on what was read, changing its status, bringing in the admins, telling the parties.

    ``load``, ``change`` and ``problem`` are the steps a race goes through
    (tests hold a dispute or an opening back there), hence one desk method each.
    Mail reaches the disputes through ``inbox``, timers through ``deadlines``.
    """

    config: Config
    clock: Clock
    secret: bytes
    attachments: AttachmentStore
    notifiers: dict[str, Notifier]
    tickets: Desk                      # bounces are recorded the ticket way
    rules: Rules = field(init=False)

    def __post_init__(self) -> None:
        self.rules = Rules(self.config.disputes, self.config.helpdesk.timezone)

    def problem(self, order_id: str | None, sender: str | None, problems: tuple[str, ...],
                 reason_given: str | None) -> eligibility.Problem | None:
        """The first reason not to open (``eligibility.problem``), asked before opening and
        again when the database refused the opening."""
        return eligibility.problem(self.config.disputes.reasons, order_id, sender, problems, reason_given)

    # --- reading, and deciding on what was read -----------------------------------

    def decided_twice(self, dispute_id: int, work):
        """``work(loaded)`` in a savepoint of the caller's transaction. When the dispute changed
        under it (``StaleDispute``: a deadline and a command at once), its writes are rolled
        back, the dispute is read again and ``work`` decides once more on what is there now;
        a second ``StaleDispute`` propagates (the tick puts the timer back to pending, the
        pipeline quarantines the mail)."""
        for attempt in (1, 2):
            loaded = self.load(dispute_id)
            try:
                with write_transaction():
                    return work(loaded)
            except StaleDispute as exc:
                if attempt == 2:
                    raise
                log.info("%s: read again and decided once more", exc)
        raise AssertionError("unreachable")

    def load(self, dispute_id: int) -> Loaded | None:
        row = store.read(dispute_id)
        if row is None:
            return None
        mailbox_name = store.chat_mailbox(row.ticket_id)
        order = orders.find(row.order_id)
        parties = [Party(*p) for p in store.participants(row.ticket_id)]
        latest: dict[str, Offer] = {}
        for number, author, text in store.offers(row.id):
            latest[author] = Offer(number, author, text)
        return Loaded(row, order, parties, list(latest.values()),
                      self.config.mailbox_or_default(mailbox_name, kind="disputes"))

    def add_party(self, ticket_id: int, address: str, name: str, role: str) -> Party:
        return Party(store.add_participant(ticket_id, address, name, role), address, name, role)

    # --- changes -------------------------------------------------------------------

    def change(self, loaded: Loaded, change: Change, actor: str, now: dt.datetime) -> Offer | None:
        """Write a change: the dispute's columns, its history, timers, proposals.
        Returns the new proposal, if the change makes one.

        Only over the status it was decided on: when another transaction (a deadline, a
        command) changed the dispute since it was read, nothing is written and
        ``StaleDispute`` rolls the caller's savepoint back (see ``decided_twice``).
        """
        row = loaded.row
        values = {**change.fields, "updated_at": now}
        moved = bool(change.to_status and change.to_status != row.status)
        if moved:
            values["status"] = change.to_status
            if change.to_status in FINAL:
                values["open_order"] = None
        if not store.update(row.id, row.status, values):
            raise StaleDispute(f"{label(row.id)} is no longer {row.status}")
        if moved:
            store.add_event(row.id, now, actor, row.status, change.to_status, change.reason)
        for name, value in values.items():
            setattr(row, name, value)
        if change.cancel is None or change.cancel:
            timers.cancel(SUBJECT, row.id, change.cancel)
        timers.schedule(SUBJECT, row.id, now, change.schedule)
        if change.accepts is not None:
            store.accept(row.id, change.accepts.number, now)
        return self._propose(loaded, actor, change.offer, now) if change.offer is not None else None

    def _propose(self, loaded: Loaded, author: str, text: str, now: dt.datetime) -> Offer:
        offer = Offer(store.propose(loaded.row.id, author, text, now), author, text)
        loaded.offers = [o for o in loaded.offers if o.author != author] + [offer]
        return offer

    # --- the administration ------------------------------------------------------------

    def join_admins(self, loaded: Loaded) -> None:
        """Admins (all staff when none is an admin) join the dispute as participants."""
        staff = [s for s in self.config.staff if s.role == "admin"] or list(self.config.staff)
        present = {p.address for p in loaded.parties}
        for member in staff:
            if member.address not in present:
                loaded.parties.append(self.add_party(loaded.row.ticket_id, member.address,
                                                     member.name, "admin"))

    def tell_admin(self, loaded: Loaded, admin: Party, change: Change, happened: dict,
                   now: dt.datetime) -> None:
        if change.to_status == "admin_review":
            self.send(loaded, admin, "dispute_review", {**happened, **self._whole_chat(loaded)}, now)
        elif change.event == "seller_missed":
            self.send(loaded, admin, "dispute_seller_missed", happened, now)
        else:
            self.send(loaded, admin, "dispute_update", happened, now)

    def _whole_chat(self, loaded: Loaded) -> dict:
        """Every message and proposal, for the administration's review (read once per dispute).
        By role, never by address: the administration's mail may be forwarded
        (``helpdesk show D-n`` has the addresses)."""
        if loaded.chat is None:
            roles = {p.address: p.role for p in loaded.parties}
            messages, proposals = store.chat(loaded.row.ticket_id, loaded.row.id)
            allowed = self.config.disputes.relay_file_types
            loaded.chat = {
                "chat": [{"at": self.rules.when(m.created_at), "role": roles.get(m.sender, "?"),
                          "text": m.body, "attachments": masking.listed(m.attachments, allowed)}
                         for m in messages],
                "proposals": [{"number": p.number, "author": p.author, "text": p.text,
                               "accepted": p.accepted} for p in proposals]}
        return loaded.chat

    # --- mail --------------------------------------------------------------------

    def send(self, loaded: Loaded, party: Party, event: str, extra: dict, now: dt.datetime, *,
             answering: InboundMail | None = None, files: tuple = (),
             auto: str | None = "auto-generated") -> None:
        """One mail about a dispute to one party, from the disputes address, with their own Reply-To.

        ``answering`` threads it under the party's own mail; otherwise under the
        first mail we sent them about this dispute, never under the other
        side's Message-IDs (which can name their domain).
        """
        mask = masking.masker(masking.hidden_from(loaded, party))
        context = masking.masked(self._context(loaded, party, now, {**extra, "passed_on": bool(files)}), mask)
        files = tuple((mask(name), content_type, path) for name, content_type, path in files)
        token = replyaddr.ReplyToken("d", loaded.row.id, party.participant_id)
        in_reply_to, references = (answering.message_id, answering.references) if answering else \
            (self._anchor(loaded, party.address), ())
        self.notifiers[loaded.mailbox.name].queue(Notice(
            event=event, audience=party.role, recipient=party.address, recipient_name=party.name,
            context=context, ticket_id=loaded.row.ticket_id,
            reply_to=replyaddr.reply_address(self.secret, loaded.mailbox.address, token),
            in_reply_to=in_reply_to, references=references,
            auto=auto if not answering else "auto-replied", token=f"[{label(loaded.row.id)}]",
            attachments=files))

    def _context(self, loaded: Loaded, party: Party, now: dt.datetime, extra: dict) -> dict:
        product = loaded.order.product if loaded.order else ""
        snap = loaded.snap
        dispute = self.dispute_context(loaded.row, product, snap, now)
        if loaded.order is not None:
            dispute.update(amount=str(loaded.order.amount), currency=loaded.order.currency)
        settings = self.config.disputes
        return {"helpdesk_name": self.config.helpdesk.name, "recipient": party.address,
                "recipient_name": party.name, "role": party.role, "dispute": dispute,
                "deadline": self.deadline(snap), "commands": self.rules.allowed(party.role, snap, now),
                "address": loaded.mailbox.address,
                "durations": {name: format_duration(getattr(settings, name))
                              for name in ("seller_response", "negotiation", "admin_after")},
                "event": None, "by": None, "who": "", "offer": None, "accepted": None, "text": "",
                "attachments": [], "passed_on": False, "empty": False, **extra}

    def dispute_context(self, row: DisputeRow, product: str, snap: Snapshot, now: dt.datetime) -> dict:
        """What templates say about a dispute (not yet masked)."""
        when = self.rules.when
        return {"id": label(row.id), "number": row.id, "order": row.order_id, "product": product,
                "amount": "", "currency": "", "reason": row.reason, "description": row.description,
                "status": row.status, "status_text": STATES[row.status], "created": when(row.created_at),
                "seller_due": when(row.seller_due_at), "window_closes": when(row.window_closes_at),
                "admin_due": when(row.admin_due_at), "decided_for": row.decided_for,
                "decision": row.decision, "seller_late": seller_was_late(snap, now)}

    def deadline(self, snap: Snapshot) -> dict | None:
        found = self.rules.deadline(snap)
        if found is None:
            return None
        kind, at = found
        return {"kind": kind, "what": DEADLINES[kind], "at": self.rules.when(at)}

    def _anchor(self, loaded: Loaded, address: str) -> str | None:
        if loaded.anchors is None:
            loaded.anchors = store.anchors(loaded.row.ticket_id)
        return loaded.anchors.get(address)
