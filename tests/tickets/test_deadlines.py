"""Response deadlines: reminders, escalations and their exactly-once firing."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helpdesk.cli import main
from helpdesk.clock import Clock
from helpdesk.intake.spool import Incoming
from helpdesk.runtime import app as app_module
from helpdesk.runtime import tick
from helpdesk.store.schema import Outbox, Ticket, Timer
from tests.conftest import START, authenticated, mail, write_config

pytestmark = pytest.mark.usefixtures("db_url")
ROOT = Path(__file__).resolve().parents[2]


def sent(kind: str) -> list[Outbox]:
    return list(Outbox.select().where(Outbox.kind == kind).order_by(Outbox.id))


def test_reminder_at_three_quarters_then_escalation_on_breach_each_once(desk):
    desk.ingest(mail())
    desk.clock.advance(dt.timedelta(hours=2, minutes=59))
    assert desk.app.tick().total == 0
    desk.clock.advance(dt.timedelta(minutes=1))
    assert desk.app.tick().fired == {"first_response.reminder": 1}
    assert [o.recipient for o in sent("reminder")] == ["alice@shop.example"]
    assert "2026-11-26 13:00 UTC" in sent("reminder")[0].subject
    desk.clock.advance(dt.timedelta(hours=1))
    assert desk.app.tick().fired == {"first_response": 1}
    assert [o.recipient for o in sent("escalation")] == ["carol@shop.example"]
    ticket = Ticket.get_by_id(1)
    assert ticket.overdue and ticket.priority == "high"
    desk.clock.advance(dt.timedelta(days=2))
    assert desk.app.tick().total == 0
    assert len(sent("reminder")) == 1 and len(sent("escalation")) == 1
    assert Timer.select().where(Timer.status == "fired").count() == 2


def test_the_reminder_goes_to_the_assignee_only(desk):
    desk.ingest(mail(message_id="first"))
    desk.ingest(authenticated(mail(frm="Carol <carol@shop.example>", subject="Re: Key does not work",
                                   body="#assign carol\n", headers={"In-Reply-To": "<first@example.com>"})))
    desk.clock.advance(dt.timedelta(hours=3))
    desk.app.tick()
    assert [o.recipient for o in sent("reminder")] == ["carol@shop.example"]


def test_an_answer_before_the_deadline_stops_reminder_and_escalation(desk):
    desk.ingest(mail(message_id="first"))
    desk.ingest(authenticated(mail(frm="Alice <alice@shop.example>", subject="Re: Key does not work",
                                   body="Here is a new key.", headers={"In-Reply-To": "<first@example.com>"})))
    desk.clock.advance(dt.timedelta(days=3))
    assert desk.app.tick().total == 0
    assert not sent("reminder") and not sent("escalation")
    assert not Ticket.get_by_id(1).overdue


def race(desk) -> int:
    """Two workers tick at the same moment; returns how many timers they fired together."""
    barrier = threading.Barrier(2)
    reports = []

    def worker():
        barrier.wait()
        reports.append(tick.fire_due(desk.app.timer_handlers, desk.clock, flushers=desk.app.timer_flushers))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(r.total for r in reports)


def test_two_workers_ticking_at_once_fire_each_deadline_once(tmp_path, desk):
    desk.ingest(*[mail(subject=f"problem {n}") for n in range(5)])
    for hours, kind in ((3, "reminder"), (2, "escalation")):
        desk.clock.advance(dt.timedelta(hours=hours))
        assert race(desk) == 5
        texts = " ".join(o.subject + o.text for o in sent(kind) + sent(kind + "s"))
        assert [texts.count(f"[T-{n}]") for n in range(1, 6)] == [1] * 5, kind


def test_several_alerts_for_one_person_in_one_tick_become_one_list(desk):
    desk.ingest(*[mail(subject=f"problem {n}") for n in range(3)])
    desk.clock.advance(dt.timedelta(hours=3))
    assert desk.app.tick().fired == {"first_response.reminder": 3}
    [reminders] = sent("reminders")
    assert reminders.recipient == "alice@shop.example" and "3 tickets" in reminders.subject
    desk.clock.advance(dt.timedelta(hours=2))
    assert desk.app.tick().fired == {"first_response": 3}
    [listing] = sent("escalations")
    assert listing.recipient == "carol@shop.example" and listing.subject == "Overdue: 3 tickets missed their deadline"
    assert all(f"[T-{n}] problem {n - 1}" in listing.text for n in (1, 2, 3))
    assert not sent("escalation") and not sent("reminder")
    assert Ticket.select().where(Ticket.overdue).count() == 3


def test_a_failing_handler_leaves_its_timer_pending_and_the_rest_fire(desk, monkeypatch):
    desk.ingest(mail(subject="one"), mail(subject="two"))
    desk.clock.advance(dt.timedelta(hours=3, minutes=30))
    real = desk.app.timer_handlers["ticket"]

    def flaky(due, now):
        if due.subject_id == 1:
            raise RuntimeError("boom")
        real(due, now)

    monkeypatch.setitem(desk.app.timer_handlers, "ticket", flaky)
    report = desk.app.tick()
    assert (report.total, report.failed) == (1, 1)
    assert Timer.get((Timer.subject_id == 1) & (Timer.kind == "first_response.reminder")).status == "pending"
    monkeypatch.setitem(desk.app.timer_handlers, "ticket", real)
    assert desk.app.tick().total == 1


def test_run_once_with_now_applies_every_deadline_due_by_then(tmp_path, db_url, capsys):
    config = write_config(tmp_path, db_url=db_url)
    first = app_module.build(config, Clock(START))
    first.store([Incoming(mail(), "support", "file")])
    first.process()
    first.close()
    assert main(["--config", str(config), "run", "--once", "--now", "2026-11-26T14:00Z"]) == 0
    # both the reminder (12:00) and the deadline (13:00) were due: both fired, the escalation says it
    assert Timer.select().where(Timer.status == "fired").count() == 2
    assert not sent("reminder") and len(sent("escalation")) == 1
    outgoing = tmp_path / "mailboxes" / "outgoing" / "new"
    assert len(list(outgoing.iterdir())) == 3   # ack, notice, escalation
    assert main(["--config", str(config), "run", "--once", "--now", "2026-11-26T15:00Z"]) == 0
    assert len(list(outgoing.iterdir())) == 3


def test_a_backlog_escalates_without_a_stale_reminder_and_fires_everything(desk):
    desk.ingest(mail(subject="one"))
    desk.clock.advance(dt.timedelta(days=1))
    report = desk.app.tick()
    assert report.fired == {"first_response.reminder": 1, "first_response": 1}
    assert not sent("reminder") and not sent("reminders")
    assert len(sent("escalation")) == 1


def test_run_now_without_once_is_refused(tmp_path, db_url, capsys):
    config = write_config(tmp_path, db_url=db_url)
    assert main(["--config", str(config), "run", "--now", "2026-11-26T14:00Z"]) == 1
    assert "--now needs --once" in capsys.readouterr().err


TICKER = """
import datetime as dt, sys
from helpdesk.runtime import app as app_module
from helpdesk.clock import Clock
app = app_module.build(sys.argv[1], Clock(dt.datetime.fromisoformat(sys.argv[2])))
print("ready", flush=True)
sys.stdin.readline()
print(app.tick().total, flush=True)
"""


def test_two_processes_ticking_at_once_fire_each_deadline_once(tmp_path, db_url):
    """Two `helpdesk run` processes on one database: both started (in parallel), then let go together."""
    config = write_config(tmp_path, db_url=db_url)
    first = app_module.build(config, Clock(START))
    first.store([Incoming(mail(subject=f"problem {n}"), "support", "file") for n in range(20)])
    first.process()
    moment = (START + dt.timedelta(hours=3, minutes=30)).isoformat()
    processes = [subprocess.Popen([sys.executable, "-c", TICKER, str(config), moment], cwd=ROOT,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    for process in processes:
        assert process.stdout.readline() == "ready\n", process.stderr.read()
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    fired = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        fired.append(int(out))
    assert sum(fired) == 20
    texts = " ".join(o.subject + o.text for o in sent("reminder") + sent("reminders"))
    assert [texts.count(f"[T-{n}]") for n in range(1, 21)] == [1] * 20
    assert Timer.select().where(Timer.status == "fired").count() == 20
    first.close()


def test_a_mail_that_cannot_be_made_holds_back_only_its_own_timer(desk, monkeypatch):
    from helpdesk.tickets import deadlines as ticket_deadlines

    desk.ingest(mail(subject="one"), mail(subject="two"))
    desk.clock.advance(dt.timedelta(hours=3))
    real = ticket_deadlines._tell

    def broken_for_t1(desk_, alert):
        if alert.ticket.id == 1:
            raise RuntimeError("template broke")
        real(desk_, alert)

    monkeypatch.setattr(ticket_deadlines, "_tell", broken_for_t1)
    monkeypatch.setattr(ticket_deadlines, "_tell_many", lambda desk_, alerts: [broken_for_t1(desk_, a) for a in alerts])
    report = desk.app.tick()
    assert (report.total, report.failed) == (1, 1)
    assert [o.subject for o in sent("reminder")] == ["[T-2] Reminder: T-2 needs an answer by 2026-11-26 13:00 UTC"]
    assert Timer.get((Timer.subject_id == 1) & (Timer.kind == "first_response.reminder")).status == "pending"
