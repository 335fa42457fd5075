"""The schema: upgrades in place, and what the database itself guarantees."""

from __future__ import annotations

import datetime as dt

import peewee as pw
import pytest

from helpdesk.store import db as store_db
from helpdesk.store import schema
from helpdesk.store.schema import Dispute, Meta, Ticket

NOW = dt.datetime(2026, 11, 26, 9, 0)


@pytest.fixture
def database(tmp_path, db_url):
    url = db_url or f"sqlite:///{tmp_path}/helpdesk.db"
    store_db.connect(url)
    yield schema.db.obj, url
    schema.db.close()


def _ticket(kind: str = "dispute") -> int:
    return Ticket.create(mailbox="disputes", subject="s", requester="b@example.com", kind=kind,
                         created_at=NOW, updated_at=NOW).id


def test_a_schema_1_database_is_upgraded_in_place(database):
    database_, url = database
    Ticket.create(mailbox="support", subject="old", requester="a@example.com", created_at=NOW, updated_at=NOW)
    # make it look like schema 1: no new tables, no new ticket columns, version 1
    database_.drop_tables(schema.MODELS_2)
    for index in ("ticket_created_at", "ticket_overdue_status", "ticket_assignee_status"):
        database_.execute_sql(f'DROP INDEX IF EXISTS "{index}"')
    for column in ("kind", "first_response_at", "overdue", "resolved_at", "closed_at"):
        database_.execute_sql(f'ALTER TABLE "ticket" DROP COLUMN "{column}"')
    Meta.update(value="1").where(Meta.key == "schema_version").execute()
    schema.db.close()

    store_db.connect(url)
    assert Meta.get_by_id("schema_version").value == str(len(schema.MIGRATIONS))
    old = Ticket.get()
    assert (old.subject, old.kind, old.overdue, old.first_response_at) == ("old", "ticket", False, None)
    assert set(schema.db.get_tables()) >= {m._meta.table_name for m in schema.MODELS_2}


def test_one_order_cannot_have_two_open_disputes(database):
    fields = {"order_id": "100234", "buyer": "b@example.com", "seller": "s@example.com", "reason": "other",
              "created_at": NOW, "updated_at": NOW, "seller_due_at": NOW}
    Dispute.create(ticket=_ticket(), open_order="100234", **fields)
    with pytest.raises(pw.IntegrityError), schema.db.atomic():
        Dispute.create(ticket=_ticket(), open_order="100234", **fields)
    # once the first is final (open_order cleared), a new one may open
    Dispute.update(open_order=None, status="resolved").execute()
    Dispute.create(ticket=_ticket(), open_order="100234", **fields)
    assert Dispute.select().count() == 2


def _plan_of(call) -> str:
    """The query plan of the statement(s) ``call`` runs (traced with parameters inlined)."""
    seen: list[str] = []
    connection = schema.db.connection()
    connection.set_trace_callback(seen.append)
    try:
        call()
    finally:
        connection.set_trace_callback(None)
    selects = [sql for sql in seen if sql.lstrip().upper().startswith("SELECT")]
    return " ".join(str(row) for sql in selects for row in schema.db.execute_sql("EXPLAIN QUERY PLAN " + sql))


def test_the_hot_timer_queries_use_their_index_on_a_fresh_sqlite_database(tmp_path):
    """Without statistics, an ORDER BY fire_at once made SQLite walk every pending timer
    for one ticket's timers: ingest slowed down as the table grew."""
    from helpdesk.store import timers

    store_db.connect(f"sqlite:///{tmp_path}/plans.db")
    try:
        plan = _plan_of(lambda: timers.pending("ticket", 1))
        assert "timer_subject_subject_id_status" in plan and "timer_status_fire_at" not in plan
        plan = _plan_of(lambda: timers.pending_for("ticket", [1, 2]))
        assert "timer_subject_subject_id_status" in plan and "timer_status_fire_at" not in plan
        assert "timer_status_fire_at" in _plan_of(lambda: timers.due(NOW, 10))
    finally:
        schema.db.close()


def test_values_bound_without_peewee_are_the_ones_peewee_would_bind():
    """sql.py skips ``db_value`` for values already of a field's stored
    type: for every such field of every model, peewee must agree."""
    import datetime as dt

    from helpdesk.store import schema, sql

    samples = {str: "x", int: 5, bool: True, dt.datetime: dt.datetime(2026, 1, 2, 3, 4, 5)}
    checked = 0
    for model in schema.MODELS:
        for field in model._meta.sorted_fields:
            kind = sql._stored_type(field)
            if kind is None:
                continue
            assert field.db_value(samples[kind]) == samples[kind], (model.__name__, field.name)
            assert field.db_value(None) is None, (model.__name__, field.name)
            checked += 1
    assert checked > 100


def test_binding_converts_what_is_not_of_the_stored_type_as_peewee_does():
    import datetime as dt

    from helpdesk.store import schema, sql

    fields = [schema.Outbox._meta.fields[name] for name in ("attempts", "ticket", "next_attempt_at", "html")]
    convert = sql._converter(fields)
    ticket = schema.Ticket(id=7)
    when = dt.datetime(2026, 1, 2, 3, 4, 5)
    for values in ([True, ticket, when, "x"], [None, None, None, None], ["3", 7, "2026-01-02 03:04:05", 5]):
        expected = [f.db_value(v) for f, v in zip(fields, values)]
        assert convert(values) == expected
        assert [type(v) for v in convert(values)] == [type(v) for v in expected]
