"""HTML-only mail to text: quotes marked in one conversion, whatever the nesting."""

from __future__ import annotations

import inscriptis
import pytest

from helpdesk.mail.htmltext import MAX_MARKED_DEPTH, html_to_text
from helpdesk.mail.parse import parse
from helpdesk.mail.quotes import strip_reply

PARA = "<p>" + "quoted text of an old message " * 3 + "</p>"


def nested(size: int, depth: int) -> str:
    """``depth`` blockquotes, each holding its share of ``size`` bytes and the next one."""
    per = max(1, size // (depth * len(PARA)))
    return "<p>new text</p>" + ("<blockquote>" + PARA * per) * depth + "</blockquote>" * depth


def flat(size: int) -> str:
    return "<p>new text</p>" + PARA * (size // len(PARA))


@pytest.fixture
def conversions(monkeypatch):
    """How many times inscriptis converted a document (the cost that used to grow with depth)."""
    count = []

    class Counting(inscriptis.Inscriptis):
        def __init__(self, *args, **kwargs):
            count.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(inscriptis, "Inscriptis", Counting)
    return count


def test_nested_quotes_are_converted_once_not_once_per_level(conversions):
    text = html_to_text(nested(40_000, 60))
    assert len(conversions) == 1
    assert text.startswith("new text\n")
    assert "> > > quoted text" in text


def test_deep_nesting_costs_about_what_flat_html_of_the_same_size_costs():
    """1 MB in 250 levels: the text stays within a small factor of the flat mail's
    (the prefix stops at MAX_MARKED_DEPTH levels), so time and memory do too."""
    deep, shallow = html_to_text(nested(1 << 20, 250)), html_to_text(flat(1 << 20))
    assert len(deep) < 1.5 * len(shallow)
    assert max(line.count("> ") for line in deep.splitlines()) == MAX_MARKED_DEPTH


def test_many_short_lines_deep_inside_quotes_do_not_multiply_the_text():
    html = "<blockquote>" * 250 + "<br>x" * 20_000 + "</blockquote>" * 250
    text = html_to_text(html)
    assert len(text) <= 5 * len(html)      # 21 characters of prefix per 5 bytes, not 501
    assert text.splitlines()[0] == "> " * MAX_MARKED_DEPTH + "x"


@pytest.mark.parametrize("html, expected", [
    ("Top<blockquote>a<blockquote>b</blockquote>c</blockquote>tail",
     "Top\n> a\n> > b\n> c\ntail"),
    ("<p>Hello</p><blockquote><p>one</p><p>two</p></blockquote><p>after</p>",
     "Hello\n\n> one\n\n> two\n\nafter"),
    ("<blockquote>q1</blockquote><blockquote>q2</blockquote>end", "> q1\n> q2\nend"),
    ("<p>no quotes</p><p>at all</p>", "no quotes\n\nat all"),
])
def test_each_quoted_line_gets_one_marker_per_level(html, expected):
    assert html_to_text(html) == expected


def test_reply_text_of_a_deeply_quoted_html_reply_is_the_new_text():
    raw = ("From: a@example.com\nTo: support@shop.example\nSubject: Re: x\nMIME-Version: 1.0\n"
           "Content-Type: text/html; charset=utf-8\n\n" + nested(20_000, 40)).encode()
    mail = parse(raw)
    assert mail.reply_text == "new text"
    assert strip_reply(mail.text) == "new text"
