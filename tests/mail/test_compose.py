"""compose: the generator's shortcuts give exactly the stdlib's bytes."""

from __future__ import annotations

import datetime as dt
import email
import json
import random
import string
from email import policy

from helpdesk.mail import compose

DATE = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def outcome(used, fold, name, value):
    """What folding gives: the line, or the kind of error (control characters can make the
    stdlib see an embedded header)."""
    try:
        return getattr(used, fold)(name, value)
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return type(exc)


def test_a_short_ascii_header_is_written_as_the_stdlib_would_fold_it():
    alphabet = string.ascii_letters + string.digits + " ,;:<>@.\"'()[]=_-+/\t\x0b\x0c\x1c"
    rng = random.Random(7)
    names = ["Subject", "To", "From", "Message-ID", "References", "X-Helpdesk-Loop", "Content-Type"]
    checked = 0
    for _ in range(20000):
        name = rng.choice(names)
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90)))
        for fold in ("fold", "fold_binary"):
            assert outcome(compose.GENERATING, fold, name, value) == outcome(policy.compat32, fold, name, value)
        checked += compose._fits(name, value, 78)
    assert checked > 2000     # the shortcut was taken, not only the stdlib's path


def test_long_or_non_ascii_headers_still_fold_and_encode():
    long = "word " * 40
    assert compose.GENERATING.fold("Subject", long.strip()).count("\n") > 1
    data = compose.compose(message_id="m1@shop.example", subject="Grüße " + long, text="hi\n", html=None,
                           headers_json=json.dumps({"To": ["Zoë", "zoe@example.com"]}), date=DATE)
    message = email.message_from_bytes(data, policy=policy.default)
    assert str(message["Subject"]) == ("Grüße " + long).strip()
    assert message["To"].addresses[0].display_name == "Zoë"
    assert all(len(line) <= 998 for line in data.split(b"\n\n", 1)[0].split(b"\n"))   # RFC 5322


def test_parts_are_separated_by_a_fresh_boundary_the_parser_finds():
    html = "<p>=_ and -- look like boundaries but are not</p>"
    first, second = (compose.compose(message_id=f"m{i}@shop.example", subject="s", text="plain =_ text\n",
                                     html=html, headers_json="{}", date=DATE) for i in (1, 2))
    boundaries = {email.message_from_bytes(d).get_boundary() for d in (first, second)}
    assert len(boundaries) == 2 and all(b.startswith("=_") for b in boundaries)
    assert b'Content-Type: multipart/alternative; boundary="=_' in first    # one line: no folding work
    message = email.message_from_bytes(first, policy=policy.default)
    assert message.get_body(("plain",)).get_content() == "plain =_ text\n"
    assert message.get_body(("html",)).get_content().strip() == html


def test_a_body_takes_the_shorter_transfer_encoding_and_reads_back_the_same():
    cyrillic = "Здравствуйте! Ключ для Cyberpunk 2077 не активируется.\n" * 20
    mostly_ascii = "Hello Zoë, your key for Cyberpunk 2077 is on its way.\n" * 20
    sizes = {}
    for name, text in (("cyrillic", cyrillic), ("mostly_ascii", mostly_ascii)):
        data = compose.compose(message_id="m1@shop.example", subject="s", text=text, html=None,
                               headers_json="{}", date=DATE)
        message = email.message_from_bytes(data, policy=policy.default)
        assert message.get_content() == text
        sizes[name] = (message["Content-Transfer-Encoding"], len(data.split(b"\n\n", 1)[1]))
    assert sizes["cyrillic"][0] == "base64"
    assert sizes["cyrillic"][1] < len(cyrillic.encode()) * 1.4      # QP: about 2.6 times
    assert sizes["mostly_ascii"][0] == "quoted-printable"          # still readable in the raw mail
