"""A whole support conversation over real SMTP (aiosmtpd) with a simulated clock:
customer → acknowledgement → agent's quoted reply from a typical client →
relayed answer without the agent's address → commands → deadlines fire once.
"""

from __future__ import annotations

import datetime as dt
import re
import smtplib

import pytest

from helpdesk.intake.smtp import SmtpIntake
from helpdesk.store.schema import Ticket
from tests.conftest import free_port, mail

pytestmark = pytest.mark.usefixtures("db_url")


@pytest.fixture
def smtp(desk):
    port = free_port()
    intake = SmtpIntake(desk.app.config, desk.app.store, on_stored=lambda: None, host="127.0.0.1", port=port)
    intake.start()
    yield port
    intake.stop()


def send(desk, port: int, raw: bytes, rcpt: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.sendmail("sender@example.com", [rcpt], re.sub(rb"\r?\n", b"\r\n", raw))
    desk.app.process()
    desk.app.tick()
    desk.app.deliver()


def reply_address(message) -> str:
    return re.search(r"<([^>]+)>", str(message["Reply-To"])).group(1)


THUNDERBIRD_REPLY = """\
Hello Bob,

sorry for the trouble. Your replacement key is QQQQ-1111-ZZZZ.

Kind regards
Alice

On 26.11.26 09:00, Difmark Support wrote:
> New ticket T-1 from Bob Buyer <bob@example.com>
> Subject: Key does not work
>
> Hello,
>
> my key does not work.
"""


def test_a_whole_conversation(desk, smtp):
    send(desk, smtp, mail(message_id="q1"), "support@shop.example")
    ack = desk.to("bob@example.com")[-1]
    notice = desk.to("alice@shop.example")[-1]
    assert "[T-1]" in str(ack["Subject"]) and "my key does not work" in notice.get_body(("plain",)).get_content()

    desk.clock.advance(dt.timedelta(hours=1))
    send(desk, smtp, mail(frm="Alice <alice@shop.example>", to=reply_address(notice),
                          subject="Re: " + str(notice["Subject"]), body=THUNDERBIRD_REPLY,
                          headers={"In-Reply-To": notice["Message-ID"]}), reply_address(notice))
    answer = desk.to("bob@example.com")[-1]
    text = answer.get_body(("plain",)).get_content()
    assert "QQQQ-1111-ZZZZ" in text and "> my key" not in text and "wrote:" not in text
    assert "alice@shop.example" not in answer.as_string()
    assert Ticket.get_by_id(1).first_response_at is not None

    desk.clock.advance(dt.timedelta(hours=2))
    send(desk, smtp, mail(to=reply_address(answer), subject="Re: " + str(answer["Subject"]),
                          body="Still does not work!\n\n> Your replacement key\n"), reply_address(answer))
    assert Ticket.get_by_id(1).status == "open"
    relay_to_staff = desk.to("alice@shop.example")

    desk.clock.advance(dt.timedelta(hours=18))          # 75 % of the 24 h next-response deadline
    desk.app.tick()
    desk.app.deliver()
    reminders = [m for m in desk.to("alice@shop.example") if "Reminder" in str(m["Subject"])]
    assert len(reminders) == 1 and len(desk.to("alice@shop.example")) > len(relay_to_staff)

    send(desk, smtp, mail(frm="Alice <alice@shop.example>", to=reply_address(reminders[0]),
                          subject="Re: reminder", body="#note\nwaiting for the vendor"), reply_address(reminders[0]))
    desk.clock.advance(dt.timedelta(hours=7))           # past the deadline: escalation
    desk.app.tick()
    desk.app.deliver()
    desk.app.tick()
    desk.app.deliver()
    escalations = [m for m in desk.to("carol@shop.example") if "Overdue: T-1 " in str(m["Subject"])]
    assert len(escalations) == 1
    assert Ticket.get_by_id(1).overdue

    send(desk, smtp, mail(frm="Carol <carol@shop.example>", to=reply_address(escalations[0]),
                          subject="Re: overdue", body="#close\nThe vendor fixed it; your key works now."),
         reply_address(escalations[0]))
    final = desk.to("bob@example.com")[-1]
    assert "vendor fixed it" in final.get_body(("plain",)).get_content()
    assert "Carol — Difmark Support" in str(final["From"])
    ticket = Ticket.get_by_id(1)
    assert (ticket.status, ticket.overdue) == ("resolved", False)
