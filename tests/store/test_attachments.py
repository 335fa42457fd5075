"""Attachments: the content-addressed store and its limits, then the whole way through.

``AttachmentStore`` is tested on its own in a temporary folder. The end-to-end
tests run a helpdesk with small limits (1 KB per file, 2 KB per message) on
SQLite and PostgreSQL: a refused attachment must leave the mail on its ticket,
be listed as refused with the reason, and be named to the customer.
"""

from __future__ import annotations

import email.message
import email.policy
import hashlib
from pathlib import Path

import pytest

from helpdesk.clock import Clock
from helpdesk.mail.parse import InboundAttachment
from helpdesk.reports.listings import ticket_detail
from helpdesk.store.attachments import AttachmentStore, StoredAttachment
from helpdesk.store.schema import RawMessage
from tests.conftest import START, Desk, write_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
KB = 1024
PER_FILE = "larger than the 1 KB limit per attachment"
PER_MESSAGE = "over the 2 KB limit for all attachments of one message"


def attachment(data: bytes, filename: str = "file.bin", content_type: str = "application/octet-stream",
               inline: bool = False) -> InboundAttachment:
    return InboundAttachment(filename, content_type, data, inline)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path) -> AttachmentStore:
    return AttachmentStore(tmp_path / "attachments", max_size=KB, max_total=2 * KB)


# --- the store -------------------------------------------------------------

def test_file_is_named_by_its_sha256_under_a_two_letter_folder(store):
    data = b"%PDF-1.4\n%%EOF\n"
    [kept] = store.store_all((attachment(data, "invoice.pdf", "application/pdf"),))
    sha = digest(data)
    assert kept == StoredAttachment("invoice.pdf", "application/pdf", len(data), sha, False, None)
    assert store.path_for(sha) == store.root / sha[:2] / sha
    assert stored_files(store.root) == [store.root / sha[:2] / sha]
    assert (store.root / sha[:2] / sha).read_bytes() == data


def test_same_content_twice_is_one_file(store):
    logo = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    first = store.store_all((attachment(logo, "logo.png", "image/png", inline=True),
                             attachment(logo, "logo-copy.png", "image/png")))
    path = store.path_for(digest(logo))
    written = path.stat()
    again = store.store_all((attachment(logo, "image001.png", "image/png", inline=True),))
    assert [(a.filename, a.sha256, a.inline) for a in first + again] == [
        ("logo.png", digest(logo), True), ("logo-copy.png", digest(logo), False),
        ("image001.png", digest(logo), True)]
    assert stored_files(store.root) == [path]       # no second copy, no temporary left over
    assert path.stat().st_mtime_ns == written.st_mtime_ns and path.stat().st_ino == written.st_ino


def test_different_content_gets_different_files(store):
    kept = store.store_all((attachment(b"one"), attachment(b"two"), attachment(b"")))
    assert [a.sha256 for a in kept] == [digest(b"one"), digest(b"two"), digest(b"")]
    assert len(stored_files(store.root)) == 3
    assert store.path_for(digest(b"")).read_bytes() == b""


def test_over_size_attachment_is_refused_with_the_reason_and_not_written(store):
    kept = store.store_all((attachment(b"x" * (KB + 1), "debug.log", "text/plain"),
                            attachment(b"y" * KB, "exactly-1kb.bin")))
    assert kept == [
        StoredAttachment("debug.log", "text/plain", KB + 1, None, False, PER_FILE),
        StoredAttachment("exactly-1kb.bin", "application/octet-stream", KB, digest(b"y" * KB), False),
    ]
    assert stored_files(store.root) == [store.path_for(digest(b"y" * KB))]


def test_per_message_total_is_enforced_in_order(store):
    parts = [attachment(bytes([n]) * 1000, f"part{n}.bin") for n in range(3)]
    kept = store.store_all(tuple(parts))
    assert [(a.filename, a.size, a.refused) for a in kept] == [
        ("part0.bin", 1000, None), ("part1.bin", 1000, None), ("part2.bin", 1000, PER_MESSAGE)]
    assert kept[2].sha256 is None
    assert len(stored_files(store.root)) == 2


def test_total_may_be_reached_exactly_and_refused_files_do_not_count(store):
    kept = store.store_all((attachment(b"a" * KB, "a.bin"), attachment(b"big" * KB, "big.bin"),
                            attachment(b"b" * KB, "b.bin"), attachment(b"c", "c.bin")))
    assert [(a.filename, a.refused) for a in kept] == [
        ("a.bin", None), ("big.bin", PER_FILE), ("b.bin", None), ("c.bin", PER_MESSAGE)]


def test_each_message_has_its_own_total(store):
    for _ in range(3):
        kept = store.store_all((attachment(b"a" * KB, "a.bin"), attachment(b"b" * KB, "b.bin")))
        assert [a.refused for a in kept] == [None, None]
    assert len(stored_files(store.root)) == 2


