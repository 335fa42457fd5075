"""Automatic mail held back from addresses that bounced hard: the outbox's check before sending.

An address whose mail came back with a permanent failure (a DSN status
``5.x.x``) gets no acknowledgement, status list, notice or reminder for
``[limits] bounce_suppression`` after that bounce: such mail would only bounce
again, and a stream of bounces harms the sender's reputation with the
receiving servers. Mail a person wrote (a staff member's answer, a message
relayed in a dispute: no ``Auto-Submitted``) still goes, and mail to the
staff is never held back.

The check runs where the mail leaves, once per claimed group (one query for
the group's recipients), not where it is queued: it costs one indexed query
per 50 mails, and it also holds back mail queued before the bounce arrived.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from helpdesk.config.settings import Config
from helpdesk.store import bounces
from helpdesk.store.bounces import BounceRow
from helpdesk.store.outbox import Queued

AUTOMATIC = "Auto-Submitted"   # set on every notice that is not a person's words (``notify``)


@dataclass(frozen=True)
class Suppression:
    window: dt.timedelta          # zero: never hold back
    exempt: frozenset[str]        # the staff's addresses

    @classmethod
    def of(cls, config: Config) -> Suppression:
        return cls(config.limits.bounce_suppression, frozenset(s.address for s in config.staff))

    def held(self, rows: list[Queued], now: dt.datetime) -> dict[int, str]:
        """Row id -> why it is not sent, for the rows to hold back: one query at most."""
        if not self.window:
            return {}
        candidates = [r for r in rows if r.recipient.lower() not in self.exempt and _automatic(r)]
        if not candidates:
            return {}
        found = bounces.hard_since((r.recipient for r in candidates), now - self.window)
        return {r.id: self.reason(found[r.recipient.lower()]) for r in candidates
                if r.recipient.lower() in found}

    def reason(self, bounce: BounceRow) -> str:
        return (f"not sent: {bounce.address} bounced ({bounce.status}) on {_moment(bounce.at)}; "
                f"no automatic mail to it until {_moment(bounce.at + self.window)}")


def _automatic(row: Queued) -> bool:
    try:
        return AUTOMATIC in json.loads(row.headers)
    except (ValueError, TypeError):
        return False    # a broken row: composing it fails, visibly


def _moment(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
