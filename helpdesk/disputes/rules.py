"""The dispute state machine, with no database: states, commands, deadlines.

Everything that decides *whether* something may happen in a dispute lives
here, so it can be tested as a table and explained in ``docs/disputes.md``: which role
may use which command in which state and at what time, what a command or a
deadline changes, and — when a command is refused — why, and when it will be
allowed. ``desk`` and its job modules apply the answers in the caller's
transaction.

States (``OPEN`` ones take commands; ``FINAL`` ones only keep the chat)::

                     seller writes / #propose
    awaiting_seller ─────────────────────────> negotiation ──#accept──> resolved
          │                                      ▲    │
          │ 48 h pass              seller writes │    │ 3 days pass
          ▼                                      │    ▼
    seller_missed ───────────────────────────────┘  window_closed
          │                                               │
          └─── #escalate, or 72 h pass ──> admin_review <─┘ #escalate, or 72 h pass
                                                │           (also from negotiation)
                                                └──#decide──> decided

    any open state: seller #return ──> return_accepted; buyer #withdraw ──> withdrawn

Time is checked against the deadlines themselves, not only against the
state: a seller who answers after the 48 hours counts as late even if the
tick that records the miss has not run yet, and a proposal sent after the
window closed is refused before the window's timer fires.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass, field, replace

from helpdesk.config.settings import DisputeSettings
from helpdesk.units import format_duration

STATES = {
    "awaiting_seller": "waiting for the seller's answer",
    "seller_missed": "the seller did not answer in time",
    "negotiation": "buyer and seller are looking for a solution",
    "window_closed": "the negotiation ended without a confirmed solution",
    "admin_review": "with the administration, which will decide",
    "return_accepted": "closed — the seller accepted the return",
    "resolved": "closed — buyer and seller agreed on a solution",
    "decided": "closed — decided by the administration",
    "withdrawn": "closed — withdrawn by the buyer",
}
OPEN = frozenset({"awaiting_seller", "seller_missed", "negotiation", "window_closed", "admin_review"})
FINAL = frozenset(STATES) - OPEN
ROLES = ("buyer", "seller", "admin")

# Timer kinds (subject "dispute").
SELLER_REMINDER = "seller_reminder"
SELLER_DUE = "seller_due"
WINDOW_CLOSE = "window_close"
ADMIN_DUE = "admin_due"
SELLER_TIMERS = (SELLER_REMINDER, SELLER_DUE)

WHO = {"help": ROLES, "return": ("seller",), "propose": ("buyer", "seller"),
       "accept": ("buyer", "seller"), "escalate": ("buyer",), "withdraw": ("buyer",),
       "decide": ("admin",)}
USAGE = {"help": "#help", "return": "#return", "propose": "#propose <your solution>",
         "accept": "#accept", "escalate": "#escalate", "withdraw": "#withdraw",
         "decide": "#decide buyer|seller <the decision>"}
_COMMAND = re.compile(r"^#([A-Za-z]+)\b[ \t]*:?[ \t]*(.*)$")


@dataclass(frozen=True)
class Offer:
    """A proposal as the rules need it: its number, who made it and what it says."""

    number: int
    author: str
    text: str


@dataclass(frozen=True)
class Snapshot:
    """What the rules need to know of one dispute."""

    number: int
    status: str
    seller_due_at: dt.datetime
    seller_answered_at: dt.datetime | None = None
    window_closes_at: dt.datetime | None = None
    admin_due_at: dt.datetime | None = None
    offers: tuple[Offer, ...] = ()        # the latest proposal of each side

    def latest_offer(self, author: str) -> Offer | None:
        return next((o for o in self.offers if o.author == author), None)


@dataclass(frozen=True)
class DisputeCommand:
    """``#name argument`` on the first line; ``rest`` is the text below it."""

    name: str
    argument: str
    rest: str

    @property
    def text(self) -> str:
        """The command's text: on its line, or (``#propose`` alone) the lines below."""
        return self.argument or self.rest

    @property
    def decision(self) -> tuple[str, str]:
        """``#decide seller <text>``: the side, and the text on the line or below it."""
        side, _, decision = self.argument.partition(" ")
        return side.lower().strip(":,."), decision.strip() or self.rest

    @property
    def consumes_rest(self) -> bool:
        """Whether the lines below the command are its own text (not chat to relay)."""
        if self.name == "propose":
            return not self.argument
        return self.name == "decide" and not self.argument.partition(" ")[2].strip()


