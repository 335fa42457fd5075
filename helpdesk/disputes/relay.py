"""The chat relayed between buyer, seller and the administration, and what keeps
their addresses apart.

A participant's message is recorded, its command (``#propose``, ``#accept``,
...) judged by the rules and applied, and its words and files passed on to the
others, each in a mail of their own from the disputes address, masked by
``masking`` so that nobody reads the other side's address.
"""

from __future__ import annotations

import datetime as dt

from helpdesk.clock import naive_utc
from helpdesk.disputes.desk import DisputeDesk
from helpdesk.disputes.masking import listed, passed_on
from helpdesk.disputes.parties import Loaded, Party, happened, label
from helpdesk.disputes.route import DisputeMessage
from helpdesk.disputes.rules import Change, DisputeCommand, Refusal, parse_command
from helpdesk.mail.parse import InboundMail
from helpdesk.mail.quotes import strip_reply
from helpdesk.routing import Applied
from helpdesk.store import disputes as store

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
        offer = desk.change(loaded, change, _actor(party), now)
        if change.to_status == "admin_review":
            desk.join_admins(loaded)
    if change is None and not text and not stored:
        return
    allowed = desk.config.disputes.relay_file_types
    said = {**happened(change, party.role, offer), "text": text, "attachments": listed(stored, allowed)}
    files = passed_on(desk.attachments, stored, allowed)
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


def _relayed_text(command: DisputeCommand) -> str:
    """What goes to the others besides the command: the lines below it, unless they were
    the command's own text (``#propose`` alone on its line)."""
    return "" if command.consumes_rest else command.rest
