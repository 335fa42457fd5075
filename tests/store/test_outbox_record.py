"""Recording a delivered group: each row gets its own result, one statement per kind
of result, and a row the operator cancelled meanwhile stays cancelled unless it was sent."""

from __future__ import annotations

import datetime as dt

import pytest

from helpdesk.store import outbox as outbox_rows
from helpdesk.store.db import write_transaction
from helpdesk.store.outbox import Attempt, Draft
from helpdesk.store.schema import Outbox, db

NOW = dt.datetime(2026, 12, 3, 9, 0)
LATER = NOW + dt.timedelta(minutes=5)


def _queued(count: int) -> list[int]:
    drafts = [Draft("ack", None, f"m{i}@shop.example", "s@shop.example", f"c{i}@example.com", "{}",
                    f"subject {i}", "text", None) for i in range(count)]
    with write_transaction():
        outbox_rows.queue(drafts, NOW)
        claimed = outbox_rows.claim(outbox_rows.due(NOW, 1000), NOW, NOW + dt.timedelta(minutes=10), worker=7)
    assert len(claimed) == count
    return claimed


def _rows() -> dict[int, tuple]:
    return {r.id: (r.status, r.attempts, r.sent_at, r.next_attempt_at, r.failed_at, r.last_error, r.claimed_by)
            for r in Outbox.select()}


@pytest.mark.usefixtures("database")
def test_each_row_of_a_group_gets_its_own_result():
    sent_a, sent_b, deferred, failed, suppressed, released = _queued(6)
    with write_transaction():
        outbox_rows.record([
            Attempt(sent_a, 1, "sent", NOW), Attempt(sent_b, 2, "sent", NOW),
            Attempt(deferred, 1, "deferred", LATER, "451 try later"),
            Attempt(failed, 1, "failed", NOW, "550 no such user"),
            Attempt(suppressed, 0, "suppressed", NOW, "bounced lately"),
            Attempt(released, 0, "released", NOW)])
    rows = _rows()
    assert rows[sent_a] == ("sent", 1, NOW, rows[sent_a][3], None, None, None)
    assert rows[sent_b][:3] == ("sent", 2, NOW)
    assert rows[deferred] == ("queued", 1, None, LATER, None, "451 try later", None)
    assert rows[failed] == ("failed", 1, None, rows[failed][3], NOW, "550 no such user", None)
    assert rows[suppressed][:2] + rows[suppressed][5:] == ("suppressed", 0, "bounced lately", None)
    assert rows[released] == ("queued", 0, None, NOW, None, None, None)


@pytest.mark.usefixtures("database")
def test_a_row_cancelled_while_it_was_sent_stays_cancelled_unless_it_went_out():
    went_out, deferred, failed = _queued(3)
    Outbox.update(status="cancelled").execute()       # the operator, during the hand-over
    with write_transaction():
        outbox_rows.record([Attempt(went_out, 1, "sent", NOW),
                            Attempt(deferred, 1, "deferred", LATER, "451"),
                            Attempt(failed, 1, "failed", NOW, "550")])
    rows = _rows()
    assert rows[went_out][0] == "sent"
    assert rows[deferred][:2] == ("cancelled", 0) and rows[failed][:2] == ("cancelled", 0)


@pytest.mark.usefixtures("database")
def test_a_group_is_recorded_with_one_statement_per_kind_of_result(monkeypatch):
    ids = _queued(50)
    statements = []
    real = db.obj.cursor

    class Counting:
        def __init__(self, cursor):
            self.cursor = cursor

        def execute(self, sql, params=()):
            statements.append(sql)
            return self.cursor.execute(sql, params)

        def executemany(self, sql, seq):
            statements.append(sql)
            return self.cursor.executemany(sql, seq)

    monkeypatch.setattr(db.obj, "cursor", lambda *a, **k: Counting(real(*a, **k)))
    with write_transaction():
        outbox_rows.record([Attempt(i, 1, "sent", NOW) for i in ids[:49]]
                           + [Attempt(ids[49], 1, "failed", NOW, "550")])
    monkeypatch.undo()
    assert len([s for s in statements if s.startswith("UPDATE")]) == 2
    assert sorted(status for status, *_ in _rows().values()) == ["failed"] + ["sent"] * 49
