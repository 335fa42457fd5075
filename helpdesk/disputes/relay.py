"""The chat relayed between buyer, seller and the administration, and what keeps
their addresses apart.

A participant's message is recorded, its command (``#propose``, ``#accept``,
...) judged by the rules and applied, and its words and files passed on to the
others, each in a mail of their own from the disputes address. Every string of
every dispute mail is masked (``masked``): nobody reads the other side's
address, and the administration reads neither, since its mail may be
forwarded. Files that carry their sender's address by design are kept with
the message but never passed on (``withheld``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from helpdesk.clock import naive_utc
from helpdesk.disputes.parties import Loaded, Party, happened, label
from helpdesk.disputes.route import DisputeMessage
from helpdesk.disputes.rules import Change, Command, Refusal, parse_command
from helpdesk.mail.parse import InboundMail
from helpdesk.mail.quotes import strip_reply
from helpdesk.routing import Applied
from helpdesk.store import disputes as store
from helpdesk.store.attachments import AttachmentStore

if TYPE_CHECKING:   # the desk imports this module to hand it the chat
    from helpdesk.disputes.desk import DisputeDesk

MASK = "[address hidden]"
CARRY_ADDRESS = frozenset({
    "text/vcard", "text/x-vcard", "text/directory", "message/rfc822", "message/global",
    "application/pkcs7-signature", "application/x-pkcs7-signature", "application/pkcs7-mime",
    "application/x-pkcs7-mime", "application/pgp-keys", "application/pgp-signature"})
CARRY_ADDRESS_NAMES = (".vcf", ".vcard", ".eml", ".p7s", ".p7m", ".p7c", ".asc")


# --- a message into a dispute --------------------------------------------------------

def message(desk: DisputeDesk, found: DisputeMessage, mail: InboundMail, stored, raw_id: int) -> Applied:
    now = naive_utc(desk.clock.now())
    return desk.decided_twice(found.dispute_id,
                              lambda loaded: _apply(desk, found, loaded, mail, stored, raw_id, now))


def _apply(desk: DisputeDesk, found: DisputeMessage, loaded: Loaded, mail: InboundMail, stored,
           raw_id: int, now: dt.datetime) -> Applied:
    party = loaded.party(found.participant_id)
    own = strip_reply(mail.text, strict=True)     # relayed: never a quote of our own mail instead
    command = parse_command(own)
    if command is None and not own.strip() and not stored:
        # nothing left once quotes and signature are stripped: no answer, nothing to relay
        store.record(loaded.row.ticket_id, party.address, "", stored, now, mail, raw_id)
        desk.send(loaded, party, "dispute_help", {"empty": True}, now, answering=mail)
        return Applied("dispute_help", loaded.row.ticket_id,
                       f"{label(loaded.row.id)}: empty message from the {party.role}, answered with the help")
    if command is None:
        change = desk.rules.message(party.role, loaded.snap, now)
        _chat(desk, loaded, party, change, own, own, mail, stored, raw_id, now)
        event = f" ({change.event})" if change else ""
        return Applied("dispute_message", loaded.row.ticket_id,
                       f"{label(loaded.row.id)} from the {party.role}{event}")
    result = desk.rules.command(command, party.role, loaded.snap, now)
    where = f"{label(loaded.row.id)} #{command.name} by the {party.role}"
    if isinstance(result, Refusal):
        desk.send(loaded, party, "dispute_command_refused",
                  {"command": f"#{command.name}", "why": result.why, "when": result.when}, now,
                  answering=mail)
        return Applied("dispute_command_refused", loaded.row.ticket_id, f"{where} refused: {result.why}")
    if command.name == "help":
        desk.send(loaded, party, "dispute_help", {}, now, answering=mail)
        return Applied("dispute_help", loaded.row.ticket_id, where)
    _chat(desk, loaded, party, result, _relayed_text(command), own, mail, stored, raw_id, now)
    return Applied("dispute_command", loaded.row.ticket_id, where)


def _chat(desk: DisputeDesk, loaded: Loaded, party: Party, change: Change | None, text: str, own: str,
          mail: InboundMail, stored, raw_id: int, now: dt.datetime) -> None:
    """Record the message (``own``: its words, command included), apply its change, relay
    ``text`` to the others, confirm to the sender."""
    store.record(loaded.row.ticket_id, party.address, own, stored, now, mail, raw_id)
    offer = None
    if change is not None:
        offer = desk._change(loaded, change, _actor(party), now)
        if change.to_status == "admin_review":
            desk.join_admins(loaded)
    if change is None and not text and not stored:
        return
    said = {**happened(change, party.role, offer), "text": text, "attachments": listed(stored)}
    files = passed_on(desk.attachments, stored)
    for other in loaded.parties:
        if other == party:
            continue
        if other.role == "admin" and change is not None and change.to_status == "admin_review":
            desk.tell_admin(loaded, other, change, said, now)
        else:
            desk.send(loaded, other, "dispute_message", said, now, files=files, auto=None)
    if change is not None:
        desk.send(loaded, party, "dispute_update", said, now, answering=mail)


def _actor(party: Party) -> str:
    return f"admin:{party.address}" if party.role == "admin" else party.role


def _relayed_text(command: Command) -> str:
    """What goes to the others besides the command: the lines below it, unless they were
    the command's own text (``#propose`` alone on its line)."""
    return "" if command.consumes_rest else command.rest


# --- files ---------------------------------------------------------------------------

def withheld(content_type: str, filename: str) -> bool:
    """Files that carry their sender's address by design (contact cards, forwarded mail,
    S/MIME and PGP signatures and keys): kept with the message, never passed on."""
    return content_type.lower() in CARRY_ADDRESS or filename.lower().endswith(CARRY_ADDRESS_NAMES)


def passed_on(attachments: AttachmentStore, stored) -> tuple[tuple[str, str, str], ...]:
    """The files relayed to the others: accepted ones that do not carry an address."""
    return tuple((a.filename, a.content_type, str(attachments.path_for(a.sha256)))
                 for a in stored if not a.refused and a.sha256 and not withheld(a.content_type, a.filename))


def listed(stored) -> list[dict]:
    return [{"filename": a.filename, "size": a.size, "content_type": a.content_type, "refused": a.refused,
             "withheld": not a.refused and withheld(a.content_type, a.filename)}
            for a in stored]


# --- masking -------------------------------------------------------------------------

def hidden_from(loaded: Loaded, reader: Party) -> tuple[str, ...]:
    """The addresses a reader must not see: the other party's; both for the administration,
    whose mail may be forwarded to either."""
    return tuple(a for a in (loaded.row.buyer, loaded.row.seller)
                 if a and (reader.role == "admin" or a != reader.address))


def masker(addresses: tuple[str, ...]) -> Callable[[str], str]:
    if not addresses:
        return lambda text: text
    pattern = re.compile("|".join(re.escape(a) for a in sorted(set(addresses), key=len, reverse=True)),
                         re.IGNORECASE)
    return lambda text: pattern.sub(MASK, text) if text else text


def masked(value, mask: Callable[[str], str]):
    """Every string of a template context masked, however deep: no field, present or future,
    can carry an address out. A value of any other kind is a bug, and fails loudly."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: masked(item, mask) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(item, mask) for item in value]
    if value is None or isinstance(value, (bool, int, float, Decimal, dt.date, dt.timedelta)):
        return value
    raise TypeError(f"cannot mask a {type(value).__name__} in a dispute mail's context")
