"""Workers share the work: disjoint claims of pending messages and outgoing mail, on both
engines and from concurrent threads, and a dead worker's claims freed at once."""

from __future__ import annotations

import datetime as dt
import threading
import time

from helpdesk.clock import Clock
from helpdesk.intake.spool import Incoming
from helpdesk.runtime import app as app_module
from helpdesk.store import db as store_db
from helpdesk.store import outbox, raw, schema, workers
from helpdesk.store.raw import Arrival
from helpdesk.store.schema import Lease, Outbox, RawMessage, Ticket, Worker
from tests.conftest import START, mail

NOW = dt.datetime(2026, 11, 26, 9, 0)
SOON = NOW + dt.timedelta(minutes=5)


def _arrivals(count: int) -> None:
    raw.store_new([Arrival(f"k{i}", f"<{i}@example.com>", "support", "file", ("support@shop.example",),
                           mail(subject=f"n{i}")) for i in range(count)], NOW)


def _concurrently(*jobs):
    """Run each job in a thread of its own, started together; their results in order."""
    start, results = threading.Barrier(len(jobs)), [None] * len(jobs)

    def run(index, job):
        try:
            start.wait()
            results[index] = job()
        finally:
            schema.db.close()      # this thread's connection

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_two_workers_claim_disjoint_batches_concurrently(database):
    _arrivals(300)

    def drain(worker: int):
        def claim_all() -> list[int]:
            got, after = [], 0
            while batch := raw.claim(worker, 7, NOW, SOON, after):
                assert all(p.content.startswith(b"From:") for p in batch)
                got += [p.id for p in batch]
                after = batch[-1].id
                time.sleep(0.002)       # a worker works on its batch before it claims the next
            return got
        return claim_all

    first, second = _concurrently(drain(1), drain(2))
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(r for r, in RawMessage.select(RawMessage.id).tuples())
    assert first and second
    assert {w for w, in RawMessage.select(RawMessage.claimed_by).distinct().tuples()} == {1, 2}


def test_a_claim_holds_until_it_runs_out_and_its_worker_may_take_it_back(database):
    _arrivals(3)
    assert [p.id for p in raw.claim(1, 10, NOW, SOON)] == [1, 2, 3]
    assert raw.claim(2, 10, NOW, SOON) == []
    assert [p.id for p in raw.claim(1, 10, NOW, SOON)] == [1, 2, 3]     # a failed batch, again
    later = SOON + dt.timedelta(seconds=1)
    assert [p.id for p in raw.claim(2, 10, later, later + dt.timedelta(minutes=5))] == [1, 2, 3]


def test_finished_messages_are_never_claimed(database):
    _arrivals(2)
    raw.finish(1, "done", "new_ticket", None, None, NOW)
    assert [p.id for p in raw.claim(1, 10, NOW, SOON)] == [2]


def test_released_claims_are_free_at_once(database):
    _arrivals(2)
    raw.claim(1, 10, NOW, SOON)
    raw.release(1, [2])
    assert [p.id for p in raw.claim(2, 10, NOW, SOON)] == [2]


def test_a_dead_workers_claims_and_leases_are_freed_by_the_reaper(database):
    dead = workers.register("h", 1, NOW)
    alive = workers.register("h", 2, NOW)
    _arrivals(2)
    raw.claim(dead, 1, NOW, SOON)
    _queue_mail(2)
    outbox.claim([1], NOW, NOW + dt.timedelta(minutes=10), worker=dead)
    Lease.insert(name="imap:support", holder=dead, expires_at=SOON).execute()
    later = NOW + dt.timedelta(seconds=31)
    assert workers.beat(alive, later, later + dt.timedelta(seconds=30))
    assert workers.reap(later, dt.timedelta(seconds=30)) == [dead]
    assert [w for w, in Worker.select(Worker.id).tuples()] == [alive]
    assert [p.id for p in raw.claim(alive, 10, later, later + dt.timedelta(minutes=5))] == [1, 2]
    assert Outbox.get_by_id(1).next_attempt_at == later          # due again now, not in 10 minutes
    assert Outbox.get_by_id(1).claimed_by is None
    assert Lease.get_by_id("imap:support").holder is None


def test_a_live_worker_is_not_reaped_and_its_beat_renews_its_leases(database):
    worker = workers.register("h", 1, NOW)
    Lease.insert(name="imap:support", holder=worker, expires_at=SOON).execute()
    later = NOW + dt.timedelta(seconds=20)
    assert workers.beat(worker, later, later + dt.timedelta(seconds=30))
    assert workers.reap(later + dt.timedelta(seconds=20), dt.timedelta(seconds=30)) == []
    assert Lease.get_by_id("imap:support").expires_at == later + dt.timedelta(seconds=30)


def test_a_worker_taken_for_dead_learns_it_from_its_beat_and_comes_back(database):
    worker = workers.register("h", 1, NOW)
    workers.reap(NOW + dt.timedelta(minutes=1), dt.timedelta(seconds=30))
    assert not workers.beat(worker, NOW, SOON)
    workers.revive(worker, "h", 1, NOW, NOW)
    assert workers.beat(worker, NOW, SOON)


