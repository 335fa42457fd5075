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

import errno
import logging
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace

from helpdesk.mail.parse import MAX_PARTS, InboundMail, parse
from helpdesk.pipeline.workers import (
    ParseLimits,
    context,
    deadline_left,
    kill_pool,
    prepare_worker,
    run_alone,
)
from helpdesk.store.attachments import AttachmentStore, StoredAttachment


@dataclass(frozen=True)
class Prepared:
    """A parsed mail whose attachments are on disk (their bytes dropped from ``mail``)."""

    mail: InboundMail
    attachments: tuple[StoredAttachment, ...]


@dataclass(frozen=True)
class Deferred:
    """Not handled now for a reason that cures itself (the disk is full): the message
    stays pending and the next pass tries it again; never quarantined for it."""

    reason: str


Job = tuple[bytes, tuple[str, ...]]          # raw bytes, envelope recipients
Parsed = Prepared | Deferred | str           # a str says why it cannot be handled
MIN_FOR_WORKER = 50
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
log = logging.getLogger("helpdesk.parsing")


def parse_jobs(jobs: list[Job], max_size: int, store: AttachmentStore,
               max_parts: int = MAX_PARTS) -> list[Parsed]:
    """Parse a batch; the attachments' files are on disk when this returns.

    Written here, one after the other: a file is a few syscalls, and threads
    for them cost more in contention for the interpreter than they saved.
    """
    return [_parse_one(raw, envelope, max_size, store, max_parts) for raw, envelope in jobs]


def _peak_kb() -> tuple[int, int]:
    import os
    import resource
    time.sleep(0.01)    # long enough for the next task to go to another idle worker
    return os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _parse_one(raw: bytes, envelope: tuple[str, ...], max_size: int, store: AttachmentStore,
               max_parts: int = MAX_PARTS) -> Parsed:
    if len(raw) > max_size:
        return f"too large: {len(raw)} bytes is larger than the {max_size} byte limit"
    try:
        mail = parse(raw, envelope, max_parts)
        planned = store.plan(mail.attachments, mail.parts_skipped)
    except Exception as exc:  # noqa: BLE001 - quarantined by the caller, with the reason
        return failure("parse", exc)
    for stored, data in planned:
        if data is not None:
            try:
                store.write(data, stored.sha256)
            except OSError as exc:
                if exc.errno in _NO_SPACE:
                    return Deferred(failure("storing attachments", exc))
                return failure("storing attachments", exc)
    return Prepared(replace(mail, attachments=()), tuple(s for s, _ in planned))


def _over_memory(parsed: Parsed, limits: ParseLimits) -> Parsed:
    """A MemoryError in a worker means the memory limit: say which."""
    if isinstance(parsed, str) and ": MemoryError" in parsed:
        return f"parse failed: over the {_human(limits.memory)} memory limit of a parse worker"
    return parsed


def _human(size: int) -> str:
    return f"{size / (1 << 20):g} MB" if size else "(no)"