@dataclass(frozen=True)
class Change:
    """What a command, a chat message or a deadline does to a dispute."""

    event: str                                   # names the notice templates' branch
    to_status: str | None = None
    reason: str = ""                             # for the dispute's history
    fields: dict = field(default_factory=dict)   # Dispute columns to set
    schedule: tuple[tuple[str, dt.datetime], ...] = ()
    cancel: tuple[str, ...] | None = ()          # timer kinds to cancel; None: all pending
    offer: str | None = None                     # a new proposal's text
    accepts: Offer | None = None                 # the proposal confirmed


@dataclass(frozen=True)
class Refusal:
    """A command that is not allowed now: why not, and when it will be."""

    why: str
    when: str


def next_deadline(snap: Snapshot) -> tuple[str, dt.datetime] | None:
    """The next deadline that changes something, for listings and status mail."""
    if snap.status == "awaiting_seller":
        return SELLER_DUE, snap.seller_due_at
    if snap.status == "negotiation" and snap.window_closes_at and (
            snap.admin_due_at is None or snap.window_closes_at < snap.admin_due_at):
        return WINDOW_CLOSE, snap.window_closes_at
    if snap.status in ("seller_missed", "negotiation", "window_closed") and snap.admin_due_at:
        return ADMIN_DUE, snap.admin_due_at
    return None


def parse_command(text: str) -> DisputeCommand | None:
    """The command on the first non-blank line of a message, if it starts with ``#word``."""
    lines = text.strip().splitlines()
    match = _COMMAND.match(lines[0].strip()) if lines else None
    if match is None:
        return None
    return DisputeCommand(match.group(1).lower(), match.group(2).strip(), "\n".join(lines[1:]).strip())


def phase(snap: Snapshot, now: dt.datetime) -> str:
    """The state as the clock sees it: a passed deadline counts before its timer fires."""
    if snap.status == "awaiting_seller" and now >= snap.seller_due_at:
        return "seller_missed"
    if snap.status == "negotiation" and snap.window_closes_at and now >= snap.window_closes_at:
        return "window_closed"
    return snap.status


def seller_was_late(snap: Snapshot, now: dt.datetime) -> bool:
    """The seller missed the 48 hours: from then on the buyer may escalate at any time."""
    answered = snap.seller_answered_at
    return (answered or now) >= snap.seller_due_at


