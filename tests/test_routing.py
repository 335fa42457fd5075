"""The one routing engine and the rules every mailbox shares, pure: a fake index stands in."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from helpdesk import routing
from helpdesk.disputes import route as dispute_route
from helpdesk.mail.loop import loop_id
from helpdesk.mail.parse import parse
from helpdesk.routing import Decision, Drop, Quarantine, RecordBounce
from helpdesk.tickets import route as ticket_route
from tests.conftest import mail

OURS = frozenset({"support@shop.example", "disputes@shop.example"})


class Index:
    def thread_matches(self, msgids):
        return [(42, True)] if "sent@shop.example" in msgids else [(7, False)] if msgids else []


@dataclass(frozen=True)
class Ctx:
    own_addresses: frozenset = OURS
    secret: bytes = b"0" * 32
    index: Index = field(default_factory=Index)


def decide(rules, **fields) -> Decision:
    return routing.route(parse(mail(**fields)), Ctx(), rules)


def test_the_first_rule_with_an_answer_wins_and_every_rule_asked_is_named():
    def never(mail, ctx):
        return None

    def drop(mail, ctx):
        return Drop("dropped")

    def unreachable(mail, ctx):
        raise AssertionError("asked after an answer")

    decision = decide((never, drop, unreachable))
    assert decision == Decision(Drop("dropped"), ("never", "drop"))
    assert routing.explain(decision) == "rules never > drop -> Drop(reason='dropped')"


def test_a_table_without_an_answer_quarantines_with_the_rules_asked():
    assert decide((routing.no_sender,)) == Decision(Quarantine("no rule matched"), ("no_sender",))


def test_shared_rules_no_sender_loops_and_our_own_addresses():
    assert isinstance(decide((routing.no_sender,), frm="undisclosed").route, Quarantine)
    looped = decide((routing.own_mail,), headers={"X-Helpdesk-Loop": loop_id(Ctx.secret)})
    assert looped.route == Drop("loop: carries our X-Helpdesk-Loop id")
    ours = decide((routing.own_mail,), frm="Support <support+t1.2.abc@shop.example>")
    assert ours.route.reason.startswith("loop: sent from our own address")


def test_a_bounce_is_tied_only_to_a_ticket_whose_message_id_we_generated():
    report = ("--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
              "Final-Recipient: rfc822; gone@example.com\nAction: failed\nStatus: 5.1.1\n--b--\n")
    headers = {"Content-Type": 'multipart/report; report-type=delivery-status; boundary="b"',
               "In-Reply-To": "<sent@shop.example>"}
    raw = mail(frm="MAILER-DAEMON@mx.example", headers=headers, body=report).replace(
        b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n", b"MIME-Version: 1.0\n")
    decision = routing.route(parse(raw), Ctx(), (routing.bounce,))
    assert decision.route == RecordBounce(("gone@example.com",), 42)


def test_both_tables_start_with_the_shared_rules_and_end_with_a_rule_that_always_answers():
    for table in (ticket_route.RULES, dispute_route.RULES):
        assert table[:3] == (routing.no_sender, routing.own_mail, routing.bounce)
    assert ticket_route.RULES[-1] is ticket_route.new_ticket
    assert dispute_route.RULES[-1] is dispute_route.open_request


def test_dropped_and_quarantined_mail_settle_the_same_in_every_domain_and_a_forgotten_route_is_loud():
    assert routing.settled(Drop("loop")) == routing.Applied("dropped", None, "loop")
    assert routing.settled(Quarantine("bad")) == routing.Applied("quarantined", None, "bad")
    with pytest.raises(TypeError, match="no domain applies the route"):
        routing.settled(ticket_route.TicketsStatusRequest())
