"""Stored raw messages → parse → route → apply, a batch per transaction.

A batch runs optimistically first: all its messages in one transaction with
no savepoints, since a savepoint per message made SQLite copy every page a
message touched into its statement journal (about 40 pages, most of the
cost of storing a message). If any message crashes, or another worker got
one first, the batch is rolled back and redone carefully: each message in a
savepoint of its own, so one that crashes is rolled back alone and
quarantined with the reason, and the batch goes on. The last statement of a
message records its outcome only while the message is still ``pending``: a
worker that finds it already taken rolls its own work back, so two workers on
one database never apply it twice, and a crash before the commit leaves it
pending for the next pass. Workers take their batches with a claim
(``raw.claim``), so N workers process disjoint batches; the status check stays
for a claim that ran out.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from helpdesk import routing
from helpdesk.clock import Clock, naive_utc
from helpdesk.config.settings import Config
from helpdesk.errors import TemporaryStoreError
from helpdesk.pipeline.parse_stage import Deferred, Job, Parsed, ParseStage, Prepared, failure
from helpdesk.pipeline.workers import ParseLimits
from helpdesk.routing import Domain
from helpdesk.store import raw, recovery, thread_locks, workers
from helpdesk.store.attachments import AttachmentStore
from helpdesk.store.db import rebuildable_transaction, write_transaction
from helpdesk.store.index import THREAD_IDS
from helpdesk.store.raw import Pending

log = logging.getLogger("helpdesk.pipeline")
# How long a claimed batch is this worker's alone. A dead worker's claims are freed as
# soon as its heartbeat is found stale (``workers.reap``); this bounds only the claims
# of a process without a heartbeat (``ingest``) and of a live worker stuck that long
# (then another takes the batch, and the status check keeps it applied once).
CLAIM = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Outcome:
    raw_id: int
    kind: str            # new_ticket | reply | bounce | dropped | quarantined | skipped | deferred | clashed
    ticket_id: int | None = None
    detail: str = ""


@dataclass
class Tally:
    """What a run did, for the one-line summary."""

    counts: Counter = field(default_factory=Counter)
    reasons: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.kind] += 1
        if outcome.kind in ("dropped", "quarantined", "bounce"):
            self.reasons[outcome.kind][outcome.detail.split(":")[0]] += 1


class Pipeline:
    def __init__(self, config: Config, clock: Clock, attachments: AttachmentStore,
                 domains: dict[str, Domain]) -> None:
        self.config = config
        self.clock = clock
        self.domains = domains        # by mailbox kind: "tickets", "disputes"
        # Set by the service on SIGTERM: the batch in hand is finished, the next one waits.
        self.stopping = threading.Event()
        # The id batches are claimed under (``store.workers``); None: this process's.
        self.worker: int | None = None
        self.parser = ParseStage(config.intake.parse_workers, config.limits.max_message_size,
                                 attachments, ParseLimits.of(config.limits))

    def process_pending(self, batch_size: int | None = None, tally: Tally | None = None,
                        between: Callable[[], object] | None = None) -> Tally:
        """Work through every pending message; the next batch parses while this one applies.

        ``between`` runs once per batch while the worker parses (``ingest`` stores
        the next files there), and what it stores is processed in this same call.
        """
        tally = tally or Tally()
        size = batch_size or self.config.intake.batch_size
        worker = self.worker if self.worker is not None else workers.claimant()
        rows = self._claim(worker, size, 0)
        parsed = self.parser.submit(_jobs(rows))
        while rows and not self.stopping.is_set():
            if between is not None:
                between()
            following = self._claim(worker, size, rows[-1].id)
            parsed_following = self.parser.submit(_jobs(following)) if following else None
            for outcome in self._batch(rows, parsed()):
                tally.add(outcome)
            rows, parsed = following, parsed_following
        if rows:     # stopping: the batch claimed next is given back, not left to its claim
            raw.release(worker, [r.id for r in rows])
        return tally

    def _claim(self, worker: int, size: int, after_id: int) -> list[Pending]:
        """The next batch for this worker alone: N workers take disjoint batches."""
        now = naive_utc(self.clock.now())
        return raw.claim(worker, size, now, now + CLAIM, after_id)

    def process_one(self, raw_id: int) -> Outcome | None:
        """One message, if it is still pending (pipe mode: the mail it just stored, not the
        backlog, which every concurrent delivery would otherwise work through at once)."""
        rows = [r for r in raw.pending(raw_id - 1, 1) if r.id == raw_id]
        return self._batch(rows, self.parser.run(_jobs(rows)))[0] if rows else None

    def retry(self, raw_id: int) -> Outcome:
        """Put a quarantined message back in line and run it once more."""
        raw.requeue(raw_id)
        [row] = [r for r in raw.pending(raw_id - 1, 1) if r.id == raw_id]
        return self._batch([row], self.parser.run(_jobs([row])))[0]

    def close(self) -> None:
        self.parser.close()

    def _batch(self, rows: list[Pending], parsed: list[Parsed]) -> list[Outcome]:
        keys = _thread_keys(parsed)
        try:
            with rebuildable_transaction():
                thread_locks.take(keys)
                outcomes = [self._optimistic(row, mail) for row, mail in zip(rows, parsed)]
        except _Redo:
            with rebuildable_transaction():
                thread_locks.take(keys)
                outcomes = [self._one(row, mail) for row, mail in zip(rows, parsed)]
        for outcome in outcomes:
            _log(outcome)
        _tell_files(outcomes)
        return outcomes

    def _optimistic(self, row: Pending, mail: Parsed) -> Outcome:
        """Apply one message with no savepoint; anything unusual redoes the batch carefully."""
        try:
            outcome = self._outcome(row, mail)
            if outcome.kind == "deferred" or self._finish(row.id, outcome):
                return outcome
        except TemporaryStoreError:
            raise                # the batch stays pending whole: no careful pass on a dead store
        except Exception as exc:
            raise _Redo() from exc
        raise _Redo()    # taken by another worker: the careful pass rolls back just that one

    def _one(self, row: Pending, mail: Parsed) -> Outcome:
        """Apply one message in a savepoint, claiming it by its status as the last step."""
        try:
            with write_transaction():
                outcome = self._outcome(row, mail)
                if outcome.kind == "deferred":
                    return outcome
                if not self._finish(row.id, outcome):
                    raise _TakenElsewhere()
                return outcome
        except _TakenElsewhere:
            return Outcome(row.id, "skipped", None, "already processed elsewhere")
        except TemporaryStoreError:
            raise                # a lost connection or a full disk is no fault of the message
        except Exception as exc:
            clash = recovery.conflict(exc)
            if clash is not None:   # another worker's transaction: pending, the next pass redoes it
                return Outcome(row.id, "clashed", None, f"clashed with another worker ({clash})")
            log.debug("message %s crashed the pipeline", row.id, exc_info=True)
            outcome = Outcome(row.id, "quarantined", None, failure("apply", exc))
            self._finish(row.id, outcome)
            return outcome

    def _outcome(self, row: Pending, mail: Parsed) -> Outcome:
        if isinstance(mail, Deferred):      # left pending, not finished: the next pass retries it
            return Outcome(row.id, "deferred", None, mail.reason)
        if isinstance(mail, str):
            return Outcome(row.id, "quarantined", None, mail)
        return self._apply(row, mail)

    def _apply(self, row: Pending, prepared: Prepared) -> Outcome:
        """Route with the mailbox kind's rule table, then let that domain apply the decision."""
        mailbox = self.config.mailbox(row.mailbox)
        domain = self.domains[mailbox.kind]
        decision = routing.route(prepared.mail, domain.context(), domain.table)
        log.debug("message %s: %s", row.id, routing.explain(decision))
        applied = domain.apply(decision, prepared.mail, prepared.attachments, row.id, mailbox)
        return Outcome(row.id, applied.kind, applied.ticket_id, applied.detail)

    def _finish(self, raw_id: int, outcome: Outcome) -> bool:
        """Record the outcome; False when another worker got there first."""
        status = {"quarantined": "quarantined", "dropped": "dropped"}.get(outcome.kind, "done")
        return raw.finish(raw_id, status, outcome.kind, outcome.ticket_id,
                          outcome.detail if status != "done" else None, naive_utc(self.clock.now()))


