"""``helpdesk status``: figures read from a real database (both engines), judged with the
``[status]`` thresholds, and the Nagios exit codes of the command line."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from helpdesk import cli
from helpdesk.clock import Clock, naive_utc
from helpdesk.runtime import status
from helpdesk.store import imap_cursor
from helpdesk.store.schema import MIGRATIONS, Meta, Outbox
from tests.conftest import START, Desk, free_port, mail, write_config
from tests.flows import dovecot as dc

HOUR = dt.timedelta(hours=1)


def judged(desk: Desk) -> status.Report:
    return status.gather(desk.app.config, desk.clock)


def texts(report: status.Report) -> list[str]:
    return [p.text for p in report.problems]


def run_status(config, *args, capsys) -> tuple[int, str]:
    code = cli.main(["--config", str(config), "status", *args])
    return code, capsys.readouterr().out


def test_a_fresh_service_that_never_ticked_warns(desk, db_url):
    report = judged(desk)
    assert report.level == status.WARNING
    assert texts(report) == ["no deadline tick recorded yet (is `helpdesk run` running?)"]
    assert report.figures.schema.current


def test_after_a_tick_and_delivery_everything_is_ok(desk, db_url):
    desk.ingest(mail())
    desk.app.tick()
    report = judged(desk)
    assert (report.level, report.problems) == (status.OK, ())
    figures = report.figures
    assert figures.outbox == {"sent": 2}                      # the ack and the staff notice
    assert (figures.oldest_queued, figures.quarantine, figures.overdue_timers) == (None, 0, 0)
    assert figures.last_tick == naive_utc(START)


def test_queued_mail_ages_into_a_warning_then_critical(tmp_path, db_url):
    config = write_config(tmp_path, db_url=db_url, outgoing=f'transport = "smtp+plain://127.0.0.1:{free_port()}"')
    desk = Desk(tmp_path, config, Clock(START))       # nothing listens there: the mail stays queued
    try:
        desk.ingest(mail())
        desk.app.tick()
        assert judged(desk).figures.outbox == {"queued": 2}
        assert judged(desk).level == status.OK
        desk.clock.advance(HOUR)
        desk.app.tick()
        report = judged(desk)
        assert (report.level, texts(report)) == (status.WARNING, ["the oldest queued mail waits for 1h 00m"])
        assert report.figures.oldest_queued == naive_utc(START)
        desk.clock.advance(5 * HOUR)
        desk.app.tick()
        assert texts(judged(desk)) == ["the oldest queued mail waits for 6h 00m"]
        assert judged(desk).level == status.CRITICAL
    finally:
        desk.app.close()


def test_failed_mail_and_quarantine_warn(desk, db_url):
    desk.ingest(mail())
    desk.ingest(mail(frm="undisclosed"))                 # no sender: quarantined
    Outbox.update(status="failed").where(Outbox.kind == "ack").execute()
    desk.app.tick()
    report = judged(desk)
    assert report.level == status.WARNING
    assert texts(report) == ["1 outgoing mail(s) failed (see `helpdesk outbox --status failed`)",
                             "1 message(s) in quarantine (`helpdesk quarantine`)"]
    assert (report.figures.outbox, report.figures.quarantine) == ({"failed": 1, "sent": 1}, 1)


def test_thresholds_are_config_keys(tmp_path, db_url):
    extra = '\n[status]\nquarantine_warning = 0\nquarantine_critical = 2\ntick_warning = "1m"\ntick_critical = "2m"\n'
    desk = Desk(tmp_path, write_config(tmp_path, db_url=db_url, extra=extra), Clock(START))
    try:
        desk.ingest(mail(frm="undisclosed"))
        desk.app.tick()
        assert judged(desk).level == status.OK          # 1 in quarantine: no warning at 0 (off)
        desk.ingest(mail(frm="nobody", subject="other"))
        desk.clock.advance(dt.timedelta(seconds=90))
        report = judged(desk)
        assert report.level == status.CRITICAL
        assert texts(report) == ["2 message(s) in quarantine (`helpdesk quarantine`)",
                                 "no deadline tick for 1m (is `helpdesk run` running?)"]
    finally:
        desk.app.close()


def test_a_critical_below_its_warning_is_a_config_error(tmp_path):
    from helpdesk.config.loader import load_config
    from helpdesk.errors import ConfigError
    path = write_config(tmp_path, extra='\n[status]\nimap_warning = "2h"\nimap_critical = "1h"\n')
    with pytest.raises(ConfigError, match=r"^.*config.toml: \[status\] imap_critical: is below imap_warning"):
        load_config(path)


def test_a_stopped_tick_and_overdue_timers(desk, db_url):
    desk.ingest(mail())                                   # a first-response deadline in 4 hours
    desk.app.tick()
    desk.clock.advance(5 * HOUR)                          # the tick stopped: the deadline passed unfired
    report = judged(desk)
    assert report.level == status.CRITICAL
    assert texts(report) == ["no deadline tick for 5h 00m (is `helpdesk run` running?)",
                             "2 timer(s) overdue by more than 5 minutes"]
    assert report.figures.overdue_timers == 2            # the reminder and the deadline
    desk.app.tick()
    assert judged(desk).level == status.OK


def _imap_desk(tmp_path, db_url) -> Desk:
    config = write_config(tmp_path, db_url=db_url)
    text = config.read_text().replace(
        'source = "maildir:mailboxes/support"',
        'source = "imap://support@127.0.0.1:1/INBOX"\npassword_env = "NOT_USED"\nstarttls = false')
    config.write_text(text)
    return Desk(tmp_path, config, Clock(START))


def test_imap_mailboxes_last_pass_and_fault(tmp_path, db_url):
    desk = _imap_desk(tmp_path, db_url)
    try:
        desk.app.tick()
        report = judged(desk)
        assert texts(report) == ["mailbox support: no successful pass recorded yet"]
        imap_cursor.passed("support", START)
        assert judged(desk).level == status.OK
        imap_cursor.failed("support", "cannot connect to 127.0.0.1:1: connection refused",
                           START + dt.timedelta(minutes=1))
        desk.clock.advance(dt.timedelta(minutes=2))
        desk.app.tick()
        report = judged(desk)
        assert (report.level, texts(report)) == (status.WARNING, [
            ("mailbox support: failing since 2026-11-26 09:01:00 UTC: cannot connect to 127.0.0.1:1: "
            "connection refused")])
        [support] = report.figures.mailboxes
        assert (support.passed_at, support.failed_at) == (naive_utc(START), naive_utc(START) + dt.timedelta(minutes=1))
        desk.clock.advance(HOUR)
        desk.app.tick()
        report = judged(desk)
        assert report.level == status.CRITICAL
        assert texts(report) == [("mailbox support: no successful pass for 1h 02m: cannot connect to "
                                 "127.0.0.1:1: connection refused")]
        imap_cursor.passed("support", desk.clock.now())   # it recovered
        assert judged(desk).level == status.OK
    finally:
        desk.app.close()


def test_a_schema_behind_the_code_is_critical_and_nothing_is_migrated(desk, db_url):
    Meta.update(value="1").where(Meta.key == "schema_version").execute()
    report = judged(desk)
    assert report.level == status.CRITICAL
    assert texts(report) == [f"database schema 1, expected {len(MIGRATIONS)}: run `helpdesk run` once to upgrade it"]
    assert Meta.get(Meta.key == "schema_version").value == "1"


def test_a_database_that_is_not_there_is_critical_and_not_created(tmp_path, capsys):
    config = write_config(tmp_path)
    code, out = run_status(config, capsys=capsys)
    assert code == 2
    assert out.startswith(f"HELPDESK CRITICAL - database {tmp_path}/var/helpdesk.db does not exist yet")
    assert not (tmp_path / "var" / "helpdesk.db").exists()


def test_an_unreachable_postgresql_is_critical(tmp_path, capsys):
    config = write_config(tmp_path, db_url=f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    code, out = run_status(config, "--json", capsys=capsys)
    document = json.loads(out)
    assert (code, document["status"], document["exit"]) == (2, "critical", 2)
    [problem] = document["problems"]
    assert problem["level"] == "critical" and problem["text"].startswith("database postgresql://")


def test_a_config_that_cannot_be_read_is_unknown(tmp_path, capsys):
    (tmp_path / "config.toml").write_text("[helpdesk\n")
    code, out = run_status(tmp_path / "config.toml", capsys=capsys)
    assert code == 3
    assert out.startswith("HELPDESK UNKNOWN - ") and "not valid TOML" in out


def test_the_command_line_exit_codes_and_output(desk, db_url, capsys):
    config = desk.config_path
    code, out = run_status(config, "--now", START.isoformat(), capsys=capsys)
    assert code == 1
    assert out.splitlines()[0] == ("HELPDESK WARNING - no deadline tick recorded yet (is `helpdesk run` "
                                   "running?) | queued=0 failed=0 quarantine=0 oldest_queued=0s overdue_timers=0")
    desk.ingest(mail())
    desk.app.tick()
    code, out = run_status(config, "--now", START.isoformat(), capsys=capsys)
    assert code == 0
    assert out.splitlines() == [
        ("HELPDESK OK - all figures within their thresholds | queued=0 failed=0 quarantine=0 oldest_queued=0s "
        "overdue_timers=0"),
        "outbox: 2 sent", "quarantine: 0",
        "deadline tick: 2026-11-26 09:00:00 UTC (0s ago); overdue timers: 0", f"schema: {len(MIGRATIONS)} (current)"]
    code, out = run_status(config, "--json", "--now", (START + 6 * HOUR).isoformat(), capsys=capsys)
    document = json.loads(out)
    assert code == 2
    assert document["status"] == "critical"
    assert document["outbox"] == {"sent": 2}
    assert document["last_tick_at"] == "2026-11-26T09:00:00Z"
    assert document["schema"] == {"version": len(MIGRATIONS), "expected": len(MIGRATIONS)}
    assert [p["text"] for p in document["problems"]] == [
        "no deadline tick for 6h 00m (is `helpdesk run` running?)", "2 timer(s) overdue by more than 5 minutes"]


# --- the IMAP watcher records its passes and faults (a private Dovecot) ------------------


@pytest.fixture
def dovecot():
    """A server of the test's own: the test stops it."""
    server = dc.started("status")
    yield server
    server.close()


