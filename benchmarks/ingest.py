"""Ingest benchmark: ``helpdesk ingest`` on N generated messages, timed, measured, checked.

    python benchmarks/ingest.py [-n 10000] [--compare 1000] [--keep DIR] [--seed 1]
                                [--profile] [--top 30] [--stages]

For each N (``--compare`` first, then ``-n``) a helper process generates the
messages (``benchmarks/mailgen.py``) and writes them as .eml files next to a
standalone config (SQLite, Maildir outgoing, like the tests' config); then a
fresh child process, ``python benchmarks/ingest.py --child FOLDER``,
runs ``helpdesk.cli.main(["--config", ..., "ingest", *files])`` in-process: the
very code of ``helpdesk ingest``, batches, acknowledgements and delivery of
the outbox included. The child reports the wall time of that call and its peak
RSS (``getrusage(RUSAGE_SELF).ru_maxrss``, and ``VmHWM`` as a cross-check), so
each N is measured in a process of its own. Linux carries a parent's peak RSS
into a child's ``ru_maxrss``, so the parent stays small: it generates nothing
and opens no database until every N is measured. Then it checks the results in
the database and in the outgoing Maildir:

* every raw message is ``done``;
* one ticket per thread root (a reply that arrives before its parent opens the
  ticket, and the parent joins it);
* every reply is on the same ticket as the message it answers;
* one acknowledgement per ticket, to the ticket's requester, in the outgoing
  Maildir. The config sets ``ack_rate_limit`` to 1,000,000 so customers who
  write several times still get one acknowledgement per ticket.

Targets: >= 800 messages/s at the largest N, every reply threaded, and peak
RSS at the largest N at most 1.5 times the peak at ``--compare``.

``--profile`` runs the largest N once under cProfile (no comparison run) and
prints the top functions by cumulative and by own time.

``--stages`` delivers as ``helpdesk run`` does: the service's deliver stage runs
in its own thread while the files are ingested, woken after each batch, and
the clock stops when the last mail is durably in the outgoing Maildir.
``--stages process`` delivers in a process of its own instead,
``helpdesk run --only deliver`` polling the outbox every second. The
end-to-end rate (ingest and durable delivery) is the figure; target >= 1,000
msg/s at N = 10,000.
"""

from __future__ import annotations