def failure(stage: str, exc: BaseException) -> str:
    """One line for the quarantine: stage, exception type, first line of its message."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{stage} failed: {type(exc).__name__}: {text}"[:500]


class ParseStage:
    """Parse batches inline or in workers, within ``ParseLimits``.

    A message larger than ``limits.alone_above`` is parsed alone in a process
    of its own, killed past ``limits.timeout``; a batch's share that runs over
    the timeout or kills its worker is parsed again message by message, alone,
    so only the guilty message is quarantined (with the reason) and the rest
    of the batch goes on. With ``workers = 0`` everything is parsed inline,
    without limits.
    """

    def __init__(self, workers: int, max_size: int, store: AttachmentStore,
                 limits: ParseLimits | None = None) -> None:
        self.workers = workers
        self.max_size = max_size
        self.store = store
        self.limits = limits or ParseLimits()
        self._pool: ProcessPoolExecutor | None = None

    def run(self, jobs: list[Job]) -> list[Parsed]:
        """Parse here and now (single messages, retries); large ones alone in a worker."""
        return self.submit(jobs, pool=False)()

    def submit(self, jobs: list[Job], pool: bool = True) -> Callable[[], list[Parsed]]:
        """Start parsing; the returned function waits for and returns the results, in order."""
        if self.workers <= 0:
            return lambda: self._inline(jobs)
        large = [i for i, (raw, _) in enumerate(jobs) if len(raw) > self.limits.alone_above]
        if not large and (not pool or len(jobs) < MIN_FOR_WORKER):
            return lambda: self._inline(jobs)
        alone = set(large)
        small = [i for i in range(len(jobs)) if i not in alone]
        wait_small = self._in_pool([jobs[i] for i in small]) if pool and len(small) >= MIN_FOR_WORKER \
            else (lambda: self._inline([jobs[i] for i in small]))

        def result() -> list[Parsed]:
            found: list[Parsed | None] = [None] * len(jobs)
            for i, parsed in zip(small, wait_small()):
                found[i] = parsed
            for i in large:
                found[i] = self._alone(jobs[i])
            return found        # type: ignore[return-value]  (every index is filled)
        return result

    def _inline(self, jobs: list[Job]) -> list[Parsed]:
        return parse_jobs(jobs, self.max_size, self.store, self.limits.max_parts)

    def _in_pool(self, jobs: list[Job]) -> Callable[[], list[Parsed]]:
        """Shares of the batch in the workers; a share over the time limit or whose worker
        died is parsed again one message at a time, alone."""
        share = -(-len(jobs) // self.workers)     # with several workers, each parses a share
        shares = [jobs[i:i + share] for i in range(0, len(jobs), share)]
        try:
            futures = self._submit(shares)
        except BrokenProcessPool:           # its workers died since (their forkserver went)
            self._restart()
            try:
                futures = self._submit(shares)
            except (BrokenProcessPool, OSError, RuntimeError) as exc:
                return self._degrade(exc, lambda: self._inline(jobs))
        except (OSError, RuntimeError) as exc:
            return self._degrade(exc, lambda: self._inline(jobs))

        def result() -> list[Parsed]:
            deadline = time.monotonic() + self.limits.timeout
            found: list[Parsed] = []
            for part, future in zip(shares, futures):
                try:
                    found.extend(future.result(timeout=deadline_left(deadline)))
                except (TimeoutError, BrokenProcessPool, CancelledError) as exc:
                    log.warning("a parse worker %s; parsing its %d messages one by one",
                                "ran over its time" if isinstance(exc, TimeoutError) else "died",
                                len(part))
                    self._restart()
                    found.extend(self._alone(job) for job in part)
            return found
        return result

    def _submit(self, shares: list[list[Job]]) -> list[Future]:
        pool = self.start()
        return [pool.submit(parse_jobs, part, self.max_size, self.store, self.limits.max_parts)
                for part in shares]

    def _alone(self, job: Job) -> Parsed:
        """One message in a process of its own, killed past the time limit."""
        try:
            how, value = run_alone(parse_jobs, ([job], self.max_size, self.store, self.limits.max_parts),
                                   self.limits)
        except (OSError, RuntimeError) as exc:     # no process to be had: parse here
            log.warning("cannot start a parse worker (%s); parsing inline", exc)
            return self._inline([job])[0]
        if how == "ok":
            return _over_memory(value[0], self.limits)
        if how == "timeout":
            return f"parse failed: took longer than the {self.limits.timeout:g} s limit per message"
        return (f"parse failed: the parse worker died (exit code {value}); over the "
                f"{_human(self.limits.memory)} memory limit?")

    def start(self) -> ProcessPoolExecutor:
        """Start the workers (once) and keep them.

        forkserver: a worker is forked from a clean server process that has
        imported only the parser, never from this one, so the SMTP thread, open
        database connections and locks held by other threads are not copied.
        Each worker dies with the forkserver, and it with the thread of this
        process that started it (``workers._serve``).
        """
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context(__name__),
                                             initializer=prepare_worker,
                                             initargs=(self.limits.memory,))
            self._pool.submit(int).result()
        return self._pool

    def reconfigure(self, limits: ParseLimits) -> None:
        """New limits (SIGHUP); workers started under another memory limit are replaced."""
        if limits.memory != self.limits.memory:
            self._restart()
        self.limits = limits

    def _restart(self) -> None:
        """Kill the workers now (one may be stuck in a runaway parse); the next batch starts new ones."""
        if self._pool is not None:
            kill_pool(self._pool)
            self._pool = None

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
