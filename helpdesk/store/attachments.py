"""Content-addressed attachment files, with the per-file and per-message limits.

A file's name is its sha256, so storing the same attachment twice (a re-run
after a crash, the same logo in every mail) writes it once, and a file is
complete before its row can point at it: it is written to a temporary name
and renamed. No fsync: the raw message in the database is the durable copy,
and every attachment can be rebuilt from it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from helpdesk.mail.parse import InboundAttachment


@dataclass(frozen=True)
class StoredAttachment:
    filename: str
    content_type: str
    size: int
    sha256: str | None          # None when refused
    inline: bool
    refused: str | None = None  # why it was not kept


MAX_COUNT = 100     # attachments stored per message; the config's [limits] max_attachments


class AttachmentStore:
    def __init__(self, root: Path, max_size: int, max_total: int, max_count: int = MAX_COUNT) -> None:
        self.root = root
        self.max_size = max_size
        self.max_total = max_total
        self.max_count = max_count
        self._folders: set[Path] = set()    # made already: no mkdir per file

    def store_all(self, attachments: tuple[InboundAttachment, ...], parts_skipped: int = 0
                  ) -> list[StoredAttachment]:
        """Keep what fits the limits (files written before this returns); refuse the rest."""
        planned = self.plan(attachments, parts_skipped)
        for stored, data in planned:
            if data is not None:
                self.write(data, stored.sha256)
        return [stored for stored, _ in planned]

    def plan(self, attachments: tuple[InboundAttachment, ...], parts_skipped: int = 0
             ) -> list[tuple[StoredAttachment, bytes | None]]:
        """Each attachment's record, with the bytes still to write (None when refused).

        Split from writing so the parse stage can report a failed write as
        such, apart from a message that could not be read. Past ``max_count``
        attachments, and for MIME parts the parser did not read, one summary
        record each stands for the rest (refused, kept in the raw mail): a mail
        of 200,000 parts must not become 200,000 files, rows and notice lines.
        """
        planned, total = [], 0
        for item in attachments[:self.max_count]:
            size = len(item.data)
            refusal = self._refusal(size, total)
            if refusal:
                planned.append((StoredAttachment(item.filename, item.content_type, size, None,
                                                 item.inline, refusal), None))
                continue
            total += size
            digest = hashlib.sha256(item.data).hexdigest()
            planned.append((StoredAttachment(item.filename, item.content_type, size, digest,
                                             item.inline), item.data))
        return planned + [(summary, None) for summary in self._summaries(attachments, parts_skipped)]

    def _summaries(self, attachments: tuple[InboundAttachment, ...], parts_skipped: int
                   ) -> list[StoredAttachment]:
        """The refused rest, one line each, so the customer and the staff are told."""
        found = []
        over = attachments[self.max_count:]
        if over:
            found.append(StoredAttachment(
                f"{len(over)} more attachments", "", sum(len(a.data) for a in over), None, False,
                f"over the limit of {self.max_count} attachments per message; "
                "kept in the original mail"))
        if parts_skipped:
            found.append(StoredAttachment(
                f"{parts_skipped} more MIME parts", "", 0, None, False,
                "over the limit of MIME parts per message: not read; kept in the original mail"))
        return found

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def _refusal(self, size: int, total: int) -> str | None:
        if size > self.max_size:
            return f"larger than the {_human(self.max_size)} limit per attachment"
        if total + size > self.max_total:
            return f"over the {_human(self.max_total)} limit for all attachments of one message"
        return None

    def write(self, data: bytes, digest: str) -> str:
        target = self.path_for(digest)
        if target.exists():
            return digest
        if target.parent not in self._folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(target.parent)
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        except FileNotFoundError:       # the folder was removed since: make it again
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest


def _human(size: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"
