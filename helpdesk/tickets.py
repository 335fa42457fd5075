"""Apply a routed mail to tickets: the state change and the mail it causes, together.

Called inside the pipeline's transaction, so a ticket, its messages, its
attachments' rows and the acknowledgement in the outbox are committed as one,
or not at all. ``StoreIndex`` is the read side the router uses.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import peewee as pw

from helpdesk import replyaddr
from helpdesk.attachments import AttachmentStore, StoredAttachment
from helpdesk.clock import Clock, naive_utc
from helpdesk.config import Config, Mailbox, format_duration
from helpdesk.models import Attachment, Bounce, Message, Outbox, Participant, ThreadRef, Ticket
from helpdesk.notify import Notice, Notifier
from helpdesk.parse import InboundMail
from helpdesk.route import NewTicket, RecordBounce, TicketReply

REOPENING = frozenset({"resolved", "waiting_on_customer"})
_REPLY_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg|sv|vs|tr|rv|antw|odp|res)\s*(\[\d+\])?\s*:\s*)+",
                           re.IGNORECASE)


def label(ticket_id: int) -> str:
    return f"T-{ticket_id}"


class StoreIndex:
    """The router's read-only view of threads and participants."""

    def ticket_for_msgids(self, msgids: tuple[str, ...]) -> int | None:
        if not msgids:
            return None
        row = (ThreadRef.select(ThreadRef.ticket).where(ThreadRef.msgid.in_(list(msgids)))
               .order_by(ThreadRef.ticket).limit(1).first())
        return row.ticket_id if row else None

    def participant(self, participant_id: int) -> tuple[int, str] | None:
        row = Participant.get_or_none(Participant.id == participant_id)
        return (row.ticket_id, row.address) if row else None

    def is_participant(self, ticket_id: int, address: str) -> bool:
        return Participant.select().where((Participant.ticket == ticket_id)
                                          & (Participant.address == address)).exists()

    def ticket_status(self, ticket_id: int) -> str | None:
        row = Ticket.select(Ticket.status).where(Ticket.id == ticket_id).first()
        return row.status if row else None


