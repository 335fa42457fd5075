"""parse() on real-world mail: every client style and MIME oddity, exact decoded values.

Each fixture in ``fixtures/mail`` is one message as its client writes it (MIME
boundaries, transfer encodings and charsets included), named for what it shows.
These tests never touch the database: they check what ``parse`` makes of the bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.header
import email.policy
import hashlib
from pathlib import Path

import pytest

from helpdesk.mail.parse import BounceReport, InboundMail, decode_header, parse
from tests.conftest import mail

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.eml"))
UTC = dt.UTC
# The 1x1 PNG both the Outlook signature logo and the Apple Mail screenshot carry.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
TICKET_ACK_ID = "20261126091500.4a2b@shop.example"


def load(name: str) -> InboundMail:
    return parse((FIXTURES / name).read_bytes())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files(parsed: InboundMail) -> list[tuple[str, str, int, bool]]:
    return [(a.filename, a.content_type, len(a.data), a.inline) for a in parsed.attachments]


# --- every fixture ---------------------------------------------------------

def test_fixtures_are_all_there():
    assert len(ALL_FIXTURES) >= 38


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_fixture_gives_clean_single_line_fields(name):
    parsed = load(name)
    assert isinstance(parsed, InboundMail)
    for field in (parsed.subject, parsed.from_name, parsed.from_addr):
        assert "\r" not in field and "\n" not in field and "\x00" not in field
        field.encode("utf-8")  # no lone surrogates: every field can go into the database
    parsed.text.encode("utf-8")
    assert "\x00" not in parsed.text and "\r" not in parsed.text
    for attachment in parsed.attachments:
        assert attachment.filename and "/" not in attachment.filename and "\\" not in attachment.filename
        attachment.filename.encode("utf-8")


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_truncated_fixtures_never_raise(name):
    raw = (FIXTURES / name).read_bytes()
    for cut in sorted({1, 17, len(raw) // 3, len(raw) // 2, len(raw) - 7}):
        assert isinstance(parse(raw[:max(cut, 0)]), InboundMail)


# --- mail clients ----------------------------------------------------------

def test_gmail_reply_quoted_printable_alternative():
    parsed = load("gmail_reply.eml")
    assert parsed.from_name == "Zoë Buyer"
    assert parsed.from_addr == "zoe.buyer@gmail.example"
    assert parsed.subject == "Re: [T-42] Key does not work"
    assert parsed.message_id == "CAJ8x2pQe7tRk3v+u_Tn4Yd9wZ1QmHf0p7n=Xc2@mail.gmail.example"
    assert parsed.in_reply_to == (TICKET_ACK_ID,)
    assert parsed.references == ("ack.T-42.5f1c@shop.example", TICKET_ACK_ID)
    assert parsed.to == ("support@shop.example",)
    assert parsed.delivered_to == ("support@shop.example",)
    assert parsed.date == dt.datetime(2026, 11, 26, 10, 31, 7, tzinfo=UTC)
    assert parsed.date.utcoffset() == dt.timedelta(hours=1)
    # The text/plain alternative is used (Gmail marks bold with *...* there), not the HTML.
    assert parsed.text.startswith(
        "Hi,\n\nI tried the new key from *order 1234* but the activation still fails with "
        "“invalid licence”. The download itself works – it is only the key.\n\nThanks,\nZoë\n\n"
        "On Thu, 26 Nov 2026 at 10:15, Difmark Support <support@shop.example> wrote:\n\n"
        "> Hello Zoë,\n")
    assert "gmail_quote" not in parsed.text and "<div" not in parsed.text
    assert parsed.reply_text == (
        "Hi,\n\nI tried the new key from *order 1234* but the activation still fails with "
        "“invalid licence”. The download itself works – it is only the key.\n\nThanks,\nZoë")
    assert parsed.attachments == ()
    assert not parsed.auto_submitted and not parsed.bulk and parsed.loop_ids == ()
    assert parsed.bounce is None


def test_outlook_reply_windows_1252_with_original_message_block():
    parsed = load("outlook_reply.eml")
    assert parsed.from_name == "François Müller"
    assert parsed.from_addr == "f.mueller@buyer-gmbh.example"
    assert parsed.subject == "RE: [T-42] Key does not work"
    assert parsed.message_id == (
        "AM0PR04MB6753F1E2D3C4B5A6978F8E7DA1B2C@AM0PR04MB6753.eurprd04.prod.outlook.com")
    assert parsed.in_reply_to == (TICKET_ACK_ID,)
    assert parsed.date == dt.datetime(2026, 11, 26, 10, 31, 7, tzinfo=UTC)
    assert "-----Original Message-----\nFrom: Difmark Support <support@shop.example>\n" in parsed.text
    assert "MsoNormal" not in parsed.text and "Cambria" not in parsed.text
    assert parsed.reply_text == (
        "Hello,\n\nthe key still doesn’t work – I paid 49 € for it and need it today.\n\n"
        "Best regards\nFrançois Müller\nBuyer GmbH")
    # The signature logo has a Content-ID and no Content-Disposition: inline.
    assert files(parsed) == [("image001.png", "image/png", 70, True)]
    assert parsed.attachments[0].data == PNG


def test_iphone_reply_base64_utf8():
    parsed = load("iphone_reply.eml")
    assert parsed.from_name == "Zoë Ångström"
    assert parsed.from_addr == "zoe.angstrom@icloud.example"
    assert parsed.message_id == "8E1F2A3B-4C5D-6E7F-8091-A2B3C4D5E6F7@icloud.example"
    assert parsed.text.startswith(
        "Still the same error 😕 Tried it on two PCs, both say “key already used”.\n\n"
        "Sent from my iPhone\n\n> On 26. Nov 2026, at 10:15, Difmark Support")
    assert parsed.reply_text == "Still the same error 😕 Tried it on two PCs, both say “key already used”."


def test_thunderbird_interleaved_reply_with_signature():
    parsed = load("thunderbird_reply.eml")
    assert parsed.from_name == "Bob Buyer"
    assert parsed.from_addr == "bob@buyer-sons.example"
    assert parsed.subject == "Re: [T-42] Installer fails"
    assert parsed.text.endswith("\n-- \nBob Buyer\nBuyer & Sons Ltd. · +44 20 7946 0000")
    assert parsed.reply_text == (
        "Hi,\n\nWindows 11, 64-bit.\n\n"
        "2.4.1 – downloaded yesterday from the link in the mail.")


def test_german_reply_iso_8859_1_8bit():
    parsed = load("german_reply_latin1.eml")
    assert parsed.from_name == "Jürgen Großmann"
    assert parsed.subject == "AW: [T-42] Schlüssel funktioniert nicht"
    assert "Am 26.11.2026 um 10:15 schrieb Difmark Support:\n> Hallo Herr Großmann," in parsed.text
    assert parsed.reply_text == (
        "Hallo,\n\nder Schlüssel lässt sich leider immer noch nicht aktivieren. Größe der\n"
        "Datei: 1,2 GB, heruntergeladen am 25.11.\n\nViele Grüße\nJürgen Großmann")


# --- charsets --------------------------------------------------------------

@pytest.mark.parametrize("name, from_name, subject, text", [
    pytest.param("charset_koi8r.eml", "Иван Петров", "Не работает ключ",
                 "Здравствуйте!\n\nКлюч активации не подходит, заказ 1234.\n\nС уважением,\nИван Петров",
                 id="koi8-r"),
    # ① is a Windows (cp932) extension to Shift_JIS that phones and Outlook send.
    pytest.param("charset_shift_jis.eml", "山田太郎", "キーが使えません",
                 "お世話になっております。\n注文①のライセンスキーが無効と表示されます。\n"
                 "よろしくお願いします。\n\n山田太郎", id="shift_jis"),
    # 镕 is GBK, not GB2312; Chinese clients label GBK text as gb2312 all the time.
    pytest.param("charset_gb2312_gbk.eml", "王镕", "激活码无效",
                 "您好，\n\n我购买的激活码无效，订单号 1234。\n\n王镕", id="gb2312-gbk"),
    # Outlook labels Windows-1252 text ISO-8859-1: „“ and – must not become C1 controls.
    pytest.param("charset_latin1_with_windows_quotes.eml", "Anna Schmidt", "Rechnung",
                 "Die Meldung lautet „Lizenz ungültig“ – bitte um Rückruf.", id="latin-1-as-cp1252"),
    pytest.param("charset_unknown.eml", "Kim Kunde", "Download",
                 "Grüße aus Köln – der Download bricht bei 99 % ab.", id="unknown-name-utf8-fallback"),
    pytest.param("charset_lying_us_ascii.eml", "Pedro Nunez", "Factura",
                 "Hola, necesito la factura del pedido 1234. Se\ufffdor M\ufffdller, caf\ufffd.",
                 id="lying-us-ascii"),
    pytest.param("charset_lying_utf8.eml", "Claire Dubois", "Probl\ufffdme de cl\ufffd",
                 "Bonjour, la cl\ufffd ne marche pas. Merci d'avance.", id="lying-utf-8"),
])
def test_body_and_header_charsets(name, from_name, subject, text):
    parsed = load(name)
    assert parsed.from_name == from_name
    assert parsed.subject == subject
    assert parsed.text == text


def test_outlook_windows_1252_body_keeps_euro_and_quotes():
    assert "doesn’t work – I paid 49 €" in load("outlook_reply.eml").text


@pytest.mark.parametrize("charset, body", [
    pytest.param("ks_c_5601-1987", "똠방각하 키가 안 돼요", id="korean-cp949-extension"),
    pytest.param("windows-1251", "Ключ не работает", id="windows-1251"),
    pytest.param("ISO-2022-JP", "キーが使えません", id="iso-2022-jp"),
])
def test_more_charsets_from_raw_bytes(charset, body):
    codec = {"ks_c_5601-1987": "cp949"}.get(charset, charset)
    raw = (f"From: a@example.com\nSubject: x\nMIME-Version: 1.0\n"
           f"Content-Type: text/plain; charset={charset}\nContent-Transfer-Encoding: 8bit\n\n").encode()
    assert parse(raw + body.encode(codec) + b"\n").text == body


# --- RFC 2047 / RFC 2231 ---------------------------------------------------

def test_rfc2047_q_and_b_words_adjacent_folded_and_mixed_charsets():
    parsed = load("rfc2047_encoded_words.eml")
    assert parsed.subject == "Überweisung für Bestellung № 1234 – erledigt"
    assert parsed.from_name == "Björk Guðmundsdóttir"
    assert parsed.from_addr == "bjork@example.is"
    assert parsed.cc == ("joao@example.pt", "team@example.dk")


def test_rfc2047_unknown_charset_falls_back_without_raising():
    parsed = load("rfc2047_unknown_charset.eml")
    # UTF-8 bytes under an unknown label decode as UTF-8; Latin-1 bytes become U+FFFD.
    assert parsed.subject == "Grüße und Pr\ufffdferenz"
    assert parsed.from_name == "Qüark"
    assert parsed.from_addr == "quark@ds9.example"


def test_raw_utf8_headers_are_decoded_not_mangled():
    parsed = load("raw_utf8_headers.eml")
    assert parsed.from_name == "Jörg Müller"
    assert parsed.from_addr == "joerg@example.de"
    assert parsed.subject == "Rechnung für März"
    assert parsed.text == "Anbei die Rechnung für März."
    assert files(parsed) == [("Rechnung_März.pdf", "application/pdf", 15, False)]


@pytest.mark.parametrize("value, expected", [
    pytest.param("Hello\r\n world", "Hello world", id="folded-plain"),
    pytest.param("Your order\r\n\tis ready", "Your order is ready", id="folded-tab"),
    pytest.param("Re: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n aus Berlin", "Re: Grüße aus Berlin",
                 id="folded-after-encoded-word"),
    pytest.param("=?utf-8?q?Gr=C3=BC?=\r\n =?utf-8?q?=C3=9Fe?=", "Grüße", id="folded-adjacent-words"),
    pytest.param("=?UTF-8?B?S8O2bG4=?= =?ISO-8859-1?Q?_M=FCnchen?=", "Köln München", id="mixed-charsets"),
    pytest.param("Grüße =?utf-8?q?aus_K=C3=B6ln?=", "Grüße aus Köln", id="raw-text-and-encoded-word"),
    pytest.param("C:\\users\\new =?utf-8?q?file?=", "C:\\users\\new file", id="backslashes-kept"),
    pytest.param("=?utf-8?B?!!!not-base64!!!?=", "=?utf-8?B?!!!not-base64!!!?=", id="broken-b-word-kept"),
    pytest.param(email.header.Header("J\udcc3\udcb6rg", charset="unknown-8bit"), "Jörg",
                 id="unknown-8bit-header"),
    pytest.param(None, "", id="none"),
])
def test_decode_header(value, expected):
    assert decode_header(value) == expected


@pytest.mark.parametrize("subject, frm, expected_subject, expected_name", [
    pytest.param("=?utf-8?q?Hi=0D=0ABcc:_x@evil.example?=", "=?utf-8?q?Eve=0D=0ABcc:_v@evil.example?= <eve@example.net>",
                 "Hi Bcc: x@evil.example", "Eve Bcc: v@evil.example", id="q-crlf"),
    pytest.param("=?utf-8?b?SGkNCkJjYzogeEBldmlsLmV4YW1wbGU=?=",
                 "=?utf-8?b?RXZlDQpCY2M6IHZAZXZpbC5leGFtcGxl?= <eve@example.net>",
                 "Hi Bcc: x@evil.example", "Eve Bcc: v@evil.example", id="b-crlf"),
    pytest.param("=?utf-8?q?Hi=0ATo:_x@evil.example=00?=", "=?utf-8?q?Eve=0A=0A=0A?= <eve@example.net>",
                 "Hi To: x@evil.example", "Eve", id="lf-and-nul"),
])
def test_encoded_crlf_cannot_inject_headers(subject, frm, expected_subject, expected_name):
    parsed = parse(mail(subject=subject, frm=frm))
    assert parsed.subject == expected_subject
    assert parsed.from_name == expected_name
    assert parsed.from_addr == "eve@example.net"
    assert parsed.cc == () and parsed.to == ("support@shop.example",)


def test_header_injection_fixture():
    parsed = load("header_injection.eml")
    assert parsed.subject == "Hi Bcc: x@evil.example"
    assert parsed.from_name == "Eve Bcc: victim@evil.example"
    assert parsed.from_addr == "eve@example.net"
    assert parsed.to == ("support@shop.example",)
    assert parsed.cc == ()
    assert parsed.text == "Nothing to see here."
    assert files(parsed) == [("notes X-Evil: 1.txt", "text/plain", 8, False)]


def test_rfc2231_file_names_encoded_and_continued():
    parsed = load("rfc2231_filenames.eml")
    assert parsed.text == "The invoices are attached."
    assert files(parsed) == [
        ("Rechnung März 2026.pdf", "application/pdf", 15, False),
        ("注文書のライセンス一覧.txt", "text/plain", 22, False),
        ("a_very_long_file_name_that_was_split_by_the_client_into_two_parts.log",
         "application/octet-stream", 44, False),
    ]
    assert parsed.attachments[1].data == "ライセンス一覧\n".encode()
    assert parsed.attachments[2].data == b"2026-11-26 10:00:01 ERROR activation failed\n"


def test_rfc2047_in_quotes_file_name_and_path_separators():
    parsed = load("rfc2047_quoted_filename.eml")
    assert parsed.text == "See attached."
    # Gmail gives every attachment an X-Attachment-Id/Content-ID; "attachment" still wins.
    assert files(parsed) == [
        ("报告書.pdf", "application/pdf", 15, False),
        (".._.._etc_passwd", "text/plain", 32, False),
    ]
    assert parsed.attachments[0].data == b"%PDF-1.4\n%%EOF\n"


# --- bodies and parts ------------------------------------------------------

def test_html_only_mail_becomes_readable_text():
    text = load("html_only.eml").text
    assert text.startswith("Hello Support,\n\nI bought Photo Editor Pro for 49 € & the key is rejected.")
    assert "The error says <invalid key>." in text          # entities decoded, not a tag
    assert "What I tried:\n\n  * Restarting the installer\n  * Copying the key by hand\n" in text
    assert " 1. Uninstall\n 2. Reinstall" in text
    assert text.endswith("Regards,\nMia Müller")
    for leftover in ("<p>", "<li", "&amp;", "&nbsp;", "&euro;", "font-family", "display: none",
                     "trackingPixel", "Contact form submission"):
        assert leftover not in text


def test_plain_alternative_is_preferred_over_html():
    parsed = load("apple_mail_inline_image.eml")
    assert parsed.text == "Here is what I see after entering the key:\n\n\n\nTom"
    assert "cid:" not in parsed.text


def test_empty_plain_alternative_falls_back_to_html():
    raw = (b"From: a@example.com\nSubject: x\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/alternative; boundary=b\n\n"
           b"--b\nContent-Type: text/plain; charset=utf-8\n\n \n"
           b"--b\nContent-Type: text/html; charset=utf-8\n\n<p>Only in <b>HTML</b></p>\n--b--\n")
    assert parse(raw).text == "Only in HTML"


def test_multipart_related_inline_image():
    parsed = load("apple_mail_inline_image.eml")
    assert files(parsed) == [("screenshot.png", "image/png", 70, True)]
    assert parsed.attachments[0].data == PNG


def test_pdf_attachment():
    parsed = load("pdf_attachment.eml")
    assert parsed.text == "The attached invoice shows 59 EUR, I paid 49 EUR."
    assert files(parsed) == [("invoice-2026-1234.pdf", "application/pdf", 335, False)]
    data = parsed.attachments[0].data
    assert data.startswith(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n") and data.endswith(b"%%EOF\n")
    assert sha(data) == "bf9e17954fa16937563f53a80b493a8a3f4d025d909b54d05ae384598ef361fe"


def test_attached_message_stays_an_attachment():
    parsed = load("forwarded_message_rfc822.eml")
    assert parsed.text == "Please handle the complaint attached below.\n\nPaula"
    for leaked in ("INNER", "SECOND INNER", "Angry Customer"):
        assert leaked not in parsed.text
    assert files(parsed) == [
        ("Complaint about order 1234.eml", "message/rfc822", 568, False),
        ("message.eml", "message/rfc822", 213, False),
    ]
    inner = email.message_from_bytes(parsed.attachments[0].data, policy=email.policy.default)
    assert inner["Subject"] == "Complaint about order 1234"
    assert inner["Message-ID"] == "<complaint-inner-1@example.net>"
    assert inner.get_body(("plain",)).get_content().startswith("INNER BODY:")
    assert b"SECOND INNER BODY must not leak either." in parsed.attachments[1].data
    # Its Message-ID is not one of ours: it must not thread the forward.
    assert parsed.thread_ids == ("fwd-attached-1@shop-partner.example",)


# --- malformed input -------------------------------------------------------

def test_missing_final_boundary_keeps_text_and_truncated_attachment():
    parsed = load("malformed_missing_boundary_end.eml")
    assert parsed.subject == "Cut off"
    assert parsed.text == "The file below did not arrive completely."
    assert files(parsed) == [("logs.zip", "application/zip", 18, False)]
    assert parsed.attachments[0].data.startswith(b"PK\x03\x04")


def test_garbage_headers():
    parsed = load("malformed_garbage_headers.eml")
    assert parsed.from_addr == "" and parsed.from_name == ""
    assert parsed.to == ()
    assert parsed.message_id is None
    assert parsed.date is None
    assert parsed.subject == "=?utf-8?B?!!!not-base64!!!?="
    assert parsed.text == "Body after garbage headers."


def test_header_line_without_colon_ends_the_header():
    parsed = load("malformed_header_without_colon.eml")
    assert parsed.from_addr == "colon@example.com"
    assert parsed.from_name == "Colon Less"
    assert parsed.subject == ""          # it came after the broken line
    assert parsed.message_id is None
    assert parsed.text.startswith("This header line has no colon\nSubject: hidden by the broken line\n")
    assert parsed.text.endswith("Real body text.")


def test_headers_only_no_body():
    parsed = load("malformed_no_body.eml")
    assert parsed.subject == "(no body)"
    assert parsed.message_id == "no-body-1@example.com"
    assert parsed.text == "" and parsed.reply_text == ""
    assert parsed.attachments == ()


def test_binary_junk_in_body():
    parsed = load("malformed_binary_junk.eml")
    assert parsed.text.startswith("Before junk.\n")
    assert parsed.text.endswith("\nAfter junk.")
    assert "\x00" not in parsed.text     # PostgreSQL refuses NUL in text columns
    assert "\ufffd" in parsed.text


@pytest.mark.parametrize("raw", [
    b"", b"\n", b"\x00\xff\xfe", b"From:\n\n", b"Subject: =?utf-8?q?\n\n",
    b"Content-Type: multipart/mixed; boundary=\"\"\n\n--\n--\n",
    b"Content-Type: text/plain; charset*=x''%ff\n\nhi",
    b"Content-Type: message/rfc822\n\n", b"Content-Transfer-Encoding: base64\n\n====",
    b"From: a@b.example\nDate: Thu, 26 Nov 2026 09:00:00 +99999999999999999999\n\nx",
], ids=lambda raw: repr(raw[:24]))
def test_degenerate_input_still_parses(raw):
    assert isinstance(parse(raw), InboundMail)


# --- auto replies, bulk, bounces -------------------------------------------

@pytest.mark.parametrize("name, auto, bulk", [
    ("auto_submitted_out_of_office.eml", True, False),
    ("autoreply_x_autoreply.eml", True, False),
    ("autoreply_precedence_auto_reply.eml", True, False),
    ("bulk_newsletter.eml", False, True),
    ("list_mailman.eml", False, True),
    ("gmail_reply.eml", False, False),
])
def test_auto_reply_and_bulk_flags(name, auto, bulk):
    parsed = load(name)
    assert (parsed.auto_submitted, parsed.bulk, parsed.bounce) == (auto, bulk, None)


@pytest.mark.parametrize("headers, auto, bulk", [
    ({"Auto-Submitted": "no"}, False, False),
    ({"Auto-Submitted": "auto-generated"}, True, False),
    ({"X-Autorespond": "vacation"}, True, False),
    ({"Precedence": "junk"}, False, True),
    ({"Precedence": "list"}, False, True),
    ({"List-Id": "<announce.example.org>"}, False, True),
])
def test_auto_reply_and_bulk_headers(headers, auto, bulk):
    parsed = parse(mail(headers=headers))
    assert (parsed.auto_submitted, parsed.bulk) == (auto, bulk)


def test_out_of_office_keeps_its_text_and_thread():
    parsed = load("auto_submitted_out_of_office.eml")
    assert parsed.subject == "Automatic reply: [T-42] Key does not work"
    assert parsed.in_reply_to == (TICKET_ACK_ID,)
    assert parsed.text == "I am out of the office until 30 November with limited access to email."
    assert load("autoreply_x_autoreply.eml").from_name == "Анна"


def test_postfix_dsn_with_rfc822_headers():
    parsed = load("bounce_postfix_dsn.eml")
    assert parsed.from_addr == "mailer-daemon@mx.shop.example"
    assert parsed.from_name == "Mail Delivery System"
    assert parsed.bounce == BounceReport(
        recipients=("gone.user@example.net",),
        status="5.1.1",
        diagnostic="smtp; 550 5.1.1 <gone.user@example.net>: Recipient address rejected: "
                   "User unknown in virtual mailbox table",
        original_message_id=TICKET_ACK_ID,
    )
    assert parsed.text.startswith("This is the mail system at host mx.shop.example.")
    assert "Reporting-MTA" not in parsed.text
    assert files(parsed) == [("attachment-text.rfc822-headers", "text/rfc822-headers", 439, False)]


def test_exchange_dsn_with_message_rfc822_and_two_recipients():
    parsed = load("bounce_exchange_message_rfc822.eml")
    assert parsed.bounce == BounceReport(
        recipients=("someone@corp.example", "other.person@corp.example"),
        status="5.1.10",
        diagnostic="smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; "
                   "Recipient not found by SMTP address lookup",
        original_message_id=TICKET_ACK_ID,
    )
    assert parsed.text == ("Your message to Someone@Corp.example couldn't be delivered.\n"
                           "Someone wasn't found at corp.example.")
    assert "ORIGINAL BODY" not in parsed.text
    assert [(a.filename, a.content_type) for a in parsed.attachments] == [("message.eml", "message/rfc822")]


def test_mailer_daemon_bounce_without_report():
    parsed = load("bounce_mailer_daemon_plain.eml")
    assert parsed.from_addr == "mailer-daemon@mail.example.net"
    assert parsed.subject == "failure notice"
    assert parsed.bounce == BounceReport(recipients=(), status="", diagnostic="", original_message_id=None)
    assert "Sorry, no mailbox here by that name. (#5.1.1)" in parsed.text


def test_empty_return_path_marks_a_bounce():
    parsed = parse(mail(frm="Postmaster <notices@mx.example.net>", headers={"Return-Path": "<>"}))
    assert parsed.bounce == BounceReport((), "", "", None)
    assert parse(mail()).bounce is None


# --- threading and addressing ----------------------------------------------

def test_references_folded_with_comments_and_duplicates():
    parsed = load("threading_references.eml")
    assert parsed.message_id == "reply-3@example.com"
    assert parsed.in_reply_to == ("20261126111500.c3d4@shop.example",)
    assert parsed.references == ("first-request@example.com", TICKET_ACK_ID,
                                 "reply-2@example.com", "20261126111500.c3d4@shop.example")
    assert parsed.thread_ids == ("reply-3@example.com", "20261126111500.c3d4@shop.example",
                                 "first-request@example.com", TICKET_ACK_ID, "reply-2@example.com")


def test_message_ids_without_angle_brackets():
    parsed = load("threading_bare_ids.eml")
    assert parsed.message_id == "1796126700.4242@old-mailer.example"
    assert parsed.in_reply_to == (TICKET_ACK_ID,)
    assert parsed.references == ("first-request@example.com", TICKET_ACK_ID)


def test_missing_message_id():
    parsed = parse(mail(headers={"Message-ID": None}))
    assert parsed.message_id is None
    assert parsed.thread_ids == ()


def test_reply_to_is_read():
    parsed = load("reply_to_contact_form.eml")
    assert parsed.from_addr == "noreply@forms.shop-web.example"
    assert parsed.from_name == "Shop contact form"
    assert parsed.reply_to == "clara.customer@example.org"


@pytest.mark.parametrize("reply_to, expected", [
    pytest.param(None, None, id="absent"),
    pytest.param("Bob <BOB@Example.com>", None, id="same-as-from"),
    pytest.param("not an address", None, id="no-address"),
    pytest.param("Team <team@example.com>, Bob <bob@example.com>", "team@example.com", id="first-of-two"),
])
def test_reply_to_variants(reply_to, expected):
    parsed = parse(mail(headers={"Reply-To": reply_to}))
    assert parsed.from_addr == "bob@example.com"
    assert parsed.reply_to == expected


@pytest.mark.parametrize("value, expected", [
    pytest.param("Thu, 26 Nov 2026 09:00:00 +0100", dt.datetime(2026, 11, 26, 8, 0, tzinfo=UTC), id="offset"),
    pytest.param("Thu, 26 Nov 2026 09:00:00 -0000", dt.datetime(2026, 11, 26, 9, 0, tzinfo=UTC),
                 id="unknown-zone-is-utc"),
    pytest.param("26 Nov 26 09:00 EST", dt.datetime(2026, 11, 26, 14, 0, tzinfo=UTC), id="obsolete-form"),
    pytest.param("Thu, 26 Nov 2026 09:00:00 +0000 (UTC)", dt.datetime(2026, 11, 26, 9, 0, tzinfo=UTC),
                 id="with-comment"),
    pytest.param("yesterday", None, id="words"),
    pytest.param("", None, id="empty"),
    pytest.param("Thu, 32 Nov 2026 09:00:00 +0000", None, id="day-out-of-range"),
    pytest.param("Thu, 26 Nov 2026 25:61:00 +0000", None, id="time-out-of-range"),
    pytest.param("Thu, 26 Nov 99999 09:00:00 +0000", None, id="year-out-of-range"),
    pytest.param("Thu, 26 Nov 2026 09:00:00 +99999999999999999999", None, id="offset-overflow"),
    pytest.param(None, None, id="missing"),
])
def test_date(value, expected):
    parsed = parse(mail(headers={"Date": value}))
    assert parsed.date == expected
    if expected is not None:
        assert parsed.date.tzinfo is not None


def test_html_only_reply_quotes_come_out_marked_and_strip_away():
    html = ('<div dir="ltr">Thanks, the new key is ABC-123.</div><br><div class="gmail_quote">'
            '<div dir="ltr" class="gmail_attr">On Thu, Nov 26, 2026 at 9:00 AM Difmark Support '
            '&lt;support@shop.example&gt; wrote:<br></div><blockquote class="gmail_quote">'
            'New ticket T-1 from Bob<br><blockquote>an older quote</blockquote>my key does not work'
            '</blockquote></div>')
    raw = ("From: Alice <alice@shop.example>\nTo: support@shop.example\nSubject: Re: x\n"
           "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n" + html).encode()
    mail = parse(raw)
    assert "> New ticket T-1 from Bob" in mail.text and "> > an older quote" in mail.text
    assert mail.reply_text == "Thanks, the new key is ABC-123."


@pytest.mark.parametrize("subject, header, auto", [
    ("Automatic reply: Your request", "", True),
    ("Out of Office: back Monday", "", True),
    ("Abwesenheitsnotiz: Ihre Anfrage", "", True),
    ("Réponse automatique : absent", "", True),
    ("Question about out of office hours", "", False),
    ("Re: my order", "X-Autogenerated: Reply\n", True),
    ("Re: my order", "", False),
])
def test_out_of_office_without_auto_submitted_is_still_an_auto_reply(subject, header, auto):
    raw = (f"From: a@example.com\nTo: support@shop.example\nSubject: {subject}\n{header}"
           "Content-Type: text/plain; charset=utf-8\n\nI am away.\n").encode()
    assert parse(raw).auto_submitted is auto
