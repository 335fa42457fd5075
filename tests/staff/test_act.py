"""Staff working tickets by mail: relayed answers, commands, notes, and the lifecycle.

Each test drives the real pipeline (real database on both engines, real
templates, the outgoing Maildir) with a fixed clock.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

from helpdesk.store.schema import Message, Ticket, Timer
from tests.conftest import START, authenticated, mail

pytestmark = pytest.mark.usefixtures("db_url")
ALICE = "Alice <alice@shop.example>"


def reply_to_of(message) -> str:
    return re.search(r"<([^>]+)>", str(message["Reply-To"])).group(1)


def body_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def open_ticket(desk) -> tuple[str, str]:
    """A customer's new ticket; returns (the agent's reply address, the customer's)."""
    desk.ingest(mail(message_id="first"))
    notice = desk.to("alice@shop.example")[-1]
    ack = desk.to("bob@example.com")[-1]
    return reply_to_of(notice), reply_to_of(ack)


def agent_writes(desk, to: str, body: str, frm: str = ALICE, subject: str = "Re: [T-1] Key does not work"):
    return desk.ingest(mail(frm=frm, to=to, subject=subject, body=body))


QUOTED_ANSWER = (
    "Hi Bob,\n\nplease try the new key ABCD-1234.\n\nBest,\nAlice\n-- \nAlice Example\nSupport team\n\n"
    "On Thu, 26 Nov 2026 at 09:00, Difmark Support <support@shop.example> wrote:\n"
    "> New ticket T-1 from Bob Buyer <bob@example.com>\n> my key does not work.\n")


def test_agent_reply_is_stripped_and_relayed_without_the_agents_address(desk):
    agent_address, _ = open_ticket(desk)
    tally = agent_writes(desk, agent_address, QUOTED_ANSWER)
    assert tally.counts["staff_reply"] == 1
    relayed = desk.to("bob@example.com")[-1]
    text = body_of(relayed)
    assert "please try the new key ABCD-1234." in text
    assert "wrote:" not in text and "my key does not work" not in text
    assert str(relayed["From"]) == "Alice — Difmark Support <support@shop.example>"
    assert "alice@shop.example" not in relayed.as_string()
    assert relayed["Auto-Submitted"] is None
    assert relayed["In-Reply-To"] == "<first@example.com>"
    ticket = Ticket.get_by_id(1)
    assert ticket.status == "waiting_on_customer"
    assert ticket.first_response_at == START.replace(tzinfo=None)
    assert ticket.assignee == "alice@shop.example"
    assert Timer.select().where(Timer.status == "pending").count() == 0


def test_customer_answer_to_the_relayed_mail_reopens_and_starts_the_next_deadline(desk):
    agent_address, _ = open_ticket(desk)
    agent_writes(desk, agent_address, "Try ABCD-1234.")
    relayed = desk.to("bob@example.com")[-1]
    desk.clock.advance(dt.timedelta(hours=1))
    desk.ingest(mail(to=reply_to_of(relayed), subject="Re: it works not", body="Still broken."))
    assert Ticket.get_by_id(1).status == "open"
    pending = {t.kind: t.fire_at for t in Timer.select().where(Timer.status == "pending")}
    assert pending["next_response"] == (START + dt.timedelta(hours=25)).replace(tzinfo=None)
    assert pending["next_response.reminder"] == (START + dt.timedelta(hours=19)).replace(tzinfo=None)


def test_commands_combine_and_apply_before_the_answer(desk):
    agent_address, _ = open_ticket(desk)
    agent_writes(desk, agent_address, "#priority urgent\n#assign me\n\nWe are on it.\n")
    ticket = Ticket.get_by_id(1)
    assert (ticket.priority, ticket.assignee, ticket.status) == ("urgent", "alice@shop.example",
                                                                  "waiting_on_customer")
    assert "We are on it." in body_of(desk.to("bob@example.com")[-1])
    assert "#priority" not in body_of(desk.to("bob@example.com")[-1])


