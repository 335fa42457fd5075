"""The sample contexts ``helpdesk check`` renders templates with have the shape of the real ones.

Real conversations (the scenarios of other test modules, run again here on SQLite) are
watched at ``Renderer.render``: for every template rendered, the variables the code passed
-- and the keys of the dicts and list items inside them -- must be the sample's. A variable
added to the code without the sample would make ``check`` fail a correct template; one
left in the sample after the code dropped it would let ``check`` pass a template that
fails on a customer's mail.
"""

from __future__ import annotations

import pytest

from helpdesk.clock import Clock
from helpdesk.config.loader import load_config
from helpdesk.outbound.notify import Renderer
from helpdesk.runtime import samples
from tests.conftest import START, Desk, free_port, write_config
from tests.flows import test_disputes_smtp as disputes
from tests.flows import test_trust as trust
from tests.outbound import test_outbox as outbox
from tests.outbound import test_suppression as suppression
from tests.staff import test_act as staff
from tests.store import test_attachments as attachments
from tests.tickets import test_deadlines as deadlines

TICKET_SCENARIOS = (
    staff.test_agent_reply_is_stripped_and_relayed_without_the_agents_address,
    staff.test_close_with_an_answer_resolves_and_auto_closes_later_with_a_notice,
    staff.test_unknown_command_is_answered_and_nothing_applies,
    staff.test_status_and_help_come_back_to_the_agent_only,
    staff.test_status_request_lists_only_the_senders_own_open_requests,
    staff.test_files_an_agent_attaches_reach_the_customer,
    deadlines.test_reminder_at_three_quarters_then_escalation_on_breach_each_once,
    deadlines.test_several_alerts_for_one_person_in_one_tick_become_one_list,
    suppression.test_the_staff_answer_still_goes_and_the_agent_is_told_the_address_bounced,
    trust.confirmed_agent_answer,
)
DISPUTE_SCENARIOS = (
    disputes.test_opening_by_mail_tells_both_sides_with_the_deadline_and_the_image,
    disputes.test_seller_proposes_and_the_buyer_accepts,
    disputes.test_seller_silent_for_48_hours,
    disputes.test_the_administration_steps_in_by_itself_and_each_deadline_fires_once,
    disputes.test_commands_not_allowed_now_say_why_and_when,
    disputes.test_status_lists_the_senders_disputes_with_deadlines,
    disputes.test_a_third_party_using_a_participants_reply_address_reaches_nobody,
    disputes.test_an_empty_message_is_answered_with_the_help,
    disputes.test_a_second_dispute_for_an_open_one_points_to_it,
    disputes.test_the_administration_writes_to_both_parties,
)


def everyone_asks_for_help_once_the_administration_is_in(market) -> None:
    """What no other scenario renders: the administration's help, refusals, copies of the chat and
    confirmations, and the buyer's help."""
    market.open()
    market.later(hours=48)                                  # the seller missed: the administration joins
    market.reply(market.last_to(disputes.ADMIN), disputes.ADMIN, "#help")
    market.reply(market.last_to(disputes.ADMIN), disputes.ADMIN, "#propose a new key")
    market.reply(market.last_to(disputes.BUYER), disputes.BUYER, "#help")
    market.reply(market.last_to(disputes.BUYER), disputes.BUYER, "Any news?")
    market.reply(market.last_to(disputes.BUYER), disputes.BUYER, "#escalate")
    market.reply(market.last_to(disputes.ADMIN), disputes.ADMIN, "#decide buyer Full refund.")


def shape(value):
    """Keys all the way down: a dict's keys with their values' shapes, a list by its first item."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):
        return [shape(value[0])]
    return None


def differences(real, sample, where: str) -> list[str]:
    """Where the real shape and the sample's part (a value that is None or an empty list on either
    side -- "no deadline", "no files" -- says nothing about the keys)."""
    if isinstance(real, dict) and isinstance(sample, dict):
        found = [f"{where}.{key}: only the code passes it" for key in real.keys() - sample.keys()]
        found += [f"{where}.{key}: only the sample has it" for key in sample.keys() - real.keys()]
        for key in real.keys() & sample.keys():
            found += differences(real[key], sample[key], f"{where}.{key}")
        return found
    if isinstance(real, list) and isinstance(sample, list):
        return differences(real[0], sample[0], f"{where}[]")
    return []


@pytest.fixture
def rendered(monkeypatch) -> dict[tuple[str, str], list]:
    seen: dict[tuple[str, str], list] = {}
    original = Renderer.render

    def watching(self, audience, event, context):
        seen.setdefault((audience, event), []).append(shape(context))
        return original(self, audience, event, context)

    monkeypatch.setattr(Renderer, "render", watching)
    return seen


def test_the_samples_have_the_shape_of_real_contexts(tmp_path, rendered, monkeypatch):
    for number, scenario in enumerate(TICKET_SCENARIOS):
        folder = tmp_path / f"t{number}"
        folder.mkdir()
        desk = Desk(folder, write_config(folder), Clock(START))
        try:
            scenario(desk)
        finally:
            desk.app.close()
    small = tmp_path / "small"
    small.mkdir()
    desk = Desk(small, write_config(small, limits='max_attachment_size = "1KB"\nmax_attachments_total = "2KB"'),
                Clock(START))
    try:
        attachments.test_refused_attachment_on_a_reply_is_named_to_the_customer(desk)
    finally:
        desk.app.close()
    relayed = tmp_path / "relay"
    relayed.mkdir()
    outgoing = f'transport = "smtp+plain://127.0.0.1:{free_port()}"\nmax_attempts = 3\ntimeout = "5s"'
    desk = Desk(relayed, write_config(relayed, outgoing=outgoing), Clock(START))
    try:
        outbox.test_relay_down_defers_and_gives_up_after_max_attempts(lambda port: desk)
    finally:
        desk.app.close()
    for number, scenario in enumerate(DISPUTE_SCENARIOS + (everyone_asks_for_help_once_the_administration_is_in,
                                                           trust.everyone_is_asked_to_confirm)):
        folder = tmp_path / f"d{number}"
        folder.mkdir()
        desk, smtp, market = disputes.make_market(folder, None)
        try:
            scenario(market)
        finally:
            smtp.stop()
            desk.app.close()
    wanted = samples.contexts(load_config(write_config(tmp_path)))
    found = [f"{audience}/{event}{problem}" for (audience, event), shapes in sorted(rendered.items())
             for real in shapes for problem in differences(real, shape(wanted[(audience, event)]), "")]
    assert sorted(set(found)) == []
    unseen = set(wanted) - set(rendered) - {("admin", "digest")}   # the digest's sample is its own code's
    assert unseen == set(), "scenarios that render these are missing here"
