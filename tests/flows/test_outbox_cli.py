"""``helpdesk outbox``: listing outgoing mail, putting failed mail back in line, cancelling.

The mail is made by a real helpdesk talking to a real relay (aiosmtpd on
127.0.0.1) that refuses some recipients for good (550) or for now (451); the
commands run as a user runs them (``main``, and a separate process for the
one-line errors), on both engines.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from aiosmtpd.controller import Controller

from helpdesk.cli import main
from helpdesk.clock import Clock
from helpdesk.store.schema import Outbox, Ticket
from tests.conftest import START, Desk, free_port, mail, write_config
from tests.outbound.test_outbox import Relay


@pytest.fixture
def relay():
    handler = Relay()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


@pytest.fixture
def desk(tmp_path, db_url, relay):
    """Bob's acknowledgement failed (550), Dan's waits (451), the rest went out."""
    config = write_config(tmp_path, db_url=db_url,
                          outgoing=f'transport = "smtp+plain://127.0.0.1:{relay.port}"\ntimeout = "5s"')
    made = Desk(tmp_path, config, Clock(START))
    relay.script["bob@example.com"] = ["550 5.1.1 <bob@example.com>: mailbox unavailable"]
    relay.script["dan@example.com"] = ["451 4.7.1 greylisted"]
    made.ingest(mail(frm="bob@example.com", message_id="b"), mail(frm="dan@example.com", message_id="d"))
    yield made
    made.app.close()


def outbox(desk: Desk, *args: str) -> int:
    return main(["--config", str(desk.config_path), "outbox", *args])


def ack_of(address: str) -> Outbox:
    return Outbox.get((Outbox.kind == "ack") & (Outbox.recipient == address))


def test_outbox_lists_the_mail_that_has_not_left_by_default(desk, capsys):
    bob, dan = ack_of("bob@example.com"), ack_of("dan@example.com")
    assert outbox(desk) == 0
    lines = capsys.readouterr().out.splitlines()
    number = Ticket.get(Ticket.requester == "bob@example.com").id
    assert lines[0].split() == [str(bob.id), "failed", "1x", "next", "-", "ack", f"T-{number}", "bob@example.com"]
    assert lines[1].strip() == "last answer: relay said 550 5.1.1 <bob@example.com>: mailbox unavailable"
    assert lines[2].split()[:4] == [str(dan.id), "queued", "1x", "next"]
    assert "2026-11-26T09:00:54Z" <= lines[2].split()[4] <= "2026-11-26T09:01:00Z"   # a minute, jittered
    assert "greylisted" in lines[3]
    # the admin's notice of Bob's failure went out: it is not listed by default
    assert len(lines) == 4


def test_outbox_json_has_the_contract_and_filters_by_status(desk, capsys):
    assert outbox(desk, "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["status"], r["recipient"]) for r in rows] == [("failed", "bob@example.com"),
                                                             ("queued", "dan@example.com")]
    failed = rows[0]
    assert set(failed) == {"id", "status", "recipient", "kind", "subject", "attempts", "next_attempt_at",
                           "last_answer", "ticket", "created_at", "queued_at", "sent_at", "failed_at"}
    assert (failed["attempts"], failed["next_attempt_at"], failed["failed_at"]) == (1, None, "2026-11-26T09:00:00Z")
    assert "2026-11-26T09:00:54Z" <= rows[1]["next_attempt_at"] <= "2026-11-26T09:01:00Z"

    assert outbox(desk, "--status", "sent", "--json") == 0
    sent = json.loads(capsys.readouterr().out)
    assert sorted(r["kind"] for r in sent) == ["delivery_failed", "new_ticket", "new_ticket"]
    assert outbox(desk, "--status", "all", "--limit", "2") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "... 3 more (--limit)"
    assert outbox(desk, "--status", "cancelled") == 0
    assert capsys.readouterr().out.strip() == "no outgoing mail with status cancelled"


def test_retry_puts_a_failed_mail_back_in_line_and_delivers_it(desk, relay, capsys):
    bob = ack_of("bob@example.com")
    assert outbox(desk, "retry", str(bob.id)) == 0         # the relay takes it now
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"mail {bob.id} back in line"
    assert out[1] == "delivered: 2 sent, 0 deferred, 0 failed"   # and Dan's, due again at the real time
    bob = ack_of("bob@example.com")
    assert (bob.status, bob.attempts, bob.failed_at, bob.last_error) == ("sent", 1, None, None)
    assert bob.queued_at is not None and bob.queued_at > bob.created_at   # its lifetime started again
    assert len(relay.accepted_for("bob@example.com")) == 1


def test_retry_all_failed_and_a_new_failure_is_told_again(desk, relay, capsys):
    relay.script["bob@example.com"] = ["550 5.1.1 still unknown"]
    assert outbox(desk, "retry", "--all-failed") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 failed mail(s) back in line"
    bob = ack_of("bob@example.com")
    assert (bob.status, bob.last_error) == ("failed", "relay said 550 5.1.1 still unknown")
    assert len(relay.accepted_for("carol@shop.example")) == 2    # told of each failure once
    assert outbox(desk, "retry", "--all-failed") == 0
    assert capsys.readouterr().out.startswith("1 failed mail(s) back in line")
    Outbox.update(status="cancelled").where(Outbox.status == "failed").execute()
    assert outbox(desk, "retry", "--all-failed") == 0
    assert capsys.readouterr().out.startswith("0 failed mail(s) back in line")


def test_cancel_keeps_a_queued_or_failed_mail_from_ever_leaving(desk, relay, capsys):
    bob, dan = ack_of("bob@example.com"), ack_of("dan@example.com")
    assert outbox(desk, "cancel", str(dan.id)) == 0
    assert outbox(desk, "cancel", f"#{bob.id}") == 0
    assert capsys.readouterr().out.splitlines() == [f"mail {dan.id} cancelled", f"mail {bob.id} cancelled"]
    desk.clock.advance(dt.timedelta(hours=2))
    desk.app.deliver()
    assert relay.attempts.count("dan@example.com") == 1       # never tried again
    assert {ack_of(a).status for a in ("bob@example.com", "dan@example.com")} == {"cancelled"}
    assert outbox(desk) == 0
    assert capsys.readouterr().out.strip() == "no outgoing mail queued or failed"


@pytest.mark.parametrize("args, message", [
    (["retry", "999"], "no outgoing mail 999 (see 'helpdesk outbox --status all')"),
    (["cancel", "999"], "no outgoing mail 999 (see 'helpdesk outbox --status all')"),
    (["retry", "99999999999"], "no outgoing mail 99999999999 (see 'helpdesk outbox --status all')"),
    (["retry", "99999999999999"], "not an outbox id: '99999999999999' (expected a number from 'helpdesk outbox')"),
    (["cancel", "T-1"], "not an outbox id: 'T-1' (expected a number from 'helpdesk outbox')"),
    (["retry", "{sent}"], "mail {sent} is sent: only failed mail can be retried"),
    (["retry", "{queued}"], "mail {queued} is queued: only failed mail can be retried"),
    (["cancel", "{sent}"], "mail {sent} is sent: only queued or failed mail can be cancelled"),
])
def test_a_wrong_id_or_status_is_one_line_and_exit_1(desk, args, message, capsys):
    ids = {"sent": Outbox.get(Outbox.kind == "new_ticket").id, "queued": ack_of("dan@example.com").id}
    args = [a.format(**ids) for a in args]
    assert outbox(desk, *args) == 1
    captured = capsys.readouterr()
    assert captured.err == f"helpdesk: {message.format(**ids)}\n"
    assert captured.out == ""


def test_cancelling_twice_says_it_is_cancelled(desk, capsys):
    dan = ack_of("dan@example.com")
    assert outbox(desk, "cancel", str(dan.id)) == 0
    assert outbox(desk, "cancel", str(dan.id)) == 1
    assert capsys.readouterr().err == (f"helpdesk: mail {dan.id} is cancelled: only queued or failed mail "
                                       "can be cancelled\n")


@pytest.mark.parametrize("args", [
    ["outbox", "retry"], ["outbox", "retry", "1", "--all-failed"], ["outbox", "--status", "bogus"],
    ["outbox", "--limit", "0"], ["outbox", "cancel"], ["outbox", "frobnicate"],
])
def test_usage_errors_exit_2(tmp_path, args):
    config = write_config(tmp_path)
    result = subprocess.run([sys.executable, "-m", "helpdesk", "--config", str(config), *args],
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert b"Traceback" not in result.stderr and b"error: " in result.stderr.strip().splitlines()[-1]


def test_an_unknown_id_from_a_separate_process_is_one_line(tmp_path):
    config = write_config(tmp_path)
    result = subprocess.run([sys.executable, "-m", "helpdesk", "--config", str(config), "outbox", "retry", "5"],
                            capture_output=True, timeout=60, check=False)
    assert (result.returncode, result.stderr.decode()) == (
        1, "helpdesk: no outgoing mail 5 (see 'helpdesk outbox --status all')\n")
    assert result.stdout == b""
