"""The dispute state machine as tables: who may do what, in which state, at what time."""

from __future__ import annotations

import datetime as dt

import pytest

from helpdesk.config.settings import DisputeSettings
from helpdesk.disputes.rules import (
    ADMIN_DUE,
    FINAL,
    OPEN,
    SELLER_DUE,
    SELLER_REMINDER,
    SELLER_TIMERS,
    WINDOW_CLOSE,
    Change,
    DisputeCommand,
    Offer,
    Refusal,
    Rules,
    Snapshot,
    next_deadline,
    parse_command,
    phase,
)

H = dt.timedelta(hours=1)
T0 = dt.datetime(2026, 11, 26, 9, 0)
SETTINGS = DisputeSettings(seller_response=48 * H, seller_reminders=(24 * H, 6 * H),
                           negotiation=72 * H, admin_after=72 * H,
                           reasons=("not received", "key does not work", "not as described", "other"))
RULES = Rules(SETTINGS, "UTC")


def snap(status="awaiting_seller", answered=None, window=None, admin=None, offers=()) -> Snapshot:
    return Snapshot(1, status, T0 + 48 * H, answered, window, admin, tuple(offers))


NEGOTIATING = snap("negotiation", T0 + H, T0 + 73 * H, T0 + 73 * H,
                   [Offer(1, "seller", "half refund")])


def run(name, role, state, now=T0 + 2 * H, argument="", rest=""):
    return RULES.command(DisputeCommand(name, argument, rest), role, state, now)


# --- parsing -------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("#return", DisputeCommand("return", "", "")),
    ("\n\n  #Propose: a refund of 50%\nbecause...\n", DisputeCommand("propose", "a refund of 50%", "because...")),
    ("#propose\nA new key\nand an apology", DisputeCommand("propose", "", "A new key\nand an apology")),
    ("#decide buyer Full refund", DisputeCommand("decide", "buyer Full refund", "")),
    ("Hello #return", None),
    ("#1 problem is the key", None),
    ("", None),
])
def test_a_command_is_the_first_line_starting_with_a_hash_word(text, expected):
    assert parse_command(text) == expected


def test_decide_takes_its_text_from_the_line_or_below_it():
    assert DisputeCommand("decide", "seller", "Key was used.").decision == ("seller", "Key was used.")
    assert DisputeCommand("decide", "Buyer: refund", "more").decision == ("buyer", "refund")
    assert DisputeCommand("decide", "seller", "x").consumes_rest
    assert not DisputeCommand("decide", "seller because", "x").consumes_rest
    assert DisputeCommand("propose", "", "x").consumes_rest and not DisputeCommand("propose", "y", "x").consumes_rest


# --- who may use which command in which state ---------------------------------------


@pytest.mark.parametrize("name, role, state, allowed", [
    ("return", "seller", snap(), True),
    ("return", "seller", NEGOTIATING, True),
    ("return", "seller", snap("admin_review"), True),
    ("return", "buyer", snap(), False),
    ("return", "admin", snap("admin_review"), False),
    ("propose", "seller", snap(), True),           # the seller's first answer
    ("propose", "buyer", snap(), False),
    ("propose", "buyer", NEGOTIATING, True),
    ("propose", "seller", snap("window_closed", T0 + H, T0, T0 + 73 * H), False),
    ("propose", "admin", NEGOTIATING, False),
    ("accept", "buyer", NEGOTIATING, True),         # the seller's proposal #1
    ("accept", "seller", NEGOTIATING, False),       # nothing from the buyer yet
    ("accept", "buyer", snap(), False),
    ("escalate", "buyer", snap(), False),
    ("escalate", "buyer", NEGOTIATING, False),
    ("escalate", "buyer", snap("seller_missed", admin=T0 + 120 * H), True),
    ("escalate", "buyer", snap("window_closed", T0 + H, T0 + 3 * H, T0 + 120 * H), True),
    ("escalate", "buyer", snap("admin_review"), False),
    ("escalate", "seller", snap("window_closed"), False),
    ("withdraw", "buyer", snap(), True),
    ("withdraw", "buyer", snap("admin_review"), True),
    ("withdraw", "seller", snap(), False),
    ("decide", "admin", snap("admin_review"), True),
    ("decide", "admin", NEGOTIATING, False),
    ("decide", "buyer", snap("admin_review"), False),
    ("help", "buyer", snap("resolved"), True),
])
def test_permissions(name, role, state, allowed):
    result = run(name, role, state, argument={"propose": "x", "decide": "buyer x"}.get(name, ""))
    assert isinstance(result, Change) is allowed, result