def test_the_imap_watcher_and_run_once_record_passes_and_faults(dovecot, tmp_path, monkeypatch):
    from helpdesk.intake import imap
    from helpdesk.runtime import service
    monkeypatch.setattr(imap, "FIRST_RETRY", 0.1)
    (tmp_path / "imap.pw").write_text("secret\n")
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(
        'source = "maildir:mailboxes/support"',
        f'source = "{dovecot.source("watched")}"\npassword_file = "imap.pw"\nstarttls = false'))
    desk = Desk(tmp_path, config, Clock())                   # real time: the watcher records real time
    try:
        assert service.poll_imap(desk.app).failed == []      # `run --once`'s pass
        [support] = status.read(desk.app.config, naive_utc(desk.clock.now())).mailboxes
        assert support.passed_at is not None and support.failed_at is None
        watchers = imap.start_watchers(desk.app.config.mailboxes, desk.app.store, 10, lambda: None)
        try:
            assert watchers[0].idling.wait(10)
            dovecot.stop()                                    # IDLE breaks, then reconnecting is refused
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                [support] = status.read(desk.app.config, naive_utc(desk.clock.now())).mailboxes
                if (support.fault or "").endswith("connection refused"):
                    break
                time.sleep(0.05)
            assert support.failed_at > support.passed_at
            assert support.fault == f"cannot connect to 127.0.0.1:{dovecot.port}: connection refused"
            figures = status.read(desk.app.config, naive_utc(desk.clock.now()))
            [problem] = [p for p in status.judge(figures, desk.app.config.status) if p.text.startswith("mailbox")]
            assert problem.level == status.WARNING
            assert problem.text.endswith(f"cannot connect to 127.0.0.1:{dovecot.port}: connection refused")
        finally:
            for watcher in watchers:
                watcher.stop()
    finally:
        desk.app.close()
