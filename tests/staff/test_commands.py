"""Staff commands, pure: what a reply's top lines ask for, or why nothing may be done."""

from __future__ import annotations

import pytest

from helpdesk.staff.commands import CommandError, StaffCommand, parse

STAFF = {"alice@shop.example": "alice@shop.example", "alice": "alice@shop.example",
         "bob smith": "bob@shop.example", "bob@shop.example": "bob@shop.example"}


def plan(body: str, role: str = "agent", me: str = "alice@shop.example"):
    return parse(body, role, STAFF, me=me)


def test_commands_on_top_then_the_text_for_the_customer():
    found = plan("#priority HIGH\n\n#assign me\nDear customer,\n\nhere is your key.\n")
    assert found.commands == (StaffCommand("priority", "high"), StaffCommand("assign", "me"))
    assert found.text == "Dear customer,\n\nhere is your key."
    assert found.has("assign") and not found.has("close") and found.note is None


def test_note_takes_the_rest_of_the_mail_and_nothing_is_sent():
    found = plan("#close\n#note checked the logs\nthe key was revoked\n")
    assert found.note == "checked the logs\nthe key was revoked"
    assert found.text == "" and found.actions == {"close", "note"}


def test_an_own_name_or_address_means_me_and_admins_may_assign_others():
    assert plan("#assign Alice").commands == (StaffCommand("assign", "me"),)
    assert plan("#assign  Bob   Smith", role="admin").commands == (StaffCommand("assign", "bob@shop.example"),)


@pytest.mark.parametrize("body, says", [
    ("#clsoe\nthanks", "unknown command #clsoe"),
    ("#close now", "#close takes nothing after it"),
    ("#priority asap", "#priority needs one of low, normal, high, urgent"),
    ("#assign", "#assign needs 'me'"),
    ("#assign carol", "no agent called 'carol'"),
    ("#assign bob smith", "only admins may assign tickets to others"),
    ("#close\n#reopen", "contradict each other"),
    ("#close\n#close", "#close is given twice"),
    ("#note", "#note needs the note's text"),
    ("Hi team,\n#note internal only", "#note must be on a line at the top"),
])
def test_one_bad_command_refuses_the_whole_mail_with_one_line(body, says):
    with pytest.raises(CommandError) as refused:
        plan(body)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_a_mail_without_commands_is_all_text():
    found = plan("\r\nThanks, that worked.\r\n")
    assert found.commands == () and found.text == "Thanks, that worked."