@pytest.mark.parametrize("limit, per_file, per_message", [
    (256, "256 bytes", "1 KB"), (1536, "1.5 KB", "6 KB"),
    (10 * KB * KB, "10 MB", "40 MB"), (3 * KB * KB * KB, "3 GB", "12 GB")])
def test_limits_are_shown_in_human_units(tmp_path, limit, per_file, per_message):
    store = AttachmentStore(tmp_path, max_size=limit, max_total=4 * limit)
    assert store._refusal(limit + 1, 0) == f"larger than the {per_file} limit per attachment"
    assert store._refusal(limit, 3 * limit + 1) == (
        f"over the {per_message} limit for all attachments of one message")
    assert store._refusal(limit, 3 * limit) is None


def test_nothing_to_store(store):
    assert store.store_all(()) == []
    assert not store.root.exists() or stored_files(store.root) == []


# --- end to end ------------------------------------------------------------

@pytest.fixture
def small_desk(tmp_path, db_url):
    """A helpdesk that takes at most 1 KB per attachment and 2 KB per message."""
    config = write_config(tmp_path, db_url=db_url,
                          limits='max_attachment_size = "1KB"\nmax_attachments_total = "2KB"')
    made = Desk(tmp_path, config, Clock(START))
    yield made
    made.app.close()


def customer_mail(files: list[tuple[str, str, bytes]], *, subject="Activation fails",
                  message_id="<att-1@example.com>", in_reply_to: str | None = None,
                  body="Hello,\n\nthe logs are attached.\n\nBob\n") -> bytes:
    """A multipart/mixed mail as a client writes it, with RFC 2231 names where needed."""
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Bob Buyer <bob@example.com>"
    msg["To"] = "support@shop.example"
    msg["Subject"] = subject
    msg["Date"] = "Thu, 26 Nov 2026 09:00:00 +0000"
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    for filename, ctype, data in files:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


LOG = b"2026-11-26 09:00:00 ERROR activation failed\n" * 34      # 1,496 bytes: over 1 KB
SHOT = b"\x89PNG\r\n\x1a\n" + b"\x00" * 592                        # 600 bytes
DUMP_A = b"A" * 1000
DUMP_B = b"B" * 1000                                                # 600 + 1000 + 1000 > 2 KB


def plain(message) -> str:
    return message.get_body(("plain",)).get_content()


def html(message) -> str:
    return message.get_body(("html",)).get_content()


def test_refused_attachment_keeps_the_mail_and_tells_the_customer(small_desk, tmp_path):
    raw = customer_mail([("screenshot.png", "image/png", SHOT),
                         ("Protokoll_März.log", "text/plain", LOG),
                         ("dump-a.bin", "application/octet-stream", DUMP_A),
                         ("dump-b.bin", "application/octet-stream", DUMP_B)])
    tally = small_desk.ingest(raw)
    assert tally.counts["new_ticket"] == 1

    # The mail itself is kept, whole, and its text is on the ticket.
    [row] = RawMessage.select()
    assert (row.status, bytes(row.raw)) == ("done", raw)
    detail = ticket_detail("T-1")
    [message] = [m for m in detail["messages"] if m["direction"] == "in"]
    assert message["body"] == "Hello,\n\nthe logs are attached.\n\nBob"
    assert message["attachments"] == [
        {"filename": "screenshot.png", "content_type": "image/png", "size": 600,
         "sha256": digest(SHOT), "inline": False, "refused": None},
        {"filename": "Protokoll_März.log", "content_type": "text/plain", "size": len(LOG),
         "sha256": None, "inline": False, "refused": PER_FILE},
        {"filename": "dump-a.bin", "content_type": "application/octet-stream", "size": 1000,
         "sha256": digest(DUMP_A), "inline": False, "refused": None},
        {"filename": "dump-b.bin", "content_type": "application/octet-stream", "size": 1000,
         "sha256": None, "inline": False, "refused": PER_MESSAGE},
    ]
    root = tmp_path / "var" / "attachments"
    assert stored_files(root) == sorted([root / digest(SHOT)[:2] / digest(SHOT),
                                         root / digest(DUMP_A)[:2] / digest(DUMP_A)])
    assert (root / digest(DUMP_A)[:2] / digest(DUMP_A)).read_bytes() == DUMP_A

    # The acknowledgement names what was received and what was refused, and why.
    [ack] = small_desk.to("bob@example.com")
    assert ack["Subject"] == "[T-1] We received your request: Activation fails"
    text = plain(ack)
    assert ("We received these attachments:\n"
            "  - screenshot.png (600 Bytes)\n"
            "  - dump-a.bin (1.0 kB)\n") in text
    assert ("We could not accept these attachments:\n"
            f"  - Protokoll_März.log (1.5 kB): {PER_FILE}\n"
            f"  - dump-b.bin (1.0 kB): {PER_MESSAGE}\n"
            "Please send them as smaller files or share a download link.\n") in text
    page = html(ack)
    assert f"<li>Protokoll_März.log (1.5 kB): {PER_FILE}</li>" in page
    assert f"<li>dump-b.bin (1.0 kB): {PER_MESSAGE}</li>" in page

    # Staff see the refusal too.
    [notice] = small_desk.to("alice@shop.example")
    assert f"  - Protokoll_März.log (text/plain, 1.5 kB) REFUSED: {PER_FILE}\n" in plain(notice)