def test_close_with_an_answer_resolves_and_auto_closes_later_with_a_notice(desk):
    agent_address, _ = open_ticket(desk)
    agent_writes(desk, agent_address, "#close\nGlad it works now.")
    assert Ticket.get_by_id(1).status == "resolved"
    desk.clock.advance(dt.timedelta(days=7, minutes=1))
    desk.app.tick()
    desk.app.deliver()
    ticket = Ticket.get_by_id(1)
    assert ticket.status == "closed" and ticket.closed_at is not None
    closing = desk.to("bob@example.com")[-1]
    assert "closed" in str(closing["Subject"])
    desk.app.tick()
    desk.app.deliver()
    assert len([m for m in desk.to("bob@example.com") if "closed" in str(m["Subject"])]) == 1


def test_customer_reply_to_a_resolved_ticket_cancels_the_auto_close(desk):
    agent_address, customer_address = open_ticket(desk)
    agent_writes(desk, agent_address, "#close")
    desk.ingest(mail(to=customer_address, subject="Re: wait", body="It broke again."))
    assert Ticket.get_by_id(1).status == "open"
    desk.clock.advance(dt.timedelta(days=8))
    desk.app.tick()
    assert Ticket.get_by_id(1).status == "open"


def test_note_is_stored_and_never_sent_to_the_customer(desk):
    agent_address, _ = open_ticket(desk)
    before = len(desk.to("bob@example.com"))
    agent_writes(desk, agent_address, "#note\nCustomer bought twice; refund one.")
    assert len(desk.to("bob@example.com")) == before
    note = Message.get(Message.direction == "note")
    assert note.body == "Customer bought twice; refund one."
    assert Ticket.get_by_id(1).status == "open"


def test_unknown_command_is_answered_and_nothing_applies(desk):
    agent_address, _ = open_ticket(desk)
    before = len(desk.to("bob@example.com"))
    tally = agent_writes(desk, agent_address, "#clsoe\nThanks, all done.")
    assert tally.counts["command_error"] == 1
    assert len(desk.to("bob@example.com")) == before
    error = desk.to("alice@shop.example")[-1]
    assert "unknown command #clsoe" in str(error["Subject"])
    assert Ticket.get_by_id(1).status == "new"


@pytest.mark.parametrize("body, reason", [
    ("#priority whenever\nHi", "#priority needs one of"),
    ("#assign carol\nHi", "only admins may assign"),
    ("#assign nobody-here\nHi", "no agent called"),
    ("#close\n#reopen", "contradict"),
])
def test_malformed_or_forbidden_commands_explain_themselves(desk, body, reason):
    agent_address, _ = open_ticket(desk)
    agent_writes(desk, agent_address, body)
    assert reason in body_of(desk.to("alice@shop.example")[-1])
    assert Ticket.get_by_id(1).assignee is None


def test_admin_may_assign_others(desk):
    desk.ingest(mail(message_id="first"))
    desk.ingest(authenticated(mail(frm="Carol <carol@shop.example>", subject="Re: Key does not work",
                                   body="#assign alice\n", headers={"In-Reply-To": "<first@example.com>"})))
    assert Ticket.get_by_id(1).assignee == "alice@shop.example"
    assert Ticket.get_by_id(1).status == "open"


def test_status_and_help_come_back_to_the_agent_only(desk):
    agent_address, _ = open_ticket(desk)
    before = len(desk.to("bob@example.com"))
    agent_writes(desk, agent_address, "#priority high\n#status\n#help")
    mine = desk.to("alice@shop.example")
    status = next(m for m in mine if "Status of T-1" in str(m["Subject"]))
    assert "priority   high" in body_of(status)
    assert any("#assign me" in body_of(m) for m in mine if "Commands for" in str(m["Subject"]))
    assert len(desk.to("bob@example.com")) == before


def test_customer_mail_is_never_parsed_for_commands(desk):
    _, customer_address = open_ticket(desk)
    desk.ingest(mail(to=customer_address, subject="Re: x", body="#close\n#priority urgent\nplease"))
    ticket = Ticket.get_by_id(1)
    assert (ticket.status, ticket.priority) == ("new", "normal")


