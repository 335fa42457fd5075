"""``helpdesk ingest``: files → store → process, with reading and parsing overlapped.

Files are read and stored a batch at a time *between* the pipeline's batches,
while the parse worker works on the batch before, so the two cores are busy
together and memory stays at a few batches whatever the number of files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from helpdesk.config.settings import Mailbox
from helpdesk.intake import files
from helpdesk.intake.spool import Incoming
from helpdesk.pipeline.batches import Tally
from helpdesk.runtime.app import App


@dataclass
class IngestReport:
    tally: Tally = field(default_factory=Tally)
    duplicates: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)   # (path, why)


class FileFeed:
    """Each call reads and stores the next batch of files; False when none are left."""

    def __init__(self, app: App, paths: list[str], named: Mailbox | None, report: IngestReport,
                 on_progress: Callable[[int], None]) -> None:
        self.app, self.paths, self.named, self.report = app, paths, named, report
        self.on_progress = on_progress
        self.next = 0

    def __call__(self) -> bool:
        if self.next >= len(self.paths):
            return False
        chunk = self.paths[self.next:self.next + self.app.config.intake.batch_size]
        self.next += len(chunk)
        batch = [item for item in map(self._read, chunk) if item is not None]
        self.report.duplicates += sum(s.duplicate for s in self.app.store(batch))
        self.on_progress(self.next)
        return True

    def _read(self, path: str) -> Incoming | None:
        try:
            raw = files.read(path)
        except OSError as exc:
            self.report.unreadable.append((path, exc.strerror or str(exc)))
            return None
        return Incoming(raw, files.mailbox_for(raw, self.app.config, self.named).name, "file")


def ingest_files(app: App, paths: list[str], named: Mailbox | None = None,
                 on_progress: Callable[[int], None] = lambda done: None) -> IngestReport:
    """Store and process every file; delivery is left to the caller."""
    report = IngestReport()
    feed = FileFeed(app, paths, named, report, on_progress)
    while feed():
        app.pipeline.process_pending(tally=report.tally, between=feed)
    return report
