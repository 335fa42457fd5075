"""From is read by the stdlib's RFC 5322 parser; anything it had to guess at is ambiguous."""

from __future__ import annotations

import pytest

from helpdesk.mail.parse import MAX_AUTH_RESULT_SIZE, MAX_AUTH_RESULTS, parse, parsed_sender, sender


def raw(frm: str, extra: str = "") -> bytes:
    return (f"{extra}From: {frm}\r\nTo: support@shop.example\r\nSubject: hi\r\n"
            "Message-ID: <1@x.example>\r\n\r\nhello\r\n").encode()


@pytest.mark.parametrize("frm, addr", [
    ("=?utf-8?q?Mallory?= <mallory@evil.example> <alice@shop.example>", "mallory@evil.example"),
    ('"alice@shop.example" <mallory@evil.example>', "mallory@evil.example"),
    ("mallory@evil.example, alice@shop.example", "mallory@evil.example"),
    ("Alice <alice@shop.example", "alice@shop.example"),
])
def test_ambiguous_from(frm, addr):
    mail = parse(raw(frm))
    assert mail.from_addr == addr and mail.from_ambiguous


def test_two_from_headers_are_ambiguous():
    mail = parse(raw("Alice <alice@shop.example>", extra="From: mallory@evil.example\r\n"))
    assert mail.from_ambiguous


@pytest.mark.parametrize("frm, name, addr", [
    ("Alice <Alice@Shop.example>", "Alice", "alice@shop.example"),
    ("alice@shop.example", "", "alice@shop.example"),
    ('"Smith, Alice" <alice@shop.example>', "Smith, Alice", "alice@shop.example"),
    ("=?utf-8?q?Al=C3=AFce?= <alice@shop.example>", "Alïce", "alice@shop.example"),
    ("J. Smith <j@shop.example>", "J. Smith", "j@shop.example"),
    ('"alice@shop.example" <alice@shop.example>', "alice@shop.example", "alice@shop.example"),
])
def test_plain_from_is_not_ambiguous(frm, name, addr):
    mail = parse(raw(frm))
    assert (mail.from_name, mail.from_addr, mail.from_ambiguous) == (name, addr, False)


def test_authentication_results_are_kept_topmost_first_with_caps():
    headers = "".join(f"Authentication-Results: mx{n}.example; none\r\n" for n in range(MAX_AUTH_RESULTS + 5))
    headers = f"Authentication-Results: big.example; {'x' * MAX_AUTH_RESULT_SIZE}\r\n" + headers
    mail = parse(raw("a@b.example", extra=headers))
    assert mail.auth_results[0] == "mx0.example; none"
    assert len(mail.auth_results) == MAX_AUTH_RESULTS - 1       # the oversized one is ignored


@pytest.mark.parametrize("frm", [
    "Alice <alice@shop.example>", "alice@shop.example", "  Alice   Smith  <Alice@Shop.Example> ",
    "<alice@shop.example>", "Bob_O-Brien 2 <bob+x=y@mail.shop.example>",
])
def test_the_fast_path_reads_what_the_parser_reads(frm):
    assert sender([frm]) == parsed_sender([frm])


def test_a_huge_from_is_read_quickly_and_is_ambiguous():
    """A hundred times the From costs about the same, not a hundred (or ten thousand) times:
    past 16 KB it is cut before the stdlib's parser reads it. The cost is measured against
    the same parse of a hundredth of it, so a slow machine does not fail it and a parse that
    grows with the header past the cut does (below the cut: test_parse_caps)."""
    import time

    def timed(size: int):
        started = time.monotonic()
        mail = parse(raw("=?utf-8?q?" + "A" * size + "?= <alice@shop.example>"))
        return time.monotonic() - started, mail

    small, _ = timed(20_000)
    large, mail = timed(2_000_000)
    assert large < 4 * small + 0.5, (small, large)
    assert mail.from_ambiguous
