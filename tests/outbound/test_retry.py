"""The outbox's MTA schedule: delays that double to a cap with bounded jitter, a queue
lifetime (``give_up_after``) before a mail is given up, and the staff told once.

The schedule itself is checked with a fixed random source; the rest runs the real
helpdesk against a real relay (aiosmtpd on 127.0.0.1) or a port nothing listens on,
on a fake clock, on both engines.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random

import pytest
from aiosmtpd.controller import Controller

from helpdesk.clock import Clock, naive_utc
from helpdesk.intake.spool import Incoming
from helpdesk.outbound import outbox
from helpdesk.outbound.failures import KIND
from helpdesk.store.schema import Outbox, Ticket
from tests.conftest import START, Desk, free_port, mail, write_config
from tests.outbound.test_outbox import Relay, parsed

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAYS_5 = dt.timedelta(days=5)


class Fixed(random.Random):
    """A random source that always draws the same number."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


# --- the schedule ----------------------------------------------------------------------


def test_the_delay_doubles_from_retry_delay_up_to_the_cap():
    policy = outbox.RetryPolicy(MINUTE, HOUR, DAYS_5, rng=Fixed(0.0))
    assert [policy.delay(n) for n in range(1, 10)] == [
        MINUTE * m for m in (1, 2, 4, 8, 16, 32, 60, 60, 60)]
    assert policy.delay(10_000) == HOUR      # no overflow, however many attempts


def test_jitter_only_shortens_a_delay_and_by_at_most_a_tenth():
    shortest = outbox.RetryPolicy(MINUTE, HOUR, DAYS_5, rng=Fixed(0.999999))
    for n in range(1, 12):
        base = min(MINUTE * 2 ** (n - 1), HOUR)
        assert base * 0.9 <= shortest.delay(n) < base * 0.9 + dt.timedelta(milliseconds=1)
    drawn = outbox.RetryPolicy(MINUTE, HOUR, DAYS_5, rng=random.Random(7))
    delays = [drawn.delay(12) for _ in range(500)]
    assert all(HOUR * 0.9 <= d <= HOUR for d in delays)
    assert len(set(delays)) > 400            # spread, so deferred mail does not come back together


def test_the_last_attempt_falls_on_the_end_of_the_queue_lifetime_and_not_before_it_gives_up():
    policy = outbox.RetryPolicy(MINUTE, HOUR, DAYS_5, rng=Fixed(0.0))
    queued = naive_utc(START)
    deadline = queued + DAYS_5
    assert policy.next_attempt(queued + MINUTE, 1, queued) == queued + 2 * MINUTE
    assert policy.next_attempt(deadline - 10 * MINUTE, 90, queued) == deadline    # not an hour later
    assert policy.next_attempt(deadline - dt.timedelta(seconds=1), 91, queued) == deadline
    assert policy.next_attempt(deadline, 92, queued) is None
    assert policy.next_attempt(deadline + HOUR, 93, queued) is None


def test_max_attempts_keeps_the_old_schedule_without_jitter():
    policy = outbox.RetryPolicy(MINUTE, HOUR, None, max_attempts=3, rng=Fixed(0.5))
    now = naive_utc(START)
    assert [policy.next_attempt(now, n, now) for n in (1, 2, 3)] == [now + MINUTE, now + 2 * MINUTE, None]
    assert policy.given_up(3) == "gave up after 3 attempts"


# --- a relay that is down for days -----------------------------------------------------


@pytest.fixture
def make_desk(tmp_path, db_url):
    made = []

    def build(port: int, outgoing: str = "", extra: str = "") -> Desk:
        config = write_config(tmp_path, db_url=db_url, extra=extra,
                              outgoing=f'transport = "smtp+plain://127.0.0.1:{port}"\ntimeout = "5s"\n' + outgoing)
        made.append(Desk(tmp_path, config, Clock(START)))
        return made[-1]

    yield build
    for desk in made:
        desk.app.close()


def customer_mail():
    return Outbox.select().where(Outbox.kind != KIND).order_by(Outbox.id)


def test_a_relay_down_is_retried_for_five_days_then_the_mail_fails_and_the_admin_is_told_once(make_desk):
    desk = make_desk(free_port())      # nothing listens there
    desk.ingest(mail())
    start = naive_utc(START)
    attempts_at = [start]            # the acknowledgement's attempts, followed on the fake clock
    while (ack := Outbox.get(Outbox.kind == "ack")).status == "queued":
        assert ack.next_attempt_at <= start + DAYS_5
        desk.clock.set(ack.next_attempt_at)
        desk.app.deliver()
        attempts_at.append(ack.next_attempt_at)
    assert ack.status == "failed"

    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts_at)]
    # doubling from a minute, each up to a tenth shorter at random; never more than the hour cap
    for n, gap in enumerate(gaps[:6]):
        assert MINUTE * 2 ** n * 0.9 <= gap <= MINUTE * 2 ** n, (n, gaps[:8])
    assert all(gap <= HOUR for gap in gaps)
    assert max(gaps) >= HOUR * 0.9
    assert attempts_at[-1] == start + DAYS_5           # the last attempt at the end of the lifetime
    assert 115 <= len(attempts_at) <= 140               # about 6 + 5 days / (54..60 minutes)

    assert ack.attempts == len(attempts_at)
    for row in customer_mail():     # the staff notice of the new ticket too: its last try at the same end
        assert row.status == "failed" and row.failed_at == start + DAYS_5
        assert row.last_error.startswith(f"gave up after 5 days in the queue ({row.attempts} attempts): ")
        assert "refused connection" in row.last_error     # the relay's last answer

    [notice] = Outbox.select().where(Outbox.kind == KIND)
    assert (notice.recipient, notice.status) == ("carol@shop.example", "queued")   # the admin
    assert "bob@example.com" in notice.text and "alice@shop.example" in notice.text
    assert "refused connection" in notice.text and "helpdesk outbox retry" in notice.text
    for _ in range(3):       # the notice waits for the relay too, and is never told again
        desk.clock.advance(dt.timedelta(days=2))
        desk.app.deliver()
    assert Outbox.select().where(Outbox.kind == KIND).count() == 1


