"""Maildir intake: files in ``new/`` are stored, then moved to ``cur/`` as seen.

Moving happens only after the batch is committed, so a crash in between leaves
the files in ``new/`` and the next poll stores them again, which the dedupe
key turns into a no-op.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from helpdesk.config.settings import Mailbox
from helpdesk.intake.spool import Incoming, Stored

log = logging.getLogger("helpdesk.maildir")
Store = Callable[[list[Incoming]], list[Stored]]


def pending_files(maildir: Path) -> list[Path]:
    """Files waiting in new/, oldest first (Maildir names start with a timestamp)."""
    try:
        names = sorted(n for n in os.listdir(maildir / "new") if not n.startswith("."))
    except FileNotFoundError:
        return []
    return [maildir / "new" / n for n in names]


def poll(mailbox: Mailbox, store: Store, batch_size: int) -> Iterator[tuple[int, int]]:
    """Store and acknowledge every file in new/; yields (stored, duplicates) per batch."""
    files = pending_files(mailbox.maildir)
    for start in range(0, len(files), batch_size):
        chunk, batch = [], []
        for path in files[start:start + batch_size]:
            raw = _read(path)
            if raw is not None:
                chunk.append(path)
                batch.append(Incoming(raw, mailbox.name, "maildir"))
        results = store(batch)
        for path, result in zip(chunk, results):
            if result.duplicate:
                log.info("maildir %s: %s is a copy of a message already stored; skipped",
                         mailbox.name, path.name)
            acknowledge(path)
        yield sum(not r.duplicate for r in results), sum(r.duplicate for r in results)


def acknowledge(path: Path) -> None:
    """Move a stored file to cur/ with the Seen flag, as a mail client would."""
    target = path.parent.parent / "cur" / (path.name.split(":", 1)[0] + ":2,S")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        log.debug("%s already moved by another worker", path.name)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None  # taken by another worker meanwhile
    except OSError as exc:
        log.error("cannot read %s: %s (left in place)", path, exc.strerror)
        return None
