"""Scale benchmark (issue 14): workers, SMTP under many clients, a big store, end to end.

    python benchmarks/scale.py [--parts workers,smtp,bigstore,e2e] [--engines sqlite,postgresql]
                               [-n 2000] [--workers 1,2,4] [--clients 20] [--per-client 25]
                               [--tickets 1000000] [--messages 5000000] [--keep] [--e2e-n 10000]

Four parts, each on SQLite and PostgreSQL unless said otherwise:

``workers``   a backlog of ``-n`` generated mails stored pending, then 1, 2 and 4 worker
              processes (``benchmarks/workers.py``'s set-up) each process until nothing is
              left to claim and then deliver until nothing is due: the ingest rate is taken
              when the last worker has processed, end to end when the last has delivered.
``smtp``      a real ``helpdesk run`` process (SMTP server, processing, delivery to the
              outgoing Maildir); ``--clients`` threads each send ``--per-client`` mails over
              their own SMTP session. Acceptance rate = mails / time to the last ``250``;
              ack latency = from a mail's ``250`` to its acknowledgement's file appearing in
              the outgoing Maildir's ``new/`` (found by its ``In-Reply-To``), p50 / p99.
``bigstore``  the ingest rate (one worker, as ``workers``) on an empty store against a store
              bulk-loaded with ``--tickets`` tickets and ``--messages`` messages (raw rows,
              thread references, one participant and one sent acknowledgement per ticket), by
              set-based SQL (``generate_series`` / a recursive CTE) into a dedicated database
              (PostgreSQL: ``helpdesk_scale_bench``, dropped unless ``--keep``; SQLite: a
              temporary file) after the migrations made the indexes; then ANALYZE, and the
              query plans of the per-message lookups. Target: >= 80 % of the empty rate.
``e2e``       SQLite only: ``benchmarks/ingest.py`` at ``--e2e-n`` as ``helpdesk ingest`` does
              it (ingest, then delivery) and with ``--stages`` (delivery while ingesting).

The machine this was written on has two cores shared with other work: the figures say
whether the work is split and what stays flat, not what a server would do.
"""

from __future__ import annotations

import argparse
import email
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from email.utils import make_msgid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import workers  # benchmarks/workers.py, importable once the path is set

PG_URL = workers.PG_URL
BENCH_DB = "helpdesk_scale_bench"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="workers,smtp,bigstore,e2e")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("-n", type=int, default=2000, help="backlog for workers and bigstore")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=25)
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=2, help="bigstore: empty and big measured in turns")
    parser.add_argument("--keep", action="store_true", help="keep the big store's database")
    parser.add_argument("--e2e-n", type=int, default=10_000)
    parser.add_argument("--pg", default=PG_URL)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(Path(args.child))
    parts = args.parts.split(",")
    engines = args.engines.split(",")
    failed = False
    if "workers" in parts:
        failed |= part_workers(args, engines)
    if "smtp" in parts:
        failed |= part_smtp(args, engines)
    if "bigstore" in parts:
        failed |= part_bigstore(args, engines)
    if "e2e" in parts:
        failed |= part_e2e(args)
    return 1 if failed else 0


def _load() -> float:
    return os.getloadavg()[0]


# --------------------------------------------------------------------------- 1. workers

def part_workers(args, engines: list[str]) -> bool:
    from mailgen import generate
    messages = [raw for _, raw in generate(args.n, args.seed)]
    print(f"\n== workers: {args.n} messages, ingest (process) and end to end (process + delivery)")
    print(f"{'engine':<11} {'workers':>7} {'ingest/s':>9} {'e2e/s':>7} {'mails':>6} {'load':>5}  "
          "per worker (processed/skipped/sent)")
    failed = False
    for engine in engines:
        for count in [int(n) for n in args.workers.split(",")]:
            with tempfile.TemporaryDirectory(prefix="hd-scale-") as folder:
                url, drop = workers._database(engine, Path(folder), args.pg)
                try:
                    line, ok = measure_e2e(Path(folder), url, messages, count)
                finally:
                    drop()
            print(f"{engine:<11} {count:>7} {line}", flush=True)
            failed |= not ok
    return failed