@pytest.mark.parametrize("status", sorted(FINAL))
def test_a_closed_dispute_takes_no_command_but_help(status):
    result = run("withdraw", "buyer", snap(status))
    assert isinstance(result, Refusal) and "closed" in result.why and result.when.startswith("never")
    assert RULES.allowed("buyer", snap(status), T0) == [
        {"command": "help", "usage": "#help", "does": "this list, with the state and the deadlines"}]


def test_refusals_say_why_and_when():
    early = run("escalate", "buyer", snap())
    assert early == Refusal("the seller still has time to answer",
                            "from Saturday 28 November 2026, 09:00 UTC if the seller has not answered by then")
    window = run("escalate", "buyer", NEGOTIATING)
    assert window.why == "the negotiation window is still open"
    assert window.when.startswith("from Sunday 29 November 2026, 10:00 UTC if no solution is confirmed")
    assert run("return", "buyer", snap()).why == "#return is for the seller only"
    assert run("frobnicate", "buyer", snap()).why == "#frobnicate is not a command"
    assert run("propose", "buyer", NEGOTIATING).why == "#propose needs the solution you propose"
    nothing = run("accept", "seller", NEGOTIATING)
    assert nothing.why == "the buyer has not proposed a solution yet"
    assert "until Sunday 29 November 2026, 10:00 UTC" in nothing.when
    decide = run("decide", "admin", NEGOTIATING, argument="buyer x")
    assert "on Sunday 29 November 2026, 10:00 UTC at the latest" in decide.when
    assert run("decide", "admin", snap("admin_review"), argument="nobody x").why == \
        "#decide needs the side and the decision"


def test_time_counts_before_the_timers_fire():
    """After the deadline the state machine acts as if its timer had fired already."""
    due = T0 + 48 * H
    assert phase(snap(), due - H) == "awaiting_seller"
    assert phase(snap(), due) == "seller_missed"
    assert isinstance(run("escalate", "buyer", snap(), now=due), Change)
    assert isinstance(run("propose", "buyer", NEGOTIATING, argument="x", now=T0 + 74 * H), Refusal)
    assert isinstance(run("escalate", "buyer", NEGOTIATING, now=T0 + 74 * H), Change)


def test_the_buyer_may_escalate_at_any_time_once_the_seller_was_late():
    late = snap("negotiation", T0 + 50 * H, T0 + 122 * H, T0 + 120 * H)
    assert isinstance(run("escalate", "buyer", late, now=T0 + 51 * H), Change)


# --- what commands, messages and deadlines change ------------------------------------


def test_opening_schedules_the_reminders_and_the_seller_deadline():
    due, timers = RULES.opening(T0)
    assert due == T0 + 48 * H
    assert timers == ((SELLER_REMINDER, T0 + 24 * H), (SELLER_REMINDER, T0 + 42 * H), (SELLER_DUE, due))


def test_the_sellers_first_message_opens_the_window_and_the_72_hours():
    change = RULES.message("seller", snap(), T0 + 5 * H)
    assert (change.event, change.to_status) == ("seller_answered", "negotiation")
    assert change.fields == {"seller_answered_at": T0 + 5 * H, "window_closes_at": T0 + 77 * H,
                             "admin_due_at": T0 + 77 * H}
    assert change.schedule == ((WINDOW_CLOSE, T0 + 77 * H), (ADMIN_DUE, T0 + 77 * H))
    assert change.cancel == SELLER_TIMERS
    assert RULES.message("buyer", snap(), T0 + 5 * H) is None
    assert RULES.message("seller", NEGOTIATING, T0 + 5 * H) is None