def test_reopen_of_a_closed_ticket_by_staff(desk):
    agent_address, _ = open_ticket(desk)
    agent_writes(desk, agent_address, "#close")
    desk.clock.advance(dt.timedelta(days=8))
    desk.app.tick()
    assert Ticket.get_by_id(1).status == "closed"
    agent_writes(desk, agent_address, "#reopen")
    assert Ticket.get_by_id(1).status == "open"
    assert Ticket.select().count() == 1


def test_status_request_lists_only_the_senders_own_open_requests(desk):
    desk.ingest(mail(subject="First problem"), mail(subject="Second problem"),
                mail(frm="eve@example.com", subject="Eve's secret"))
    desk.ingest(mail(subject="status", body="what is going on?",
                     headers={"Reply-To": "eve@example.com"}))
    answer = desk.to("bob@example.com")[-1]
    text = body_of(answer)
    assert "T-1" in text and "T-2" in text and "First problem" in text
    assert "Eve" not in text and "T-3" not in text
    assert not [m for m in desk.to("eve@example.com") if "open requests" in str(m["Subject"])]
    assert Ticket.select().count() == 3


def test_a_staff_from_not_on_the_ticket_cannot_act_by_subject_token(desk):
    """A From can be forged and ticket numbers are sequential: the subject token alone
    never lets a staff address command or answer a ticket it is not on."""
    desk.ingest(mail())
    before = len(desk.to("bob@example.com"))
    desk.ingest(mail(frm="Carol <carol@shop.example>", subject="[T-1] urgent",
                     body="#priority low\nPlease send your password to evil@example.net"))
    assert Ticket.get_by_id(1).priority == "normal"
    assert len(desk.to("bob@example.com")) == before


def test_a_reply_with_nothing_new_relays_nothing(desk):
    agent_address, _ = open_ticket(desk)
    before = len(desk.to("bob@example.com"))
    agent_writes(desk, agent_address, "On Thu, 26 Nov 2026 at 09:00, Difmark Support wrote:\n"
                 "> New ticket T-1 from Bob Buyer <bob@example.com>\n> my key does not work.\n")
    assert len(desk.to("bob@example.com")) == before
    ticket = Ticket.get_by_id(1)
    assert (ticket.status, ticket.first_response_at) == ("new", None)


@pytest.mark.parametrize("body", ["Hi team,\n#note customer is a fraudster", "Thanks!\n\n#close"])
def test_a_command_below_other_text_is_refused_and_nothing_is_sent(desk, body):
    agent_address, _ = open_ticket(desk)
    before = len(desk.to("bob@example.com"))
    agent_writes(desk, agent_address, body)
    assert len(desk.to("bob@example.com")) == before
    assert "must be on a line at the top" in str(desk.to("alice@shop.example")[-1]["Subject"])
    assert Ticket.get_by_id(1).status == "new"


def test_staff_writing_in_as_a_customer_stays_a_customer_on_that_ticket(desk):
    desk.ingest(mail(frm="Alice <alice@shop.example>", subject="My own order", message_id="own"))
    ack = desk.to("alice@shop.example")[-1]
    desk.ingest(mail(frm="Alice <alice@shop.example>", to=reply_to_of(ack), subject="Re: My own order",
                     body="More details: it is order 100234."))
    ticket = Ticket.get_by_id(1)
    assert (ticket.status, ticket.first_response_at, ticket.assignee) == ("new", None, None)
    assert not [m for m in desk.outgoing() if "Alice —" in str(m["From"])]


def test_staff_auto_replies_never_command_or_answer(desk):
    agent_address, _ = open_ticket(desk)
    before = len(desk.to("bob@example.com"))
    desk.ingest(mail(frm=ALICE, to=agent_address, subject="Out of office",
                     body="#close\nI am away until Monday.", headers={"Auto-Submitted": "auto-replied"}))
    assert Ticket.get_by_id(1).status == "new"
    assert len(desk.to("bob@example.com")) == before


