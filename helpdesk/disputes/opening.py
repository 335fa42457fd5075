"""Opening a dispute: by mail to the disputes address, or by the marketplace's own form.

Both check the same things first (``eligibility.problem``): the order exists,
the sender is its buyer, it has no open dispute yet, the request is complete. Two
openings at once both pass that check; the database's unique ``open_order``
refuses the second one, which then gets the usual "already open" answer.
A new dispute starts with its chat, its buyer and seller, its history and the
seller's timers, and both parties are told.
"""

from __future__ import annotations

import datetime as dt
import mimetypes
from pathlib import Path

from helpdesk.clock import naive_utc
from helpdesk.config.settings import Mailbox
from helpdesk.disputes.desk import DisputeDesk
from helpdesk.disputes.eligibility import Problem
from helpdesk.disputes.masking import listed, passed_on
from helpdesk.disputes.parties import SUBJECT, Loaded, label
from helpdesk.disputes.route import OpenRequest
from helpdesk.disputes.strangers import answer
from helpdesk.errors import AlreadyOpen, UserError
from helpdesk.mail.filenames import neutralised
from helpdesk.mail.parse import InboundAttachment, InboundMail
from helpdesk.routing import Applied
from helpdesk.store import disputes as store
from helpdesk.store import orders, timers
from helpdesk.store.db import write_transaction
from helpdesk.store.orders import OrderRow
from helpdesk.units import normalise_reason


def from_form(desk: DisputeDesk, order_id: str, reason: str, description: str, files: list[Path]) -> str:
    """The marketplace's own dispute form; its label, or UserError if refused."""
    mailbox = next((m for m in desk.config.mailboxes if m.kind == "disputes"), None)
    if mailbox is None:
        raise UserError(f"{desk.config.path.name}: no mailbox has kind = \"disputes\"")
    normal = normalise_reason(reason)
    problems = tuple(code for code, bad in (
        ("no_order", not order_id.strip()), ("bad_reason", normal not in desk.config.disputes.reasons),
        ("no_description", not description.strip())) if bad)
    attachments = tuple(_read_file(path) for path in files)
    with write_transaction():
        now = naive_utc(desk.clock.now())
        problem = desk.problem(order_id.strip(), None, problems, reason)
        if problem is not None:
            raise UserError(problem.message)
        stored = desk.attachments.store_all(attachments)
        refused = [f"{a.filename}: {a.refused}" for a in stored if a.refused]
        if refused:
            raise UserError("attachment refused: " + "; ".join(refused))
        order = orders.find(order_id.strip())
        try:
            loaded = _open(desk, order, normal, description.strip(), tuple(stored), mailbox, now,
                           actor="marketplace")
        except AlreadyOpen as exc:
            raise UserError(_lost_race(desk, order.order_id, None, reason, exc).message) from None
    return label(loaded.row.id)


def by_mail(desk: DisputeDesk, request: OpenRequest, mail: InboundMail, stored, raw_id: int,
            mailbox: Mailbox) -> Applied:
    now = naive_utc(desk.clock.now())
    problem = desk.problem(request.order_id, mail.from_addr, request.problems, request.reason_given)
    if problem is not None:
        return _refuse(desk, problem, mail, mailbox, now)
    order = orders.find(request.order_id)
    try:
        loaded = _open(desk, order, request.reason, request.description, stored, mailbox, now,
                       actor="buyer", mail=mail, raw_id=raw_id)
    except AlreadyOpen as exc:
        problem = _lost_race(desk, order.order_id, mail.from_addr, request.reason_given, exc)
        return _refuse(desk, problem, mail, mailbox, now)
    return Applied("dispute_opened", loaded.row.ticket_id, f"{label(loaded.row.id)} order {order.order_id}")


def _refuse(desk: DisputeDesk, problem: Problem, mail: InboundMail, mailbox: Mailbox,
            now: dt.datetime) -> Applied:
    sent = answer(desk, mail, mailbox, "dispute_refused", {"problem": problem.code, **problem.context}, now)
    return Applied("dispute_refused", None, problem.message + ("" if sent else " (not answered: rate limit)"))


def _lost_race(desk: DisputeDesk, order_id: str, sender: str | None, reason_given: str | None,
               error: AlreadyOpen) -> Problem:
    """The database refused a second open dispute for the order (the unique ``open_order``):
    another opening committed between our check and our insert. Its answer is the usual
    "already open" one; if the check does not say so now, the error is raised again."""
    problem = desk.problem(order_id, sender, (), reason_given)
    if problem is None or problem.code != "already_open":
        raise error
    return problem


def _open(desk: DisputeDesk, order: OrderRow, reason: str, description: str, stored, mailbox: Mailbox,
          now: dt.datetime, actor: str, mail: InboundMail | None = None, raw_id: int | None = None) -> Loaded:
    """Create the dispute, its chat, parties, history and timers; tell buyer and seller.

    ``AlreadyOpen`` when the database refuses a second open dispute for the order;
    nothing of it is written, and the caller's transaction goes on.
    """
    due, first_timers = desk.rules.opening(now)
    name = mail.from_name if mail else ""
    ticket, number = store.create(mailbox.name, f"Order {order.order_id}: {order.product}", order, name,
                                  reason, description, "awaiting_seller", due, now)
    buyer = desk.add_party(ticket, order.buyer, name, "buyer")
    seller = desk.add_party(ticket, order.seller, "", "seller")
    store.record(ticket, order.buyer, description, stored, now, mail, raw_id)
    store.add_event(number, now, actor, None, "awaiting_seller", f"opened ({reason})")
    timers.schedule(SUBJECT, number, now, first_timers)
    loaded = Loaded(store.read(number), order, [buyer, seller], [], mailbox, anchors={})
    allowed = desk.config.disputes.relay_file_types
    files = listed(stored, allowed)
    desk.send(loaded, buyer, "dispute_opened", {"attachments": files}, now, answering=mail)
    desk.send(loaded, seller, "dispute_opened", {"attachments": files}, now,
              files=passed_on(desk.attachments, stored, allowed))
    return loaded


def _read_file(path: Path) -> InboundAttachment:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return InboundAttachment(neutralised(path.name), content_type, data, inline=False)