class _TakenElsewhere(Exception):
    """Rolls back a message another worker finished while we applied it."""


class _Redo(Exception):
    """Rolls back an optimistic batch: it is redone with a savepoint per message."""


def _thread_keys(parsed: list[Parsed]) -> list[str]:
    """Every Message-ID the batch's routing may look a thread up by (as many as it reads)."""
    keys: list[str] = []
    for item in parsed:
        if isinstance(item, Prepared):
            mail = item.mail
            keys += mail.thread_ids[:THREAD_IDS]
            if mail.bounce is not None and mail.bounce.original_message_id:
                keys.append(mail.bounce.original_message_id)
    return keys


def _jobs(rows: list[Pending]) -> list[Job]:
    return [(r.content, r.envelope_to) for r in rows]


def _tell_files(outcomes: list[Outcome]) -> None:
    """A full disk for the attachments is logged once while it lasts, not per message."""
    deferred = [o for o in outcomes if o.kind == "deferred"]
    if deferred:
        recovery.FILES.failed(deferred[0].detail)
    elif outcomes:
        recovery.FILES.ok()


def _log(outcome: Outcome) -> None:
    if outcome.kind == "deferred":
        log.debug("message %s: deferred, stays pending: %s", outcome.raw_id, outcome.detail)
        return
    if outcome.kind == "clashed":
        log.info("message %s: %s; stays pending, redone at the next pass", outcome.raw_id, outcome.detail)
        return
    where = f"T-{outcome.ticket_id}" if outcome.ticket_id else "-"   # a dispute's chat is a ticket too
    level = logging.WARNING if outcome.kind == "quarantined" else logging.INFO
    log.log(level, "message %s: %s %s %s", outcome.raw_id, outcome.kind, where, outcome.detail)