@pytest.mark.parametrize("first, then, reason", [
    ("#close", "#close", "#close: T-1 is resolved already"),
    ("#priority high", "#reopen", "#reopen: T-1 is open, not resolved or closed"),
])
def test_commands_the_status_does_not_allow_are_refused(desk, first, then, reason):
    agent_address, _ = open_ticket(desk)
    agent_writes(desk, agent_address, first)
    agent_writes(desk, agent_address, then)
    assert reason in str(desk.to("alice@shop.example")[-1]["Subject"])


def test_answering_a_closed_ticket_needs_reopen_first(desk):
    agent_address, _ = open_ticket(desk)
    agent_writes(desk, agent_address, "#close")
    desk.clock.advance(dt.timedelta(days=8))
    desk.app.tick()
    desk.app.deliver()
    before = len(desk.to("bob@example.com"))
    agent_writes(desk, agent_address, "One more thing: here is a discount code.")
    assert len(desk.to("bob@example.com")) == before
    assert "start with #reopen" in str(desk.to("alice@shop.example")[-1]["Subject"])
    assert Ticket.get_by_id(1).status == "closed"
    agent_writes(desk, agent_address, "#reopen\nOne more thing: here is a discount code.")
    assert Ticket.get_by_id(1).status == "waiting_on_customer"
    assert "discount code" in body_of(desk.to("bob@example.com")[-1])


def test_files_an_agent_attaches_reach_the_customer(desk):
    import email.message

    agent_address, _ = open_ticket(desk)
    reply = email.message.EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = ALICE, agent_address, "Re: [T-1] Key does not work"
    reply["Message-ID"] = "<with-file@shop.example>"
    reply.set_content("The manual is attached.")
    reply.add_attachment(b"%PDF-1.4 manual", maintype="application", subtype="pdf", filename="manual.pdf")
    desk.ingest(bytes(reply))
    relayed = desk.to("bob@example.com")[-1]
    [part] = list(relayed.iter_attachments())
    assert part.get_filename() == "manual.pdf" and part.get_content() == b"%PDF-1.4 manual"
    assert "alice@shop.example" not in relayed.as_string()


@pytest.mark.parametrize("who", ["alice", "Alice", "alice@shop.example", "  ALICE  "])
def test_an_agent_may_assign_themselves_by_name_or_address(desk, who):
    agent_address, _ = open_ticket(desk)
    agent_writes(desk, agent_address, f"#assign {who}")
    assert Ticket.get_by_id(1).assignee == "alice@shop.example"


def test_a_reply_with_only_a_file_relays_the_file_and_an_empty_one_is_answered(desk):
    import email.message

    agent_address, _ = open_ticket(desk)
    agent_writes(desk, agent_address, "> my key does not work\n")
    assert "no new text above the quoted mail" in str(desk.to("alice@shop.example")[-1]["Subject"])
    reply = email.message.EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = ALICE, agent_address, "Re: [T-1] Key does not work"
    reply.set_content("")
    reply.add_attachment(b"\x89PNG screenshot", maintype="image", subtype="png", filename="steps.png")
    desk.ingest(bytes(reply))
    relayed = desk.to("bob@example.com")[-1]
    assert [p.get_filename() for p in relayed.iter_attachments()] == ["steps.png"]
    assert Ticket.get_by_id(1).status == "waiting_on_customer"


def test_a_ticket_whose_mailbox_left_the_config_still_gets_its_deadlines_and_commands(desk, capsys):
    from helpdesk.cli import main

    desk.ingest(mail())
    Ticket.update(mailbox="retired").execute()
    desk.clock.advance(dt.timedelta(hours=3))
    assert desk.app.tick().fired == {"first_response.reminder": 1}
    desk.app.deliver()
    assert "Reminder" in str(desk.to("alice@shop.example")[-1]["Subject"])
    assert main(["--config", str(desk.config_path), "close", "T-1"]) == 0
    assert Ticket.get_by_id(1).status == "resolved"