def test_refused_attachment_on_a_reply_is_named_to_the_customer(small_desk):
    small_desk.ingest(customer_mail([("small.txt", "text/plain", b"fits")]))
    [ack] = small_desk.to("bob@example.com")
    assert "could not accept" not in plain(ack)
    assert "  - small.txt (4 Bytes)\n" in plain(ack)

    reply = customer_mail([("crash.dmp", "application/octet-stream", b"\x00" * 5000)],
                          subject="Re: [T-1] We received your request: Activation fails",
                          message_id="<att-2@example.com>", in_reply_to=ack["Message-ID"],
                          body="Here is the crash dump.\n")
    tally = small_desk.ingest(reply)
    assert tally.counts["reply"] == 1

    detail = ticket_detail("T-1")
    assert [m["body"] for m in detail["messages"] if m["direction"] == "in"] == [
        "Hello,\n\nthe logs are attached.\n\nBob", "Here is the crash dump."]
    assert [m for m in detail["messages"] if m["direction"] == "in"][1]["attachments"] == [
        {"filename": "crash.dmp", "content_type": "application/octet-stream", "size": 5000,
         "sha256": None, "inline": False, "refused": PER_FILE}]
    assert [o["kind"] for o in detail["outbox"] if o["to"] == "bob@example.com"] == [
        "ack", "attachments_refused"]

    notice = small_desk.to("bob@example.com")[-1]
    assert notice["Subject"] == "[T-1] Some attachments could not be accepted"
    assert f"  - crash.dmp (5.0 kB): {PER_FILE}\n" in plain(notice)
    assert f"<li>crash.dmp (5.0 kB): {PER_FILE}</li>" in html(notice)


def test_fixture_attachments_are_stored_once_across_messages(small_desk, tmp_path):
    raw = (FIXTURES / "pdf_attachment.eml").read_bytes()
    resent = raw.replace(b"<pdf-attachment-1@example.com>", b"<pdf-attachment-2@example.com>")
    resent = resent.replace(b"Subject: Wrong amount on invoice", b"Subject: Invoice again")
    tally = small_desk.ingest(raw, resent)
    assert tally.counts["new_ticket"] == 2

    pdfs = [ticket_detail(t)["messages"][0]["attachments"] for t in ("T-1", "T-2")]
    assert pdfs[0] == pdfs[1] == [
        {"filename": "invoice-2026-1234.pdf", "content_type": "application/pdf", "size": 335,
         "sha256": "bf9e17954fa16937563f53a80b493a8a3f4d025d909b54d05ae384598ef361fe",
         "inline": False, "refused": None}]
    [only] = stored_files(tmp_path / "var" / "attachments")
    assert only.name == pdfs[0][0]["sha256"]
    assert only.read_bytes().startswith(b"%PDF-1.4\n")
    for ack in small_desk.to("bob@example.com"):
        assert "  - invoice-2026-1234.pdf (335 Bytes)\n" in plain(ack)
        assert "could not accept" not in plain(ack)


def test_inline_image_is_stored_and_listed_as_inline(small_desk, tmp_path):
    small_desk.ingest((FIXTURES / "apple_mail_inline_image.eml").read_bytes())
    [shot] = ticket_detail("T-1")["messages"][0]["attachments"]
    assert (shot["filename"], shot["content_type"], shot["size"], shot["inline"], shot["refused"]) == (
        "screenshot.png", "image/png", 70, True, None)
    path = tmp_path / "var" / "attachments" / shot["sha256"][:2] / shot["sha256"]
    assert path.read_bytes().startswith(b"\x89PNG\r\n")
    [ack] = small_desk.to("tom@mac.example")
    assert "  - screenshot.png (70 Bytes)\n" in plain(ack)


def test_a_folder_removed_while_running_is_made_again(tmp_path):
    from helpdesk.store.attachments import AttachmentStore
    store = AttachmentStore(tmp_path / "files", 1 << 20, 1 << 20)
    digest = "ab" + "0" * 62
    store.write(b"first", digest)
    import shutil
    shutil.rmtree(tmp_path / "files")
    other = "ab" + "1" * 62
    store.write(b"second", other)
    assert store.path_for(other).read_bytes() == b"second"
