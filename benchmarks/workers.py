"""Workers benchmark: 1 and 2 worker processes sharing one backlog, on SQLite and PostgreSQL.

    python benchmarks/workers.py [-n 2000] [--workers 1,2] [--engines sqlite,postgresql]
                                 [--parse-workers 0] [--pg URL]

For each engine and each worker count, a fresh database gets ``-n`` generated
messages (``benchmarks/mailgen.py``) stored as pending; then that many child
processes (``--child``) build the app, say they are ready, and on the parent's
word each runs the pipeline (``App.process``: claim a batch, parse, route,
apply, until nothing is left to claim). The parent times from its word to the
last child's answer and prints messages per second, what each worker did, and
checks that every message is done exactly once: no message is pending, and no
worker rolled back a message another one applied ("skipped"), which is what
the claims are for. Delivery is not part of it (``benchmarks/ingest.py``).

Short runs: this machine has two cores shared with other work, so the figures
say whether a second worker adds anything, not what a server would do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--parse-workers", type=int, default=0)
    parser.add_argument("--pg", default=PG_URL)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(Path(args.child))
    from mailgen import generate
    messages = [raw for _, raw in generate(args.n, args.seed)]
    failed = False
    print(f"{'engine':<11} {'workers':>7} {'msg/s':>8} {'seconds':>8}  per worker (processed/skipped)")
    for engine in args.engines.split(","):
        for count in [int(n) for n in args.workers.split(",")]:
            with tempfile.TemporaryDirectory(prefix="hd-workers-") as folder:
                url, drop = _database(engine, Path(folder), args.pg)
                try:
                    line, ok = measure(Path(folder), url, messages, count, args.parse_workers)
                finally:
                    drop()
            print(f"{engine:<11} {count:>7} {line}", flush=True)
            failed |= not ok
    return 1 if failed else 0


def measure(folder: Path, url: str, messages: list[bytes], count: int, parse_workers: int) -> tuple[str, bool]:
    config = write_config(folder, url, parse_workers)
    _store(config, messages)
    children = [subprocess.Popen([sys.executable, __file__, "--child", str(config)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(count)]
    for proc in children:
        assert proc.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for proc in children:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(proc.stdout.readline()) for proc in children]
    elapsed = time.perf_counter() - started
    for proc in children:
        proc.wait(60)
    pending = _pending(config)
    skipped = sum(r["skipped"] for r in results)
    done = sum(r["processed"] for r in results)
    ok = pending == 0 and skipped == 0 and done == len(messages)
    each = ", ".join(f"{r['processed']}/{r['skipped']}" for r in results)
    verdict = "ok" if ok else f"FAILED: {pending} pending, {skipped} skipped, {done} processed"
    return f"{len(messages) / elapsed:>8.0f} {elapsed:>8.2f}  {each}  {verdict}", ok


def child(config: Path) -> int:
    """One worker: build the app, wait for the word, process until nothing is left."""
    from helpdesk.runtime import app as app_module
    app = app_module.build(config)
    print("ready", flush=True)
    sys.stdin.readline()
    tally = app.process()
    app.close()
    skipped = tally.counts["skipped"]
    print(json.dumps({"processed": sum(tally.counts.values()) - skipped, "skipped": skipped}), flush=True)
    return 0


def _store(config: Path, messages: list[bytes]) -> None:
    from helpdesk.intake.spool import Incoming
    from helpdesk.runtime import app as app_module
    from helpdesk.store.schema import db
    app = app_module.build(config)
    for start in range(0, len(messages), 500):
        app.store([Incoming(raw, "support", "file") for raw in messages[start:start + 500]])
    app.close()
    db.close()


def _pending(config: Path) -> int:
    from helpdesk.config.loader import load_config
    from helpdesk.store.db import connect
    from helpdesk.store.schema import RawMessage, db
    connect(load_config(config).database.url)
    try:
        return RawMessage.select().where(RawMessage.status == "pending").count()
    finally:
        db.close()


def _database(engine: str, folder: Path, pg_url: str):
    """The URL of a fresh database, and what drops it afterwards."""
    if engine == "sqlite":
        return f"sqlite:///{folder}/helpdesk.db", lambda: None
    import psycopg
    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return f"{pg_url}?options=-csearch_path%3D{schema}", drop


def write_config(folder: Path, url: str, parse_workers: int) -> Path:
    (folder / "mailboxes").mkdir()
    path = folder / "config.toml"
    path.write_text(f"""\
[helpdesk]
name = "Difmark Support"
secret_key_file = "var/secret.key"
data_dir = "var"
log_level = "WARNING"

[database]
url = "{url}"

[[mailboxes]]
name = "support"
address = "support@shop.example"
kind = "tickets"
source = "maildir:mailboxes/support"

[smtp_server]
enabled = false

[outgoing]
transport = "maildir:mailboxes/outgoing"

[[staff]]
address = "alice@shop.example"
name = "Alice"
role = "agent"

[limits]
ack_rate_limit = 1000000

[intake]
batch_size = 100
parse_workers = {parse_workers}
""")
    return path


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
