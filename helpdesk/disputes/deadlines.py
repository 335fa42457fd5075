"""What a dispute's timer does when it fires: remind the seller, or move the
dispute on (the seller missed the deadline, the negotiation window closed, the
administration steps in) and tell everyone.

Runs inside the transaction that claimed the timer (``tick``). The rules judge
the dispute as it is now, so a timer whose reason has passed (the seller
answered, the dispute closed) does nothing, even if it was not cancelled in
time; one that raced a command is decided again (``DisputeDesk.decided_twice``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from helpdesk.disputes.desk import DisputeDesk
from helpdesk.disputes.parties import Loaded, happened
from helpdesk.store.timers import Due


def handler(desk: DisputeDesk) -> Callable[[Due, dt.datetime], None]:
    """The dispute timers' handler (``app.timer_handlers["dispute"]``)."""
    def fire(due: Due, now: dt.datetime) -> None:
        desk.decided_twice(due.subject_id, lambda loaded: _fire(desk, due, loaded, now))
    return fire


def _fire(desk: DisputeDesk, due: Due, loaded: Loaded | None, now: dt.datetime) -> None:
    change = desk.rules.timer(due.kind, loaded.snap, now) if loaded else None
    if change is None:
        return
    if change.event == "reminder":   # changes nothing, tells the seller
        for seller in loaded.having("seller"):
            desk.send(loaded, seller, "dispute_reminder", {"left": change.reason}, now)
        return
    desk.change(loaded, change, "system", now)
    if change.event == "window_closed" and (loaded.row.admin_due_at or now) <= now:
        return  # the administration steps in this very moment: its own notice says so
    if change.event in ("seller_missed", "admin_review"):
        desk.join_admins(loaded)
    said = happened(change, "system", None)
    for party in loaded.parties:
        if party.role == "admin":
            desk.tell_admin(loaded, party, change, said, now)
        else:
            desk.send(loaded, party, "dispute_update", said, now)
