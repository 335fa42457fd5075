"""Why a dispute cannot be opened: the checks that opening by mail and by form share.

The order exists and the sender is its buyer (one answer for both: no oracle for
order ids), it has no open dispute yet, the request is complete; the first that
fails names the paragraph of the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from helpdesk.disputes.parties import label
from helpdesk.disputes.rules import OPEN, STATES
from helpdesk.store import disputes as store
from helpdesk.store import orders


@dataclass(frozen=True)
class Problem:
    """Why a dispute cannot be opened: the code picks the reply's paragraph."""

    code: str           # unknown_order (no such order, or not the sender's) | already_open | bad_request
    message: str        # one line, for the command line and the log
    context: dict


def problem(reasons: tuple[str, ...], order_id: str | None, sender: str | None, problems: tuple[str, ...],
            reason_given: str | None) -> Problem | None:
    """The first reason not to open: the order's checks, then the form's."""
    reasons = list(reasons)
    base = {"order": order_id, "reasons": reasons, "reason_given": reason_given, "problems": [],
            "existing": None}
    if order_id:
        order = orders.find(order_id)
        if order is None:
            return Problem("unknown_order", f"no order {order_id} (import orders with "
                           "'helpdesk orders import FILE')", base)
        if sender is not None and order.buyer != sender:
            # The same answer as for no such order: anyone may write, and a different one
            # would tell them which order ids exist. Only the log line says which it was.
            return Problem("unknown_order", f"order {order_id}: {sender} is not its buyer", base)
        existing = store.open_for_order(order_id, OPEN)
        if existing is not None:
            number, status = existing
            return Problem("already_open", f"order {order_id} already has an open dispute: "
                           f"{label(number)} ({status})",
                           {**base, "existing": {"id": label(number), "status": status,
                                                 "status_text": STATES[status]}})
    if problems:
        return Problem("bad_request", _problems_line(problems, reason_given, reasons),
                       {**base, "problems": list(problems)})
    return None


def _problems_line(problems: tuple[str, ...], given: str | None, reasons: list[str]) -> str:
    said = {"no_order": "no order id", "no_reason": "no \"Reason:\" line",
            "bad_reason": f"reason {given!r} is not one of: {', '.join(reasons)}",
            "no_description": "no description"}
    return "; ".join(said[p] for p in problems)