class Rules:
    """The marketplace's rules with the configured durations and the display time zone."""

    def __init__(self, settings: DisputeSettings, timezone: str = "UTC") -> None:
        self.settings = settings
        self.zone = zoneinfo.ZoneInfo(timezone)

    # --- deadlines -------------------------------------------------------------

    def opening(self, now: dt.datetime) -> tuple[dt.datetime, tuple[tuple[str, dt.datetime], ...]]:
        """The seller's deadline and the timers a new dispute starts with."""
        due = now + self.settings.seller_response
        reminders = tuple((SELLER_REMINDER, due - before) for before in self.settings.seller_reminders
                          if due - before > now)
        return due, reminders + ((SELLER_DUE, due),)

    def when(self, moment: dt.datetime | None) -> str:
        """A deadline as people read it: "Saturday 28 November 2026, 09:00 UTC"."""
        if moment is None:
            return "-"
        aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
        return aware.astimezone(self.zone).strftime("%A %d %B %Y, %H:%M %Z")

    def deadline(self, snap: Snapshot) -> tuple[str, dt.datetime] | None:
        return next_deadline(snap)

    # --- what happens ----------------------------------------------------------

    def message(self, role: str, snap: Snapshot, now: dt.datetime) -> Change | None:
        """A plain chat message: the seller's first one opens the negotiation window."""
        if role != "seller" or snap.seller_answered_at is not None:
            return None
        if snap.status not in ("awaiting_seller", "seller_missed"):
            return None
        return self._seller_answers(snap, now, "seller_answered", "the seller answered")

    def command(self, command: DisputeCommand, role: str, snap: Snapshot, now: dt.datetime) -> Change | Refusal:
        """Apply the rules to one command from one role at one moment."""
        check = getattr(self, f"_cmd_{command.name}", None)
        if check is None:
            return Refusal(f"#{command.name} is not a command",
                           "never: check the spelling; the commands you may use now are listed below")
        if role not in WHO[command.name]:
            return Refusal(f"#{command.name} is for the {_join(WHO[command.name])} only",
                           f"never from you as the {role}; the commands you may use now are listed below")
        if command.name != "help" and snap.status in FINAL:
            return Refusal(f"D-{snap.number} is {STATES[snap.status]}",
                           "never: a closed dispute takes no more commands")
        return check(command, role, snap, now)

    def allowed(self, role: str, snap: Snapshot, now: dt.datetime) -> list[dict]:
        """The commands ``role`` may use now, each with its usage and what it does."""
        probes = {"propose": "x", "decide": "buyer x"}
        found = []
        for name, roles in WHO.items():
            if role not in roles:
                continue
            if isinstance(self.command(DisputeCommand(name, probes.get(name, ""), ""), role, snap, now), Change):
                found.append({"command": name, "usage": USAGE[name],
                              "does": self._does(name, role, snap)})
        return found

    def timer(self, kind: str, snap: Snapshot, now: dt.datetime) -> Change | None:
        """A deadline fired: what it changes now (None when the dispute moved on)."""
        status = snap.status
        if kind == SELLER_REMINDER and status == "awaiting_seller" and now < snap.seller_due_at:
            return Change("reminder", reason=f"{format_duration(snap.seller_due_at - now)} left")
        if kind == SELLER_DUE and status == "awaiting_seller":
            admin_due = snap.seller_due_at + self.settings.admin_after
            return Change("seller_missed", "seller_missed", "the seller did not answer in time",
                          {"admin_due_at": admin_due}, ((ADMIN_DUE, admin_due),), SELLER_TIMERS)
        if kind == WINDOW_CLOSE and status == "negotiation":
            return Change("window_closed", "window_closed", "no solution confirmed in the window",
                          cancel=(WINDOW_CLOSE,))
        if kind == ADMIN_DUE and status in ("seller_missed", "negotiation", "window_closed"):
            return Change("admin_review", "admin_review",
                          f"not resolved {format_duration(self.settings.admin_after)} on", cancel=None)
        return None

    # --- the commands ------------------------------------------------------------

    def _cmd_help(self, command, role, snap, now):
        return Change("help")

    def _cmd_return(self, command, role, snap, now):
        fields = {} if snap.seller_answered_at else {"seller_answered_at": now}
        return Change("return_accepted", "return_accepted", 'the seller chose "Proceed to Return"',
                      fields, cancel=None)

    def _cmd_propose(self, command, role, snap, now):
        if not command.text:
            return Refusal("#propose needs the solution you propose",
                           "now: write it after the command, e.g. \"#propose a refund of 50%\"")
        stage = phase(snap, now)
        if role == "seller" and stage in ("awaiting_seller", "seller_missed"):
            change = self._seller_answers(snap, now, "proposed", "the seller proposed a solution")
            return replace(change, offer=command.text)
        if stage == "negotiation":
            return Change("proposed", offer=command.text)
        return self._not_negotiating(snap, now, "proposals")

    def _cmd_accept(self, command, role, snap, now):
        if phase(snap, now) != "negotiation":
            return self._not_negotiating(snap, now, "accepting a proposal")
        other = "seller" if role == "buyer" else "buyer"
        offer = snap.latest_offer(other)
        if offer is None:
            return Refusal(f"the {other} has not proposed a solution yet",
                           f"once the {other} proposes one with #propose, until "
                           f"{self.when(snap.window_closes_at)}; you can #propose one yourself meanwhile")
        named = re.match(r"#?(\d+)\b", command.argument.strip())
        if named and int(named.group(1)) != offer.number:
            return Refusal(f"proposal #{named.group(1)} is not the {other}'s latest",
                           f"now: #accept confirms the {other}'s latest, #{offer.number}")
        return Change("accepted", "resolved", f"the {role} accepted proposal #{offer.number}",
                      cancel=None, accepts=offer)

    def _cmd_escalate(self, command, role, snap, now):
        stage = phase(snap, now)
        if stage == "admin_review":
            return Refusal("the administration is already involved", "no need: it will decide")
        if stage == "awaiting_seller":
            return Refusal("the seller still has time to answer",
                           f"from {self.when(snap.seller_due_at)} if the seller has not answered by then")
        if stage == "negotiation" and not seller_was_late(snap, now):
            return Refusal("the negotiation window is still open",
                           f"from {self.when(snap.window_closes_at)} if no solution is confirmed by then "
                           f"(the administration steps in by itself on {self.when(snap.admin_due_at)})")
        return Change("escalated", "admin_review", "the buyer asked the administration to decide",
                      cancel=None)

    def _cmd_withdraw(self, command, role, snap, now):
        return Change("withdrawn", "withdrawn", "the buyer withdrew the dispute", cancel=None)

    def _cmd_decide(self, command, role, snap, now):
        if snap.status != "admin_review":
            return Refusal("the administration decides once the dispute is in admin review",
                           self._review_from(snap, now))
        side, decision = command.decision
        if side not in ("buyer", "seller") or not decision:
            return Refusal("#decide needs the side and the decision",
                           "now: \"#decide buyer <the decision>\" or \"#decide seller <the decision>\"")
        return Change("decided", "decided", f"decided for the {side}",
                      {"decided_for": side, "decision": decision}, cancel=None)

    # --- pieces ----------------------------------------------------------------

    def _seller_answers(self, snap: Snapshot, now: dt.datetime, event: str, reason: str) -> Change:
        """The seller's first answer: the negotiation window opens now.

        On time, the administration's 72 hours count from now too. Late, they
        count from the missed deadline (the seller's delay extends nothing),
        and the buyer may escalate at any time.
        """
        window = now + self.settings.negotiation
        fields = {"seller_answered_at": now, "window_closes_at": window}
        schedule = [(WINDOW_CLOSE, window)]
        if now < snap.seller_due_at:
            fields["admin_due_at"] = now + self.settings.admin_after
        elif snap.admin_due_at is None:
            fields["admin_due_at"] = snap.seller_due_at + self.settings.admin_after
            reason += " after the deadline"
        else:
            reason += " after the deadline"
        if "admin_due_at" in fields:
            schedule.append((ADMIN_DUE, fields["admin_due_at"]))
        return Change(event, "negotiation", reason, fields, tuple(schedule), SELLER_TIMERS)

    def _not_negotiating(self, snap: Snapshot, now: dt.datetime, what: str) -> Refusal:
        stage = phase(snap, now)
        if stage in ("awaiting_seller", "seller_missed"):
            late = "; you may #escalate now" if stage == "seller_missed" else \
                f" (the seller's deadline is {self.when(snap.seller_due_at)})"
            return Refusal(f"{what} start when the seller answers", f"once the seller answers{late}")
        if stage == "window_closed":
            return Refusal(f"the window for {what} closed on {self.when(snap.window_closes_at)}",
                           "not any more: the buyer may #escalate now, and the administration steps "
                           f"in by itself on {self.when(snap.admin_due_at)}")
        return Refusal("the administration is deciding this dispute",
                       "not any more; you can still write in the chat to add information")

    def _review_from(self, snap: Snapshot, now: dt.datetime) -> str:
        if snap.admin_due_at:
            return f"when the buyer escalates, or on {self.when(snap.admin_due_at)} at the latest"
        earliest = snap.seller_due_at + self.settings.admin_after
        return (f"when the buyer escalates (possible from {self.when(snap.seller_due_at)} if the "
                f"seller stays silent), or on {self.when(earliest)} at the earliest otherwise")

    def _does(self, name: str, role: str, snap: Snapshot) -> str:
        if name == "accept":
            offer = snap.latest_offer("seller" if role == "buyer" else "buyer")
            return f"accept proposal #{offer.number}: {offer.text}" if offer else ""
        return {"help": "this list, with the state and the deadlines",
                "return": 'accept the buyer\'s request ("Proceed to Return")',
                "propose": "propose a solution to the other side",
                "escalate": "ask the administration to decide",
                "withdraw": "withdraw the dispute (it closes)",
                "decide": "decide the dispute for the buyer or the seller (it closes)"}[name]


def _join(roles: tuple[str, ...]) -> str:
    return " and the ".join(roles)
