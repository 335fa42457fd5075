"""Hostile structure costs linear time: MIME parts capped and counted, long headers cut."""

from __future__ import annotations

import email
import sys
import time

import pytest

from helpdesk.mail import parse as parse_module
from helpdesk.mail.parse import MAX_HEADER, MAX_PARTS, parse


def many_parts(count: int, nested: bool = False) -> bytes:
    """``count`` tiny attachments, side by side or each one level deeper than the last."""
    head = ("From: Bob <bob@example.com>\nTo: support@shop.example\nSubject: parts\n"
            "MIME-Version: 1.0\n")
    if nested:
        body = "".join(f'--b{i}\nContent-Type: multipart/mixed; boundary="b{i + 1}"\n\n'
                       for i in range(count))
        leaf = f"--b{count}\nContent-Type: text/plain\n\nthe text\n--b{count}--\n"
        return (head + 'Content-Type: multipart/mixed; boundary="b0"\n\n' + body + leaf
                + "".join(f"--b{i}--\n" for i in reversed(range(count)))).encode()
    parts = "".join(f'--b\nContent-Type: application/octet-stream\n'
                    f'Content-Disposition: attachment; filename="p{i}.bin"\n\n{i}\n'
                    for i in range(count))
    return (head + 'Content-Type: multipart/mixed; boundary="b"\n\n'
            "--b\nContent-Type: text/plain\n\nsee the files\n" + parts + "--b--\n").encode()


def test_parts_over_the_cap_are_counted_not_read():
    mail = parse(many_parts(5000))
    assert mail.text == "see the files"
    assert len(mail.attachments) == MAX_PARTS - 1          # the text is the first part
    assert mail.parts_skipped == 5001 - MAX_PARTS
    assert mail.attachments[-1].filename == f"p{MAX_PARTS - 2}.bin"   # in order


def test_cap_is_a_parameter():
    mail = parse(many_parts(30), max_parts=10)
    assert (len(mail.attachments), mail.parts_skipped) == (9, 21)


def test_a_normal_mail_skips_nothing():
    assert parse(many_parts(3)).parts_skipped == 0


def test_deeply_nested_multiparts_do_not_recurse_per_level():
    """Deeper than the interpreter's recursion limit: the old recursive walk raised.

    The stdlib's feed parser nests generators per level itself, so the tree is
    built with a raised limit; the part walk then runs under the normal one.
    """
    limit = sys.getrecursionlimit()
    depth = limit + 200
    sys.setrecursionlimit(limit + 10 * depth)
    try:
        tree = email.message_from_bytes(many_parts(depth, nested=True), policy=parse_module._POLICY)
    finally:
        sys.setrecursionlimit(limit)
    texts: list = []
    assert parse_module._collect(tree, texts, [], [], MAX_PARTS) == 0
    assert texts == ["the text"]


def test_a_huge_subject_of_encoded_words_is_cut_before_decoding():
    """2 MB of RFC 2047 words took the stdlib 12 s (it is quadratic): cut to MAX_HEADER first."""
    words = " ".join(["=?utf-8?q?caf=C3=A9?="] * 50_000)        # 1.1 MB
    raw = f"From: a@example.com\nTo: support@shop.example\nSubject: {words}\n\nbody\n".encode()
    subject = parse(raw).subject
    assert subject.startswith("cafécafé")
    assert len(subject) <= MAX_HEADER
    assert "=?" not in subject                  # cut between words, not inside one


def test_the_stdlib_parser_stops_making_parts_past_the_cap(monkeypatch):
    """200,000 tiny parts: 4 s and a Message object each in the stdlib before the cap
    applied; now it is fed no more once it has made about twice the cap."""
    made = []
    original = email.message.Message.__init__

    def counting(self, *args, **kwargs):
        made.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(email.message.Message, "__init__", counting)
    mail = parse(many_parts(200_000))
    assert len(made) < 3 * MAX_PARTS
    assert mail.parts_skipped == 200_001 - MAX_PARTS      # the unread rest is counted too
    assert mail.text == "see the files"


def _seconds(raw: bytes):
    started = time.monotonic()
    mail = parse(raw)
    return time.monotonic() - started, mail


def _with(header: str) -> bytes:
    return (f"From: Bob <bob@example.com>\nTo: support@shop.example\nSubject: hi\n{header}\n\n"
            "body\n").encode()


@pytest.mark.parametrize("name, field", [("References", "references"), ("In-Reply-To", "in_reply_to")])
def test_a_long_run_without_an_at_in_a_thread_header_costs_what_any_header_costs(name, field):
    """100 KB of characters a bare Message-ID may hold, and no "@": the search for one
    scanned the run again from each of its positions (about a minute here), which only
    the parse worker's time limit stopped; now it costs what a filler header costs."""
    run = "A" * 100_000
    flat, _ = _seconds(_with(f"X-Filler: {run}"))
    hostile, mail = _seconds(_with(f"{name}: {run} <a@b"))
    assert hostile < 10 * flat + 0.25, (flat, hostile)
    assert getattr(mail, field) == ("a@b",)          # the bare Message-ID after it is still read


def test_a_display_name_of_16_kb_without_an_at_costs_what_any_header_costs():
    """The name is searched for an address that would make the From ambiguous; a long name
    without one cost a quadratic scan (1.7 s at 16 KB here)."""
    name = "A" * (MAX_HEADER - 100)
    flat, _ = _seconds(_with(f"X-Filler: {name} <alice@shop.example>"))
    for frm, foreign in ((f"{name} <alice@shop.example>", False),
                         (f'"{name} x@evil.example" <alice@shop.example>', True)):
        hostile, mail = _seconds(_with(f"Reply-To: {frm}").replace(b"From: Bob <bob@example.com>",
                                                                   f"From: {frm}".encode()))
        assert hostile < 10 * flat + 0.25, (flat, hostile)
        assert mail.from_addr == "alice@shop.example"
        assert mail.from_ambiguous is foreign        # an address after the run is still seen
