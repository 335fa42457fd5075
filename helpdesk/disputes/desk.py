"""Disputes applied in the caller's transaction: opening, the relayed chat,
commands, refusals, status replies and deadlines.

``dispute_route`` says what a mail is and ``dispute_rules`` what may happen;
this module writes it down — the dispute, its history (``DisputeEvent``), its
timers, its chat (a ``Ticket`` of kind "dispute", so messages, attachments,
participants and outgoing mail reuse the ticket tables) — and queues the mail
it causes, all in the transaction of the pipeline or of the deadline tick.

Buyer and seller never see each other's address: everything they receive
comes from the disputes address, addressed to them alone, with their own
signed Reply-To, and relayed text has both parties' addresses masked.
"""

from __future__ import annotations

import datetime as dt
import logging
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import peewee as pw

from helpdesk.clock import Clock, naive_utc
from helpdesk.config.settings import Config, Mailbox
from helpdesk.disputes.route import (
    RULES,
    DisputeContext,
    DisputeMessage,
    DisputesStatusRequest,
    NotYours,
    OpenRequest,
)
from helpdesk.disputes.rules import (
    ADMIN_DUE,
    FINAL,
    OPEN,
    SELLER_DUE,
    STATES,
    WINDOW_CLOSE,
    Change,
    Command,
    Offer,
    Refusal,
    Rules,
    Snapshot,
    parse_command,
    seller_was_late,
)
from helpdesk.errors import UserError
from helpdesk.mail import replyaddr
from helpdesk.mail.parse import InboundAttachment, InboundMail
from helpdesk.mail.quotes import strip_reply
from helpdesk.outbound.notify import Notice, Notifier
from helpdesk.routing import Applied, Decision, Drop, Quarantine, RecordBounce
from helpdesk.store import sql, timers
from helpdesk.store.attachments import AttachmentStore, StoredAttachment
from helpdesk.store.db import write_transaction
from helpdesk.store.index import StoreDisputeIndex
from helpdesk.store.schema import (
    Attachment,
    Dispute,
    DisputeEvent,
    Message,
    Order,
    Outbox,
    Participant,
    Proposal,
    ThreadRef,
    Ticket,
)
from helpdesk.store.timers import Due
from helpdesk.tickets.desk import Desk
from helpdesk.units import format_duration, normalise_reason

log = logging.getLogger("helpdesk.disputes")
SUBJECT = "dispute"                   # the timers' subject
MASK = "[address hidden]"
CARRY_ADDRESS = frozenset({
    "text/vcard", "text/x-vcard", "text/directory", "message/rfc822", "message/global",
    "application/pkcs7-signature", "application/x-pkcs7-signature", "application/pkcs7-mime",
    "application/x-pkcs7-mime", "application/pgp-keys", "application/pgp-signature"})
CARRY_ADDRESS_NAMES = (".vcf", ".vcard", ".eml", ".p7s", ".p7m", ".p7c", ".asc")
TO_STRANGERS = ("dispute_refused", "dispute_not_yours", "dispute_status")
WHO = {"buyer": "the buyer", "seller": "the seller", "admin": "the administration"}
DEADLINES = {SELLER_DUE: "the seller's answer is due", WINDOW_CLOSE: "the negotiation window closes",
             ADMIN_DUE: "the administration steps in"}


class StaleDispute(Exception):
    """The dispute changed since it was read (another worker, a deadline): what was decided
    on the old state must not be written. Rolls the work back; it is decided again."""


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

    row: Dispute
    order: Order | None
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



@dataclass(frozen=True)
class Problem:
    """Why a dispute cannot be opened: the code picks the reply's paragraph."""

    code: str           # unknown_order | not_buyer | already_open | bad_request
    message: str        # one line, for the command line and the log
    context: dict


