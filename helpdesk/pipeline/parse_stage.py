"""The parse stage of the pipeline: inline, or in a worker process beside it.

Parsing is pure CPU (the stdlib parser, charset decoding, HTML to text) and
takes about as long as everything the pipeline does with the database, so on
a machine with a spare core a batch is parsed in a worker process while the
previous batch is applied. The stage also writes the attachments' files:
they are content-addressed, so writing them is idempotent and needs no
database, and only their names and sizes travel back. Small batches run
inline: starting a worker costs more than it saves. A worker never touches
the database or a socket.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace

from helpdesk.mail.parse import InboundMail, parse
from helpdesk.store.attachments import AttachmentStore, StoredAttachment


@dataclass(frozen=True)
class Prepared:
    """A parsed mail whose attachments are on disk (their bytes dropped from ``mail``)."""

    mail: InboundMail
    attachments: tuple[StoredAttachment, ...]


Job = tuple[bytes, tuple[str, ...]]          # raw bytes, envelope recipients
Parsed = Prepared | str                      # a str says why it cannot be handled
MIN_FOR_WORKER = 50
log = logging.getLogger("helpdesk.parsing")


def parse_jobs(jobs: list[Job], max_size: int, store: AttachmentStore) -> list[Parsed]:
    """Parse a batch; the attachments' files are on disk when this returns.

    Written here, one after the other: a file is a few syscalls, and threads
    for them cost more in contention for the interpreter than they saved.
    """
    return [_parse_one(raw, envelope, max_size, store) for raw, envelope in jobs]


def _peak_kb() -> tuple[int, int]:
    import os
    import resource
    time.sleep(0.01)    # long enough for the next task to go to another idle worker
    return os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _parse_one(raw: bytes, envelope: tuple[str, ...], max_size: int, store: AttachmentStore) -> Parsed:
    if len(raw) > max_size:
        return f"too large: {len(raw)} bytes is larger than the {max_size} byte limit"
    try:
        mail = parse(raw, envelope)
        planned = store.plan(mail.attachments, mail.parts_skipped)
    except Exception as exc:  # noqa: BLE001 - quarantined by the caller, with the reason
        return failure("parse", exc)
    for stored, data in planned:
        if data is not None:
            try:
                store.write(data, stored.sha256)
            except OSError as exc:
                return failure("storing attachments", exc)
    return Prepared(replace(mail, attachments=()), tuple(s for s, _ in planned))


def failure(stage: str, exc: BaseException) -> str:
    """One line for the quarantine: stage, exception type, first line of its message."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{stage} failed: {type(exc).__name__}: {text}"[:500]


class ParseStage:
    def __init__(self, workers: int, max_size: int, store: AttachmentStore) -> None:
        self.workers = workers
        self.max_size = max_size
        self.store = store
        self._pool: ProcessPoolExecutor | None = None

    def run(self, jobs: list[Job]) -> list[Parsed]:
        """Parse here and now (single messages, retries)."""
        return parse_jobs(jobs, self.max_size, self.store)

    def submit(self, jobs: list[Job]) -> Callable[[], list[Parsed]]:
        """Start parsing; the returned function waits for and returns the results."""
        inline = lambda: self.run(jobs)
        if self.workers <= 0 or len(jobs) < MIN_FOR_WORKER:
            return inline
        share = -(-len(jobs) // self.workers)     # with several workers, each parses a share
        try:
            pool = self.start()
            futures: list[Future] = [pool.submit(parse_jobs, jobs[i:i + share], self.max_size, self.store)
                                     for i in range(0, len(jobs), share)]
        except (BrokenProcessPool, OSError, RuntimeError) as exc:
            return self._degrade(exc, inline)

        def result() -> list[Parsed]:
            try:
                return [parsed for future in futures for parsed in future.result()]
            except BrokenProcessPool as exc:
                return self._degrade(exc, inline)()
        return result

    def start(self) -> ProcessPoolExecutor:
        """Start the workers (once) and keep them.

        forkserver: a worker is forked from a clean server process that has
        imported only the parser, never from this one, so the SMTP thread, open
        database connections and locks held by other threads are not copied.
        """
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])   # this module, whatever it is called
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
            self._pool.submit(int).result()
        return self._pool

    def worker_peak_kb(self) -> int:
        """Peak resident memory of the workers together (KB), for the benchmarks; 0
        without workers. Each worker reports its own, tagged with its pid: tasks
        go to whichever worker is free, so several are sent until all have answered."""
        if self._pool is None:
            return 0
        peaks: dict[int, int] = {}
        for _ in range(50):
            peaks.update(future.result() for future in [self._pool.submit(_peak_kb)
                                                        for _ in range(2 * self.workers)])
            if len(peaks) >= self.workers:
                break
        return sum(peaks.values())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _degrade(self, exc: BaseException, inline: Callable[[], list[Parsed]]):
        """A lost worker costs speed, never mail: parse here from now on."""
        log.warning("parse worker unavailable (%s); parsing inline", exc or type(exc).__name__)
        self.close()
        self.workers = 0
        return inline
