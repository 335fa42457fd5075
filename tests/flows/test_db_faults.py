"""The database goes away under a running helpdesk, on the real PostgreSQL.

Two faults, both real: every connection of the helpdesk is killed by the server
(``pg_terminate_backend``, what a restart or a failover does to its clients), and
the server is unreachable for a while (a TCP relay in front of it is cut, since the
PostgreSQL itself is shared with other tests and is not restarted). Afterwards the
helpdesk works again by itself, SMTP answered 451 in between and 250 after, nothing
was lost or doubled, and the log has one line for the outage and one for the end.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid

import pytest

from helpdesk.clock import Clock
from helpdesk.errors import StoreUnavailable
from helpdesk.intake.smtp import SmtpIntake
from helpdesk.store.schema import RawMessage, Ticket, db
from tests.conftest import PG_URL, START, Desk, _pg_driver, _pg_missing, free_port, mail, write_config
from tests.flows.tcp_proxy import TcpProxy
from tests.flows.test_smtp import send


@pytest.fixture
def pg(tmp_path):
    """(admin connection, schema, application_name) of a private schema on the real server."""
    psycopg = _pg_driver()
    try:
        admin = psycopg.connect(PG_URL, autocommit=True)
    except psycopg.OperationalError as exc:  # pragma: no cover - depends on the machine
        _pg_missing(f"PostgreSQL not reachable at {PG_URL}: {exc}".splitlines()[0])
    schema = "t_" + uuid.uuid4().hex[:12]
    admin.execute(f"CREATE SCHEMA {schema}")
    yield admin, schema, "hd_" + schema
    if db.obj is not None:
        db.close()
    admin.execute(f"DROP SCHEMA {schema} CASCADE")
    admin.close()


def url(schema: str, app_name: str, port: int = 5432) -> str:
    return (f"postgresql://postgres@127.0.0.1:{port}/test"
            f"?options=-csearch_path%3D{schema}&application_name={app_name}")


def kill_connections(admin, app_name: str) -> int:
    """Terminate the helpdesk's backends (only its own: the server is shared)."""
    rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = %s AND pid <> pg_backend_pid()", (app_name,)).fetchall()
    return len(rows)


def outage_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("helpdesk") and r.levelno >= logging.WARNING]


@pytest.fixture
def smtp_desk(request):
    running = []

    def start(folder, db_url):
        desk = Desk(folder, write_config(folder, db_url=db_url), Clock(START))
        smtp = SmtpIntake(desk.app.config, desk.app.store, host="127.0.0.1", port=free_port())
        _, port = smtp.start()
        running.append((desk, smtp))
        return desk, port
    yield start
    for desk, smtp in running:
        smtp.stop()
        desk.app.close()


def test_killed_connections_are_reopened_in_every_thread(pg, tmp_path, smtp_desk, caplog):
    admin, schema, app_name = pg
    desk, port = smtp_desk(tmp_path, url(schema, app_name))
    caplog.set_level(logging.INFO)
    assert send(port, mail(subject="before"))[0] == 250       # the SMTP thread's connection
    desk.app.process()                                        # the loop's connection
    assert kill_connections(admin, app_name) == 2

    # Both threads find their connection dead and reconnect: no 451, no failed batch.
    assert send(port, mail(subject="after"))[0] == 250
    tally = desk.app.process()
    assert tally.counts["new_ticket"] == 1
    assert Ticket.select().count() == 2
    lines = outage_lines(caplog)
    assert len([x for x in lines if "connection lost" in x]) == 1, lines
    assert len([x for x in lines if "back after" in x]) == 1, lines
    assert len(lines) == 2, lines


def test_unreachable_server_451_then_250_and_nothing_lost(pg, tmp_path, smtp_desk, caplog):
    _, schema, app_name = pg
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.up()
    desk, port = smtp_desk(tmp_path, url(schema, app_name, proxy.port))
    caplog.set_level(logging.INFO)
    assert send(port, mail(subject="one"))[0] == 250

    proxy.down()
    refused = [send(port, mail(subject=f"refused {i}")) for i in range(3)]
    assert [code for code, _ in refused] == [451] * 3
    assert all(b"4.3.0" in text for _, text in refused)
    with pytest.raises(StoreUnavailable) as failed:   # the loop's job fails and is retried later
        desk.app.process()
    assert "unavailable" in str(failed.value)

    proxy.up()
    deadline = time.monotonic() + 15        # the back-off is at most 5 s
    while (code := send(port, mail(subject="two"))[0]) != 250 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert code == 250
    desk.app.process()
    subjects = sorted(t.subject for t in Ticket.select())
    assert subjects == ["one", "two"]
    assert RawMessage.select().where(RawMessage.status == "pending").count() == 0
    lines = outage_lines(caplog)
    assert len(lines) == 2, lines
    assert "connection lost" in lines[0] or "unreachable" in lines[0]
    assert "back after" in lines[1]
    proxy.down()


def test_backoff_spaces_the_attempts(pg, tmp_path, smtp_desk):
    """While the server is away, a caller is refused at once between attempts; the
    attempts themselves are spaced 0.2 s, 0.4 s, ... up to 5 s."""
    _, schema, app_name = pg
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.up()
    desk, _ = smtp_desk(tmp_path, url(schema, app_name, proxy.port))
    desk.app.process()
    proxy.down()
    attempts = []
    outage = db.obj.outage
    original = outage.failed
    outage.failed = lambda why: (attempts.append(time.monotonic()), original(why))
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        with pytest.raises(StoreUnavailable):
            desk.app.process()
        time.sleep(0.01)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert 3 <= len(attempts) <= 6, attempts        # not one attempt per call (some 150 calls)
    assert all(g >= 0.19 for g in gaps), gaps
    assert gaps == sorted(gaps), gaps