@dataclass
class DisputeDesk:
    """What applying dispute mail and deadlines needs, built once by the app."""

    config: Config
    clock: Clock
    secret: bytes
    attachments: AttachmentStore
    notifiers: dict[str, Notifier]
    tickets: Desk                      # bounces are recorded the ticket way
    rules: Rules = field(init=False)
    index: StoreDisputeIndex = field(init=False, default_factory=StoreDisputeIndex)
    table: tuple = field(init=False, default=RULES)   # the disputes mailbox's rule table

    def __post_init__(self) -> None:
        self.rules = Rules(self.config.disputes, self.config.helpdesk.timezone)

    # --- entry points ----------------------------------------------------------

    def context(self) -> DisputeContext:
        return DisputeContext(self.config.own_addresses, self.secret, self.config.disputes.reasons,
                              self.index)

    def apply(self, decision: Decision, mail: InboundMail, stored: tuple[StoredAttachment, ...],
              raw_id: int, mailbox: Mailbox) -> Applied:
        """One routed mail to a disputes mailbox, inside the pipeline's transaction."""
        chosen = decision.route
        if isinstance(chosen, DisputeMessage):
            return self._message(chosen, mail, stored, raw_id)
        if isinstance(chosen, NotYours):
            return self._not_yours(chosen, mail, mailbox)
        if isinstance(chosen, DisputesStatusRequest):
            return self._status(mail, mailbox)
        if isinstance(chosen, OpenRequest):
            return self._open_by_mail(chosen, mail, stored, raw_id, mailbox)
        if isinstance(chosen, RecordBounce):
            ticket = self.tickets.bounce(chosen, mail, stored, raw_id)
            return Applied("bounce", ticket, "bounce: " + (", ".join(chosen.recipients) or mail.from_addr))
        if isinstance(chosen, Drop):
            return Applied("dropped", None, chosen.reason)
        assert isinstance(chosen, Quarantine)
        return Applied("quarantined", None, chosen.reason)

    def on_timer(self, due: Due, now: dt.datetime) -> None:
        """A dispute's deadline fired (inside the tick's transaction): apply what it changes."""
        self._decided_twice(due.subject_id, lambda loaded: self._fire(due, loaded, now))

    def _fire(self, due: Due, loaded: Loaded | None, now: dt.datetime) -> None:
        change = self.rules.timer(due.kind, loaded.snap, now) if loaded else None
        if change is None:
            return
        if change.event == "reminder":   # changes nothing, tells the seller
            for seller in loaded.having("seller"):
                self._send(loaded, seller, "dispute_reminder", {"left": change.reason}, now)
            return
        self._change(loaded, change, "system", now)
        if change.event == "window_closed" and (loaded.row.admin_due_at or now) <= now:
            return  # the administration steps in this very moment: its own notice says so
        if change.event in ("seller_missed", "admin_review"):
            self._join_admins(loaded)
        happened = _happened(change, "system", None)
        for party in loaded.parties:
            if party.role == "admin":
                self._tell_admin(loaded, party, change, happened, now)
            else:
                self._send(loaded, party, "dispute_update", happened, now)

    def open_from_form(self, order_id: str, reason: str, description: str,
                       files: list[Path]) -> str:
        """``helpdesk disputes open``: the marketplace's own dispute form; UserError if refused."""
        mailbox = next((m for m in self.config.mailboxes if m.kind == "disputes"), None)
        if mailbox is None:
            raise UserError(f"{self.config.path.name}: no mailbox has kind = \"disputes\"")
        normal = normalise_reason(reason)
        problems = tuple(code for code, bad in (
            ("no_order", not order_id.strip()), ("bad_reason", normal not in self.config.disputes.reasons),
            ("no_description", not description.strip())) if bad)
        attachments = tuple(_read_file(path) for path in files)
        with write_transaction():
            now = naive_utc(self.clock.now())
            problem = self._problem(order_id.strip(), None, problems, reason)
            if problem is not None:
                raise UserError(problem.message)
            stored = self.attachments.store_all(attachments)
            refused = [f"{a.filename}: {a.refused}" for a in stored if a.refused]
            if refused:
                raise UserError("attachment refused: " + "; ".join(refused))
            order = Order.get(Order.order_id == order_id.strip())
            try:
                loaded = self._open(order, normal, description.strip(), tuple(stored), mailbox, now,
                                    actor="marketplace")
            except pw.IntegrityError as exc:
                raise UserError(self._lost_race(order.order_id, None, reason, exc).message) from None
        return label(loaded.row.id)

    # --- opening ---------------------------------------------------------------

    def _open_by_mail(self, request: OpenRequest, mail: InboundMail, stored, raw_id: int,
                      mailbox: Mailbox) -> Applied:
        now = naive_utc(self.clock.now())
        problem = self._problem(request.order_id, mail.from_addr, request.problems,
                                request.reason_given)
        if problem is not None:
            sent = self._answer_stranger(mail, mailbox, "dispute_refused",
                                         {"problem": problem.code, **problem.context}, now)
            return Applied("dispute_refused", None, problem.message + ("" if sent else " (not answered: rate limit)"))
        order = Order.get(Order.order_id == request.order_id)
        try:
            loaded = self._open(order, request.reason, request.description, stored, mailbox, now,
                                actor="buyer", mail=mail, raw_id=raw_id)
        except pw.IntegrityError as exc:
            problem = self._lost_race(order.order_id, mail.from_addr, request.reason_given, exc)
            sent = self._answer_stranger(mail, mailbox, "dispute_refused",
                                         {"problem": problem.code, **problem.context}, now)
            return Applied("dispute_refused", None, problem.message + ("" if sent else " (not answered: rate limit)"))
        return Applied("dispute_opened", loaded.row.ticket_id, f"{label(loaded.row.id)} order {order.order_id}")

    def _lost_race(self, order_id: str, sender: str | None, reason_given: str | None,
                   error: pw.IntegrityError) -> Problem:
        """The database refused a second open dispute for the order (the unique ``open_order``):
        another opening committed between our check and our insert. Its answer is the usual
        "already open" one; any other integrity error is raised again."""
        problem = self._problem(order_id, sender, (), reason_given)
        if problem is None or problem.code != "already_open":
            raise error
        return problem

    def _problem(self, order_id: str | None, sender: str | None, problems: tuple[str, ...],
                 reason_given: str | None) -> Problem | None:
        """The first reason not to open: the order's checks, then the form's."""
        reasons = list(self.config.disputes.reasons)
        base = {"order": order_id, "reasons": reasons, "reason_given": reason_given, "problems": [],
                "existing": None}
        if order_id:
            order = Order.get_or_none(Order.order_id == order_id)
            if order is None:
                return Problem("unknown_order", f"no order {order_id} (import orders with "
                               "'helpdesk orders import FILE')", base)
            if sender is not None and order.buyer != sender:
                return Problem("not_buyer", f"order {order_id}: {sender} is not its buyer", base)
            existing = (Dispute.select(Dispute.id, Dispute.status)
                        .where((Dispute.order_id == order_id) & Dispute.status.in_(list(OPEN)))
                        .order_by(Dispute.id).first())
            if existing is not None:
                return Problem("already_open", f"order {order_id} already has an open dispute: "
                               f"{label(existing.id)} ({existing.status})",
                               {**base, "existing": {"id": label(existing.id), "status": existing.status,
                                                     "status_text": STATES[existing.status]}})
        if problems:
            return Problem("bad_request", _problems_line(problems, reason_given, reasons),
                           {**base, "problems": list(problems)})
        return None

    def _open(self, order: Order, reason: str, description: str, stored, mailbox: Mailbox,
              now: dt.datetime, actor: str, mail: InboundMail | None = None,
              raw_id: int | None = None) -> Loaded:
        """Create the dispute, its chat, parties, history and timers; tell buyer and seller.

        ``pw.IntegrityError`` when the database refuses a second open dispute for the order;
        the chat row is rolled back with it (a savepoint), and the caller's transaction goes on.
        """
        due, first_timers = self.rules.opening(now)
        with write_transaction(), pw.__exception_wrapper__:
            ticket = sql.insert(
                Ticket, mailbox=mailbox.name, kind="dispute",
                subject=f"Order {order.order_id}: {order.product}", requester=order.buyer,
                requester_name=mail.from_name if mail else "", status="dispute", priority="normal",
                created_at=now, updated_at=now)
            number = sql.insert(
                Dispute, ticket=ticket, order_id=order.order_id, buyer=order.buyer, seller=order.seller,
                reason=reason, description=description, status="awaiting_seller", created_at=now,
                updated_at=now, seller_due_at=due, open_order=order.order_id)
        buyer = self._add_party(ticket, order.buyer, mail.from_name if mail else "", "buyer")
        seller = self._add_party(ticket, order.seller, "", "seller")
        _record(ticket, order.buyer, description, stored, now, mail, raw_id)
        _history(number, now, actor, None, "awaiting_seller", f"opened ({reason})")
        timers.schedule(SUBJECT, number, now, first_timers)
        loaded = Loaded(Dispute.get_by_id(number), order, [buyer, seller], [], mailbox, anchors={})
        files = _listed(stored)
        self._send(loaded, buyer, "dispute_opened", {"attachments": files}, now, answering=mail)
        self._send(loaded, seller, "dispute_opened", {"attachments": files}, now,
                   files=self._passed_on(stored))
        return loaded

    # --- the chat ----------------------------------------------------------------

    def _message(self, found: DisputeMessage, mail: InboundMail, stored, raw_id: int) -> Applied:
        now = naive_utc(self.clock.now())
        return self._decided_twice(found.dispute_id,
                                   lambda loaded: self._apply_message(found, loaded, mail, stored, raw_id, now))

    def _apply_message(self, found: DisputeMessage, loaded: Loaded, mail: InboundMail, stored,
                       raw_id: int, now: dt.datetime) -> Applied:
        party = loaded.party(found.participant_id)
        own = strip_reply(mail.text, strict=True)     # relayed: never a quote of our own mail instead
        command = parse_command(own)
        if command is None and not own.strip() and not stored:
            # nothing left once quotes and signature are stripped: no answer, nothing to relay
            _record(loaded.row.ticket_id, party.address, "", stored, now, mail, raw_id)
            self._send(loaded, party, "dispute_help", {"empty": True}, now, answering=mail)
            return Applied("dispute_help", loaded.row.ticket_id,
                           f"{label(loaded.row.id)}: empty message from the {party.role}, answered with the help")
        if command is None:
            change = self.rules.message(party.role, loaded.snap, now)
            self._chat(loaded, party, change, own, own, mail, stored, raw_id, now)
            event = f" ({change.event})" if change else ""
            return Applied("dispute_message", loaded.row.ticket_id,
                           f"{label(loaded.row.id)} from the {party.role}{event}")
        result = self.rules.command(command, party.role, loaded.snap, now)
        where = f"{label(loaded.row.id)} #{command.name} by the {party.role}"
        if isinstance(result, Refusal):
            self._send(loaded, party, "dispute_command_refused",
                       {"command": f"#{command.name}", "why": result.why, "when": result.when}, now,
                       answering=mail)
            return Applied("dispute_command_refused", loaded.row.ticket_id, f"{where} refused: {result.why}")
        if command.name == "help":
            self._send(loaded, party, "dispute_help", {}, now, answering=mail)
            return Applied("dispute_help", loaded.row.ticket_id, where)
        self._chat(loaded, party, result, _relayed_text(command), own, mail, stored, raw_id, now)
        return Applied("dispute_command", loaded.row.ticket_id, where)

    def _chat(self, loaded: Loaded, party: Party, change: Change | None, text: str, own: str,
              mail: InboundMail, stored, raw_id: int, now: dt.datetime) -> None:
        """Record the message (``own``: its words, command included), apply its change, relay
        ``text`` to the others, confirm to the sender."""
        _record(loaded.row.ticket_id, party.address, own, stored, now, mail, raw_id)
        offer = None
        if change is not None:
            offer = self._change(loaded, change, _actor(party), now)
            if change.to_status == "admin_review":
                self._join_admins(loaded)
        if change is None and not text and not stored:
            return
        happened = {**_happened(change, party.role, offer), "text": text, "attachments": _listed(stored)}
        files = self._passed_on(stored)
        for other in loaded.parties:
            if other == party:
                continue
            if other.role == "admin" and change is not None and change.to_status == "admin_review":
                self._tell_admin(loaded, other, change, happened, now)
            else:
                self._send(loaded, other, "dispute_message", happened, now, files=files, auto=None)
        if change is not None:
            self._send(loaded, party, "dispute_update", happened, now, answering=mail)

    def _change(self, loaded: Loaded, change: Change, actor: str, now: dt.datetime) -> Offer | None:
        """Write a change: the dispute's columns, its history, timers, proposals.
        Returns the new proposal, if the change makes one.

        Only over the status it was decided on: when another transaction (a deadline, a
        command) changed the dispute since it was read, nothing is written and
        ``StaleDispute`` rolls the caller's savepoint back (see ``_decided_twice``).
        """
        row = loaded.row
        fields = {**change.fields, "updated_at": now}
        moved = bool(change.to_status and change.to_status != row.status)
        if moved:
            fields["status"] = change.to_status
            if change.to_status in FINAL:
                fields["open_order"] = None
        written = (Dispute.update(**fields)
                   .where((Dispute.id == row.id) & (Dispute.status == row.status)).execute())
        if written != 1:
            raise StaleDispute(f"{label(row.id)} is no longer {row.status}")
        if moved:
            _history(row.id, now, actor, row.status, change.to_status, change.reason)
        for name, value in fields.items():
            setattr(row, name, value)
        if change.cancel is None or change.cancel:
            timers.cancel(SUBJECT, row.id, change.cancel)
        timers.schedule(SUBJECT, row.id, now, change.schedule)
        if change.accepts is not None:
            (Proposal.update(accepted_at=now)
             .where((Proposal.dispute == row.id) & (Proposal.number == change.accepts.number)).execute())
        return self._propose(loaded, actor, change.offer, now) if change.offer is not None else None

    def _propose(self, loaded: Loaded, author: str, text: str, now: dt.datetime) -> Offer:
        number = (Proposal.select(pw.fn.MAX(Proposal.number)).where(Proposal.dispute == loaded.row.id)
                  .scalar() or 0) + 1
        sql.insert(Proposal, dispute=loaded.row.id, number=number, author=author, text=text,
                          created_at=now)
        offer = Offer(number, author, text)
        loaded.offers = [o for o in loaded.offers if o.author != author] + [offer]
        return offer

    # --- strangers: refusals and status ----------------------------------------------

    def _not_yours(self, found: NotYours, mail: InboundMail, mailbox: Mailbox) -> Applied:
        now = naive_utc(self.clock.now())
        sent = self._answer_stranger(mail, mailbox, "dispute_not_yours",
                                     {"dispute_id": label(found.dispute_id)}, now)
        note = "" if sent else " (not answered: rate limit)"
        return Applied("dispute_refused", found.ticket_id,
                       f"{label(found.dispute_id)}: {mail.from_addr} is not a participant ({found.rule}){note}")

    def _status(self, mail: InboundMail, mailbox: Mailbox) -> Applied:
        now = naive_utc(self.clock.now())
        listed = self._status_list(mail.from_addr, now)
        sent = self._answer_stranger(mail, mailbox, "dispute_status", {"disputes": listed}, now)
        return Applied("dispute_status", None,
                       f"{len(listed)} disputes" + ("" if sent else " (not answered: rate limit)"))

    def _status_list(self, address: str, now: dt.datetime) -> list[dict]:
        rows = list(Dispute.select(Dispute, Participant.role.alias("role"))
                    .join(Participant, on=(Participant.ticket == Dispute.ticket))
                    .where(Participant.address == address).order_by(Dispute.id).limit(100).objects())
        products = dict(Order.select(Order.order_id, Order.product)
                        .where(Order.order_id.in_([r.order_id for r in rows] or [""])).tuples())
        listed = []
        for row in rows:
            snap = Snapshot(row.id, row.status, row.seller_due_at, row.seller_answered_at,
                            row.window_closes_at, row.admin_due_at)
            hidden = tuple(a for a in (row.buyer, row.seller) if a != address)
            listed.append(_masked({**self._dispute_context(row, products.get(row.order_id, ""), snap, now),
                                   "role": row.role, "deadline": self._deadline(snap)}, _masker(hidden)))
        return listed

    def _answer_stranger(self, mail: InboundMail, mailbox: Mailbox, event: str, context: dict,
                         now: dt.datetime) -> bool:
        """A reply to whoever wrote (refusals, status), rate-limited like acknowledgements:
        the From may be forged, and we must not become a source of backscatter."""
        limits = self.config.limits
        if limits.ack_rate_limit <= 0:
            return False
        sent = (Outbox.select().where((Outbox.recipient == mail.from_addr) & Outbox.kind.in_(TO_STRANGERS)
                                      & (Outbox.created_at >= now - limits.ack_rate_window)).count())
        if sent >= limits.ack_rate_limit:
            return False
        full = {"helpdesk_name": self.config.helpdesk.name, "recipient": mail.from_addr,
                "recipient_name": mail.from_name, "address": mailbox.address,
                "fields": _FIELDS_HELP, **context}
        self.notifiers[mailbox.name].queue(Notice(
            event=event, audience="buyer", recipient=mail.from_addr, recipient_name=mail.from_name,
            context=full, in_reply_to=mail.message_id, references=mail.references))
        return True

    # --- the administration ------------------------------------------------------------

    def _join_admins(self, loaded: Loaded) -> None:
        """Admins (all staff when none is an admin) join the dispute as participants."""
        staff = [s for s in self.config.staff if s.role == "admin"] or list(self.config.staff)
        present = {p.address for p in loaded.parties}
        for member in staff:
            if member.address not in present:
                loaded.parties.append(self._add_party(loaded.row.ticket_id, member.address,
                                                      member.name, "admin"))

    def _tell_admin(self, loaded: Loaded, admin: Party, change: Change, happened: dict,
                    now: dt.datetime) -> None:
        if change.to_status == "admin_review":
            self._send(loaded, admin, "dispute_review", {**happened, **self._whole_chat(loaded)}, now)
        elif change.event == "seller_missed":
            self._send(loaded, admin, "dispute_seller_missed", happened, now)
        else:
            self._send(loaded, admin, "dispute_update", happened, now)

    def _whole_chat(self, loaded: Loaded) -> dict:
        """Every message and proposal, for the administration's review (read once per dispute)."""
        if loaded.chat is None:
            loaded.chat = self._read_chat(loaded)
        return loaded.chat

    def _read_chat(self, loaded: Loaded) -> dict:
        """By role, never by address: the administration's mail may be forwarded
        (``helpdesk show D-n`` has the addresses)."""
        roles = {p.address: p.role for p in loaded.parties}
        messages = list(Message.select().where(Message.ticket == loaded.row.ticket_id)
                        .order_by(Message.created_at, Message.id))
        files: dict[int, list[dict]] = {}
        for a in Attachment.select().where(Attachment.message.in_([m.id for m in messages] or [0])):
            files.setdefault(a.message_id, []).extend(_listed([a]))
        chat = [{"at": self.rules.when(m.created_at), "role": roles.get(m.sender, "?"),
                 "text": m.body, "attachments": files.get(m.id, [])} for m in messages]
        proposals = [{"number": p.number, "author": p.author, "text": p.text,
                      "accepted": p.accepted_at is not None}
                     for p in Proposal.select().where(Proposal.dispute == loaded.row.id).order_by(Proposal.number)]
        return {"chat": chat, "proposals": proposals}

    # --- mail --------------------------------------------------------------------

    def _send(self, loaded: Loaded, party: Party, event: str, extra: dict, now: dt.datetime, *,
              answering: InboundMail | None = None, files: tuple = (),
              auto: str | None = "auto-generated") -> None:
        """One mail about a dispute to one party, from the disputes address, with their own Reply-To.

        ``answering`` threads it under the party's own mail; otherwise under the
        first mail we sent them about this dispute, never under the other
        side's Message-IDs (which can name their domain).
        """
        mask = _masker(_hidden_from(loaded, party))
        context = _masked(self._context(loaded, party, now, {**extra, "passed_on": bool(files)}), mask)
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
        dispute = self._dispute_context(loaded.row, product, snap, now)
        if loaded.order is not None:
            dispute.update(amount=str(loaded.order.amount), currency=loaded.order.currency)
        settings = self.config.disputes
        return {"helpdesk_name": self.config.helpdesk.name, "recipient": party.address,
                "recipient_name": party.name, "role": party.role, "dispute": dispute,
                "deadline": self._deadline(snap), "commands": self.rules.allowed(party.role, snap, now),
                "address": loaded.mailbox.address,
                "durations": {name: format_duration(getattr(settings, name))
                              for name in ("seller_response", "negotiation", "admin_after")},
                "event": None, "by": None, "who": "", "offer": None, "accepted": None, "text": "",
                "attachments": [], "passed_on": False, "empty": False, **extra}

    def _dispute_context(self, row: Dispute, product: str, snap: Snapshot, now: dt.datetime) -> dict:
        when = self.rules.when
        return {"id": label(row.id), "number": row.id, "order": row.order_id, "product": product,
                "amount": "", "currency": "", "reason": row.reason, "description": row.description,
                "status": row.status, "status_text": STATES[row.status], "created": when(row.created_at),
                "seller_due": when(row.seller_due_at), "window_closes": when(row.window_closes_at),
                "admin_due": when(row.admin_due_at), "decided_for": row.decided_for,
                "decision": row.decision, "seller_late": seller_was_late(snap, now)}

    def _deadline(self, snap: Snapshot) -> dict | None:
        found = self.rules.deadline(snap)
        if found is None:
            return None
        kind, at = found
        return {"kind": kind, "what": DEADLINES[kind], "at": self.rules.when(at)}

    def _anchor(self, loaded: Loaded, address: str) -> str | None:
        if loaded.anchors is None:
            first = (Outbox.select(pw.fn.MIN(Outbox.id)).where(Outbox.ticket == loaded.row.ticket_id)
                     .group_by(Outbox.recipient))
            loaded.anchors = dict(Outbox.select(Outbox.recipient, Outbox.message_id)
                                  .where(Outbox.id.in_(first)).tuples())
        return loaded.anchors.get(address)

    def _passed_on(self, stored) -> tuple[tuple[str, str, str], ...]:
        """The files relayed to the others: accepted ones that do not carry an address."""
        return tuple((a.filename, a.content_type, str(self.attachments.path_for(a.sha256)))
                     for a in stored if not a.refused and a.sha256 and not withheld(a.content_type, a.filename))

    # --- the store -----------------------------------------------------------------

    def _decided_twice(self, dispute_id: int, work):
        """``work(loaded)`` in a savepoint of the caller's transaction. When the dispute changed
        under it (``StaleDispute``: a deadline and a command at once), its writes are rolled
        back, the dispute is read again and ``work`` decides once more on what is there now;
        a second ``StaleDispute`` propagates (the tick puts the timer back to pending, the
        pipeline quarantines the mail)."""
        for attempt in (1, 2):
            loaded = self._load(dispute_id)
            try:
                with write_transaction():
                    return work(loaded)
            except StaleDispute as exc:
                if attempt == 2:
                    raise
                log.info("%s: read again and decided once more", exc)
        raise AssertionError("unreachable")

    def _load(self, dispute_id: int) -> Loaded | None:
        row = Dispute.get_or_none(Dispute.id == dispute_id)
        if row is None:
            return None
        [mailbox_name] = sql.select(Ticket, ["mailbox"], {"id": row.ticket_id})[0]
        order = Order.get_or_none(Order.order_id == row.order_id)
        parties = [Party(*p) for p in Participant.select(Participant.id, Participant.address, Participant.name,
                                                          Participant.role)
                   .where(Participant.ticket == row.ticket_id).order_by(Participant.id).tuples()]
        latest: dict[str, Offer] = {}
        for number, author, text in (Proposal.select(Proposal.number, Proposal.author, Proposal.text)
                                     .where(Proposal.dispute == row.id).order_by(Proposal.number).tuples()):
            latest[author] = Offer(number, author, text)
        return Loaded(row, order, parties, list(latest.values()),
                      self.config.mailbox_or_default(mailbox_name, kind="disputes"))

    def _add_party(self, ticket_id: int, address: str, name: str, role: str) -> Party:
        pid = sql.insert(Participant, ticket=ticket_id, address=address, name=name, role=role)
        return Party(pid, address, name, role)