def measure_e2e(folder: Path, url: str, messages: list[bytes], count: int) -> tuple[str, bool]:
    """``workers.measure`` with delivery: each child processes, then delivers."""
    config = workers.write_config(folder, url, 0)
    workers._store(config, messages)
    children = [subprocess.Popen([sys.executable, __file__, "--child", str(config)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(count)]
    for proc in children:
        assert proc.stdout.readline().strip() == "ready"
    load = _load()
    started = time.time()   # wall clock: compared with the children's
    for proc in children:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(proc.stdout.readline()) for proc in children]
    for proc in children:
        proc.wait(60)
    processed_at = max(r["processed_at"] for r in results) - started
    delivered_at = max(r["delivered_at"] for r in results) - started
    pending = workers._pending(config)
    skipped = sum(r["skipped"] for r in results)
    done = sum(r["processed"] for r in results)
    sent = sum(r["sent"] for r in results)
    rows, tickets, quarantined = _outbox_rows(config)
    files = len(os.listdir(folder / "mailboxes" / "outgoing" / "new"))
    ok = pending == 0 and skipped == 0 and done == len(messages) and sent == rows == files
    each = ", ".join(f"{r['processed']}/{r['skipped']}/{r['sent']}" for r in results)
    verdict = "ok" if ok else (f"FAILED: {pending} pending, {skipped} skipped, {done} processed, "
                               f"{sent} sent, {rows} outbox rows, {files} files")
    verdict += f" ({tickets} tickets, {quarantined} quarantined)"
    n = len(messages)
    return (f"{n / processed_at:>9.0f} {n / delivered_at:>7.0f} {sent:>6} {load:>5.1f}  {each}  {verdict}",
            ok)


def _outbox_rows(config: Path) -> tuple[int, int, int]:
    """Outgoing mails queued in all (a mail sent twice would make files > rows), tickets
    (a reply applied beside its parent by another worker makes one more), quarantined."""
    from helpdesk.config.loader import load_config
    from helpdesk.store.db import connect
    from helpdesk.store.schema import Outbox, RawMessage, Ticket, db
    connect(load_config(config).database.url)
    try:
        quarantined = RawMessage.select().where(RawMessage.status == "quarantined").count()
        return Outbox.select().count(), Ticket.select().count(), quarantined
    finally:
        db.close()


def child(config: Path) -> int:
    """One worker: build the app, wait for the word, process until nothing is left, deliver."""
    from helpdesk.runtime import app as app_module
    app = app_module.build(config)
    print("ready", flush=True)
    sys.stdin.readline()
    tally = app.process()
    processed_at = time.time()
    sent = 0
    while True:
        delivery = app.deliver()
        sent += delivery.sent
        if not delivery.sent:
            break
    delivered_at = time.time()
    app.close()
    skipped = tally.counts["skipped"]
    print(json.dumps({"processed": sum(tally.counts.values()) - skipped, "skipped": skipped, "sent": sent,
                      "processed_at": processed_at, "delivered_at": delivered_at}), flush=True)
    return 0


# --------------------------------------------------------------------------- 2. SMTP

def part_smtp(args, engines: list[str]) -> bool:
    print(f"\n== SMTP: a `helpdesk run` process, {args.clients} clients x {args.per_client} mails")
    print(f"{'engine':<11} {'accepted/s':>10} {'ack p50 ms':>10} {'ack p99 ms':>10} {'acks':>9} {'load':>5}")
    failed = False
    for engine in engines:
        with tempfile.TemporaryDirectory(prefix="hd-scale-smtp-") as folder:
            url, drop = workers._database(engine, Path(folder), args.pg)
            try:
                line, ok = measure_smtp(Path(folder), url, args.clients, args.per_client)
            finally:
                drop()
        print(f"{engine:<11} {line}", flush=True)
        failed |= not ok
    return failed


def measure_smtp(folder: Path, url: str, clients: int, per_client: int) -> tuple[str, bool]:
    port = _free_port()
    config = workers.write_config(folder, url, 0)
    text = config.read_text().replace("[smtp_server]\nenabled = false\n", f"""\
[smtp_server]
enabled = true
listen = "127.0.0.1:{port}"
max_connections_per_client = {clients + 5}
""")
    config.write_text(text)
    (folder / "mailboxes" / "support").mkdir(parents=True)
    outgoing = folder / "mailboxes" / "outgoing" / "new"
    with open(folder / "run.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "helpdesk", "--config", str(config), "run"],
                                cwd=folder, stdout=subprocess.DEVNULL, stderr=log)
    try:
        _wait_port(port, proc)
        watcher = _AckWatcher(outgoing)
        watcher.start()
        accepted: dict[str, float] = {}
        lock = threading.Lock()
        load = _load()
        started = time.perf_counter()
        threads = [threading.Thread(target=_client, args=(port, c, per_client, accepted, lock))
                   for c in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = max(accepted.values()) - started
        deadline = time.perf_counter() + 120
        while len(watcher.seen.keys() & accepted.keys()) < len(accepted) and time.perf_counter() < deadline:
            time.sleep(0.05)
        watcher.stop()
    finally:
        proc.terminate()
        proc.wait(30)
    latencies = sorted((watcher.seen[mid] - accepted[mid]) * 1000 for mid in accepted if mid in watcher.seen)
    total = clients * per_client
    ok = len(accepted) == total and len(latencies) == total
    if not latencies:
        tail = (folder / "run.log").read_text(errors="replace")[-800:]
        return f"no acknowledgement seen; accepted {len(accepted)}; log: {tail}", False
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    verdict = "ok" if ok else "FAILED: not every mail accepted and acknowledged"
    line = f"{len(accepted) / elapsed:>10.0f} {p50:>10.0f} {p99:>10.0f} {len(latencies):>4}/{total:<4} {load:>5.1f}"
    return f"{line}  {verdict}", ok


def _client(port: int, number: int, count: int, accepted: dict, lock) -> None:
    """One SMTP session sending ``count`` mails from its own address."""
    sender = f"client{number}@customers.example"
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for i in range(count):
            mid = make_msgid(domain="customers.example")
            raw = (f"From: Client {number} <{sender}>\r\nTo: support@shop.example\r\n"
                   f"Subject: Question {number}.{i} about my order\r\nMessage-ID: {mid}\r\n"
                   f"Date: Thu, 03 Dec 2026 09:00:00 +0000\r\n\r\nHello, where is order {number}-{i}?\r\n")
            smtp.sendmail(sender, ["support@shop.example"], raw.encode())
            now = time.perf_counter()
            with lock:
                accepted[mid.strip("<>")] = now


class _AckWatcher(threading.Thread):
    """Notes when each acknowledgement's file appears in ``new/``, by the mail it answers."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder = folder
        self.seen: dict[str, float] = {}
        self.done = threading.Event()
        self._names: set[str] = set()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                names = set(os.listdir(self.folder)) - self._names
            except FileNotFoundError:
                names = set()
            now = time.perf_counter()
            for name in names:
                self._names.add(name)
                with open(self.folder / name, "rb") as f:
                    mail = email.message_from_binary_file(f)
                answered = (mail.get("In-Reply-To") or "").strip().strip("<>")
                if answered:
                    self.seen.setdefault(answered, now)
            time.sleep(0.002)

    def stop(self) -> None:
        self.done.set()
        self.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"helpdesk run exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("helpdesk run did not open its SMTP port in 30 s")


# --------------------------------------------------------------------------- 3. big store

def part_bigstore(args, engines: list[str]) -> bool:
    """Empty and big store measured in turns (``--rounds``), best of each: on a shared machine
    the load changes within a minute, and one pair of runs mostly measures that."""
    from mailgen import generate
    failed = False
    for engine in engines:
        print(f"\n== big store, {engine}: {args.tickets:,} tickets, {args.messages:,} messages; "
              f"ingest of {args.n} against an empty store, {args.rounds} rounds")
        with tempfile.TemporaryDirectory(prefix="hd-scale-big-") as folder:
            url, drop = _big_database(engine, Path(folder), args.pg, args.keep)
            try:
                started = time.perf_counter()
                counts = bulk_load(url, args.tickets, args.messages)
                loaded = time.perf_counter() - started
                print(f"loaded {counts} in {loaded:.0f}s (load average {_load():.1f})", flush=True)
                explain_lookups(url)
                rates = {"empty": [], "big": []}
                for round_ in range(args.rounds):
                    messages = [raw for _, raw in generate(args.n, args.seed + round_)]
                    with tempfile.TemporaryDirectory(prefix="hd-scale-empty-") as empty_folder:
                        empty_url, empty_drop = workers._database(engine, Path(empty_folder), args.pg)
                        try:
                            line, ok = workers.measure(Path(empty_folder), empty_url, messages, 1, 0)
                        finally:
                            empty_drop()
                    print(f"  empty store: {line}  load {_load():.1f}", flush=True)
                    rates["empty"].append(float(line.split()[0]))
                    failed |= not ok
                    (Path(folder) / "mailboxes").mkdir(exist_ok=True)
                    shutil.rmtree(Path(folder) / "mailboxes")
                    line, ok = workers.measure(Path(folder), url, messages, 1, 0)
                    print(f"  big store:   {line}  load {_load():.1f}", flush=True)
                    rates["big"].append(float(line.split()[0]))
                    failed |= not ok
            finally:
                drop()
        empty, big = max(rates["empty"]), max(rates["big"])
        share = big / empty * 100
        print(f"{engine}: best of {args.rounds}: big store {big:.0f} msg/s, empty {empty:.0f} msg/s: "
              f"{share:.0f} % ({'meets' if share >= 80 else 'BELOW'} the 80 % target)", flush=True)
    return failed


def _big_database(engine: str, folder: Path, pg_url: str, keep: bool):
    """A dedicated database for the big store, and what drops it (unless ``keep``)."""
    if engine == "sqlite":
        path = (Path("scale-big.db").resolve() if keep else folder / "big.db")
        path.unlink(missing_ok=True)
        return f"sqlite:///{path}", lambda: None
    import psycopg
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")

    def drop() -> None:
        from helpdesk.store.schema import db
        if not db.is_closed():
            db.close()
        if not keep:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
    return pg_url.rsplit("/", 1)[0] + "/" + BENCH_DB, drop


def bulk_load(url: str, tickets: int, messages: int) -> dict[str, int]:
    """Fill the store with set-based INSERT ... SELECT over a generated series of numbers.

    The migrations run first (``connect``), so every index exists as in production and is
    maintained while loading. Ticket ``t`` has one participant, one sent acknowledgement
    and the messages ``m`` with ``m % tickets == t - 1``; each message has its raw row and
    its thread reference. Fresh database: the ids are the series' numbers.
    """
    from helpdesk.store.db import connect
    from helpdesk.store.schema import Message, Outbox, Participant, RawMessage, ThreadRef, Ticket, db
    connect(url)
    pg = not url.startswith("sqlite:")
    ts = "TIMESTAMP '2026-01-01 00:00:00'" if pg else "'2026-01-01 00:00:00'"
    false = "false" if pg else "0"
    owner = f"1 + ((g - 1) {'%%' if pg else '%'} {tickets})"   # psycopg: % is its placeholder

    def series(count: int) -> str:
        if pg:
            return f"FROM generate_series(1, {count}) AS s(g)"
        return f"FROM (WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {count}) SELECT g FROM s) AS s"

    def insert(model, columns: dict[str, str], count: int) -> None:
        names = ", ".join(model._meta.fields[c].column_name for c in columns)
        db.execute_sql(f"INSERT INTO {model._meta.table_name} ({names}) "
                       f"SELECT {', '.join(columns.values())} {series(count)}")

    with db.atomic():
        insert(Ticket, {"mailbox": "'support'", "subject": "'Bulk ticket ' || g",
                        "requester": "'c' || g || '@bulk.example'", "requester_name": "''",
                        "status": "'closed'", "priority": "'normal'", "created_at": ts, "updated_at": ts,
                        "kind": "'ticket'", "overdue": false}, tickets)
        insert(Participant, {"ticket": "g", "address": "'c' || g || '@bulk.example'", "name": "''",
                             "role": "'requester'"}, tickets)
        insert(Outbox, {"kind": "'ack'", "ticket": "g", "message_id": "'ack' || g || '@bulk.example'",
                        "envelope_from": "'support@shop.example'", "recipient": "'c' || g || '@bulk.example'",
                        "headers": "''", "subject": "'Re: Bulk ticket'", "text": "'Thanks'",
                        "status": "'sent'", "attempts": "1", "next_attempt_at": ts, "created_at": ts,
                        "sent_at": ts}, tickets)
        insert(RawMessage, {"dedupe_key": "'bulk' || g", "message_id": "'<b' || g || '@bulk.example>'",
                            "mailbox": "'support'", "source": "'file'", "envelope_to": "''",
                            "received_at": ts, "size": "1000", "status": "'done'", "outcome": "'created'",
                            "ticket_id": owner, "processed_at": ts}, messages)
        insert(Message, {"ticket": owner, "raw": "g", "direction": "'in'",
                         "sender": "'c' || " + owner + " || '@bulk.example'", "recipients": "''",
                         "subject": "'Bulk ticket'", "body": "'Hello'", "full_text": "'Hello'",
                         "message_id": "'b' || g || '@bulk.example'", "auto": false, "created_at": ts},
               messages)
        insert(ThreadRef, {"msgid": "'b' || g || '@bulk.example'", "ticket": owner, "ours": false}, messages)
    db.execute_sql("ANALYZE")
    if not pg:   # the load is in the WAL: fold it into the file now, not during the measurement
        db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    counts = {m._meta.table_name: m.select().count() for m in (Ticket, Message, RawMessage, ThreadRef)}
    db.close()
    return counts


def explain_lookups(url: str) -> None:
    """Print the plan of each per-message lookup of the pipeline, as the store runs them."""
    from helpdesk.store import raw
    from helpdesk.store.db import connect
    from helpdesk.store.schema import Outbox, Participant, RawMessage, ThreadRef, Ticket, db
    connect(url)
    pg = not url.startswith("sqlite:")
    lookups = {
        "thread by Message-ID (index.thread_matches)":
            ThreadRef.select(ThreadRef.ticket, ThreadRef.ours)
            .where(ThreadRef.msgid.in_(["b17@bulk.example", "b99@bulk.example"])),
        "raw dedupe key (raw._by_key)":
            RawMessage.select(RawMessage.id, RawMessage.dedupe_key)
            .where(RawMessage.dedupe_key.in_(["bulk17", "bulk99"])),
        "participant by token id (index.participant)":
            Participant.select(Participant.ticket, Participant.address).where(Participant.id == 17),
        "participant of a ticket (index.role_of)":
            Participant.select(Participant.role)
            .where((Participant.ticket == 17) & (Participant.address == "c17@bulk.example")),
        "ticket by token id (index.ticket_status)":
            Ticket.select(Ticket.status).where((Ticket.id == 17) & (Ticket.kind == "ticket")),
        "open tickets of a requester (tickets.open_tickets)":
            Ticket.select(Ticket.id).where((Ticket.requester == "c17@bulk.example") & (Ticket.kind == "ticket")),
        "acks sent to a sender (tickets.sent_since)":
            Outbox.select().where((Outbox.recipient == "c17@bulk.example") & (Outbox.kind == "ack")
                                  & (Outbox.created_at >= "2026-01-01")),
    }
    for label, query in lookups.items():
        sql, params = query.sql()
        cursor = db.execute_sql(("EXPLAIN " if pg else "EXPLAIN QUERY PLAN ") + sql, params)
        plan = [row[0] if pg else row[-1] for row in cursor.fetchall()]
        print(f"  {label}:\n    " + "\n    ".join(plan))
    pick, mark = [0, "2026-12-01 00:00:00", 1, 100], [1, "2026-12-01 00:05:00"]
    cursor = db.execute_sql(("EXPLAIN " if pg else "EXPLAIN QUERY PLAN ") + raw._claim_sql(pg),
                            pick + mark if pg else mark + pick)
    plan = [row[0] if pg else row[-1] for row in cursor.fetchall()]
    print("  claim of pending messages (raw.claim):\n    " + "\n    ".join(plan))
    db.close()


# --------------------------------------------------------------------------- 4. end to end

def part_e2e(args) -> bool:
    """``benchmarks/ingest.py`` on SQLite: ingest then delivery, and delivery while ingesting."""
    import ingest
    failed = False
    for extra in ([], ["--stages"]):
        print(f"\n== end to end, SQLite, N={args.e2e_n} {' '.join(extra) or '(ingest, then delivery)'}, "
              f"load average {_load():.1f}", flush=True)
        failed |= ingest.main(["-n", str(args.e2e_n), "--compare", "0", "--seed", str(args.seed), *extra]) != 0
    return failed


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
