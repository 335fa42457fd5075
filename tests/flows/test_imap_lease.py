"""Two workers' watchers on one IMAP mailbox of a real Dovecot: one reads, the other
waits, and takes over within the worker timeout when the reader dies."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from helpdesk.clock import Clock
from helpdesk.intake import imap
from helpdesk.runtime.membership import MailboxLease, Membership
from helpdesk.store import leases, workers
from helpdesk.store.schema import Ticket
from tests.conftest import Desk
from tests.flows import dovecot as dc
from tests.flows.test_imap import customer, ids, imap_lines, make_desk, user, wait_for

TIMEOUT = dt.timedelta(seconds=2)


@pytest.fixture(scope="module")
def dovecot():
    server = dc.started("lease")
    yield server
    server.close()


@pytest.fixture
def desks():
    made: list[Desk] = []
    yield made
    for desk in made:
        desk.app.close()


@pytest.fixture
def members():
    made: list[Membership] = []
    yield made
    for member in made:
        member.leave()
    workers._me = None


def _member(members: list[Membership], host: str) -> Membership:
    member = Membership(Clock(), TIMEOUT, host=host, pid=1)
    member.join()
    members.append(member)
    return member


def _watcher(app, member: Membership, stored: list[str]) -> imap.Watcher:
    def store(batch):
        done = app.store(batch)
        stored.extend(member.host for s in done if not s.duplicate)
        return done
    mailbox = app.config.mailbox("support")
    watcher = imap.Watcher(imap.Reader(mailbox, store, 50, lambda: None), MailboxLease(member, "support"))
    watcher.start()
    return watcher


def test_one_worker_reads_a_mailbox_and_another_takes_over_when_it_dies(dovecot, tmp_path, db_url, desks,
                                                                          members):
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot, login, extra='poll_interval = "1h"'), db_url=db_url))
    app = desks[0].app
    first, second = _member(members, "first"), _member(members, "second")
    stored: list[str] = []
    reader = _watcher(app, first, stored)
    first_idle = wait_for(lambda: reader.idling.is_set(), 30)   # a start on this machine, now
    waiting = _watcher(app, second, stored)
    try:
        dovecot.append(login, *(customer(n) for n in range(5)))
        wait_for(lambda: len(stored) == 5, 10)
        time.sleep(TIMEOUT.total_seconds())            # the waiting one has tried a few times
        assert stored == ["first"] * 5 and not waiting.idling.is_set()
        assert leases.holder_of("imap:support")[0] == first.id

        first._stop.set()                              # its heartbeat stops: the process "dies",
        reader.lease.release = lambda: None            # keeping its lease to the end
        reader.stop()
        limit = 2 * TIMEOUT.total_seconds() + 2 * first_idle + 1   # the lease runs out, then a start
        took = wait_for(lambda: waiting.idling.is_set(), limit + 10)
        assert took <= limit, (took, first_idle)
        assert leases.holder_of("imap:support")[0] == second.id
        dovecot.append(login, customer(9))
        wait_for(lambda: len(stored) == 6, 10)
        assert stored[-1] == "second"
    finally:
        waiting.stop()
        if not reader.stopping.is_set():
            reader.stop()
    app.process()
    assert Ticket.select().count() == 6
    assert ids(dovecot, login) == []


def test_a_reader_whose_lease_was_taken_stops_reading(dovecot, tmp_path, desks, members):
    """A holder that could not beat for a while (the database was away) finds the lease
    taken over after its next IDLE and disconnects rather than read alongside."""
    login = user()
    desks.append(make_desk(tmp_path, imap_lines(dovecot, login, extra='poll_interval = "1h"')))
    app = desks[0].app
    first, second = _member(members, "first"), _member(members, "second")
    stored: list[str] = []
    reader = _watcher(app, first, stored)
    try:
        wait_for(lambda: reader.idling.is_set(), 10)
        first._stop.set()
        now = second._now() + TIMEOUT * 2
        assert leases.acquire("imap:support", second.id, now, now + TIMEOUT)
        wait_for(lambda: not reader.idling.is_set(), 2 * TIMEOUT.total_seconds())
        time.sleep(0.5)
        assert not reader.idling.is_set()              # waiting for the lease, not reading
    finally:
        reader.stop()
