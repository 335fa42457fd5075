"""Hostile mail costs one message, not the service: time and memory limits for the parse
workers, the guilty message quarantined with the reason, the rest going on, no orphans."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpdesk.clock import Clock
from helpdesk.mail.parse import parse
from helpdesk.pipeline.parse_stage import MIN_FOR_WORKER, ParseStage, Prepared
from helpdesk.pipeline.workers import ParseLimits
from helpdesk.store.schema import RawMessage, Ticket
from tests.conftest import START, Desk, mail, write_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS, prctl: Linux")


def big_html(size: int = 8 << 20) -> bytes:
    """Legitimate but slow to parse (about 2.5 s here): stands for any runaway parse."""
    para = "<p>" + "some text of a long message " * 3 + "</p>\n"
    return ("From: Mallory <mallory@example.com>\nTo: support@shop.example\nSubject: heavy\n"
            "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n"
            + para * (size // len(para))).encode()


@pytest.fixture
def limited(tmp_path, request):
    made = Desk(tmp_path, write_config(tmp_path, limits=request.param), Clock(START))
    yield made
    made.app.close()


def statuses() -> dict[str, tuple[str, str | None]]:
    return {row.raw[:300].decode().split("Subject: ")[1].split("\n")[0]: (row.status, row.reason)
            for row in RawMessage.select()}


@pytest.mark.parametrize("limited", ['parse_timeout = "1s"'], indirect=True)
def test_a_message_over_the_time_limit_is_quarantined_and_the_next_one_goes_on(limited):
    size, whole = 8 << 20, 0.0
    while whole < 3:             # three times the limit, so the kill's own cost stays below it
        size *= 2 if whole else 1
        started = time.monotonic()
        parse(big_html(size))                     # the whole parse, on this machine now
        whole = time.monotonic() - started
    started = time.monotonic()
    limited.ingest(big_html(size), mail(subject="normal"))
    assert time.monotonic() - started < whole     # killed after 1 s, not parsed to the end
    found = statuses()
    assert found["heavy"] == ("quarantined", "parse failed: took longer than the 1 s limit per message")
    assert found["normal"][0] == "done"
    assert [t.subject for t in Ticket.select()] == ["normal"]


@pytest.mark.parametrize("limited", ['parse_memory = "64MB"'], indirect=True)
def test_a_message_over_the_memory_limit_is_quarantined_and_the_next_one_goes_on(limited):
    limited.ingest(big_html(), mail(subject="normal"))
    found = statuses()
    assert found["heavy"][0] == "quarantined"
    assert "64 MB memory limit" in found["heavy"][1]
    assert found["normal"][0] == "done"
    assert [t.subject for t in Ticket.select()] == ["normal"]


def test_a_share_of_a_batch_over_the_time_limit_costs_only_its_guilty_message(tmp_path):
    """Here the heavy message goes to the pool with the others (nothing is "large");
    its share runs over, the workers are killed and its messages parsed again alone."""
    from helpdesk.store.attachments import AttachmentStore
    store = AttachmentStore(tmp_path / "files", 1 << 20, 1 << 20)
    stage = ParseStage(2, 30 << 20, store, ParseLimits(timeout=1, alone_above=100 << 20))
    jobs = [(mail(subject=f"m{i}"), ()) for i in range(MIN_FOR_WORKER - 1)] + [(big_html(), ())]
    try:
        parsed = stage.submit(jobs)()
        assert parsed[-1] == "parse failed: took longer than the 1 s limit per message"
        assert [p.mail.subject for p in parsed[:-1]] == [f"m{i}" for i in range(MIN_FOR_WORKER - 1)]
        assert all(isinstance(p, Prepared) for p in parsed[:-1])
        again = stage.submit(jobs[:MIN_FOR_WORKER - 1] * 2)()          # the pool is back
        assert len(again) == 2 * (MIN_FOR_WORKER - 1) and stage._pool is not None
    finally:
        stage.close()


ORPHAN_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from helpdesk.pipeline.parse_stage import ParseStage
    from helpdesk.store.attachments import AttachmentStore
    if __name__ == "__main__":
        stage = ParseStage(2, 1 << 20, AttachmentStore(Path(sys.argv[1]), 1 << 20, 1 << 20))
        pool = stage.start()
        [f.result() for f in [pool.submit(int) for _ in range(8)]]
        print("ready", flush=True)
        time.sleep(60)
""")


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (a dead orphan waiting for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_of_the_service_leaves_no_parse_process_behind(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(ORPHAN_SCRIPT)
    service = subprocess.Popen([sys.executable, str(script), str(tmp_path / "files")],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert service.stdout.readline().strip() == "ready"
        children = descendants(service.pid)
        assert len(children) >= 3       # forkserver, two workers (and the resource tracker)
    finally:
        os.kill(service.pid, signal.SIGKILL)
        service.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(running(pid) for pid in children):
        time.sleep(0.05)
    left = [pid for pid in children if running(pid)]
    for pid in left:                    # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    assert left == []


def test_a_pool_whose_workers_died_since_is_started_again_not_given_up(tmp_path):
    """The forkserver goes with the thread that started it: the next batch gets new workers."""
    from helpdesk.store.attachments import AttachmentStore
    stage = ParseStage(2, 1 << 20, AttachmentStore(tmp_path / "files", 1 << 20, 1 << 20))
    jobs = [(mail(subject=f"m{i}"), ()) for i in range(MIN_FOR_WORKER)]
    try:
        stage.submit(jobs)()
        for process in list(stage._pool._processes.values()):
            with contextlib.suppress(ProcessLookupError):    # the executor, seeing the first die,
                os.kill(process.pid, signal.SIGKILL)         # may have ended and reaped the other
            process.join()
        deadline = time.monotonic() + 5
        while not stage._pool._broken and time.monotonic() < deadline:   # as the executor sees it
            time.sleep(0.01)
        parsed = stage.submit(jobs)()
        assert [p.mail.subject for p in parsed] == [f"m{i}" for i in range(MIN_FOR_WORKER)]
        assert stage.workers == 2 and stage._pool is not None
    finally:
        stage.close()


def test_new_limits_on_sighup_replace_workers_started_under_another_memory_limit(tmp_path):
    from helpdesk.store.attachments import AttachmentStore
    stage = ParseStage(2, 1 << 20, AttachmentStore(tmp_path / "files", 1 << 20, 1 << 20))
    try:
        first = stage.start()
        stage.reconfigure(ParseLimits(timeout=5))               # same memory: same workers
        assert stage.start() is first and stage.limits.timeout == 5
        stage.reconfigure(ParseLimits(memory=512 << 20))
        assert stage.start() is not first
    finally:
        stage.close()
