"""Two workers applying two mails of one thread at the same moment.

Worker A applies a customer's first mail; before A commits, worker B applies a
reply to it (In-Reply-To: the first mail). Reading before A's commit, B found no
thread and made a ticket of its own (benchmarks/scale.py: 1,508 tickets with 4
PostgreSQL workers for 1,471 threads). Each batch now locks the thread keys of
its mails first, so B waits for A and then finds A's ticket.
"""

from __future__ import annotations

import threading
import time

from helpdesk.intake.spool import Incoming
from helpdesk.store import db as store_db
from helpdesk.store.schema import RawMessage, Ticket
from tests.conftest import mail


def test_a_reply_applied_beside_its_parent_joins_the_parents_ticket(desk, db_url):
    parent = mail(frm="Eve <eve@example.com>", subject="Key", message_id="first")
    reply = mail(frm="Eve <eve@example.com>", subject="Still broken", message_id="second",
                 headers={"In-Reply-To": "<first@example.com>", "References": "<first@example.com>"})
    stored = desk.app.store([Incoming(parent, "support", "file"), Incoming(reply, "support", "file")])
    parent_id, reply_id = (s.raw_id for s in stored)
    applied, failures = threading.Event(), []

    def worker_a() -> None:      # applies the parent and keeps its transaction open a while
        try:
            with store_db.write_transaction():
                desk.app.pipeline.process_one(parent_id)
                applied.set()
                time.sleep(0.5)
        except Exception as exc:     # noqa: BLE001 - reported by the test
            failures.append(exc)
        finally:
            applied.set()
            store_db.db.close()

    def worker_b() -> None:      # applies the reply meanwhile, on a connection of its own
        applied.wait(10)
        try:
            desk.app.pipeline.process_one(reply_id)
        except Exception as exc:     # noqa: BLE001
            failures.append(exc)
        finally:
            store_db.db.close()

    threads = [threading.Thread(target=worker_a), threading.Thread(target=worker_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures, failures
    rows = {r.id: r for r in RawMessage.select()}
    assert rows[parent_id].status == rows[reply_id].status == "done"
    assert rows[reply_id].ticket_id == rows[parent_id].ticket_id
    assert Ticket.select().count() == 1