def test_a_permanent_failure_fails_at_once_and_the_notice_reaches_the_admin(make_desk):
    relay = Relay()
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        desk = make_desk(controller.port)
        relay.script["bob@example.com"] = ["550 5.1.1 <bob@example.com>: mailbox unavailable"]
        desk.ingest(mail())
        ack = Outbox.get(Outbox.kind == "ack")
        assert (ack.status, ack.attempts, ack.failed_at) == ("failed", 1, naive_utc(START))
        [data] = relay.accepted_for("carol@shop.example")
        told = parsed(data)
        assert told["Subject"] == "Mail not delivered: ack to bob@example.com"
        assert told["Auto-Submitted"] == "auto-generated"
        body = told.get_content()
        assert f"#{ack.id} ack to bob@example.com (T-{Ticket.get().id})" in body
        assert "last answer: relay said 550 5.1.1 <bob@example.com>: mailbox unavailable" in body
        assert relay.accepted_for("alice@shop.example")      # the rest went out

        # a second failure later is told on its own: the first is not told again
        relay.script["dan@example.com"] = ["554 5.7.1 rejected"]
        desk.clock.advance(HOUR)
        desk.ingest(mail(frm="dan@example.com"))
        assert len(relay.accepted_for("carol@shop.example")) == 2
        second = parsed(relay.accepted_for("carol@shop.example")[1]).get_content()
        assert "dan@example.com" in second and "bob@example.com" not in second
    finally:
        controller.stop()


def test_failures_of_one_run_are_listed_in_one_notice_per_admin(make_desk):
    relay = Relay()
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        desk = make_desk(controller.port, extra='\n[[staff]]\naddress = "dave@shop.example"\nname = "Dave"\nrole = "admin"\n')
        for n in range(3):
            relay.script[f"c{n}@example.com"] = ["550 5.1.1 no such user"]
        desk.ingest(*[mail(frm=f"c{n}@example.com", subject=f"s{n}") for n in range(3)])
        for admin in ("carol@shop.example", "dave@shop.example"):
            [data] = relay.accepted_for(admin)
            told = parsed(data)
            assert told["Subject"] == "Mail not delivered: 3 mails failed"
            assert all(f"ack to c{n}@example.com" in told.get_content() for n in range(3))
    finally:
        controller.stop()


def test_a_failure_left_untold_by_a_crash_is_told_by_the_next_process(make_desk, tmp_path):
    desk = make_desk(free_port(), 'give_up_after = "1h"\n')
    desk.app.store([Incoming(mail(), "support", "file")])
    desk.app.process()
    # the deliverer records the failure, then "crashes" before telling anybody
    desk.clock.advance(2 * HOUR)
    policy = outbox.RetryPolicy.of(desk.app.config.outgoing)
    outbox.deliver_all(desk.app.transport, desk.clock, policy)
    desk.clock.advance(2 * HOUR)
    outbox.deliver_all(desk.app.transport, desk.clock, policy)
    assert {r.status for r in customer_mail()} == {"failed"}
    assert Outbox.select().where(Outbox.kind == KIND).count() == 0

    restarted = Desk(tmp_path, desk.config_path, desk.clock)
    try:
        restarted.app.deliver()       # nothing failed in this run, but it looks once
        [notice] = Outbox.select().where(Outbox.kind == KIND)
        assert "bob@example.com" in notice.text and "alice@shop.example" in notice.text
        restarted.app.deliver()
        assert Outbox.select().where(Outbox.kind == KIND).count() == 1
    finally:
        restarted.app.close()


def test_a_helpdesk_without_staff_logs_the_failure(tmp_path, db_url, caplog):
    config = write_config(tmp_path, db_url=db_url, outgoing=f'transport = "smtp+plain://127.0.0.1:{free_port()}"\n'
                                                             'give_up_after = "1h"\n')
    text = config.read_text()
    config.write_text(text[:text.index("[[staff]]")] + text[text.index("[tickets]"):])
    desk = Desk(tmp_path, config, Clock(START))
    try:
        desk.ingest(mail())
        desk.clock.advance(2 * HOUR)
        desk.app.deliver()
        assert {r.status for r in customer_mail()} == {"failed"}
        assert Outbox.select().where(Outbox.kind == KIND).count() == 0
        assert "1 mail(s) failed and there is no [[staff]] to tell" in caplog.text
    finally:
        desk.app.close()