import argparse
import email.policy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from email.parser import BytesHeaderParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGET_RATE = 800.0          # messages per second at the largest N
TARGET_END_TO_END = 1000.0   # with --stages: ingest and durable delivery, messages per second
TARGET_MEMORY_RATIO = 1.5    # peak RSS(largest N) / peak RSS(--compare)
ACK_RATE_LIMIT = 1_000_000   # so every ticket gets its acknowledgement
CHILD_TIMEOUT = 900          # seconds
STAFF = "alice@shop.example"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10000, help="messages in the main run (default 10000)")
    parser.add_argument("--compare", type=int, default=1000,
                        help="messages in the comparison run, for the memory ratio (0: none)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="profile one run of -n under cProfile")
    parser.add_argument("--top", type=int, default=30, help="rows of profile output (default 30)")
    parser.add_argument("--stages", nargs="?", const="thread", choices=("thread", "process"),
                        help="deliver while ingesting (end to end): in the service's deliver stage, "
                             "a thread of the ingesting process (default), or in a process of its "
                             "own, `helpdesk run --only deliver`")
    parser.add_argument("--child", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(Path(args.child), args.profile, args.stages)
    if args.prepare:
        return prepare(Path(args.prepare), args.n, args.seed)

    sizes = [args.n] if args.profile or not args.compare else sorted({args.compare, args.n})
    if args.keep:
        root = Path(args.keep).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return run(root, sizes, args)
    with tempfile.TemporaryDirectory(prefix="helpdesk-bench-") as tmp:
        return run(Path(tmp), sizes, args)


# --------------------------------------------------------------------------- parent

def run(root: Path, sizes: list[int], args) -> int:
    """Prepare and measure every N in child processes, then check them all.

    The parent stays small until the measurements are done: a child's
    ``ru_maxrss`` starts from its parent's peak (Linux carries it over fork and
    exec), so generating the mail or opening the database in this process
    would inflate the figures of the children started after it.
    """
    measured = {}
    for n in sizes:
        folder = root / f"n{n}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        started = time.perf_counter()
        _run([sys.executable, str(Path(__file__).resolve()), "--prepare", str(folder),
              "-n", str(n), "--seed", str(args.seed)], folder, "prepare")
        info = json.loads((folder / "corpus.json").read_text())
        print(f"N={n}: generated {n} messages ({info['bytes'] / 1e6:.1f} MB, {len(info['parent_of'])} "
              f"replies, {len(info['roots'])} threads) in {time.perf_counter() - started:.1f}s; "
              "ingesting...", flush=True)
        measured[n] = run_child(folder, args.profile, args.stages)
        print(f"N={n}: {measured[n]['seconds']:.1f}s, exit {measured[n]['rc']}; "
              f"helpdesk said: {measured[n]['summary']}", flush=True)
    results = []
    for n in sizes:
        folder = root / f"n{n}"
        info = json.loads((folder / "corpus.json").read_text())
        checks = verify(folder, info) if measured[n]["rc"] == 0 else {}
        results.append((n, measured[n], checks))
        if args.profile:
            print_profile(folder / "profile.pstats", args.top)
    return report(results, args.profile, args.stages)


def prepare(folder: Path, n: int, seed: int) -> int:
    """Child: generate the mail, write it and the config, and what the checks need."""
    import mailgen

    corpus = mailgen.generate_corpus(n, seed)
    mailgen.write_eml(folder / "mail", corpus.messages)
    write_config(folder)
    (folder / "corpus.json").write_text(json.dumps({
        "names": [name for name, _ in corpus.messages], "parent_of": corpus.parent_of,
        "roots": corpus.roots(), "message_id": corpus.message_id,
        "bytes": sum(len(raw) for _, raw in corpus.messages)}))
    return 0


def _run(command: list[str], folder: Path, label: str) -> None:
    with open(folder / f"{label}.out", "wb") as out, open(folder / f"{label}.log", "wb") as log:
        proc = subprocess.run(command, stdout=out, stderr=log, cwd=folder, timeout=CHILD_TIMEOUT,
                              check=False)
    if proc.returncode != 0:
        tail = (folder / f"{label}.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"{label} for {folder.name} failed (exit {proc.returncode}):\n{tail}")


def write_config(folder: Path) -> Path:
    """A complete config, like the tests' ``write_config``, with acknowledgements unthrottled."""
    text = textwrap.dedent(f"""\
        [helpdesk]
        name = "Difmark Support"
        secret_key_file = "var/secret.key"
        data_dir = "var"
        log_level = "INFO"

        [database]
        url = "sqlite:///var/helpdesk.db"

        [[mailboxes]]
        name = "support"
        address = "support@shop.example"
        kind = "tickets"
        source = "maildir:mailboxes/support"

        [[mailboxes]]
        name = "disputes"
        address = "disputes@shop.example"
        kind = "disputes"
        source = "maildir:mailboxes/disputes"

        [smtp_server]
        enabled = false
        listen = "127.0.0.1:2525"

        [outgoing]
        transport = "maildir:mailboxes/outgoing"
        retry_delay = "1m"

        [[staff]]
        address = "{STAFF}"
        name = "Alice"
        role = "agent"

        [[staff]]
        address = "carol@shop.example"
        name = "Carol"
        role = "admin"

        [tickets]
        first_response = "4h"

        [limits]
        ack_rate_limit = {ACK_RATE_LIMIT}

        [intake]
        batch_size = 200
        """)
    path = folder / "config.toml"
    path.write_text(text)
    return path


def run_child(folder: Path, profile: bool, stages: str | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(folder)]
    if profile:
        command.append("--profile")
    if stages:
        command += ["--stages", stages]
    _run(command, folder, "child")
    measured = json.loads((folder / "result.json").read_text())
    lines = (folder / "child.out").read_text(errors="replace").strip().splitlines()
    measured["summary"] = next((line for line in reversed(lines) if line.startswith("ingested:")),
                               "(no summary)")
    return measured


def verify(folder: Path, corpus: dict) -> dict[str, tuple[bool, str]]:
    """Correctness of what the run left behind: (passed, detail) per check."""
    from helpdesk.config.loader import load_config
    from helpdesk.store import db as store_db
    from helpdesk.store import schema
    from helpdesk.store.schema import Outbox, RawMessage, Ticket

    config = load_config(folder / "config.toml")
    store_db.connect(config.database.url)
    try:
        checks: dict[str, tuple[bool, str]] = {}
        names, parent_of, message_id = corpus["names"], corpus["parent_of"], corpus["message_id"]
        n = len(names)
        raws = {(r.message_id or "").strip().strip("<>"): r for r in RawMessage.select(
            RawMessage.message_id, RawMessage.status, RawMessage.outcome, RawMessage.ticket_id,
            RawMessage.reason)}
        statuses = Counter(r.status for r in raws.values())
        ticket_of = {}
        for name in names:
            row = raws.get(message_id[name])
            ticket_of[name] = row.ticket_id if row is not None and row.status == "done" else None
        missing = sum(1 for name in names if message_id[name] not in raws)
        done = statuses.get("done", 0)
        reasons = Counter(r.reason for r in raws.values() if r.status != "done")
        checks["all messages done"] = (
            done == n and missing == 0,
            f"{done}/{n} done, {missing} not stored, statuses {dict(statuses)}"
            + (f", reasons {dict(reasons.most_common(3))}" if reasons else ""))

        tickets = {t.id: t for t in Ticket.select(Ticket.id, Ticket.requester)}
        roots = corpus["roots"]
        checks["tickets == thread roots"] = (
            len(tickets) == len(roots), f"{len(tickets)} tickets, {len(roots)} thread roots")

        split = [(c, p) for c, p in parent_of.items()
                 if ticket_of[c] is None or ticket_of[c] != ticket_of[p]]
        example = ""
        if split:
            c, p = split[0]
            example = f"; e.g. {c} on T-{ticket_of[c]}, its parent {p} on T-{ticket_of[p]}"
        checks["every reply threaded"] = (
            not split, (f"{len(parent_of) - len(split)}/{len(parent_of)} replies on "
                       f"their parent's ticket{example}"))

        acks, staff, other, wrong_to = Counter(), 0, 0, 0
        outgoing = folder / "mailboxes" / "outgoing" / "new"
        parser = BytesHeaderParser(policy=email.policy.default)
        for path in outgoing.iterdir() if outgoing.exists() else ():
            with open(path, "rb") as handle:
                head = parser.parse(handle)
            to, subject = str(head.get("To", "")), str(head.get("Subject", ""))
            match = re.search(r"\[T-(\d+)\]", subject)
            if STAFF in to:
                staff += 1
            elif match and "We received your request" in subject:
                ticket = int(match.group(1))
                acks[ticket] += 1
                requester = tickets[ticket].requester if ticket in tickets else None
                if requester is None or requester not in to.lower():
                    wrong_to += 1
            else:
                other += 1
        without = [t for t in tickets if acks[t] == 0]
        doubled = [t for t in tickets if acks[t] > 1]
        queued = Counter((row.kind, row.status) for row in Outbox.select(Outbox.kind, Outbox.status))
        checks["one ack per ticket (Maildir)"] = (
            not without and not doubled and wrong_to == 0 and sum(acks.values()) == len(tickets),
            (f"{sum(acks.values())} acks for {len(tickets)} tickets ({len(without)} without, "
            f"{len(doubled)} with several, {wrong_to} to someone else), {staff} staff notices, "
            f"{other} other; outbox rows {dict(sorted(queued.items()))}"))
        return checks
    finally:
        schema.db.close()


def print_profile(path: Path, top: int) -> None:
    import pstats

    for key in ("cumulative", "tottime"):
        print(f"\n--- profile, top {top} by {key} ---")
        stats = pstats.Stats(str(path), stream=sys.stdout)
        stats.strip_dirs().sort_stats(key).print_stats(top)


def report(results, profiled: bool, stages: str | None = None) -> int:
    print()
    print(f"{'N':>7} {'ingest s':>9} {'msg/s':>7} {'deliver s':>10} {'mails/s':>8} {'total msg/s':>12}"
          f" {'peak MB':>8} {'worker MB':>10} {'busy':>5}" + ("   (under cProfile)" if profiled else ""))
    for n, m, _ in results:
        total = m["seconds"] + m["delivery_seconds"]
        print(f"{n:>7} {m['seconds']:>9.2f} {n / m['seconds']:>7.0f} {m['delivery_seconds']:>10.2f} "
              f"{m['mails_sent'] / max(m['delivery_seconds'], 1e-9):>8.0f} {n / total:>12.0f}"
              f" {m['maxrss_kb'] / 1024:>8.1f} {m['worker_maxrss_kb'] / 1024:>10.1f}"
              f" {_percent(m.get('machine_busy')):>5}")
    print("ingest: store, parse, route, apply, acknowledgements rendered and committed to the outbox;\n"
          "deliver: the outbox composed and written to the outgoing Maildir (durable: a group's files\n"
          "  written, one syncfs, renamed into new/, new/ fsynced)"
          + (", in the deliver stage while ingesting;\n  deliver s is the time after ingest until the "
             "last mail was in new/, total = both;\n" if stages else ";\n")
          + "peak MB: ru_maxrss of the main process; worker MB: of the parse worker processes together;\n"
          + f"busy: the share of the machine's {os.cpu_count()} cores busy over the timed run (/proc/stat: "
            "every process, the benchmark's own included)")
    verdicts = []
    n, largest, _ = results[-1]
    rate = n / largest["seconds"]
    verdicts.append((f">= {TARGET_RATE:.0f} msg/s at N={n}", rate >= TARGET_RATE, f"{rate:.0f} msg/s"))
    if stages:
        both = n / (largest["seconds"] + largest["delivery_seconds"])
        verdicts.append((f"end to end >= {TARGET_END_TO_END:.0f} msg/s at N={n}", both >= TARGET_END_TO_END,
                         f"{both:.0f} msg/s"))
    threaded = all(checks.get("every reply threaded", (False,))[0] for _, _, checks in results)
    verdicts.append(("every reply threaded", threaded,
                     "; ".join(f"N={k}: {c.get('every reply threaded', (False, 'not checked'))[1]}"
                               for k, _, c in results)))
    if len(results) > 1:
        small_n, small, _ = results[0]
        ratio = ((largest["maxrss_kb"] + largest["worker_maxrss_kb"])
                 / (small["maxrss_kb"] + small["worker_maxrss_kb"]))
        print(f"\npeak RSS ratio (main + worker) N={n} / N={small_n}: {ratio:.2f}")
        verdicts.append((f"peak memory ratio <= {TARGET_MEMORY_RATIO}", ratio <= TARGET_MEMORY_RATIO,
                         f"{ratio:.2f}"))
    print(f"\nchecks (ack_rate_limit = {ACK_RATE_LIMIT:,} in the benchmark config, "
          "so every ticket is due one acknowledgement):")
    for k, _, checks in results:
        for name, (passed, detail) in checks.items():
            print(f"  N={k:<6} {'PASS' if passed else 'FAIL'}  {name}: {detail}")
    print("\ntargets:")
    for name, passed, detail in verdicts:
        print(f"  {'PASS' if passed else 'FAIL'}  {name} ({detail})")
    everything = all(p for _, p, _ in verdicts) and all(
        p for _, _, checks in results for p, _ in checks.values())
    print(f"\noverall: {'PASS' if everything else 'FAIL'}")
    return 0 if everything else 1


# --------------------------------------------------------------------------- child

def child(folder: Path, profile: bool, stages: str | None = None) -> int:
    """Run what ``helpdesk ingest`` runs, in this fresh process, timing its two phases.

    ``cmd_ingest`` is ``ingest_files`` (store, parse, route, apply: tickets and
    their acknowledgements rendered and committed to the outbox) followed by
    ``app.deliver()`` (composing each queued mail and writing it to the outgoing
    Maildir with fsync). The same two calls are timed here one after the other;
    building the app and starting the parse worker (about 0.4 s, once per
    process) happen before the clock starts, like the imports.
    """
    import resource

    from helpdesk import cli
    from helpdesk.runtime import logs
    from helpdesk.runtime.app import build
    from helpdesk.runtime.ingest import ingest_files

    os.chdir(folder)
    files = sorted(str(p) for p in (folder / "mail").iterdir() if p.suffix == ".eml")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    profiler = None
    if profile:
        import cProfile
        profiler = cProfile.Profile()
    app = build(folder / "config.toml")
    logs.configure(app.config.helpdesk.log_level, app.config.helpdesk.log_format)
    if app.config.intake.parse_workers > 0:
        app.pipeline.parser.start()   # one-time start-up, like the imports: not in the rate
    if stages:
        return _child_stages(folder, app, files, before, stages)
    cpu = _machine_cpu()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    report = ingest_files(app, files)
    ingested = time.perf_counter()
    delivery = app.deliver()
    if profiler:
        profiler.disable()
    finished = time.perf_counter()
    workers = app.pipeline.parser.worker_peak_kb()   # forked from a forkserver: not our child
    app.close()
    print(cli._summary(report.tally, report.duplicates, len(report.unreadable)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KB on Linux
    hwm = _proc_status("VmHWM")   # the same peak, of this process image only
    sys.stdout.flush()
    if profiler:
        profiler.dump_stats(str(folder / "profile.pstats"))
    (folder / "result.json").write_text(json.dumps(
        {"seconds": ingested - started, "delivery_seconds": finished - ingested,
         "mails_sent": delivery.sent, "rc": 1 if report.unreadable else 0, "maxrss_kb": peak,
         "worker_maxrss_kb": workers, "rss_before_kb": before, "vmhwm_kb": hwm, "files": len(files),
         "machine_busy": _busy_share(cpu, _machine_cpu())}))
    return 0


def _child_stages(folder: Path, app, files: list[str], before: int, mode: str) -> int:
    """Ingest in this thread while another delivers: the service's deliver stage in a
    thread of this process, woken after every batch as the process stage wakes it
    (``thread``), or ``helpdesk run --only deliver`` in a process of its own polling the
    outbox every second, as a deployment may split them (``process``). Stop when the
    outbox is empty."""
    import resource

    from helpdesk import cli
    from helpdesk.runtime.ingest import ingest_files
    from helpdesk.store import outbox as outbox_rows

    deliverer = _ThreadDeliverer(app) if mode == "thread" else _ProcessDeliverer(folder / "config.toml")
    cpu = _machine_cpu()
    started = time.perf_counter()
    report = ingest_files(app, files, on_progress=lambda done: deliverer.wake())
    ingested = time.perf_counter()
    while outbox_rows.count(("queued",)):
        deliverer.wake()
        time.sleep(0.005)
    finished = time.perf_counter()
    busy = _busy_share(cpu, _machine_cpu())
    deliverer.stop()
    sent = outbox_rows.count(("sent",))
    workers = app.pipeline.parser.worker_peak_kb()
    app.close()
    print(cli._summary(report.tally, report.duplicates, len(report.unreadable)))
    sys.stdout.flush()
    (folder / "result.json").write_text(json.dumps(
        {"seconds": ingested - started, "delivery_seconds": finished - ingested, "mails_sent": sent,
         "rc": 1 if report.unreadable else 0,
         "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
         "worker_maxrss_kb": workers, "rss_before_kb": before, "vmhwm_kb": _proc_status("VmHWM"),
         "files": len(files), "machine_busy": busy}))
    return 0


class _ThreadDeliverer:
    def __init__(self, app) -> None:
        from helpdesk.runtime import service
        self.stages = service.build_stages(app, frozenset({"deliver"}))
        self.wake = self.stages.waker("deliver")
        self.stages.start()

    def stop(self) -> None:
        self.stages.stop()
        for stage in self.stages.stages.values():
            stage.join(10)


class _ProcessDeliverer:
    def __init__(self, config: Path) -> None:
        config.write_text(config.read_text().replace('retry_delay = "1m"',
                                                     'retry_delay = "1m"\npoll_interval = "1s"'))
        self.proc = subprocess.Popen([sys.executable, "-m", "helpdesk", "--config", str(config), "run",
                                      "--only", "deliver"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        for line in self.proc.stderr:
            if b"helpdesk running" in line:
                break
        else:
            raise SystemExit("helpdesk run --only deliver did not start")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()   # drain its log

    def wake(self) -> None:
        pass              # another process: it polls

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def _machine_cpu() -> tuple[float, float] | None:
    """(busy, all) CPU time of the whole machine so far, every core, from /proc/stat: the
    parse workers and the deliverer count too, which no rusage of this process shows."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]                     # idle and iowait
    return float(sum(ticks) - idle), float(sum(ticks))


def _busy_share(before, after) -> float | None:
    """The share of every core's time that was busy between the two readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def _proc_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


if __name__ == "__main__":
    raise SystemExit(main())
