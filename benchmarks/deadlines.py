"""Deadlines and digest benchmark: one tick and one digest on a large SQLite database.

    python benchmarks/deadlines.py [--tickets 1000000] [--due 1000] [--pending N]
                                   [--keep DIR] [--seed 1] [--repeat 5]

Builds, in a temporary folder (or ``--keep DIR``), a helpdesk database with
``--tickets`` tickets (a tenth of them open) spread over a year, the way a
busy support desk looks after a year of use (at the default count, a ticket
every ~30 s):

* most tickets are answered within a few hours
  (first responses log-normally spread, median 1.5 h, so some miss the 4 h
  target) and resolved within days, a long tail stays open for weeks
  (waiting on the customer, reopened); resolved tickets close after 7 days;
* open tickets are new (not answered yet, mostly unassigned), open (the
  customer wrote again) or waiting on the customer; tickets still waiting for
  an answer past the target are flagged overdue with a raised priority;
* 12 agents with uneven loads, 2 admins; about 0.2 % of the closed ones are
  dispute chats instead (kind and status "dispute", with their ``dispute``
  row in one of the dispute states); some quarantined mail and bounces;
* the ``timer`` table holds the history (fired and cancelled timers), about
  ``--pending`` pending timers not due yet (reminders and deadlines of open
  tickets) and ``--due`` timers due now (first-response reminders and
  deadlines of unanswered tickets: a burst after a restart).

Rows are written with ``executemany`` in one transaction per table, not through
the pipeline. Then it measures, with the real app (``helpdesk.runtime.app.build``):

1. a deadline tick with nothing due (``app.tick()`` a minute before the first
   due timer), ``--repeat`` times: the median and the slowest;
2. one tick firing the due timers (the ticket handler reminds and escalates:
   it reads each ticket, raises the priority, renders and queues the notices);
3. a tick with nothing due again, right after;
4. the same number of due timers again, fired by ``tick.fire_due`` with a
   handler that does nothing: the cost of finding and claiming them (one
   ``UPDATE ... RETURNING`` per chunk) and committing, apart from the handler's work;
5. the digest: its content (``digest.build``), rendering it, and
   ``digest.run_due`` (content, rendering and queueing it to the admins),
   ``--repeat`` times for the content.

Targets on SQLite: tick <= 200 ms, empty tick <= 10 ms, digest <= 2 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import random
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from helpdesk.clock import Clock
from helpdesk.reports import digest
from helpdesk.runtime import app as app_module
from helpdesk.runtime import tick
from helpdesk.store.schema import Outbox, db

NOW = dt.datetime(2026, 12, 1, 8, 0, 30, tzinfo=dt.UTC)   # just after the daily 08:00 digest
SPAN = dt.timedelta(days=365)
TARGET_RESPONSE = dt.timedelta(hours=4)
TARGETS = {"tick": 0.200, "empty tick": 0.010, "digest": 2.0}
AGENTS = [f"agent{n}@shop.example" for n in range(1, 13)]
ADMINS = ["boss@shop.example", "ops@shop.example"]
SUBJECTS = ["Key does not work", "Order not received", "Refund request", "Wrong region",
            "Cannot log in", "Payment failed", "Invoice please", "Game does not start",
            "Where is my code?", "Double charge", "Change my e-mail", "Account locked"]
PRIORITIES = (("normal", 80), ("high", 12), ("low", 5), ("urgent", 3))
DISPUTE_STATUSES = ("awaiting_seller", "seller_missed", "negotiation", "window_closed", "admin_review",
                    "return_accepted", "resolved", "decided", "withdrawn")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=1_000_000, help="tickets (default 1,000,000)")
    parser.add_argument("--due", type=int, default=1000, help="timers due now (default 1000)")
    parser.add_argument("--pending", type=int, help="pending timers not due yet (default tickets / 5)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of the empty tick and of the digest")
    parser.add_argument("--keep", metavar="DIR", help="build in DIR and keep it (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    pending = args.tickets // 5 if args.pending is None else args.pending

    root = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="helpdesk-deadlines-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return run(root, args.tickets, args.due, pending, args.repeat, random.Random(args.seed))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def run(root: Path, n_tickets: int, n_due: int, n_pending: int, repeat: int, rng: random.Random) -> int:
    config = write_config(root)
    # the service logs at INFO, one line per deadline fired: pay for it, into a file
    logging.basicConfig(filename=root / "helpdesk.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    clock = Clock(NOW)
    app = app_module.build(config, clock)
    # as `helpdesk run` does at start: templates compiled once, not in the middle of a tick
    app.desk.notifiers[app.config.mailboxes[0].name].renderer.preload()
    started = time.perf_counter()
    # a large page cache while loading only (random index inserts); measured with the app's own
    cache = db.execute_sql("PRAGMA cache_size").fetchone()[0]
    db.execute_sql("PRAGMA cache_size = -1000000")
    facts = generate(n_tickets, n_due, n_pending, rng)
    db.execute_sql(f"PRAGMA cache_size = {int(cache)}")
    size = (root / "var" / "helpdesk.db").stat().st_size
    print(f"built {n_tickets:,} tickets ({facts['open']:,} open, {facts['overdue']:,} overdue), "
          f"{facts['timers']:,} timers ({facts['pending']:,} pending, {facts['due']:,} due now) "
          f"in {time.perf_counter() - started:.1f} s; database {size / 2**20:,.0f} MB")
    handler = "ticket" in app.timer_handlers
    if not handler:
        print("note: app.timer_handlers has no 'ticket' handler yet: due timers are only claimed")

    results = {}
    first_due = facts["first_due"]
    clock.set(first_due - dt.timedelta(minutes=1))
    empty = [timed(app.tick) for _ in range(repeat)]
    results["empty tick"] = statistics.median(t for t, _ in empty)
    assert all(report.total == 0 for _, report in empty), "the empty tick fired something"

    clock.set(NOW)
    queued_before = Outbox.select().count()
    elapsed, report = timed(app.tick)
    queued = Outbox.select().count() - queued_before
    results["tick"] = elapsed
    after, again = timed(app.tick)
    # what the tick queued is not delivered here: delivery is the outbox's job, timed elsewhere

    # the same number of timers again, with a handler that does nothing: what claiming
    # costs (the tick's own machinery), apart from what the ticket handler does
    _more_due(n_due, facts["due_tickets"], NOW.replace(tzinfo=None))
    bare, bare_report = timed(lambda: tick.fire_due({"ticket": lambda due, now: None}, clock))

    period = digest.current_period(app.config, NOW)
    built = [timed(lambda: digest.build(app.config, NOW, period)) for _ in range(repeat)]
    content = built[-1][1]
    render_time, rendered = timed(lambda: digest.render(app, content, ADMINS[0], "Boss"))
    results["digest"] = statistics.median(t for t, _ in built) + render_time
    send_time, sent = timed(lambda: digest.run_due(app))

    print()
    print(f"{'figure':<44} {'measured':>12} {'target':>10}")
    line(f"empty tick (nothing due), median of {repeat}", results["empty tick"], TARGETS["empty tick"])
    print(f"{'  slowest of them':<44} {max(t for t, _ in empty) * 1000:>9.1f} ms")
    fired = ", ".join(f"{n} {kind}" for kind, n in sorted(report.fired.items())) or "nothing"
    line(f"tick firing {n_due:,} due timers", results["tick"], TARGETS["tick"])
    print(f"  fired: {fired}; failed {report.failed}; "
          f"{queued:,} notices queued ({elapsed / max(queued, 1) * 1000:.2f} ms per notice)")
    line("empty tick right after", after, TARGETS["empty tick"])
    if again.total:
        print(f"  (it fired {again.total} more)")
    line(f"tick claiming {bare_report.total:,} timers, no-op handler", bare, None)
    line(f"digest: content (median of {repeat}) + rendering", results["digest"], TARGETS["digest"])
    print(f"  content {statistics.median(t for t, _ in built) * 1000:.0f} ms "
          f"(first run {built[0][0] * 1000:.0f} ms, slowest {max(t for t, _ in built) * 1000:.0f} ms), "
          f"rendering text + HTML {render_time * 1000:.0f} ms")
    line("digest run_due: content, render, queue to admins", send_time, None)
    print(f"  period {period.key}: {content.new_tickets} new, {content.open_total} open, "
          f"{content.overdue_total} overdue, {content.responses.answered} answered "
          f"({content.responses.attainment or 0:.0f} % within 4 h), "
          f"{len(content.assignees)} assignee lines; queued to {sent.recipients if sent else 0} admins; "
          f"text {len(rendered.text):,} chars, HTML {len(rendered.html or ''):,} chars")
    missed = [name for name, target in TARGETS.items() if results[name] > target]
    print()
    print("all targets met" if not missed else "targets missed: " + ", ".join(missed))
    app.close()
    return 0


def line(label: str, seconds: float, target: float | None) -> None:
    shown = f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"
    goal = "" if target is None else f"<= {target * 1000:.0f} ms"
    mark = "" if target is None else ("  ok" if seconds <= target else "  MISSED")
    print(f"{label:<44} {shown:>12} {goal:>10}{mark}")


def timed(call):
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def write_config(root: Path) -> Path:
    staff = "".join(f'\n[[staff]]\naddress = "{a}"\nname = "Agent {n}"\nrole = "agent"\n'
                    for n, a in enumerate(AGENTS, 1))
    staff += "".join(f'\n[[staff]]\naddress = "{a}"\nname = "Admin {n}"\nrole = "admin"\n'
                     for n, a in enumerate(ADMINS, 1))
    text = textwrap.dedent("""\
        [helpdesk]
        name = "Difmark Support"
        secret_key_file = "var/secret.key"
        data_dir = "var"

        [database]
        url = "sqlite:///var/helpdesk.db"

        [[mailboxes]]
        name = "support"
        address = "support@shop.example"
        source = "none"

        [[mailboxes]]
        name = "disputes"
        address = "disputes@shop.example"
        kind = "disputes"
        source = "none"

        [smtp_server]
        enabled = false

        [outgoing]
        transport = "maildir:mailboxes/outgoing"

        [tickets]
        first_response = "4h"

        [digest]
        schedule = "daily 08:00"
        timezone = "UTC"
        """) + staff
    path = root / "config.toml"
    path.write_text(text)
    return path


# --- the data ------------------------------------------------------------------


def generate(n: int, n_due: int, n_pending: int, rng: random.Random) -> dict:
    """Tickets, timers, disputes, quarantine and bounces; returns a few facts."""
    now = NOW.replace(tzinfo=None)
    start = now - SPAN
    step = SPAN.total_seconds() / n
    created = [start + dt.timedelta(seconds=int(i * step + rng.random() * step)) for i in range(n)]
    # how long each ticket takes until resolved: quick ones, a few days, a long tail
    resolve = [_resolve_delay(rng) for _ in range(n)]
    n_open = n // 10
    # the tickets still open are those that would resolve last (so the open ones are
    # mostly recent, with a tail of old ones): exactly n // 10 of them
    order = sorted(range(n), key=lambda i: created[i] + resolve[i], reverse=True)
    is_open = bytearray(n)
    for i in order[:n_open]:
        is_open[i] = 1
    del order

    weights = [1 / (k + 1) ** 0.5 for k in range(len(AGENTS))]   # uneven loads
    priorities, pweights = zip(*PRIORITIES)
    assignees = rng.choices(AGENTS, weights, k=n)
    priority_of = rng.choices(priorities, pweights, k=n)
    subjects = rng.choices(SUBJECTS, k=n)
    rows = []
    overdue = 0
    unanswered_new = []
    for i in range(n):
        made = created[i]
        response = made + _response_delay(rng)
        assignee = assignees[i]
        priority = priority_of[i]
        # a few closed-ticket slots are dispute chats instead (their rows live in "ticket" too)
        kind = "dispute" if not is_open[i] and rng.random() < 0.002 else "ticket"
        first_response = resolved = closed = None
        flagged = False
        if is_open[i]:
            if response > now or rng.random() < 0.03:      # not answered yet
                status = "new"
                assignee = assignee if rng.random() < 0.4 else None
                if now - made > TARGET_RESPONSE:
                    flagged = True
                elif kind == "ticket":
                    unanswered_new.append(i + 1)
            else:
                first_response = response
                status = "open" if rng.random() < 0.35 else "waiting_on_customer"
                flagged = status == "open" and rng.random() < 0.1   # next response late
            updated = max(first_response or made, now - dt.timedelta(seconds=rng.random() * (now - made).total_seconds()))
        else:
            resolved = min(made + max(resolve[i], dt.timedelta(minutes=5)), now - dt.timedelta(minutes=1))
            if rng.random() > 0.05:                          # 5 % closed unanswered (spam, duplicates)
                first_response = min(response, resolved)
            closed_at = resolved + dt.timedelta(days=7)
            status, closed = ("closed", closed_at) if closed_at <= now else ("resolved", None)
            updated = closed or resolved
        if flagged:
            overdue += 1
            priority = "high" if priority in ("low", "normal") else "urgent"
        if kind == "dispute":
            status, assignee, first_response, resolved, closed = "dispute", None, None, None, None
        rows.append((i + 1, "disputes" if kind == "dispute" else "support", subjects[i], f"customer{rng.randrange(n // 3 + 1)}@example.com",
                     "", status, priority, assignee, _t(made), _t(updated), None, kind,
                     _t(first_response), int(flagged), _t(resolved), _t(closed)))
    with db.atomic():
        db.cursor().executemany(
            'INSERT INTO "ticket" ("id", "mailbox", "subject", "requester", "requester_name", "status", '
            '"priority", "assignee", "created_at", "updated_at", "follow_up_of", "kind", '
            '"first_response_at", "overdue", "resolved_at", "closed_at") '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        disputes = [(r[0], r[8]) for r in rows if r[11] == "dispute"]
        del rows
        _disputes(disputes, rng)
        _mail_trouble(start, now, n, rng)
    facts = _timers(n, n_due, n_pending, created, is_open, unanswered_new, now, rng)
    facts.update(open=n_open, overdue=overdue)
    return facts


def _resolve_delay(rng: random.Random) -> dt.timedelta:
    roll = rng.random()
    if roll < 0.5:
        hours = rng.lognormvariate(math.log(6), 1.0)           # answered and solved the same day
    elif roll < 0.82:
        hours = rng.lognormvariate(math.log(72), 0.8)          # a few days of back and forth
    else:
        hours = rng.lognormvariate(math.log(24 * 100), 0.9)    # waiting on the customer for weeks
    return dt.timedelta(hours=min(hours, 24 * 700))


def _response_delay(rng: random.Random) -> dt.timedelta:
    return dt.timedelta(minutes=max(2.0, rng.lognormvariate(math.log(90), 1.0)))


def _t(moment: dt.datetime | None) -> str | None:
    return None if moment is None else str(moment)   # what sqlite3 stores for a datetime


def _disputes(disputes: list[tuple[int, str]], rng: random.Random) -> None:
    rows = []
    for number, (ticket_id, created) in enumerate(disputes, 1):
        made = dt.datetime.fromisoformat(created)
        status = rng.choice(DISPUTE_STATUSES)
        rows.append((ticket_id, f"O-{100000 + number}", f"buyer{number}@example.com",
                     f"seller{number % 97}@example.com", "key does not work", "", status,
                     _t(made), _t(made), _t(made + dt.timedelta(hours=48))))
    db.cursor().executemany(
        'INSERT INTO "dispute" ("ticket_id", "order_id", "buyer", "seller", "reason", "description", '
        '"status", "created_at", "updated_at", "seller_due_at") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', rows)


def _mail_trouble(start: dt.datetime, now: dt.datetime, n: int, rng: random.Random) -> None:
    """Quarantined raw messages and bounce reports, spread over the year."""
    span = (now - start).total_seconds()
    quarantined = [(f"q{k}", "support", "smtp", "", _t(start + dt.timedelta(seconds=rng.random() * span)),
                    1000, "quarantined", "parse: broken MIME") for k in range(max(n // 5000, 1))]
    db.cursor().executemany(
        'INSERT INTO "raw_message" ("dedupe_key", "mailbox", "source", "envelope_to", "received_at", '
        '"size", "status", "reason") VALUES (?, ?, ?, ?, ?, ?, ?, ?)', quarantined)
    bounces = [(f"customer{rng.randrange(n // 3 + 1)}@example.com", "5.1.1", "user unknown",
                _t(start + dt.timedelta(seconds=rng.random() * span))) for _ in range(max(n // 50, 1))]
    db.cursor().executemany(
        'INSERT INTO "bounce" ("address", "status", "diagnostic", "created_at") VALUES (?, ?, ?, ?)', bounces)


def _timers(n: int, n_due: int, n_pending: int, created, is_open, unanswered_new, now, rng) -> dict:
    """History (fired, cancelled), pending timers not due yet, and the due ones."""
    rows = []
    # history: every answered ticket had its first-response pair cancelled, some fired
    for i in range(0, n, 2):
        made = created[i]
        status = "fired" if rng.random() < 0.15 else "cancelled"
        for kind, after in (("first_response.reminder", TARGET_RESPONSE * 0.75), ("first_response", TARGET_RESPONSE)):
            rows.append(("ticket", i + 1, kind, _t(made + after), status, _t(made),
                         _t(made + after) if status == "fired" else None))
    # pending, not due: reminders and deadlines of open tickets, within the next day or so
    open_ids = [i + 1 for i in range(n) if is_open[i]]
    for _ in range(n_pending):
        ticket = rng.choice(open_ids)
        kind = rng.choice(("first_response", "first_response.reminder", "next_response",
                           "next_response.reminder"))
        fire = now + dt.timedelta(seconds=1 + rng.random() * 86400 * 1.5)
        rows.append(("ticket", ticket, kind, _t(fire), "pending", _t(now - dt.timedelta(hours=4)), None))
    # due now: unanswered tickets' reminders and deadlines, fallen due over the last few minutes
    # (a burst after a restart); the reminder and the deadline of one ticket may both be due
    due_rows = []
    pool = unanswered_new or open_ids
    first_due = now
    for k in range(n_due):
        ticket = pool[k // 2 % len(pool)]
        kind = "first_response.reminder" if k % 2 == 0 else "first_response"
        fire = now - dt.timedelta(seconds=1 + rng.random() * 600)
        first_due = min(first_due, fire)
        due_rows.append(("ticket", ticket, kind, _t(fire), "pending", _t(fire - TARGET_RESPONSE), None))
    rows.extend(due_rows)
    # the helpdesk writes a timer when its clock starts (``created_at``): rows go into the
    # table in that order, so the timers due now sit together with the others started then
    rows.sort(key=lambda row: row[5])
    with db.atomic():
        db.cursor().executemany(
            'INSERT INTO "timer" ("subject", "subject_id", "kind", "fire_at", "status", "created_at", '
            '"fired_at") VALUES (?, ?, ?, ?, ?, ?, ?)', rows)
    return {"timers": len(rows), "pending": n_pending + n_due, "due": n_due,
            "first_due": first_due.replace(tzinfo=dt.UTC), "due_tickets": [r[1] for r in due_rows]}


def _more_due(count: int, tickets: list[int], now: dt.datetime) -> None:
    with db.atomic():
        db.cursor().executemany(
            'INSERT INTO "timer" ("subject", "subject_id", "kind", "fire_at", "status", "created_at") '
            "VALUES (?, ?, ?, ?, ?, ?)",
            [("ticket", tickets[k % len(tickets)], "first_response", _t(now), "pending", _t(now))
             for k in range(count)])


if __name__ == "__main__":
    sys.exit(main())