@dataclass
class Desk:
    """What applying a route needs, built once by the app."""

    config: Config
    clock: Clock
    secret: bytes
    attachments: AttachmentStore
    notifiers: dict[str, Notifier]      # by mailbox name

    def new_ticket(self, route: NewTicket, mail: InboundMail, raw_id: int, mailbox: Mailbox) -> int:
        now = naive_utc(self.clock.now())
        ticket_id = Ticket.insert(
            mailbox=mailbox.name, subject=clean_subject(mail.subject), requester=mail.requester,
            requester_name=mail.from_name, status="new", created_at=now, updated_at=now,
            follow_up_of=route.follow_up_of).execute()
        requester = Participant.insert(ticket=ticket_id, address=mail.requester,
                                       name=mail.from_name, role="requester").execute()
        stored = self._record(ticket_id, mail, raw_id, now, auto=False)
        if route.acknowledge and self._may_acknowledge(mail.requester, now):
            self._acknowledge(ticket_id, requester, mail, mailbox, stored)
        self._notify_staff(ticket_id, mail, mailbox, stored)
        return ticket_id

    def reply(self, route: TicketReply, mail: InboundMail, raw_id: int, mailbox: Mailbox) -> int:
        now = naive_utc(self.clock.now())
        stored = self._record(route.ticket_id, mail, raw_id, now, auto=route.silent)
        if route.silent:
            return route.ticket_id
        ticket = Ticket.get_by_id(route.ticket_id)
        status = "open" if ticket.status in REOPENING else ticket.status
        Ticket.update(status=status, updated_at=now).where(Ticket.id == ticket.id).execute()
        participant = self._participant(ticket.id, mail)
        refused = [a for a in stored if a.refused]
        if refused:
            self._queue(mailbox, "attachments_refused", ticket, participant, mail,
                        {"refused": _attachment_list(refused)})
        return ticket.id

    def bounce(self, route: RecordBounce, mail: InboundMail, raw_id: int) -> int | None:
        now = naive_utc(self.clock.now())
        report = mail.bounce
        addresses = route.recipients or (mail.from_addr,)
        Bounce.insert_many([
            {"address": a, "raw": raw_id, "ticket": route.ticket_id, "created_at": now,
             "status": report.status if report else "", "diagnostic": report.diagnostic if report else ""}
            for a in addresses]).execute()
        if route.ticket_id is not None:
            self._record(route.ticket_id, mail, raw_id, now, auto=True)
        return route.ticket_id

    # --- pieces ------------------------------------------------------------

    def _record(self, ticket_id: int, mail: InboundMail, raw_id: int, now: dt.datetime,
                auto: bool) -> list[StoredAttachment]:
        message_id = Message.insert(
            ticket=ticket_id, raw=raw_id, direction="in", sender=mail.from_addr,
            recipients=", ".join(mail.to + mail.cc), subject=mail.subject, body=mail.reply_text,
            full_text=mail.text, message_id=mail.message_id, auto=auto, created_at=now).execute()
        stored = self.attachments.store_all(mail.attachments)
        if stored:
            Attachment.insert_many([
                {"message": message_id, "filename": a.filename, "content_type": a.content_type,
                 "size": a.size, "sha256": a.sha256, "inline": a.inline, "refused": a.refused}
                for a in stored]).execute()
        if mail.thread_ids:
            (ThreadRef.insert_many([{"msgid": m, "ticket": ticket_id} for m in mail.thread_ids])
             .on_conflict_ignore().execute())
        return stored

    def _may_acknowledge(self, address: str, now: dt.datetime) -> bool:
        limits = self.config.limits
        if limits.ack_rate_limit <= 0:
            return False
        since = now - limits.ack_rate_window
        sent = (Outbox.select().where((Outbox.recipient == address) & (Outbox.kind == "ack")
                                      & (Outbox.created_at >= since)).count())
        return sent < limits.ack_rate_limit

    def _acknowledge(self, ticket_id, requester_id, mail, mailbox, stored) -> None:
        ticket = Ticket.get_by_id(ticket_id)
        context = {
            "first_response": format_duration(self.config.tickets.first_response),
            "attachments": _attachment_list([a for a in stored if not a.refused]),
            "refused": _attachment_list([a for a in stored if a.refused]),
            "text": mail.reply_text,
        }
        self._queue(mailbox, "ack", ticket, (requester_id, mail.requester, mail.from_name), mail, context)

    def _notify_staff(self, ticket_id: int, mail: InboundMail, mailbox: Mailbox, stored) -> None:
        staff = [s for s in self.config.staff if s.role == "agent"] or list(self.config.staff)
        if not staff:
            return
        ticket = Ticket.get_by_id(ticket_id)
        context = {"text": mail.reply_text, "attachments": _attachment_list(stored),
                   "requester": mail.requester, "requester_name": mail.from_name}
        for member in staff:
            pid = _ensure_participant(ticket_id, member.address, member.name, "staff")
            self._queue(mailbox, "new_ticket", ticket, (pid, member.address, member.name), mail,
                        context, audience="staff")

    def _participant(self, ticket_id: int, mail: InboundMail) -> tuple[int, str, str]:
        pid = _ensure_participant(ticket_id, mail.from_addr, mail.from_name, "cc")
        return pid, mail.from_addr, mail.from_name

    def _queue(self, mailbox, event, ticket, participant, mail, context, audience="customer"):
        pid, address, name = participant
        token = replyaddr.ReplyToken("t", ticket.id, pid)
        full = {"helpdesk_name": self.config.helpdesk.name, "ticket": _ticket_view(ticket),
                "recipient_name": name, "recipient": address, **context}
        self.notifiers[mailbox.name].queue(Notice(
            event=event, audience=audience, recipient=address, recipient_name=name,
            context=full, ticket_id=ticket.id,
            reply_to=replyaddr.reply_address(self.secret, mailbox.address, token),
            in_reply_to=mail.message_id, references=mail.references, token=f"[{label(ticket.id)}]"))


def clean_subject(subject: str) -> str:
    """A ticket's title: the subject without "Re:", "Fwd:", "AW:"... prefixes."""
    return _REPLY_PREFIX.sub("", subject).strip() or "(no subject)"


def _ensure_participant(ticket_id: int, address: str, name: str, role: str) -> int:
    row = Participant.get_or_none((Participant.ticket == ticket_id) & (Participant.address == address))
    if row is not None:
        return row.id
    try:
        return Participant.insert(ticket=ticket_id, address=address, name=name, role=role).execute()
    except pw.IntegrityError:  # pragma: no cover - a racing writer on PostgreSQL
        return Participant.get((Participant.ticket == ticket_id) & (Participant.address == address)).id


def _ticket_view(ticket: Ticket) -> dict:
    return {"id": label(ticket.id), "number": ticket.id, "subject": ticket.subject,
            "status": ticket.status, "requester": ticket.requester}


def _attachment_list(stored: list[StoredAttachment]) -> list[dict]:
    return [{"filename": a.filename, "size": a.size, "content_type": a.content_type,
             "refused": a.refused} for a in stored]
