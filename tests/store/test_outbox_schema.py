"""Schema 3: the outbox's queue-lifetime columns are added to a schema 2 database in place."""

from __future__ import annotations

import datetime as dt

from helpdesk.store import db as store_db
from helpdesk.store import schema
from helpdesk.store.schema import Meta, Outbox

NOW = dt.datetime(2026, 11, 26, 9, 0)
NEW = ("queued_at", "failed_at", "reported_at")


def test_a_schema_2_outbox_gets_its_new_columns(tmp_path, db_url):
    url = db_url or f"sqlite:///{tmp_path}/helpdesk.db"
    store_db.connect(url)
    try:
        database = schema.db.obj
        Outbox.insert(kind="ack", message_id="old@shop.example", envelope_from="s@shop.example",
                      recipient="b@example.com", headers="{}", subject="s", text="t", status="failed",
                      next_attempt_at=NOW, created_at=NOW, last_error="550").execute()
        for column in NEW:
            database.execute_sql(f'ALTER TABLE "outbox" DROP COLUMN "{column}"')
        Meta.update(value="2").where(Meta.key == "schema_version").execute()
        schema.db.close()

        store_db.connect(url)
        assert int(Meta.get_by_id("schema_version").value) == len(schema.MIGRATIONS) >= 3
        assert set(NEW) <= {c.name for c in schema.db.get_columns("outbox")}
        old = Outbox.get()
        assert (old.status, old.last_error, old.failed_at, old.reported_at) == ("failed", "550", None, None)
    finally:
        schema.db.close()
