"""IMAP benchmark: one ``helpdesk run --once`` pass over N messages in a real Dovecot, and IDLE latency.

    python benchmarks/imap.py [-n 2000] [--repeat 3] [--probes 20] [--seed 1] [--no-compare] [--keep DIR]

1. Throughput. The ingest benchmark's mail mix (``benchmarks/mailgen.py``) is
   appended once to the INBOX of a private Dovecot (``tests/dovecot.py``: its
   own process and config on 127.0.0.1, plain IMAP on loopback) with IMAP
   APPEND, CRLF line endings as an MTA delivers them; appending is not timed.
   A fresh child process then runs ``service.run(app, once=True)`` -- the code
   of ``helpdesk run --once``: fetch by UID, store, flag and move every message
   (in a thread, while the main thread processes what is stored), process them
   into tickets, deliver the acknowledgements to the outgoing Maildir -- on a
   fresh database. Start-up (imports, database, parse worker) is not timed, as
   in ``benchmarks/ingest.py``. The ingest time is until the last message is
   processed; delivery is reported apart. Afterwards the ingest benchmark's
   checks run (every message done, one ticket per thread, every reply
   threaded, one acknowledgement per ticket), plus: the INBOX is empty and the
   processed folder holds N. The mail is then moved back for the next run.

2. The Maildir ingest rate for comparison: ``benchmarks/ingest.py``'s own child
   on the same files, alternated with the IMAP runs (``--repeat`` of each), as
   this machine's speed varies from minute to minute; the medians are
   compared. ``--no-compare`` skips it.

3. IDLE latency. ``helpdesk run`` is started as a process (poll interval one
   hour, so only IDLE can bring mail in); ``--probes`` messages are appended
   one at a time, and for each the time from just before the APPEND until its
   raw message carries a ticket id in the database is measured (polled every
   2 ms).

Targets: the IMAP ingest rate (fetch, store, move, process) at least 70 % of
the Maildir ingest rate; IDLE latency median under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import ingest

TARGET_SHARE = 0.70        # of the Maildir ingest rate
TARGET_LATENCY = 1.0       # seconds, median
USER = "support"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="messages in the --once pass (default 2000)")
    parser.add_argument("--probes", type=int, default=20, help="messages for the IDLE latency (default 20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1,
                        help="IMAP and Maildir runs, alternated; medians are compared (default 1)")
    parser.add_argument("--no-compare", action="store_true", help="skip the Maildir ingest run")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temp folder)")
    parser.add_argument("--child", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(Path(args.child))
    if args.keep:
        root = Path(args.keep).resolve()
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        return run(root, args)
    with tempfile.TemporaryDirectory(prefix="helpdesk-imap-bench-") as tmp:
        return run(Path(tmp), args)


# --------------------------------------------------------------------------- parent

def run(root: Path, args) -> int:
    from tests.dovecot import Dovecot

    server = Dovecot("bench").start()
    try:
        corpus_dir = root / "corpus"
        corpus = prepare(corpus_dir, args.n, args.seed, server, USER)
        started = time.perf_counter()
        raws = crlf_mail(corpus_dir, corpus["names"])
        for first in range(0, len(raws), 100):
            server.append(USER, *raws[first:first + 100])
        print(f"N={args.n}: appended {args.n} messages ({sum(map(len, raws)) / 1e6:.1f} MB) to Dovecot "
              f"in {time.perf_counter() - started:.1f}s", flush=True)
        passes, maildir = [], []
        for number in range(args.repeat):
            passes.append(measure_pass(root / f"imap-{number}", corpus_dir, corpus, server))
            if not args.no_compare:
                maildir.append(measure_maildir(root / f"maildir-{number}", corpus_dir, args.n))
        latencies = measure_idle(root / "idle", server, args.probes, args.seed + 1)
    finally:
        server.close()
    return report(args.n, passes, maildir, latencies)


def prepare(folder: Path, n: int, seed: int, server, user: str, poll: str = "60s") -> dict:
    """The ingest benchmark's corpus and config, with the support mailbox read over IMAP."""
    folder.mkdir(parents=True)
    ingest._run([sys.executable, str(HERE / "ingest.py"), "--prepare", str(folder), "-n", str(n),
                 "--seed", str(seed)], folder, "prepare")
    (folder / "imap.pw").write_text("secret\n")
    config = folder / "config.toml"
    config.write_text(config.read_text().replace(
        'source = "maildir:mailboxes/support"\n',
        f'source = "{server.source(user)}"\npassword_file = "imap.pw"\nstarttls = false\n'
        f'poll_interval = "{poll}"\n'))
    return json.loads((folder / "corpus.json").read_text())


