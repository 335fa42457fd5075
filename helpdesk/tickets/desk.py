"""Apply a routed mail to tickets: the state change and the mail it causes, together.

Called inside the pipeline's transaction, so a ticket, its messages, its
attachments' rows and the acknowledgement in the outbox are committed as one,
or not at all.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from helpdesk.clock import Clock, naive_utc
from helpdesk.config.settings import Config, Mailbox, TrustSettings
from helpdesk.disputes import rules as dispute_rules
from helpdesk.mail import replyaddr
from helpdesk.mail.compose import clip
from helpdesk.mail.parse import InboundMail
from helpdesk.outbound.notify import Notice, Notifier
from helpdesk.routing import RecordBounce, proof
from helpdesk.store import holds, tickets
from helpdesk.store.attachments import AttachmentStore, StoredAttachment
from helpdesk.store.tickets import TicketRow
from helpdesk.tickets import lifecycle
from helpdesk.tickets.route import INBOUND_ONLY, NewTicket, TicketReply
from helpdesk.units import format_duration

_REPLY_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg|sv|vs|tr|rv|antw|odp|res)\s*(\[\d+\])?\s*:\s*)+",
                           re.IGNORECASE)


def label(ticket_id: int) -> str:
    return f"T-{ticket_id}"


@dataclass(frozen=True)
class TicketView:
    """What templates and notices need of a ticket, without reading it back."""

    number: int
    subject: str
    status: str
    requester: str

    def context(self) -> dict:
        return {"id": label(self.number), "number": self.number, "subject": self.subject,
                "status": self.status, "requester": self.requester}

    @classmethod
    def of(cls, ticket: TicketRow) -> TicketView:
        return cls(ticket.id, ticket.subject, ticket.status, ticket.requester)


@dataclass(frozen=True)
class Person:
    participant_id: int
    address: str
    name: str


@dataclass
class Desk:
    """What applying a route needs, built once by the app."""

    config: Config
    clock: Clock
    secret: bytes
    attachments: AttachmentStore
    notifiers: dict[str, Notifier]      # by mailbox name

    def new_ticket(self, route: NewTicket, mail: InboundMail, stored: tuple[StoredAttachment, ...],
                   raw_id: int, mailbox: Mailbox) -> int:
        now = naive_utc(self.clock.now())
        subject = clean_subject(mail.subject)
        address = requester_of(mail, self.config.trust)
        unverified = mail.reply_to if mail.reply_to != address else None
        number = tickets.create(mailbox.name, subject, address, clip(mail.from_name), now,
                                route.follow_up_of, reply_to=unverified)
        ticket = TicketView(number, subject, "new", address)
        requester = self._add_person(number, address, mail.from_name, "requester")
        self._add_copied(number, mail, address)
        self._record(number, mail, stored, raw_id, now, auto=False)
        if route.sender_failed:
            holds.record_failure(raw_id, mail.from_addr, route.sender_failed, now)   # counted in the digest
        lifecycle.opened(number, now, self.config.tickets)
        notices = []
        if route.acknowledge and self._may_acknowledge(address, now):
            notices.append(self._acknowledgement(ticket, requester, mail, mailbox, stored))
        notices += self._staff_notices(ticket, mail, mailbox, stored, unverified)
        self.notifiers[mailbox.name].queue_many(notices)
        return number

    def reply(self, route: TicketReply, mail: InboundMail, stored: tuple[StoredAttachment, ...],
              raw_id: int, mailbox: Mailbox) -> int:
        now = naive_utc(self.clock.now())
        self._record(route.ticket_id, mail, stored, raw_id, now, auto=route.silent)
        if route.silent:
            return route.ticket_id
        subject, status, requester = tickets.shown(route.ticket_id)
        status = lifecycle.customer_wrote(route.ticket_id, status, now, self.config.tickets)
        tickets.update(route.ticket_id, status=status, updated_at=now)
        if route.rule == INBOUND_ONLY:     # recorded on the ticket; joins it only by our Message-ID
            return route.ticket_id
        person = self.person(route.ticket_id, mail.from_addr, mail.from_name, "cc")
        refused = [a for a in stored if a.refused]
        if refused:
            ticket = TicketView(route.ticket_id, subject, status, requester)
            self.queue(mailbox, "attachments_refused", ticket, person, mail,
                        {"refused": _attachment_list(refused)})
        return route.ticket_id

    def bounce(self, route: RecordBounce, mail: InboundMail, stored: tuple[StoredAttachment, ...],
               raw_id: int) -> int | None:
        now = naive_utc(self.clock.now())
        report = mail.bounce
        addresses = route.recipients or (mail.from_addr,)
        tickets.add_bounces(addresses, raw_id, route.ticket_id, now,
                            report.status if report else "", report.diagnostic if report else "")
        if route.ticket_id is not None:
            self._record(route.ticket_id, mail, stored, raw_id, now, auto=True)
        return route.ticket_id

    def status_reply(self, mail: InboundMail, mailbox: Mailbox) -> bool:
        """Answer "status" with the sender's own open tickets and disputes.

        The list goes to the From address, never to Reply-To: whoever forges a
        Reply-To must not receive somebody else's requests.
        """
        now = naive_utc(self.clock.now())
        if not self._may_acknowledge(mail.from_addr, now, kind="status"):
            return False
        context = {"helpdesk_name": self.config.helpdesk.name, "recipient_name": mail.from_name,
                   "tickets": open_tickets_of(mail.from_addr), "disputes": open_disputes_of(mail.from_addr)}
        self.notifiers[mailbox.name].queue(Notice(
            event="status", audience="customer", recipient=mail.from_addr,
            recipient_name=mail.from_name, context=context, in_reply_to=mail.message_id,
            references=mail.references))
        return True

    # --- pieces ------------------------------------------------------------

    def _record(self, ticket_id: int, mail: InboundMail, stored: tuple[StoredAttachment, ...],
                raw_id: int, now: dt.datetime, auto: bool) -> None:
        tickets.add_message(
            ticket_id, now, raw_id=raw_id, direction="in", sender=mail.from_addr,
            recipients=", ".join(mail.to + mail.cc), subject=mail.subject, body=mail.reply_text,
            full_text=mail.text, message_id=mail.message_id, auto=auto,
            attachments=stored, thread_ids=mail.thread_ids)

    def _may_acknowledge(self, address: str, now: dt.datetime, kind: str = "ack") -> bool:
        limits = self.config.limits
        if limits.ack_rate_limit <= 0:
            return False
        return tickets.sent_since(address, kind, now - limits.ack_rate_window) < limits.ack_rate_limit

    def _acknowledgement(self, ticket: TicketView, requester: Person, mail, mailbox, stored) -> Notice:
        context = {
            "first_response": format_duration(self.config.tickets.first_response),
            "attachments": _attachment_list([a for a in stored if not a.refused]),
            "refused": _attachment_list([a for a in stored if a.refused]),
            "text": mail.reply_text,
        }
        return self._notice(mailbox, "ack", ticket, requester, mail, context)

    def _staff_notices(self, ticket: TicketView, mail: InboundMail, mailbox: Mailbox, stored,
                       reply_to: str | None) -> list[Notice]:
        staff = [s for s in self.config.staff if s.role == "agent"] or list(self.config.staff)
        context = {"text": mail.reply_text, "attachments": _attachment_list(stored),
                   "requester": ticket.requester, "requester_name": mail.from_name,
                   "reply_to": reply_to or ""}
        notices = []
        for member in staff:
            if member.address == ticket.requester:
                continue  # staff writing in get the acknowledgement, not a notice too
            person = self._add_person(ticket.number, member.address, member.name, "staff")
            notices.append(self._notice(mailbox, "new_ticket", ticket, person, mail, context, audience="staff"))
        return notices

    def _add_copied(self, ticket_id: int, mail: InboundMail, requester: str) -> None:
        """Whoever the customer put in To/Cc joins the ticket as a "cc" participant,
        so their answers in the thread are recognised (never our own addresses)."""
        skip = self.config.own_addresses | {m.address for m in self.config.staff} | {requester}
        copied = [a for a in dict.fromkeys(mail.to + mail.cc) if replyaddr.untagged(a) not in skip][:20]
        tickets.add_copied(ticket_id, copied)

    def _add_person(self, ticket_id: int, address: str, name: str, role: str) -> Person:
        """A participant of a ticket created in this transaction: nobody can be there yet."""
        return Person(tickets.add_participant(ticket_id, address, name, role), address, name)

    def person(self, ticket_id: int, address: str, name: str, role: str) -> Person:
        """The ticket's participant with this address, added in ``role`` if new."""
        known = tickets.participant_id(ticket_id, address)
        if known is not None:
            return Person(known, address, name)
        return self._add_person(ticket_id, address, name, role)

    def queue(self, mailbox, event, ticket: TicketView, person: Person, mail, context,
               audience="customer", **extra) -> None:
        """Queue one templated mail about a ticket (see ``_notice``)."""
        self.notifiers[mailbox.name].queue(self._notice(mailbox, event, ticket, person, mail, context,
                                                        audience, **extra))

    def _notice(self, mailbox, event, ticket: TicketView, person: Person, mail, context,
                audience="customer", **extra) -> Notice:
        """A templated mail about a ticket, with the recipient's own reply address.
        ``mail`` is the message being answered (for threading headers), or None."""
        token = replyaddr.ReplyToken("t", ticket.number, person.participant_id)
        full = {"helpdesk_name": self.config.helpdesk.name, "ticket": ticket.context(),
                "recipient_name": person.name, "recipient": person.address, **context}
        return Notice(
            event=event, audience=audience, recipient=person.address, recipient_name=person.name,
            context=full, ticket_id=ticket.number,
            reply_to=replyaddr.reply_address(self.secret, mailbox.address, token),
            in_reply_to=mail.message_id if mail else None, references=mail.references if mail else (),
            token=f"[{label(ticket.number)}]", **extra)


