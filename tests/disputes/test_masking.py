"""Which dispute files pass between the parties: an allowlist by type and name."""

from __future__ import annotations

import pytest

from helpdesk.disputes.masking import withheld

ALLOWED = (("image/jpeg", (".jpg", ".jpeg")), ("application/pdf", (".pdf",)), ("text/plain", (".txt",)))


@pytest.mark.parametrize("content_type, filename, reason", [
    ("image/jpeg", "Photo.JPG", ""),
    ("application/pdf", "receipt.pdf", ""),
    ("text/plain", "keys.txt", ""),
    ("text/calendar", "invite.ics", "files of type text/calendar are not passed on"),
    ("application/ms-tnef", "winmail.dat", "files of type application/ms-tnef are not passed on"),
    ("application/vnd.ms-outlook", "mail.msg", "files of type application/vnd.ms-outlook are not passed on"),
    ("text/rfc822-headers", "headers.txt", "files of type text/rfc822-headers are not passed on"),
    ("image/jpeg", "invoice_gpj.exe", "its name does not end in .jpg or .jpeg, as a image/jpeg file's does"),
    ("text/plain", "card.vcf", "it carries its sender's address"),
    ("message/rfc822", "a.txt", "it carries its sender's address"),
    ("", "x", "files of type unknown are not passed on"),
])
def test_withheld(content_type, filename, reason):
    assert withheld(content_type, filename, ALLOWED) == reason


def test_an_address_carrying_type_is_withheld_even_when_configured():
    assert withheld("text/vcard", "me.vcf", (("text/vcard", (".vcf",)),)) == "it carries its sender's address"
