"""The command line explains itself: every command's --help says what it does and shows an
example, and a value that cannot be right is a usage error (exit 2), not an empty answer."""

from __future__ import annotations

import argparse

import pytest

from helpdesk import cli
from helpdesk.tickets.lifecycle import STATUSES


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every command and nested action (``orders import``), by its words."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub
                found.update(commands(sub, f"{prefix}{name} "))
    return found


def test_every_command_says_what_it_does_with_an_example():
    found = commands(cli._parser())
    assert {"run", "ingest", "check", "status", "orders import", "disputes open"} <= set(found)
    unexplained = sorted(name for name, parser in found.items()
                         if not parser.description or f"  helpdesk {name}" not in (parser.epilog or "")
                         and f"helpdesk {name.split()[0]}" not in (parser.epilog or ""))
    assert unexplained == [], "add them to cli.EXPLAINED"


@pytest.mark.parametrize("words", [["check"], ["status"], ["disputes", "open"], ["tickets"]])
def test_help_prints_the_description_and_the_examples_as_written(words, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main([*words, "--help"])
    out = capsys.readouterr().out
    what, examples = cli.EXPLAINED[" ".join(words)]
    assert stopped.value.code == 0
    assert what in out                                   # line breaks kept: RawDescriptionHelpFormatter
    assert "examples:\n" + "\n".join(f"  {line}" for line in examples.splitlines()) in out


def test_an_unknown_ticket_status_is_a_usage_error_naming_the_statuses(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--config", str(tmp_path / "none.toml"), "tickets", "--status", "bogus"])
    out, err = capsys.readouterr()
    assert (stopped.value.code, out) == (2, "")
    line = err.splitlines()[-1]
    assert line.startswith("helpdesk tickets: error: argument --status: invalid choice: 'bogus'")
    assert all(status in line for status in STATUSES)


def test_every_real_ticket_status_is_accepted():
    for status in STATUSES:
        assert cli._parser().parse_args(["tickets", "--status", status]).status == status
