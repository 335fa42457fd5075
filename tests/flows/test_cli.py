"""The command-line contract: output, JSON shape, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpdesk.cli import main
from tests.conftest import mail, write_config


@pytest.fixture
def config(tmp_path):
    return str(write_config(tmp_path))


def run(*args, stdin: bytes | None = None, cwd=None):
    """The real executable path: a separate process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "helpdesk", *args], input=stdin,
                          capture_output=True, cwd=cwd, timeout=60, check=False)


def write_mails(folder, *raws):
    paths = []
    for n, raw in enumerate(raws):
        path = folder / f"m{n}.eml"
        path.write_bytes(raw)
        paths.append(str(path))
    return paths


def test_ingest_prints_one_summary_line_and_tickets_json_has_the_contract(tmp_path, config, capsys):
    files = write_mails(tmp_path, mail(message_id="a"), mail(message_id="a"),
                        mail(subject="Re: x", headers={"In-Reply-To": "<a@example.com>"}),
                        mail(headers={"Auto-Submitted": "auto-replied"}, body="ooo\n"),
                        mail(frm="support@shop.example", body="loop\n"), mail(frm="nobody", body="q\n"))
    assert main(["--config", config, "ingest", *files]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [("ingested: 1 new tickets, 1 threaded replies, 1 duplicates skipped, "
                    "2 dropped (1 auto-reply that matches no ticket, 1 loop), "
                    "1 quarantined (1 no sender address (From is missing or invalid))")]
    assert main(["--config", config, "tickets", "--json"]) == 0
    [ticket] = json.loads(capsys.readouterr().out)
    assert {"id", "status", "subject", "requester", "messages", "created_at"} <= set(ticket)
    assert (ticket["id"], ticket["status"], ticket["messages"]) == ("T-1", "new", 2)


def test_show_json_lists_messages_with_direction_and_ids(tmp_path, config, capsys):
    main(["--config", config, "ingest", *write_mails(tmp_path, mail(message_id="a"))])
    capsys.readouterr()
    assert main(["--config", config, "show", "T-1", "--json"]) == 0
    detail = json.loads(capsys.readouterr().out)
    [message] = [m for m in detail["messages"] if m["direction"] == "in"]
    assert {"direction", "from", "to", "body", "message_id", "created_at"} <= set(message)
    assert (message["direction"], message["from"], message["message_id"]) == ("in", "bob@example.com", "a@example.com")
    sent = [m for m in detail["messages"] if m["direction"] == "out"]
    assert sorted(m["to"] for m in sent) == ["alice@shop.example", "bob@example.com"]
    assert all({"from", "to", "body", "message_id", "created_at"} <= set(m) for m in sent)


def test_tickets_filters_by_status(tmp_path, config, capsys):
    main(["--config", config, "ingest", *write_mails(tmp_path, mail())])
    capsys.readouterr()
    main(["--config", config, "tickets", "--status", "closed"])
    assert capsys.readouterr().out.strip() == "no tickets with status closed"


def test_unknown_ticket_is_one_line_and_exit_1(config):
    result = run("--config", config, "show", "T-99")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == "helpdesk: no ticket T-99"
    assert result.stdout == b""


def test_bad_ticket_id_is_a_user_error(config):
    result = run("--config", config, "show", "banana")
    assert (result.returncode, result.stderr.decode().strip()) == (
        1, "helpdesk: not a ticket id: 'banana' (expected e.g. T-42)")


def test_config_error_is_one_line_without_traceback(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('first_response = "4h"', 'first_response = "2 days"'))
    result = run("--config", "config.toml", "tickets", cwd=tmp_path)
    err = result.stderr.decode().strip()
    assert result.returncode == 1
    assert err.startswith("helpdesk: config.toml: [tickets] first_response:") and "\n" not in err
    assert "Traceback" not in err


def test_missing_config_file_is_one_line(tmp_path):
    result = run("--config", str(tmp_path / "nope.toml"), "tickets")
    assert result.returncode == 1
    assert "nope.toml: cannot read" in result.stderr.decode() and b"Traceback" not in result.stderr


def test_usage_error_exits_2():
    assert run("frobnicate").returncode == 2


def test_ingest_from_stdin_and_unknown_mailbox(config):
    result = run("--config", config, "ingest", "-", stdin=mail())
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("ingested: 1 new tickets")
    bad = run("--config", config, "ingest", "--mailbox", "sales", "-", stdin=mail())
    assert bad.returncode == 75       # pipe mode: EX_TEMPFAIL, the MTA keeps the mail (tests/runtime/test_pipe.py)
    assert bad.stderr.decode().strip() == "helpdesk: no mailbox named 'sales' (configured: support, disputes)"


def test_ingest_reports_an_unreadable_file_and_keeps_the_rest(tmp_path, config, capsys):
    files = write_mails(tmp_path, mail()) + [str(tmp_path / "missing.eml")]
    assert main(["--config", config, "ingest", *files]) == 1
    captured = capsys.readouterr()
    assert "cannot read" in captured.err and "missing.eml" in captured.err
    assert "1 new tickets" in captured.out and "1 unreadable" in captured.out


def test_ingest_picks_the_mailbox_from_the_recipients(tmp_path, config, capsys):
    main(["--config", config, "ingest", *write_mails(tmp_path, mail(to="Disputes <disputes@shop.example>"))])
    assert "1 dispute mails (0 opened, 1 refused)" in capsys.readouterr().out
    main(["--config", config, "tickets", "--json"])
    assert json.loads(capsys.readouterr().out) == []


def test_run_once_reads_the_maildir_and_delivers(tmp_path, config):
    (tmp_path / "mailboxes" / "support" / "new").mkdir(parents=True)
    (tmp_path / "mailboxes" / "support" / "new" / "1700000000.M1P1.host").write_bytes(mail())
    result = run("--config", config, "run", "--once", "--now", "2026-12-01T09:00Z")
    assert result.returncode == 0, result.stderr
    log = result.stderr.decode()
    assert "message 1: new_ticket T-1" in log and "sent ack mail to bob@example.com" in log
    assert os.listdir(tmp_path / "mailboxes" / "support" / "new") == []
    assert os.listdir(tmp_path / "mailboxes" / "support" / "cur") == ["1700000000.M1P1.host:2,S"]
    assert len(os.listdir(tmp_path / "mailboxes" / "outgoing" / "new")) == 2
    detail = json.loads(run("--config", config, "show", "T-1", "--json").stdout)
    assert detail["created_at"] == "2026-12-01T09:00:00Z"


def test_quarantine_list_and_retry(tmp_path, config, capsys):
    main(["--config", config, "ingest", *write_mails(tmp_path, mail(frm="nobody"))])
    capsys.readouterr()
    assert main(["--config", config, "quarantine"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.split()[0] == "1" and "no sender address" in line
    assert main(["--config", config, "quarantine", "retry", "1"]) == 1
    assert "quarantined" in capsys.readouterr().out
    assert main(["--config", config, "quarantine", "retry", "7"]) == 1
    assert capsys.readouterr().err.strip() == "helpdesk: no quarantined message 7"


def test_ingest_shows_progress_on_a_terminal_only(tmp_path, config, capsys, monkeypatch):
    files = write_mails(tmp_path, mail(message_id="a"), mail(message_id="b", body="2\n"))
    assert main(["--config", config, "ingest", *files]) == 0
    assert "messages" not in capsys.readouterr().err   # piped: quiet

    class Terminal:
        def __init__(self, real):
            self.real = real

        def isatty(self):
            return True

        def __getattr__(self, name):
            return getattr(self.real, name)

    monkeypatch.setattr(sys, "stderr", Terminal(sys.stderr))
    files = write_mails(tmp_path, mail(message_id="c"), mail(message_id="d", body="4\n"))
    assert main(["--config", config, "ingest", *files]) == 0
    assert "2/2 messages" in capsys.readouterr().err


def test_smtp_port_in_use_is_one_line(tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write_config(tmp_path, smtp_port=port)
        result = run("--config", "config.toml", "run", cwd=tmp_path)
    err = result.stderr.decode().strip()
    assert result.returncode == 1
    assert err.endswith("address already in use") and err.count("\n") == 0, err
    assert err.startswith(f"helpdesk: config.toml: [smtp_server] listen: cannot listen on 127.0.0.1:{port}")
    assert path.exists()


@pytest.mark.parametrize("args, message", [
    (("show", "T-999999999999"), "helpdesk: no ticket T-999999999999"),
    (("quarantine", "retry", "99999999999999999999999"), "helpdesk: no quarantined message 99999999999999999999999"),
])
def test_out_of_range_ids_are_unknown_ids(config, args, message):
    result = run("--config", config, *args)
    assert (result.returncode, result.stderr.decode().strip()) == (1, message)


def test_ingest_takes_a_folder_of_mail(tmp_path, config, capsys):
    folder = tmp_path / "export"
    (folder / "cur").mkdir(parents=True)
    (folder / "new").mkdir()
    (folder / "cur" / "1.eml").write_bytes(mail(message_id="a"))
    (folder / "new" / "2.eml").write_bytes(mail(message_id="b", body="2\n"))
    (folder / ".hidden").write_bytes(b"not mail")
    assert main(["--config", config, "ingest", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("ingested: 2 new tickets")
