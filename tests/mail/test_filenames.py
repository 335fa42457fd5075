"""File names are shown as they really read: no bidi overrides, controls or paths."""

from __future__ import annotations

import pytest

from helpdesk.mail.filenames import neutralised
from helpdesk.mail.parse import parse


@pytest.mark.parametrize("name, shown", [
    pytest.param("report.pdf", "report.pdf", id="plain"),
    pytest.param("Rechnung März.pdf", "Rechnung März.pdf", id="non-ascii-letters-stay"),
    pytest.param("invoice\u202egpj.exe", "invoice_gpj.exe", id="right-to-left-override"),
    pytest.param("a\u2066b\u2069\u200b.txt", "a_b__.txt", id="isolates-and-zero-width"),
    pytest.param("x\x07\u2028y.png", "x__y.png", id="control-and-line-separator"),
    pytest.param("../../etc\\passwd", ".._.._etc_passwd", id="path"),
])
def test_neutralised(name, shown):
    assert neutralised(name) == shown


def test_a_parsed_attachment_name_carries_no_bidi_control():
    raw = (b"From: bob@example.com\nTo: support@shop.example\nSubject: s\nMIME-Version: 1.0\n"
           b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nhi\n'
           b"--b\nContent-Type: image/jpeg\n"
           b"Content-Disposition: attachment; filename*=utf-8''invoice%E2%80%AEgpj.exe\n"
           b"Content-Transfer-Encoding: base64\n\nAAAA\n--b--\n")
    [attachment] = parse(raw).attachments
    assert attachment.filename == "invoice_gpj.exe"