def crlf_mail(folder: Path, names: list[str]) -> list[bytes]:
    return [re.sub(rb"\r?\n", b"\r\n", (folder / "mail" / name).read_bytes()) for name in names]


def measure_pass(folder: Path, corpus_dir: Path, corpus: dict, server) -> dict:
    """One --once pass on a fresh database; afterwards the mail goes back to the INBOX."""
    n = len(corpus["names"])
    folder.mkdir()
    for name in ("config.toml", "imap.pw"):
        shutil.copy(corpus_dir / name, folder / name)
    print(f"N={n}: one 'run --once' pass over IMAP...", flush=True)
    ingest._run([sys.executable, str(Path(__file__).resolve()), "--child", str(folder)], folder, "child")
    measured = json.loads((folder / "result.json").read_text())
    checks = ingest.verify(folder, corpus)
    left, moved = len(server.messages(USER)), len(server.messages(USER, "Processed"))
    checks["all moved to Processed"] = (left == 0 and moved == n, f"{left} left in INBOX, {moved} in Processed")
    measured["checks"] = checks
    with server.client(USER) as client:   # ready for the next pass
        client.select_folder("Processed")
        client.move("1:*", "INBOX")
    return measured


def measure_maildir(folder: Path, corpus_dir: Path, n: int) -> dict:
    """``benchmarks/ingest.py``'s own child on the same files, now, on this machine."""
    print(f"N={n}: the Maildir ingest benchmark's child on the same corpus...", flush=True)
    shutil.copytree(corpus_dir / "mail", folder / "mail")
    ingest.write_config(folder)
    return ingest.run_child(folder, False)


def measure_idle(folder: Path, server, probes: int, seed: int) -> list[float]:
    """Seconds from APPEND to ticket for each probe, with ``helpdesk run`` idling."""
    user = "idle"
    corpus = prepare(folder, probes, seed, server, user, poll="1h")
    raws = crlf_mail(folder, corpus["names"])
    ids = [corpus["message_id"][name] for name in corpus["names"]]
    print(f"IDLE: 'helpdesk run' and {probes} messages, one at a time...", flush=True)
    with open(folder / "run.log", "wb") as log:
        service = subprocess.Popen([sys.executable, "-m", "helpdesk", "--config", str(folder / "config.toml"),
                                    "run"], cwd=folder, stdout=log, stderr=log)
    try:
        database = folder / "var" / "helpdesk.db"
        _wait(lambda: database.exists() and b"helpdesk running" in (folder / "run.log").read_bytes(), 30)
        time.sleep(1.0)   # the first pass is done and the watcher is in IDLE
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            return [_probe(server, user, raw, message_id, db) for raw, message_id in zip(raws, ids)]
    finally:
        service.terminate()
        service.wait(30)


def _probe(server, user: str, raw: bytes, message_id: str, db: sqlite3.Connection) -> float:
    time.sleep(0.3)   # back in IDLE after the previous message
    started = time.perf_counter()
    server.append(user, raw)
    query = "SELECT ticket_id FROM raw_message WHERE message_id = ?"
    bracketed = f"<{message_id.strip('<>')}>"
    while True:
        row = db.execute(query, (bracketed,)).fetchone()
        if row is not None and row[0] is not None:
            return time.perf_counter() - started
        if time.perf_counter() - started > 30:
            raise SystemExit(f"IDLE probe {message_id} was no ticket after 30 s")
        time.sleep(0.002)