def test_a_late_seller_does_not_extend_the_administrations_deadline():
    missed = snap("seller_missed", admin=T0 + 120 * H)
    change = RULES.message("seller", missed, T0 + 60 * H)
    assert change.fields == {"seller_answered_at": T0 + 60 * H, "window_closes_at": T0 + 132 * H}
    assert change.schedule == ((WINDOW_CLOSE, T0 + 132 * H),)
    before_the_tick = RULES.message("seller", snap(), T0 + 50 * H)
    assert before_the_tick.fields["admin_due_at"] == T0 + 120 * H


def test_commands_change_state_and_timers():
    assert run("return", "seller", snap()).to_status == "return_accepted"
    assert run("return", "seller", snap()).cancel is None          # every pending timer
    first_offer = run("propose", "seller", snap(), argument="new key")
    assert (first_offer.to_status, first_offer.offer) == ("negotiation", "new key")
    accepted = run("accept", "buyer", NEGOTIATING)
    assert (accepted.to_status, accepted.accepts) == ("resolved", Offer(1, "seller", "half refund"))
    decided = run("decide", "admin", snap("admin_review"), argument="seller", rest="It worked.")
    assert decided.fields == {"decided_for": "seller", "decision": "It worked."}


@pytest.mark.parametrize("kind, state, now, to_status", [
    (SELLER_REMINDER, snap(), T0 + 24 * H, None),
    (SELLER_REMINDER, snap(), T0 + 48 * H, "skip"),       # the deadline itself has passed
    (SELLER_REMINDER, NEGOTIATING, T0 + 24 * H, "skip"),
    (SELLER_DUE, snap(), T0 + 48 * H, "seller_missed"),
    (SELLER_DUE, NEGOTIATING, T0 + 48 * H, "skip"),
    (WINDOW_CLOSE, NEGOTIATING, T0 + 73 * H, "window_closed"),
    (WINDOW_CLOSE, snap("admin_review"), T0 + 73 * H, "skip"),
    (ADMIN_DUE, NEGOTIATING, T0 + 73 * H, "admin_review"),
    (ADMIN_DUE, snap("seller_missed"), T0 + 120 * H, "admin_review"),
    (ADMIN_DUE, snap("resolved"), T0 + 73 * H, "skip"),
])
def test_deadlines_act_only_while_they_still_mean_something(kind, state, now, to_status):
    change = RULES.timer(kind, state, now)
    if to_status == "skip":
        assert change is None
    else:
        assert change.to_status == to_status


def test_a_missed_seller_deadline_starts_the_administrations_72_hours():
    change = RULES.timer(SELLER_DUE, snap(), T0 + 48 * H)
    assert change.fields == {"admin_due_at": T0 + 120 * H}
    assert change.schedule == ((ADMIN_DUE, T0 + 120 * H),)


def test_next_deadline_and_formatting():
    assert next_deadline(snap()) == (SELLER_DUE, T0 + 48 * H)
    assert next_deadline(snap("negotiation", T0, T0 + 72 * H, T0 + 100 * H)) == (WINDOW_CLOSE, T0 + 72 * H)
    assert next_deadline(NEGOTIATING) == (ADMIN_DUE, T0 + 73 * H)   # both at once: the administration
    assert next_deadline(snap("admin_review")) is None
    assert Rules(SETTINGS, "Europe/Berlin").when(T0) == "Thursday 26 November 2026, 10:00 CET"
    assert OPEN.isdisjoint(FINAL)


def test_accept_with_a_number_must_name_the_other_sides_latest_proposal():
    assert isinstance(run("accept", "buyer", NEGOTIATING, argument="#1"), Change)
    assert isinstance(run("accept", "buyer", NEGOTIATING, argument="1 thanks"), Change)
    wrong = run("accept", "buyer", NEGOTIATING, argument="#2")
    assert wrong == Refusal("proposal #2 is not the seller's latest", "now: #accept confirms the seller's latest, #1")
