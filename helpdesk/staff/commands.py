"""Staff commands at the top of a reply: ``#close``, ``#assign me``, ``#note`` ...

Pure parsing and permission checks, no database: the result says what to do
(``Plan``) or why nothing may be done (``CommandError``, one line for the
sender). A command is a line starting with ``#`` before any other text; blank
lines between commands are allowed. ``#note`` turns the rest of the mail into
an internal note. One bad command refuses the whole mail, so a typo never
half-applies (a ``#clsoe`` must not send the customer the text anyway).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PRIORITIES = ("low", "normal", "high", "urgent")
HELP = (
    "#close                 resolve the ticket (it closes by itself later)",
    "#reopen                open it again",
    "#assign me             take the ticket",
    "#assign <agent>        give it to an agent (address or name; admins only)",
    "#priority <level>      low, normal, high or urgent",
    "#note                  everything after it is an internal note, never sent to the customer",
    "#status                get the ticket's summary back",
    "#help                  this list",
)
_COMMAND = re.compile(r"^#([a-z]+)\b[ \t]*(.*)$", re.IGNORECASE)
# a known command further down: an internal #note after "Hi team," must never reach the customer
_LATE_COMMAND = re.compile(r"^[ \t]*#(close|reopen|assign|priority|note|status|help)\b", re.IGNORECASE | re.MULTILINE)


class CommandError(Exception):
    """A one-line explanation for the sender; nothing is applied."""


@dataclass(frozen=True)
class StaffCommand:
    name: str
    argument: str = ""


@dataclass(frozen=True)
class Plan:
    commands: tuple[StaffCommand, ...] = ()
    text: str = ""                  # what is relayed to the customer
    note: str | None = None         # internal note, if any
    actions: frozenset[str] = field(default_factory=frozenset)

    def has(self, name: str) -> bool:
        return name in self.actions


def parse(body: str, role: str, staff: dict[str, str], me: str = "") -> Plan:
    """Split a staff reply into commands, customer text and note.

    ``staff`` maps agent addresses and lower-cased names to addresses, so
    ``#assign bob`` can be checked here. Raises CommandError.
    """
    lines = body.replace("\r\n", "\n").split("\n")
    commands: list[StaffCommand] = []
    index = 0
    note: str | None = None
    while index < len(lines):
        line = lines[index].strip()
        if not line:
            index += 1
            continue
        match = _COMMAND.match(line)
        if match is None:
            break
        name, argument = match.group(1).lower(), match.group(2).strip()
        index += 1
        if name == "note":
            note = "\n".join([argument] + lines[index:]).strip()
            index = len(lines)
            commands.append(StaffCommand("note"))
            break
        commands.append(_check(name, argument, role, staff, me))
    text = "\n".join(lines[index:]).strip()
    if note is not None and not note:
        raise CommandError("#note needs the note's text after it")
    late = _LATE_COMMAND.search(text)
    if late:
        raise CommandError(f"#{late.group(1).lower()} must be on a line at the top, before any other "
                           "text; nothing was sent")
    _check_combination(commands)
    return Plan(tuple(commands), text, note, frozenset(c.name for c in commands))


def _check(name: str, argument: str, role: str, staff: dict[str, str], me: str) -> StaffCommand:
    if name in ("close", "reopen", "status", "help"):
        if argument:
            raise CommandError(f"#{name} takes nothing after it (got {argument!r})")
        return StaffCommand(name)
    if name == "priority":
        level = argument.lower()
        if level not in PRIORITIES:
            raise CommandError(f"#priority needs one of {', '.join(PRIORITIES)} (got {argument!r})")
        return StaffCommand(name, level)
    if name == "assign":
        return StaffCommand(name, _assignee(argument, role, staff, me))
    raise CommandError(f"unknown command #{name}; send #help for the list")


def _assignee(argument: str, role: str, staff: dict[str, str], me: str) -> str:
    wanted = " ".join(argument.lower().split())
    if not wanted:
        raise CommandError("#assign needs 'me' or an agent's address or name")
    if wanted == "me":
        return "me"
    address = staff.get(wanted)
    if address is None:
        raise CommandError(f"#assign: no agent called {argument!r}")
    if address == me:
        return "me"   # your own name or address: the same as "me"
    if role != "admin":
        raise CommandError("#assign <agent>: only admins may assign tickets to others; use #assign me")
    return address


def _check_combination(commands: list[StaffCommand]) -> None:
    names = [c.name for c in commands]
    if "close" in names and "reopen" in names:
        raise CommandError("#close and #reopen contradict each other")
    for name in set(names):
        if names.count(name) > 1:
            raise CommandError(f"#{name} is given twice")
