"""Rendering: StrictUndefined, HTML autoescaping for .html.j2 only, one-line subjects."""

from __future__ import annotations

import jinja2
import pytest

from helpdesk.outbound.notify import Renderer


@pytest.fixture
def templates(tmp_path):
    folder = tmp_path / "templates" / "customer"
    folder.mkdir(parents=True)
    (folder / "hello.subject.j2").write_text("Re:\n  {{ subject }}\n")
    (folder / "hello.txt.j2").write_text("Dear {{ name }}: {{ subject }}\n")
    (folder / "hello.html.j2").write_text("<p>Dear {{ name }}: {{ subject }}</p>\n")
    (folder / "typo.subject.j2").write_text("{{ subjet }}")
    (folder / "typo.txt.j2").write_text("x")
    (folder / "plain.subject.j2").write_text("s")
    (folder / "plain.txt.j2").write_text("only text")
    return Renderer(tmp_path / "templates")


def test_html_is_escaped_and_text_is_not(templates):
    out = templates.render("customer", "hello", {"name": "Bob & Co", "subject": "<script>alert(1)</script>"})
    assert out.text == "Dear Bob & Co: <script>alert(1)</script>\n"
    assert out.html == "<p>Dear Bob &amp; Co: &lt;script&gt;alert(1)&lt;/script&gt;</p>\n"
    assert out.subject == "Re: <script>alert(1)</script>"   # folded to one line, never escaped


def test_a_missing_variable_is_an_error_not_an_empty_string(templates):
    with pytest.raises(jinja2.UndefinedError):
        templates.render("customer", "typo", {"subject": "x"})


def test_html_alternative_is_optional(templates):
    assert templates.render("customer", "plain", {}).html is None


def test_shipped_templates_render_with_what_the_code_passes():
    """Every shipped template renders under StrictUndefined with the documented variables."""
    from helpdesk.runtime.app import TEMPLATES
    renderer = Renderer(TEMPLATES)
    base = {"helpdesk_name": "Difmark Support", "recipient": "bob@example.com", "recipient_name": "Bob",
            "ticket": {"id": "T-1", "number": 1, "subject": "Key", "status": "new", "requester": "bob@example.com"}}
    files = [{"filename": "a.pdf", "size": 10, "content_type": "application/pdf", "refused": None}]
    refused = [{"filename": "b.bin", "size": 10**8, "content_type": "application/octet-stream",
                "refused": "larger than the 10 MB limit per attachment"}]
    ack = renderer.render("customer", "ack", {**base, "first_response": "4 hours", "attachments": files,
                                              "refused": refused, "text": "hi"})
    assert "4 hours" in ack.text and "b.bin" in ack.html and "T-1" in ack.subject
    notice = renderer.render("staff", "new_ticket", {**base, "text": "hi <b>", "attachments": files + refused,
                                                     "requester": "bob@example.com", "requester_name": "Bob",
                                                     "reply_to": ""})
    assert "hi &lt;b&gt;" in notice.html and "hi <b>" in notice.text
    sorry = renderer.render("customer", "attachments_refused", {**base, "refused": refused})
    assert "b.bin" in sorry.text


def test_subjects_and_names_are_clipped_at_any_depth_and_nothing_else():
    from helpdesk.outbound.notify import echoed
    long = "x" * 5000
    out = echoed({"subject": long, "recipient_name": long, "text": long,
                  "ticket": {"subject": long, "requester": long},
                  "tickets": [{"subject": long, "id": "T-1"}], "count": 3})
    assert len(out["subject"]) == len(out["recipient_name"]) == 200
    assert len(out["ticket"]["subject"]) == len(out["tickets"][0]["subject"]) == 200
    assert out["text"] == out["ticket"]["requester"] == long and out["count"] == 3