def requester_of(mail: InboundMail, trust: TrustSettings) -> str:
    """Whose ticket a new mail opens: its From address, never its Reply-To.

    Anyone can write any Reply-To: taking it made a stranger's address the
    requester (acknowledged, answered, listed under their name) on the word of
    whoever sent the mail. Only a configured contact form, whose From is the
    form itself, speaks for the customer named in its Reply-To, and only when
    our MTA proves that From: a form's address is as easy to forge as any other.
    """
    if mail.reply_to and mail.from_addr in trust.form_senders and proof(mail, trust):
        return mail.reply_to
    return mail.from_addr


def open_tickets_of(address: str) -> list[dict]:
    return [{"id": label(i), "subject": subject, "status": status, "created_at": created.strftime("%Y-%m-%d")}
            for i, subject, status, created in tickets.open_tickets(address)]


def open_disputes_of(address: str) -> list[dict]:
    return [{"id": f"D-{i}", "order": order, "status": status, "role": "buyer" if buyer == address else "seller"}
            for i, order, status, buyer in tickets.open_disputes(address, dispute_rules.FINAL)]


def clean_subject(subject: str) -> str:
    """A ticket's title: the subject without "Re:", "Fwd:", "AW:"... prefixes, clipped
    (``compose.clip``): a title is shown and echoed, never a 20 MB subject."""
    return clip(_REPLY_PREFIX.sub("", subject[:1000]).strip()) or "(no subject)"


def _attachment_list(stored: list[StoredAttachment]) -> list[dict]:
    return [{"filename": a.filename, "size": a.size, "content_type": a.content_type,
             "refused": a.refused} for a in stored]
