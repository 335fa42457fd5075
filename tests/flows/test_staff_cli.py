"""``helpdesk reply / close / assign``: staff work from the server, same rules as by mail."""

from __future__ import annotations

import email
import email.policy

import pytest

from helpdesk.cli import main
from helpdesk.store.schema import Ticket
from tests.conftest import mail, write_config

pytestmark = pytest.mark.usefixtures("db_url")


@pytest.fixture
def config(tmp_path, db_url):
    path = write_config(tmp_path, db_url=db_url)
    raw = tmp_path / "first.eml"
    raw.write_bytes(mail(message_id="first"))
    assert main(["--config", str(path), "ingest", str(raw)]) == 0
    return str(path)


def delivered(tmp_path, to: str) -> list:
    folder = tmp_path / "mailboxes" / "outgoing" / "new"
    found = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in folder.iterdir()]
    return [m for m in found if to in str(m["To"])]


def test_reply_from_the_command_line_is_relayed_under_the_agents_name(tmp_path, config, capsys):
    answer = tmp_path / "answer.txt"
    answer.write_text("#priority high\nYour new key is WXYZ-9876.\n")
    assert main(["--config", config, "reply", "T-1", "--from", "alice", str(answer)]) == 0
    assert "T-1: waiting_on_customer, priority high, assignee alice@shop.example" in capsys.readouterr().out
    relayed = [m for m in delivered(tmp_path, "bob@example.com") if "Alice —" in str(m["From"])]
    assert len(relayed) == 1
    assert "WXYZ-9876" in relayed[0].get_body(("plain",)).get_content()
    assert "alice@shop.example" not in relayed[0].as_string()


def test_close_and_assign(config, capsys):
    assert main(["--config", config, "assign", "T-1", "Alice"]) == 0
    assert main(["--config", config, "close", "1"]) == 0
    ticket = Ticket.get_by_id(1)
    assert (ticket.status, ticket.assignee) == ("resolved", "alice@shop.example")


@pytest.mark.parametrize("argv, message", [
    (["assign", "T-1", "mallory"], "no staff member 'mallory'"),
    (["close", "T-99"], "no ticket T-99"),
    (["close", "T-99999999999"], "no ticket T-99999999999"),
    (["reply", "T-1", "--from", "alice", "/nonexistent/answer.txt"], "cannot read /nonexistent/answer.txt"),
    (["close", "banana"], "not a ticket id"),
])
def test_errors_are_one_line_with_exit_1(config, capsys, argv, message):
    assert main(["--config", config, *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_command_in_a_command_line_reply_applies_nothing(tmp_path, config, capsys):
    answer = tmp_path / "answer.txt"
    answer.write_text("#frobnicate\nhello\n")
    assert main(["--config", config, "reply", "T-1", "--from", "alice", str(answer)]) == 1
    assert "unknown command #frobnicate" in capsys.readouterr().err
    assert Ticket.get_by_id(1).status == "new"
