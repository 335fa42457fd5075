"""The admin digest: its period, its figures, its mail, and once per period."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

from helpdesk.cli import main
from helpdesk.clock import Clock
from helpdesk.mail.loop import loop_id
from helpdesk.reports import digest
from helpdesk.runtime import app as app_module
from helpdesk.runtime import service
from helpdesk.store.schema import Bounce, DigestRun, Dispute, Outbox, RawMessage, Ticket
from tests.conftest import authenticated, mail, write_config

UTC = dt.UTC
ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)          # the period: Nov 30 08:00 - Dec 1 08:00 UTC
IN_PERIOD = dt.datetime(2026, 11, 30, 12, 0)               # naive UTC, as stored
BEFORE = dt.datetime(2026, 11, 29, 12, 0)
SECOND_ADMIN = '\n[[staff]]\naddress = "dave@shop.example"\nname = "Dave"\nrole = "admin"\n'


def digest_config(tmp_path, db_url, schedule="daily 08:00", timezone="UTC", overdue_limit=20,
                  more=SECOND_ADMIN):
    extra = (f'\n[digest]\nschedule = "{schedule}"\ntimezone = "{timezone}"\n'
             f"overdue_limit = {overdue_limit}\n" + more)
    return write_config(tmp_path, db_url=db_url, extra=extra)


@pytest.fixture
def app(tmp_path, db_url):
    made = app_module.build(digest_config(tmp_path, db_url, overdue_limit=2), Clock(NOW))
    yield made
    made.close()


def ticket(created=IN_PERIOD, status="new", kind="ticket", **fields) -> int:
    values = {"mailbox": "support", "subject": "Key does not work", "requester": "bob@example.com",
              "status": status, "kind": kind, "created_at": created, "updated_at": created}
    values.update(fields)
    if values.get("first_response_at"):
        values["updated_at"] = max(values["updated_at"], values["first_response_at"])
    return Ticket.create(**values).id


def answered(created, after, status="waiting_on_customer", **fields) -> int:
    return ticket(created, status, first_response_at=created + after, **fields)


def digest_mails(folder: Path) -> list[email.message.EmailMessage]:
    new = folder / "mailboxes" / "outgoing" / "new"
    paths = sorted(new.iterdir()) if new.exists() else []
    found = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in paths]
    return [m for m in found if "digest" in str(m["Subject"])]


# --- the period ----------------------------------------------------------------


@pytest.mark.parametrize("now, key, start, end", [
    ("2026-12-01T07:59Z", "daily:2026-11-30", "2026-11-29T08:00Z", "2026-11-30T08:00Z"),
    ("2026-12-01T08:00Z", "daily:2026-12-01", "2026-11-30T08:00Z", "2026-12-01T08:00Z"),
    ("2026-12-01T23:59Z", "daily:2026-12-01", "2026-11-30T08:00Z", "2026-12-01T08:00Z"),
])
def test_daily_period_is_named_by_the_latest_scheduled_moment(now, key, start, end):
    period = digest.period_at(("daily", 8, 0), "UTC", _at(now))
    assert (period.key, period.start, period.end, period.since) == (key, _at(start), _at(end), _at(start))


@pytest.mark.parametrize("now, key, end", [
    ("2026-12-02T12:00Z", "monday:2026-11-30", "2026-11-30T07:00Z"),   # Wednesday
    ("2026-11-30T06:59Z", "monday:2026-11-23", "2026-11-23T07:00Z"),   # Monday 07:59 in Berlin
    ("2026-11-30T07:00Z", "monday:2026-11-30", "2026-11-30T07:00Z"),   # Monday 08:00 in Berlin
])
def test_weekly_period_in_the_configured_time_zone(now, key, end):
    period = digest.period_at(("monday", 8, 0), "Europe/Berlin", _at(now))
    assert (period.key, period.end, period.start) == (key, _at(end), _at(end) - dt.timedelta(days=7))


def test_periods_across_daylight_saving_changes_follow_the_local_clock():
    autumn = digest.period_at(("daily", 8, 0), "Europe/Berlin", _at("2026-10-25T12:00Z"))
    assert (autumn.start, autumn.end) == (_at("2026-10-24T06:00Z"), _at("2026-10-25T07:00Z"))  # 25 hours
    spring = digest.period_at(("daily", 8, 0), "Europe/Berlin", _at("2026-03-29T12:00Z"))
    assert (spring.start, spring.end) == (_at("2026-03-28T07:00Z"), _at("2026-03-29T06:00Z"))  # 23 hours
    # a scheduled time that does not exist that night (02:30) still names one moment,
    # and every moment belongs to exactly one period, whose end is the latest one before it
    moment, previous = _at("2026-03-27T00:00Z"), None
    while moment < _at("2026-04-01T00:00Z"):
        period = digest.period_at(("daily", 2, 30), "Europe/Berlin", moment)
        assert period.start < period.end <= moment < period.end + dt.timedelta(hours=25)
        if previous is not None and period.key != previous.key:
            assert period.start == previous.end and period.key > previous.key
        previous = period
        moment += dt.timedelta(minutes=30)


def test_short_duration_and_percentiles():
    assert [digest.short_duration(dt.timedelta(seconds=s)) for s in (45, 720, 3600 + 300, 2 * 86400 + 4 * 3600)] \
        == ["45s", "12m", "1h 05m", "2d 4h"]
    minutes = [dt.timedelta(minutes=m) for m in range(1, 11)]
    assert digest._nearest_rank(minutes, 90) == dt.timedelta(minutes=9)
    assert digest._median(minutes) == dt.timedelta(minutes=5, seconds=30)
    assert digest._nearest_rank([], 90) is None and digest._median([]) is None


# --- the figures ---------------------------------------------------------------


def test_digest_figures_come_from_the_database(app, db_url):
    hour = dt.timedelta(hours=1)
    at = dt.datetime
    # created in the period: three open ones here (a dispute chat does not count)
    ticket(IN_PERIOD, "new")
    ticket(IN_PERIOD, "new", assignee="alice@shop.example")
    ticket(IN_PERIOD, "open", assignee="alice@shop.example")
    chat = ticket(IN_PERIOD, "new", kind="dispute")
    Dispute.create(ticket=chat, order_id="O-1", buyer="bob@example.com", seller="s@example.com",
                   reason="other", status="admin_review", created_at=IN_PERIOD, updated_at=IN_PERIOD,
                   seller_due_at=IN_PERIOD)
    ticket(BEFORE, "resolved")
    ticket(BEFORE, "closed")
    # first responses in the period: 30 min, 1 h, 2 h, 5 h (target 4 h)
    answered(at(2026, 11, 30, 7, 30), hour / 2, assignee="zoe@shop.example")   # someone who left
    answered(at(2026, 11, 30, 12, 0), hour, assignee="alice@shop.example")
    answered(at(2026, 11, 30, 10, 0), 2 * hour)
    answered(at(2026, 11, 30, 9, 0), 5 * hour, status="resolved")
    # ... and outside it: answered before it starts, and after it ends
    answered(at(2026, 11, 28, 9, 0), hour)
    answered(at(2026, 12, 1, 7, 30), hour)
    # overdue: three where staff must act (two listed, oldest first), one waiting on the customer
    ticket(at(2026, 11, 20), "open", overdue=True, assignee="alice@shop.example", subject="oldest")
    ticket(at(2026, 11, 22), "new", overdue=True, subject="second")
    ticket(at(2026, 11, 25), "new", overdue=True, subject="third")
    ticket(at(2026, 11, 10), "waiting_on_customer", overdue=True, subject="not ours to answer")
    # mail trouble: quarantined in and before the period, bounces in and before it
    for n, (when, status) in enumerate([(IN_PERIOD, "quarantined"), (BEFORE, "quarantined"), (IN_PERIOD, "done")]):
        RawMessage.create(dedupe_key=f"k{n}", mailbox="support", source="file", received_at=when,
                          size=10, status=status)
    for when in (IN_PERIOD, IN_PERIOD, BEFORE):
        Bounce.create(address="gone@example.com", created_at=when)
    for status in ("awaiting_seller", "resolved", "return_accepted"):
        other = ticket(BEFORE, "closed", kind="dispute")
        Dispute.create(ticket=other, order_id=f"O-{other}", buyer="b@example.com", seller="s@example.com",
                       reason="other", status=status, created_at=BEFORE, updated_at=BEFORE, seller_due_at=BEFORE)

    period = digest.current_period(app.config, NOW)
    got = digest.build(app.config, NOW, period)

    assert period.key == "daily:2026-12-01"
    assert got.new_tickets == 3 + 3 + 1
    assert [(s.status, s.count) for s in got.open_by_status] == [
        ("new", 4), ("open", 2), ("waiting_on_customer", 6)]
    assert got.open_total == 12
    r = got.responses
    # the three tickets created in the period and still unanswered 4 h later count as misses
    assert (r.answered, r.within_target, r.missed_unanswered) == (4, 3, 3)
    assert r.attainment == pytest.approx(100 * 3 / 7)
    assert (r.median, r.p90) == (dt.timedelta(hours=1, minutes=30), dt.timedelta(hours=5))
    assert [t.subject for t in got.overdue] == ["oldest", "second"]
    assert got.overdue_total == 3
    assert [t.assignee_name for t in got.overdue] == ["Alice", "unassigned"]
    assert got.overdue[0].age == NOW - dt.datetime(2026, 11, 20, tzinfo=UTC)
    assert [(a.name, a.count, [(s.status, s.count) for s in a.by_status]) for a in got.assignees] == [
        ("unassigned", 7, [("new", 3), ("waiting_on_customer", 4)]),
        ("Alice", 4, [("new", 1), ("open", 2), ("waiting_on_customer", 1)]),
        ("zoe@shop.example", 1, [("waiting_on_customer", 1)])]
    assert (got.quarantined, got.quarantine_waiting, got.bounced) == (1, 2, 2)
    assert [(d.status, d.count) for d in got.disputes] == [("awaiting_seller", 1), ("admin_review", 1)]


def test_an_empty_helpdesk_has_a_digest_too(app, db_url):
    got = digest.build(app.config, NOW, digest.current_period(app.config, NOW))
    assert (got.new_tickets, got.open_total, got.overdue_total, got.responses.answered) == (0, 0, 0, 0)
    assert got.responses.attainment is None and got.responses.median is None
    assert [(a.name, a.count) for a in got.assignees] == [("unassigned", 0), ("Alice", 0)]   # always listed
    rendered = digest.render(app, got)
    assert "New tickets: 0" in rendered.text and "Overdue tickets: 0" in rendered.text


def test_a_missed_digest_is_caught_up_since_the_last_one_sent(app, db_url):
    ticket(dt.datetime(2026, 11, 28, 12, 0))
    ticket(IN_PERIOD)
    assert digest.current_period(app.config, NOW).since == _at("2026-11-30T08:00Z")   # nothing sent yet
    DigestRun.create(period="daily:2026-11-28", created_at=dt.datetime(2026, 11, 28, 8, 0), recipients=2)
    period = digest.current_period(app.config, NOW)
    assert (period.since, period.start) == (_at("2026-11-28T08:00Z"), _at("2026-11-30T08:00Z"))
    got = digest.build(app.config, NOW, period)
    assert got.new_tickets == 2
    assert "since the last digest sent" in digest.render(app, got).text
    DigestRun.create(period="daily:2026-11-30", created_at=dt.datetime(2026, 11, 30, 8, 0), recipients=2)
    assert digest.current_period(app.config, NOW).since == _at("2026-11-30T08:00Z")


def test_catching_up_reaches_back_at_most_a_month(app, db_url):
    DigestRun.create(period="daily:2026-01-01", created_at=dt.datetime(2026, 1, 1, 8, 0), recipients=1)
    DigestRun.create(period="monday:2026-11-23", created_at=dt.datetime(2026, 11, 23, 8, 0), recipients=1)
    period = digest.current_period(app.config, NOW)
    assert period.since == period.end - digest.MAX_CATCH_UP


# --- the mail ------------------------------------------------------------------


class _Tags(HTMLParser):
    VOID = frozenset({"br", "meta", "img", "hr", "input", "link"})

    def __init__(self):
        super().__init__()
        self.stack, self.seen, self.problems = [], set(), []

    def handle_starttag(self, tag, attrs):
        self.seen.add(tag)
        for name, value in attrs:
            if name in ("src", "href") or "url(" in (value or ""):
                self.problems.append(f"{tag} {name}={value}")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"unbalanced </{tag}>")


def test_html_has_a_table_bar_chart_no_scripts_no_external_images(app, db_url):
    for n in range(3):
        ticket(IN_PERIOD, "open", assignee="alice@shop.example", subject=f"<b>{n}</b>")
    ticket(IN_PERIOD, "new", overdue=True, subject="<script>alert(1)</script>")
    answered(IN_PERIOD, dt.timedelta(hours=1))
    rendered = digest.render(app, digest.build(app.config, NOW, digest.current_period(app.config, NOW)),
                             "carol@shop.example", "Carol")
    html = rendered.html
    tags = _Tags()
    tags.feed(html)
    assert tags.problems == [] and tags.stack == []
    assert not {"script", "img", "style", "link", "iframe", "object"} & tags.seen
    assert "<script>alert" not in html and "&lt;script&gt;" in html       # escaped customer text
    assert 'width="100%" cellpadding="0"' in html and 'bgcolor="#4a90d9"' in html   # bars are table cells
    assert rendered.subject == "Difmark Support digest, Tue 01 Dec 2026: 5 new, 5 open, 1 overdue"
    assert f"  {'Alice':<22}{3:>6}  {'#' * 30}  (3 open)\n" in rendered.text
    assert "  within the target:     1\n" in rendered.text
    assert "  past the target, still unanswered: 4\n" in rendered.text   # the four created in the period
    assert "  attainment:            20 % (of the answers due in the period)" in rendered.text


def test_run_due_sends_once_per_period_to_every_admin(tmp_path, app, db_url):
    ticket(IN_PERIOD)
    result = digest.run_due(app)
    assert (result.period, result.recipients) == ("daily:2026-12-01", 2)
    assert digest.run_due(app) is None
    app.deliver()
    mails = digest_mails(tmp_path)
    assert sorted(str(m["To"]) for m in mails) == ["Carol <carol@shop.example>", "Dave <dave@shop.example>"]
    [first, _] = mails
    assert first["Auto-Submitted"] == "auto-generated" and first["X-Helpdesk-Loop"] == loop_id(app.desk.secret)
    assert str(first["From"]) == "Difmark Support <support@shop.example>"
    assert "New tickets: 1" in first.get_body(("plain",)).get_content()
    assert first.get_body(("html",)) is not None
    assert DigestRun.get().recipients == 2

    restarted = app_module.build(app.config.path, Clock(NOW + dt.timedelta(hours=5)))
    assert digest.run_due(restarted) is None                    # a restart does not send it again
    restarted.clock.set(NOW + dt.timedelta(days=1))
    assert digest.run_due(restarted).period == "daily:2026-12-02"
    assert Outbox.select().where(Outbox.kind == "digest").count() == 4


def test_workers_racing_for_one_period_send_it_once(app, db_url):
    barrier = threading.Barrier(4)
    results = []

    def worker():
        barrier.wait()
        results.append(digest.send(app, digest.build(app.config, NOW, digest.current_period(app.config, NOW))))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.already_sent for r in results) == [False, True, True, True]
    assert Outbox.select().where(Outbox.kind == "digest").count() == 2
    assert DigestRun.select().count() == 1


RACER = """
import datetime as dt, sys
from helpdesk.runtime import app as app_module
from helpdesk.reports import digest
from helpdesk.clock import Clock
app = app_module.build(sys.argv[1], Clock(dt.datetime.fromisoformat(sys.argv[2])))
print("ready", flush=True)
sys.stdin.readline()
result = digest.run_due(app)
app.deliver()
print(result.recipients if result else 0, flush=True)
"""


def test_two_processes_racing_send_one_digest(tmp_path, db_url):
    """Each process starts up (one after the other: connecting migrates the schema),
    then both are let go at once."""
    config = digest_config(tmp_path, db_url)
    app_module.build(config, Clock(NOW)).close()     # this process reads the result
    ticket(IN_PERIOD)
    processes = []
    for _ in range(2):
        process = subprocess.Popen([sys.executable, "-c", RACER, str(config), NOW.isoformat()], cwd=ROOT,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        assert process.stdout.readline() == "ready\n", process.stderr.read()
        processes.append(process)
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        outcomes.append(int(out))
    assert sorted(outcomes) == [0, 2]
    assert len(digest_mails(tmp_path)) == 2                   # Carol and Dave, once each
    assert [r.period for r in DigestRun.select()] == ["daily:2026-12-01"]


def test_schedule_off_sends_nothing_but_the_command_still_prints(tmp_path, db_url, capsys):
    config = digest_config(tmp_path, db_url, schedule="off")
    off = app_module.build(config, Clock(NOW))
    ticket(dt.datetime(2026, 12, 1, 1, 0))
    assert digest.run_due(off) is None
    assert "digest" not in [name for name, _ in service.build_loop(off).jobs]
    assert main(["--config", str(config), "digest", "--now", "2026-12-01T09:00Z"]) == 0
    out = capsys.readouterr().out
    assert "New tickets: 1" in out     # the last 24 hours
    assert main(["--config", str(config), "digest", "--send"]) == 1
    assert 'schedule is "off"' in capsys.readouterr().err
    assert DigestRun.select().count() == 0
    off.close()


def test_digest_command_prints_and_send_queues_once(tmp_path, db_url, capsys):
    config = str(digest_config(tmp_path, db_url, timezone="Europe/Berlin"))
    app_module.build(config, Clock(NOW)).close()
    ticket(dt.datetime(2026, 11, 30, 20, 0))
    assert main(["--config", config, "digest", "--now", "2026-12-01T09:00Z"]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("Difmark Support digest\nMon 30 Nov 2026 08:00 to Tue 01 Dec 2026 08:00 "
                                  "(Europe/Berlin)\n")
    assert "New tickets: 1\n" in printed.out
    assert DigestRun.select().count() == 0 and digest_mails(tmp_path) == []
    assert main(["--config", config, "digest", "--send", "--now", "2026-12-01T09:00Z"]) == 0
    assert "digest daily:2026-12-01 queued to 2 admin(s)" in capsys.readouterr().err
    assert len(digest_mails(tmp_path)) == 2                       # delivered to the outgoing Maildir
    assert main(["--config", config, "digest", "--send", "--now", "2026-12-01T10:00Z"]) == 0
    assert "was sent already" in capsys.readouterr().err
    assert len(digest_mails(tmp_path)) == 2


def test_run_once_sends_the_digest_but_not_before_there_was_anything(tmp_path, db_url):
    config = str(digest_config(tmp_path, db_url))
    assert main(["--config", config, "run", "--once", "--now", "2026-12-01T07:00Z"]) == 0
    assert digest_mails(tmp_path) == []       # a new helpdesk: no digest about the time before it
    ticket(IN_PERIOD)
    assert main(["--config", config, "run", "--once", "--now", "2026-12-01T07:59Z"]) == 0
    assert digest_mails(tmp_path) == []       # the period that ended Nov 30 08:00 saw nothing yet
    assert main(["--config", config, "run", "--once", "--now", "2026-12-01T08:00Z"]) == 0
    assert [str(m["Subject"]) for m in digest_mails(tmp_path)] == [
        "Difmark Support digest, Tue 01 Dec 2026: 1 new, 1 open, 0 overdue"] * 2
    assert main(["--config", config, "run", "--once", "--now", "2026-12-01T08:30Z"]) == 0
    assert len(digest_mails(tmp_path)) == 2


def test_a_real_conversation_shows_up_in_the_digest(desk, db_url):
    """Through the pipeline: a customer mail, an agent's answer an hour later."""
    desk.ingest(mail(message_id="first"))
    desk.clock.advance(dt.timedelta(hours=1))
    desk.ingest(authenticated(mail(frm="Alice <alice@shop.example>", subject="Re: Key does not work",
                                   body="Here is a new key.", headers={"In-Reply-To": "<first@example.com>"})))
    now = desk.clock.now() + dt.timedelta(days=1)
    got = digest.build(desk.app.config, now, digest.current_period(desk.app.config, now))
    assert got.new_tickets == 1
    assert (got.responses.answered, got.responses.median) == (1, dt.timedelta(hours=1))
    assert [(s.status, s.count) for s in got.open_by_status if s.count] == [("waiting_on_customer", 1)]
    assert [(a.name, a.count) for a in got.assignees] == [("unassigned", 0), ("Alice", 1)]


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)
