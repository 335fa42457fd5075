"""Raw RFC 5322 files or stdin: what ``helpdesk ingest`` reads.

The mailbox is the one named on the command line, else the first configured
mailbox whose address is among the message's recipients, else the first
tickets mailbox, so a saved .eml lands where it was sent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from helpdesk.config.settings import Config, Mailbox
from helpdesk.intake.spool import split_head

_RECIPIENT_HEADERS = re.compile(rb"^(?:to|cc|delivered-to|x-original-to):(.*(?:\r?\n[ \t].*)*)",
                                re.IGNORECASE | re.MULTILINE)
_ADDRESS = re.compile(rb"[\w.!#$%&'*+/=?^`{|}~-]+@[\w.-]+")
_ADDRESS_STARTS = re.compile(rb"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]+@[\w.-]+")


def expand(paths: list[str]) -> list[str]:
    """Folders stand for the files below them (hidden ones skipped), sorted: a saved
    Maildir or a mail export can be ingested as one argument."""
    out: list[str] = []
    for path in paths:
        if path != "-" and os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
        else:
            out.append(path)
    return out


def read(path: str) -> bytes:
    """Bytes of a file, or of stdin for ``-``; OSError says what went wrong."""
    if path == "-":
        import sys
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def _addresses(field: bytes) -> Iterator[bytes]:
    """``_ADDRESS.findall`` in linear time: ``findall`` tries every position, and each
    position of a long run without "@" scanned the run again. A match is tried where the
    last one ended (it may start inside a run there), else only where a run starts."""
    pos = 0
    while (found := _ADDRESS.match(field, pos) or _ADDRESS_STARTS.search(field, pos)) is not None:
        yield found.group()
        pos = found.end()


def mailbox_for(raw: bytes, config: Config, named: Mailbox | None) -> Mailbox:
    if named is not None:
        return named
    head = split_head(raw)[0]
    for field in _RECIPIENT_HEADERS.findall(head):
        for address in _addresses(field):
            mailbox = config.mailbox_for_address(address.decode("ascii", "replace"))
            if mailbox is not None:
                return mailbox
    return next((m for m in config.mailboxes if m.kind == "tickets"), config.mailboxes[0])
