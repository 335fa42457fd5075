"""Text from outside costs time linear in its size: each pattern run over an outsider's
header, body or reply gets the shape that made it rescan a run from each of its positions,
and must cost about what an ordinary text of the same size costs. Quadratic, each of these
took seconds to minutes here (measured before the fix: see each test); linear, they take
milliseconds, so the bound (ten times the flat text's cost, plus a quarter second) has
room for a loaded machine and none for a quadratic scan."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from helpdesk.config.loader import load_config
from helpdesk.disputes import orders
from helpdesk.disputes.route import parse_request
from helpdesk.intake import imap
from helpdesk.intake.files import mailbox_for
from helpdesk.mail.htmltext import html_to_text
from helpdesk.mail.parse import parse
from tests.conftest import write_config


def seconds(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def costs_what_flat_costs(hostile: Callable[[], object], flat: Callable[[], object]) -> None:
    flat_time = seconds(flat)
    hostile_time = min(seconds(hostile) for _ in range(3))      # a scheduler stall is not the text's
    assert hostile_time < 10 * flat_time + 0.25, (flat_time, hostile_time)


REASONS = ("key does not work", "not received")


@pytest.mark.parametrize("text", [
    "a\n" + "\n" * 40_000 + "b",                       # blank lines: 15 s
    "Reason: x" + " " * 40_000 + "x",                  # blanks inside a reason: 28 s
    "order-" * 7_000,                                  # a look-ahead per "-": 6.6 s
    "order-" * 7_000 + "1",
])
def test_a_dispute_request_is_read_in_linear_time(text):
    flat = "plain words of a long complaint " * (len(text) // 32)
    costs_what_flat_costs(lambda: parse_request("help", text, REASONS),
                          lambda: parse_request("help", flat, REASONS))


def test_the_dispute_request_reads_what_it_read():
    request = parse_request("Order 100234", "Order no. A-77x1\nReason:  key does not work  \n\nIt fails.",
                            REASONS)
    assert (request.order_id, request.reason) == ("100234", "key does not work")
    assert parse_request("hi", "order: abc-9 please", REASONS).order_id == "abc-9"
    assert parse_request("hi", "order- order-x", REASONS).order_id is None


@pytest.mark.parametrize("header", ["From", "Cc"])
def test_an_address_header_of_blanks_is_read_in_linear_time(header):
    """A folded line of 40,000 blanks: the leading blanks and the name both took them (16 s)."""
    def raw(value: str) -> bytes:
        head = "" if header == "From" else "From: bob@example.com\n"
        return f"{head}{header}: \n{value}\nTo: support@shop.example\nSubject: hi\n\nbody\n".encode()
    costs_what_flat_costs(lambda: parse(raw(" " * 40_000 + "!")),
                          lambda: parse(raw(" x" * 20_000)))


def test_html_the_parser_refuses_is_stripped_of_tags_in_linear_time():
    """An XML declaration with a tab makes lxml refuse the HTML; the fallback's tag pattern
    scanned to the end from each "<" (40,000 of them: 2.3 s)."""
    head = "<?xml\tversion='1.0' encoding='utf-8'?><p>hello</p>"
    assert html_to_text(head + "<b>x</b> y").split() == ["hello", "x", "y"]
    costs_what_flat_costs(lambda: html_to_text(head + "<" * 40_000),
                          lambda: html_to_text(head + "<b>" * 13_000))


def test_pipe_mode_finds_the_mailbox_in_a_long_recipient_field_in_linear_time(tmp_path):
    config = load_config(write_config(tmp_path))

    def raw(field: str) -> bytes:
        return f"From: bob@example.com\nTo: {field} disputes@shop.example\nSubject: x\n\nbody\n".encode()
    assert mailbox_for(raw("a" * 40_000), config, None).name == "disputes"
    costs_what_flat_costs(lambda: mailbox_for(raw("a" * 40_000), config, None),      # 5.8 s
                          lambda: mailbox_for(raw("a " * 20_000), config, None))


def test_an_imap_servers_long_error_is_shortened_in_linear_time():
    """Only a hostile server can send it; imaplib lets a reply be 1 MB (40,000 blanks: 8.9 s)."""
    assert imap._text(Exception("b'NO busy (0.001 + 0.000 secs).'")) == "NO busy"
    costs_what_flat_costs(lambda: imap._text(Exception("x" + " " * 40_000 + "x")),
                          lambda: imap._text(Exception("x " * 20_000)))


def test_an_imported_order_address_is_checked_in_linear_time():
    """The operator's import: the length is checked before the quadratic pattern."""
    hostile = "<a@" + "b." * 20_000 + "\xa0x>"
    with pytest.raises(ValueError, match="is not an email address"):
        orders._address(hostile, "buyer")
    costs_what_flat_costs(lambda: pytest.raises(ValueError, orders._address, hostile, "buyer"),
                          lambda: pytest.raises(ValueError, orders._address, "x" * 40_000, "buyer"))
    assert orders._address("Bob <Bob@Example.com>", "buyer") == "bob@example.com"


def test_a_blank_reason_line_asks_for_the_reason_instead_of_taking_the_next_line():
    request = parse_request("Order 1", "Reason:\nIt fails when I log in.\n", REASONS)
    assert not request.reason_given and "no_reason" in request.problems
    assert request.description == "It fails when I log in."
    assert parse_request("Order 1", "reason\n: not received\nNothing came.", REASONS).reason_given is None
    crlf = parse_request("Order 1", "Reason:  not received \r\nNothing came.\r\n", REASONS)
    assert (crlf.reason, crlf.description) == ("not received", "Nothing came.")