# --- helpers -----------------------------------------------------------------------

_FIELDS_HELP = [
    "the order id, in the subject or the text (e.g. \"Order 100234\")",
    "a line \"Reason: ...\" with one of the reasons below",
    "a description of the problem (the rest of your text)",
    "images or other files, attached (optional)",
]


def _record(ticket_id: int, sender: str, body: str, stored, now: dt.datetime,
            mail: InboundMail | None, raw_id: int | None) -> None:
    """One inbound message of the chat, with its attachments and thread references."""
    message = sql.insert(
        Message, ticket=ticket_id, raw=raw_id, direction="in", sender=sender,
        recipients=", ".join(mail.to + mail.cc) if mail else "", subject=mail.subject if mail else "",
        body=body, full_text=mail.text if mail else body, message_id=mail.message_id if mail else None,
        auto=False, created_at=now)
    sql.insert_rows(Attachment, [
        {"message": message, "filename": a.filename, "content_type": a.content_type, "size": a.size,
         "sha256": a.sha256, "inline": a.inline, "refused": a.refused} for a in stored])
    if mail is not None:
        sql.insert_rows(ThreadRef, [{"msgid": m, "ticket": ticket_id} for m in mail.thread_ids],
                               ignore_conflicts=True)


def _history(dispute_id: int, now: dt.datetime, actor: str, before: str | None, after: str,
             reason: str) -> None:
    sql.insert(DisputeEvent, dispute=dispute_id, at=now, actor=actor, from_status=before,
                      to_status=after, reason=reason)