def _wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("helpdesk run did not start")
        time.sleep(0.05)


def report(n: int, passes: list[dict], maildir: list[dict], latencies: list[float]) -> int:
    print()
    for number, measured in enumerate(passes, 1):
        phases = measured["phases"]
        print(f"IMAP pass {number}: {measured['total']:.2f}s; all fetched, stored and moved after "
              f"{phases['imap']:.2f}s, all processed after {phases['ingest']:.2f}s, delivery "
              f"{phases['deliver']:.2f}s -> ingest {n / phases['ingest']:.0f} msg/s, whole pass "
              f"{n / measured['total']:.0f} msg/s; peak RSS {measured['maxrss_kb'] / 1024:.0f} MB")
    for number, measured in enumerate(maildir, 1):
        print(f"Maildir ingest {number}: {measured['seconds']:.2f}s -> {n / measured['seconds']:.0f} msg/s")
    rate = statistics.median(n / m["phases"]["ingest"] for m in passes)
    print(f"\nIMAP ingest (fetch, store, move, process), median: {rate:.0f} msg/s")
    verdicts = []
    if maildir:
        maildir_rate = statistics.median(n / m["seconds"] for m in maildir)
        share = rate / maildir_rate
        print(f"Maildir ingest (benchmarks/ingest.py child, same files), median: {maildir_rate:.0f} msg/s"
              f" -> IMAP is {share:.0%} of it")
        verdicts.append((f"IMAP ingest >= {TARGET_SHARE:.0%} of Maildir ingest", share >= TARGET_SHARE,
                         f"{share:.0%}"))
    median, worst = statistics.median(latencies), max(latencies)
    print(f"IDLE latency, append -> ticket, {len(latencies)} messages: median {median * 1000:.0f} ms, "
          f"max {worst * 1000:.0f} ms, min {min(latencies) * 1000:.0f} ms")
    verdicts.append((f"IDLE latency median < {TARGET_LATENCY:.0f} s", median < TARGET_LATENCY,
                     f"{median * 1000:.0f} ms"))
    print("\nchecks:")
    checks = [(number, name, result) for number, m in enumerate(passes, 1) for name, result in m["checks"].items()]
    for number, name, (passed, detail) in checks:
        print(f"  pass {number} {'PASS' if passed else 'FAIL'}  {name}: {detail}")
    print("\ntargets:")
    for name, passed, detail in verdicts:
        print(f"  {'PASS' if passed else 'FAIL'}  {name} ({detail})")
    everything = all(p for _, p, _ in verdicts) and all(result[0] for _, _, result in checks)
    print(f"\noverall: {'PASS' if everything else 'FAIL'}")
    return 0 if everything else 1


# --------------------------------------------------------------------------- child

def child(folder: Path) -> int:
    """``helpdesk run --once`` in this fresh process, its phases timed."""
    from helpdesk import cli
    from helpdesk.runtime import service
    from helpdesk.runtime.app import build

    os.chdir(folder)
    app = build(folder / "config.toml")
    cli._logging(app.config.helpdesk.log_level)
    if app.config.intake.parse_workers > 0:
        app.pipeline.parser.start()   # one-time start-up, like the imports: not in the rate
    marks: dict[str, float] = {}
    deliver_seconds = [0.0]

    def ends(name, function):
        """Note when the last call of ``function`` ended (``imap``, ``process``)."""
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            finally:
                marks[name] = time.perf_counter()
        return wrapper

    def timed(function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                deliver_seconds[0] += time.perf_counter() - started
        return wrapper

    service.poll_imap = ends("imap", service.poll_imap)
    app.process = ends("process", app.process)
    app.deliver = timed(app.deliver)
    started = time.perf_counter()
    service.run(app, once=True)
    total = time.perf_counter() - started
    app.close()
    phases = {"imap": marks["imap"] - started, "ingest": marks["process"] - started,
              "deliver": deliver_seconds[0]}
    (folder / "result.json").write_text(json.dumps({
        "total": total, "phases": phases,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