def _queue_mail(count: int) -> None:
    outbox.queue([outbox.Draft("ack", None, f"<m{i}@shop.example>", "support@shop.example",
                               "bob@example.com", "{}", "s", "t", None) for i in range(count)], NOW)


def test_two_deliverers_claim_disjoint_outgoing_mail_concurrently(database):
    _queue_mail(200)
    ids = [i for i, in Outbox.select(Outbox.id).tuples()]
    later = NOW + dt.timedelta(minutes=10)

    def deliverer(worker: int):
        return lambda: [got for start in range(0, len(ids), 10)
                        for got in outbox.claim(ids[start:start + 10], NOW, later, worker=worker)]

    first, second = _concurrently(deliverer(1), deliverer(2))
    assert not set(first) & set(second)
    assert sorted(first + second) == ids


def test_two_pipelines_process_one_backlog_without_doing_anything_twice(tmp_path, db_url):
    """Today's claim: each worker gets its own batches, and none rolls back a message the
    other applied (without claims they both parse and apply every batch, and one of
    them rolls back: "already processed elsewhere")."""
    from tests.conftest import write_config
    config = write_config(tmp_path, db_url=db_url, extra="[intake]\nbatch_size = 10\nparse_workers = 0\n")
    one = app_module.build(config, Clock(START))
    two = app_module.build(config, Clock(START))
    try:
        one.store([Incoming(mail(subject=f"n{i}", body=f"{i}\n"), "support", "file") for i in range(200)])
        one.pipeline.worker, two.pipeline.worker = 1, 2
        first, second = _concurrently(one.process, two.process)
        assert first.counts["skipped"] == second.counts["skipped"] == 0
        assert first.counts["new_ticket"] + second.counts["new_ticket"] == 200
        assert first.counts["new_ticket"] and second.counts["new_ticket"]
        assert Ticket.select().count() == 200
    finally:
        one.close()
        two.close()
        workers._me = None


def test_a_stopping_pipeline_gives_back_the_batch_it_claimed_next(desk):
    desk.app.store([Incoming(mail(subject=f"n{i}", body=f"{i}\n"), "support", "file") for i in range(5)])
    desk.app.pipeline.worker = 1
    stopping = desk.app.pipeline.stopping
    tally = desk.app.pipeline.process_pending(batch_size=2, between=stopping.set)
    assert tally.counts["new_ticket"] == 2
    assert [p.id for p in raw.claim(2, 10, NOW, SOON)] == [3, 4, 5]


def test_a_schema_4_database_gets_the_worker_tables_and_claim_columns(tmp_path, db_url):
    url = db_url or f"sqlite:///{tmp_path}/helpdesk.db"
    store_db.connect(url)
    try:
        database = schema.db.obj
        _arrivals(1)
        database.drop_tables(schema.MODELS_5)
        database.execute_sql('DROP INDEX IF EXISTS "raw_message_status_id"')
        for table, column in (("raw_message", "claimed_by"), ("raw_message", "claimed_until"),
                              ("outbox", "claimed_by")):
            database.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
        schema.Meta.update(value="4").where(schema.Meta.key == "schema_version").execute()
        schema.db.close()

        store_db.connect(url)
        assert schema.Meta.get_by_id("schema_version").value == str(len(schema.MIGRATIONS))
        assert "raw_message_status_id" in {i.name for i in schema.db.get_indexes("raw_message")}
        assert [p.id for p in raw.claim(1, 10, NOW, SOON)] == [1]
        assert workers.register("h", 1, NOW) == 1
    finally:
        schema.db.close()
        workers._me = None


def test_sqlite_claim_uses_the_status_index_on_an_analyzed_store(tmp_path):
    """A store of processed messages, ANALYZEd: the claim must seek the few pending rows by
    the (status, id) index, not walk every processed message's rowid (seconds a claim at
    millions of messages, found by benchmarks/scale.py)."""
    store_db.connect(f"sqlite:///{tmp_path}/helpdesk.db")
    try:
        schema.db.execute_sql(
            'INSERT INTO "raw_message" ("dedupe_key", "mailbox", "source", "envelope_to", "received_at", '
            '"size", "status") WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 20000) '
            "SELECT 'done' || g, 'support', 'file', '', '2026-01-01 00:00:00', 1, 'done' FROM s")
        schema.db.execute_sql("ANALYZE")   # taken when nothing was pending, as on a quiet night
        _arrivals(3)
        plan = schema.db.execute_sql("EXPLAIN QUERY PLAN " + raw._claim_sql(False),
                                     [1, SOON, 0, NOW, 1, 100]).fetchall()
        assert any("raw_message_status_id" in row[-1] for row in plan), plan
        claimed = raw.claim(1, 100, NOW, SOON)
        assert [p.id for p in claimed] == [20001, 20002, 20003]
    finally:
        schema.db.close()