def _actor(party: Party) -> str:
    return f"admin:{party.address}" if party.role == "admin" else party.role


def _happened(change: Change | None, by: str, offer: Offer | None) -> dict:
    """What templates need to say what happened; ``by`` is a role or "system"."""
    return {"event": change.event if change else None, "by": by, "who": WHO.get(by, ""),
            "offer": offer.__dict__ if offer else None,
            "accepted": change.accepts.__dict__ if change and change.accepts else None}


def _relayed_text(command: Command) -> str:
    """What goes to the others besides the command: the lines below it, unless they were
    the command's own text (``#propose`` alone on its line)."""
    return "" if command.consumes_rest else command.rest


def withheld(content_type: str, filename: str) -> bool:
    """Files that carry their sender's address by design (contact cards, forwarded mail,
    S/MIME and PGP signatures and keys): kept with the message, never passed on."""
    return content_type.lower() in CARRY_ADDRESS or filename.lower().endswith(CARRY_ADDRESS_NAMES)


def _listed(stored) -> list[dict]:
    return [{"filename": a.filename, "size": a.size, "content_type": a.content_type, "refused": a.refused,
             "withheld": not a.refused and withheld(a.content_type, a.filename)}
            for a in stored]


def _hidden_from(loaded: Loaded, reader: Party) -> tuple[str, ...]:
    """The addresses a reader must not see: the other party's; both for the administration,
    whose mail may be forwarded to either."""
    return tuple(a for a in (loaded.row.buyer, loaded.row.seller)
                 if a and (reader.role == "admin" or a != reader.address))


def _masker(addresses: tuple[str, ...]) -> Callable[[str], str]:
    if not addresses:
        return lambda text: text
    pattern = re.compile("|".join(re.escape(a) for a in sorted(set(addresses), key=len, reverse=True)),
                         re.IGNORECASE)
    return lambda text: pattern.sub(MASK, text) if text else text


def _masked(value, mask: Callable[[str], str]):
    """Every string of a template context masked, however deep: no field, present or future,
    can carry an address out. A value of any other kind is a bug, and fails loudly."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _masked(item, mask) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(item, mask) for item in value]
    if value is None or isinstance(value, (bool, int, float, Decimal, dt.date, dt.timedelta)):
        return value
    raise TypeError(f"cannot mask a {type(value).__name__} in a dispute mail's context")


def _problems_line(problems: tuple[str, ...], given: str | None, reasons: list[str]) -> str:
    said = {"no_order": "no order id", "no_reason": "no \"Reason:\" line",
            "bad_reason": f"reason {given!r} is not one of: {', '.join(reasons)}",
            "no_description": "no description"}
    return "; ".join(said[p] for p in problems)


def _read_file(path: Path) -> InboundAttachment:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return InboundAttachment(path.name, content_type, data, inline=False)
