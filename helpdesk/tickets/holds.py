"""Mail from a claimed sender: kept, shown as unverified, applied only once the real person confirms.

Whoever writes ``From: alice@shop.example`` is not Alice. When a mail that
would change state or speak for someone comes without proof (``routing.proof``),
nothing of it is applied or relayed: it is recorded on the ticket (or the
dispute's chat) with direction ``held`` (``show``: UNVERIFIED), and the person
it claims to be, at the address *we* hold for them, gets a short mail from a
signed one-time address. Their reply confirms the hold, which puts the raw
mail back in line; the second pass finds the confirmed hold (``take_confirmed``)
and applies the mail through the very same code as a proven one.

The claimed sender is told nothing, whatever happens: no bounce, no answer.
"""

from __future__ import annotations

import datetime as dt

from helpdesk.clock import naive_utc
from helpdesk.mail import replyaddr
from helpdesk.mail.compose import clip
from helpdesk.mail.defang import defang
from helpdesk.mail.parse import InboundMail
from helpdesk.outbound.notify import Notice
from helpdesk.routing import CONFIRM_TOKEN, Applied, ConfirmHold
from helpdesk.store import holds, tickets
from helpdesk.tickets.desk import Desk, Person, label
from helpdesk.units import format_duration

CONFIRMED = "confirmed by reply"
_CLIP = 200          # what of the held mail's subject the confirmation mail repeats
_LINES, _CHARS = 10, 1000   # what of its text it quotes


def hold(desk: Desk, ticket_id: int, person: Person, audience: str, mail: InboundMail, stored,
         raw_id: int, mailbox, thread_label: str | None = None) -> Applied:
    """Keep ``mail`` unapplied for ``person`` and ask them (rate-capped) to confirm it."""
    now = naive_utc(desk.clock.now())
    trust = desk.config.trust
    tickets.add_message(
        ticket_id, now, raw_id=raw_id, direction="held", sender=mail.from_addr,
        recipients=", ".join(mail.to + mail.cc), subject=mail.subject, body=mail.reply_text,
        full_text=mail.text, message_id=mail.message_id, auto=False, attachments=stored, thread_ids=())
    mailed = holds.mailed_since(person.address, now - dt.timedelta(days=1)) < trust.confirm_rate_limit
    hold_id = holds.create(ticket_id, raw_id, person.participant_id, person.address, now,
                           now + trust.confirm_within, mailed)
    if mailed:
        desk.notifiers[mailbox.name].queue(_confirmation(desk, hold_id, ticket_id, person, audience, mail,
                                                         mailbox, thread_label or label(ticket_id)))
    return Applied("held", ticket_id, f"unverified sender {mail.from_addr}: held for confirmation"
                   + ("" if mailed else " (rate limit: in the next combined mail, tickets/held_mail)"))


def confirm(desk: Desk, route: ConfirmHold, mail: InboundMail) -> Applied:
    """The real person's reply: the held mail goes back in line once, if it is theirs and not expired.

    Anything else (an out-of-office, a stranger with the address, a second use,
    an expired hold) does nothing, and says nothing to anyone."""
    now = naive_utc(desk.clock.now())
    found = holds.read(route.hold_id)
    if mail.auto_submitted or mail.bulk:
        return Applied("dropped", None, "confirmation: an auto-reply confirms nothing")
    if (found is None or found.participant_id != route.participant_id or mail.from_ambiguous
            or mail.from_addr != found.address):
        return Applied("dropped", None, "confirmation: not the held mail's person")
    if not holds.confirm(found.id, now):
        return Applied("dropped", found.ticket_id, "confirmation: already used or expired")
    return Applied("hold_confirmed", found.ticket_id, f"hold {found.id} confirmed: mail {found.raw_id} requeued")


def confirmed(raw_id: int) -> str | None:
    """CONFIRMED when this mail is a held one its person confirmed (then never again)."""
    return CONFIRMED if holds.take_confirmed(raw_id) is not None else None


def _confirmation(desk: Desk, hold_id: int, ticket_id: int, person: Person, audience: str,
                  mail: InboundMail, mailbox, thread_label: str) -> Notice:
    token = replyaddr.ReplyToken(CONFIRM_TOKEN, hold_id, person.participant_id)
    context = {"helpdesk_name": desk.config.helpdesk.name, "recipient_name": person.name,
               "recipient": person.address, "thread": thread_label,
               "confirm_within": format_duration(desk.config.trust.confirm_within),
               **quote(mail.from_addr, mail.subject, mail.reply_text, naive_utc(desk.clock.now()))}
    return Notice(event="confirm_hold", audience=audience, recipient=person.address,
                  recipient_name=person.name, context=context, ticket_id=ticket_id,
                  reply_to=replyaddr.reply_address(desk.secret, mailbox.address, token),
                  token=f"[{thread_label}]")


def quote(sender: str, subject: str, text: str, received: dt.datetime) -> dict:
    """What the confirmation shows of a held mail: who it claims to be, when it came, the
    commands it would apply and its first lines, links defanged.

    Only the subject, and a forged ``#close`` with a phishing link under the agent's own
    subject looked just like the agent's own held mail; the real person must see what
    they would confirm. It goes to them alone, so the claimed sender learns nothing."""
    lines = text.replace("\r\n", "\n").strip("\n").split("\n")
    commands = [clip(line.strip()) for line in lines if line.strip().startswith("#")]
    shown = "\n".join(lines[:_LINES])
    if len(lines) > _LINES and len(shown) < _CHARS:
        shown += "\n…"
    return {"held_subject": defang(clip(subject, _CLIP)), "held_from": sender,
            "held_at": received.strftime("%Y-%m-%d %H:%M UTC"),
            "held_commands": [defang(c) for c in commands[:_LINES]],
            "held_text": defang(clip(shown, _CHARS))}
