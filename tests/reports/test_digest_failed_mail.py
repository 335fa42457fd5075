"""Failed outgoing mail in the admin digest: how many were given up in the period, how many
are failed now, and the longest failed, in both the text and the HTML; and a real failure,
through a relay that refuses, reaching the digest."""

from __future__ import annotations

import datetime as dt

import pytest
from aiosmtpd.controller import Controller

from helpdesk.clock import Clock, naive_utc
from helpdesk.reports import digest
from helpdesk.runtime import app as app_module
from helpdesk.store.schema import Dispute, Outbox
from tests.conftest import START, Desk, free_port, mail, write_config
from tests.outbound.test_outbox import Relay
from tests.reports.test_digest import BEFORE, IN_PERIOD, NOW, digest_config, ticket


@pytest.fixture
def app(tmp_path, db_url):
    made = app_module.build(digest_config(tmp_path, db_url), Clock(NOW))
    yield made
    made.close()


def failed(recipient: str, failed_at: dt.datetime | None, ticket_id: int | None = None,
           status: str = "failed", kind: str = "ack") -> int:
    created = (failed_at or BEFORE) - dt.timedelta(days=5)
    return Outbox.create(kind=kind, ticket=ticket_id, message_id=f"{recipient}.{failed_at}@shop.example",
                         envelope_from="support@shop.example", recipient=recipient, headers="{}", subject="s",
                         text="t", status=status, attempts=120, next_attempt_at=created, created_at=created,
                         failed_at=failed_at, last_error=f"gave up: 421 busy ({recipient})").id


def test_failed_mail_is_counted_for_the_period_and_the_longest_failed_are_listed(app, db_url):
    number = ticket(IN_PERIOD)
    chat = ticket(IN_PERIOD, kind="dispute")
    dispute = Dispute.create(ticket=chat, order_id="O-1", buyer="b@example.com", seller="s@example.com",
                             reason="other", created_at=IN_PERIOD, updated_at=IN_PERIOD,
                             seller_due_at=IN_PERIOD).id
    failed("in1@example.com", IN_PERIOD, number)
    failed("in2@example.com", IN_PERIOD + dt.timedelta(hours=1), chat)
    failed("before@example.com", BEFORE)
    failed("legacy@example.com", None)                        # failed before failed_at was kept
    failed("retried@example.com", IN_PERIOD, status="queued")  # put back in line: not failed now
    failed("sent@example.com", IN_PERIOD, status="sent")
    for n in range(5):
        failed(f"old{n}@example.com", BEFORE - dt.timedelta(days=1, hours=n))

    got = digest.build(app.config, NOW, digest.current_period(app.config, NOW))
    assert (got.failed, got.failed_waiting) == (2, 9)
    assert [m.recipient for m in got.failed_oldest] == [
        "legacy@example.com", "old4@example.com", "old3@example.com", "old2@example.com", "old1@example.com"]
    assert got.failed_oldest[0].failed_at is None

    gone = Outbox.recipient.startswith("old") | (Outbox.recipient == "legacy@example.com")
    Outbox.update(status="cancelled").where(gone).execute()
    recent = digest.build(app.config, NOW, digest.current_period(app.config, NOW))
    assert [(m.recipient, m.ticket) for m in recent.failed_oldest] == [
        ("before@example.com", None), ("in1@example.com", f"T-{number}"), ("in2@example.com", f"D-{dispute}")]
    rendered = digest.render(app, recent, "carol@shop.example", "Carol")
    text = rendered.text
    assert "Outgoing mail given up in the period: 2 (3 failed now: helpdesk outbox --status failed)\n" in text
    first = Outbox.get(Outbox.recipient == "in1@example.com").id
    assert (f"  #{first} ack to in1@example.com (T-{number}), failed Mon 30 Nov 2026 12:00: "
            "gave up: 421 busy (in1@example.com)\n") in text
    assert f"D-{dispute}" in rendered.html and "helpdesk outbox --status failed" in rendered.html
    assert "gave up: 421 busy (in2@example.com)" in rendered.html


def test_a_helpdesk_without_failed_mail_says_so(app, db_url):
    rendered = digest.render(app, digest.build(app.config, NOW, digest.current_period(app.config, NOW)))
    assert "Outgoing mail given up in the period: 0\n" in rendered.text
    assert "helpdesk outbox" not in rendered.text


def test_a_mail_the_relay_refused_shows_up_in_the_next_digest(tmp_path, db_url):
    relay = Relay()
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        config = write_config(tmp_path, db_url=db_url,
                              outgoing=f'transport = "smtp+plain://127.0.0.1:{controller.port}"')
        desk = Desk(tmp_path, config, Clock(START))
        try:
            relay.script["bob@example.com"] = ["550 5.1.1 no such user"]
            desk.ingest(mail())
            now = START + dt.timedelta(days=1)
            got = digest.build(desk.app.config, now, digest.current_period(desk.app.config, now))
            assert (got.failed, got.failed_waiting) == (1, 1)
            [shown] = got.failed_oldest
            assert (shown.kind, shown.recipient, shown.failed_at) == ("ack", "bob@example.com", START)
            assert shown.last_error == "relay said 550 5.1.1 no such user"
            assert naive_utc(shown.failed_at) == Outbox.get(Outbox.kind == "ack").failed_at
        finally:
            desk.app.close()
    finally:
        controller.stop()
