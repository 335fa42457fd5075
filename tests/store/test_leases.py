"""Leases: one holder at a time, even when two take at once; taken over once run out."""

from __future__ import annotations

import datetime as dt

from helpdesk.store import leases
from tests.store.test_workers import _concurrently

NOW = dt.datetime(2026, 11, 26, 9, 0)
LATER = NOW + dt.timedelta(seconds=30)


def test_two_workers_taking_one_lease_at_once_one_gets_it(database):
    for round_ in range(5):
        name = f"imap:box{round_}"
        got = _concurrently(*(lambda w=w, name=name: leases.acquire(name, w, NOW, LATER) for w in (1, 2, 3)))
        assert sorted(got) == [False, False, True]
        assert leases.holder_of(name)[0] == [1, 2, 3][got.index(True)]


def test_the_holder_renews_others_wait_until_it_runs_out(database):
    assert leases.acquire("imap:support", 1, NOW, LATER)
    assert leases.acquire("imap:support", 1, NOW, LATER)            # renewal
    assert not leases.acquire("imap:support", 2, LATER, LATER + dt.timedelta(seconds=30))
    assert leases.holds("imap:support", 1, LATER)
    after = LATER + dt.timedelta(seconds=1)
    assert not leases.holds("imap:support", 1, after)
    assert leases.acquire("imap:support", 2, after, after + dt.timedelta(seconds=30))
    assert not leases.holds("imap:support", 1, after)
    assert leases.holder_of("imap:support")[0] == 2


def test_a_released_lease_is_free_at_once_and_only_its_holder_releases_it(database):
    leases.acquire("imap:support", 1, NOW, LATER)
    leases.release("imap:support", 2)
    assert leases.holder_of("imap:support") == (1, LATER)
    leases.release("imap:support", 1)
    assert leases.acquire("imap:support", 2, NOW, LATER)
