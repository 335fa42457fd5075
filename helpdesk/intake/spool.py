"""The spool: raw inbound messages kept durably, exactly once, before anything else.

Every source (SMTP, Maildir, IMAP, files) hands its bytes here and
acknowledges its own side only after ``store`` returned: a crash after that
re-processes, never loses. The dedupe key is the Message-ID plus a digest of
the content that survives transport (body and originating headers, line
endings normalised), so the same mail fetched over IMAP and delivered by SMTP
is one message; without a Message-ID the digest alone decides.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from helpdesk.clock import Clock, naive_utc
from helpdesk.store import raw as raw_messages

_TRANSPORT_HEADERS = re.compile(
    rb"^(?:return-path|received|delivered-to|x-original-to):.*\n?(?:[ \t].*\n?)*",
    re.IGNORECASE | re.MULTILINE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_KEY_HEADERS = re.compile(rb"^(message-id|from|subject|date):[ \t]*(.*(?:\r?\n[ \t].*)*)",
                          re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Incoming:
    raw: bytes
    mailbox: str
    source: str
    envelope_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stored:
    raw_id: int | None      # None: a duplicate of an already stored message
    dedupe_key: str

    @property
    def duplicate(self) -> bool:
        return self.raw_id is None


def fingerprint(raw: bytes) -> tuple[str | None, str]:
    """(Message-ID, dedupe key) from the header block only: no full parse."""
    head, body = split_head(raw)
    if not body.strip():
        # No body: the rest of the header block decides, so two different
        # header-only (or garbage) files are never taken for one another.
        body = _TRANSPORT_HEADERS.sub(b"", head.replace(b"\r\n", b"\n"))
    fields = {name.lower(): b" ".join(value.split()) for name, value in _KEY_HEADERS.findall(head)}
    message_id = _CONTROL.sub("", fields.get(b"message-id", b"").decode("ascii", "replace")).strip()[:998] or None
    digest = hashlib.sha256()
    for name in (b"from", b"subject", b"date"):
        digest.update(fields.get(name, b"") + b"\0")
    digest.update((body.replace(b"\r\n", b"\n") if b"\r" in body else body).rstrip(b"\n"))
    key = hashlib.sha256(f"{message_id or ''}\0{digest.hexdigest()}".encode()).hexdigest()
    return message_id, key


def split_head(raw: bytes) -> tuple[bytes, bytes]:
    """Header block and body, at the first empty line (CRLF or LF mail).

    The first line's ending says which to look for, so only the header block is
    scanned; mail with mixed endings falls back to the other form.
    """
    newline = raw.find(b"\n")
    crlf_first = newline > 0 and raw[newline - 1:newline] == b"\r"
    for separator in ((b"\r\n\r\n", b"\n\n") if crlf_first else (b"\n\n", b"\r\n\r\n")):
        end = raw.find(separator)
        if end != -1:
            return raw[:end], raw[end + len(separator):]
    return raw, b""


def store(batch: list[Incoming], clock: Clock) -> list[Stored]:
    """Insert the batch in one transaction; duplicates (also within it) are skipped."""
    if not batch:
        return []
    now = naive_utc(clock.now())
    prints = [fingerprint(item.raw) for item in batch]
    ids = raw_messages.store_new(
        [raw_messages.Arrival(key, message_id, item.mailbox, item.source, item.envelope_to, item.raw)
         for item, (message_id, key) in zip(batch, prints)], now)
    results, seen = [], set()
    for _, key in prints:
        first = key not in seen
        seen.add(key)
        results.append(Stored(ids.get(key) if first else None, key))
    return results
