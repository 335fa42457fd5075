"""Pipe mode (``helpdesk ingest -``) as an MTA runs it: a separate process, one mail on stdin,
and an exit status the MTA acts on. Every temporary failure is made for real: a lock held
by another connection, a closed port, a full filesystem, a config that does not load."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import PG_URL, mail, write_config

EX_DATAERR, EX_NOINPUT, EX_TEMPFAIL = 65, 66, 75


def pipe(config, stdin: bytes, *args: str, preexec=None):
    return subprocess.run([sys.executable, "-m", "helpdesk", "--config", str(config), "ingest", *args, "-"],
                          input=stdin, capture_output=True, timeout=60, check=False, preexec_fn=preexec)


def helpdesk(config, *args: str):
    return subprocess.run([sys.executable, "-m", "helpdesk", "--config", str(config), *args],
                          capture_output=True, timeout=60, check=False)


def tickets(config) -> list[dict]:
    result = helpdesk(config, "tickets", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def raw_rows(config) -> list[tuple[str, str]]:
    """(source, status) of every stored raw message, read by the store's own connection."""
    from helpdesk.config.loader import load_config
    from helpdesk.store.db import connect
    from helpdesk.store.schema import RawMessage, db
    connect(load_config(config).database.url)
    try:
        return [(r.source, r.status) for r in RawMessage.select().order_by(RawMessage.id)]
    finally:
        db.close()


def one_line(result) -> str:
    err = result.stderr.decode().strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def config(tmp_path):
    """On SQLite: for what does not depend on the engine."""
    return _config(tmp_path, None)


@pytest.fixture
def any_config(tmp_path, db_url):
    """On SQLite and PostgreSQL."""
    return _config(tmp_path, db_url)


def _config(tmp_path, db_url):
    path = write_config(tmp_path, db_url=db_url, extra='\n[intake]\npipe_wait = "1s"\n')
    (tmp_path / "var").mkdir()
    return path


def test_a_stored_mail_exits_0_and_is_a_ticket_at_once_its_mail_left_to_the_service(tmp_path, any_config):
    config = any_config
    result = pipe(config, mail(subject="Key does not work"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("ingested: 1 new tickets")
    [ticket] = tickets(config)
    assert (ticket["id"], ticket["subject"], ticket["requester"]) == ("T-1", "Key does not work",
                                                                      "bob@example.com")
    assert raw_rows(config) == [("pipe", "done")]
    outgoing = tmp_path / "mailboxes" / "outgoing" / "new"
    assert not outgoing.exists() or not os.listdir(outgoing)      # queued, not sent by the pipe
    assert helpdesk(config, "run", "--once").returncode == 0
    assert len(os.listdir(outgoing)) == 2                          # the ack and the staff notice


def test_the_same_mail_again_is_0_and_one_ticket(any_config):
    config = any_config
    raw = mail(message_id="once")
    assert pipe(config, raw).returncode == 0
    again = pipe(config, raw)
    assert again.returncode == 0
    assert "1 duplicates skipped" in again.stdout.decode()
    assert len(tickets(config)) == 1


def test_a_mail_that_cannot_be_handled_is_quarantined_and_still_0(any_config):
    config = any_config
    result = pipe(config, b"\x00\xff garbage without any header\n\nreally\n")
    assert result.returncode == 0, result.stderr
    assert "1 quarantined" in result.stdout.decode()
    assert raw_rows(config) == [("pipe", "quarantined")]


def test_mailbox_is_taken_from_the_command_line(config):
    result = pipe(config, mail(to="someone@elsewhere.example"), "--mailbox", "disputes")
    assert result.returncode == 0, result.stderr
    assert "1 dispute mails" in result.stdout.decode()


@pytest.mark.parametrize("stdin", [b"", b"\n\r\n  \n"], ids=["empty", "blank"])
def test_an_empty_stdin_is_ex_noinput_and_stores_nothing(config, stdin):
    result = pipe(config, stdin)
    assert result.returncode == EX_NOINPUT
    assert one_line(result) == "helpdesk: no mail on standard input (it is empty); nothing stored"
    assert raw_rows(config) == []


def test_a_mail_over_max_message_size_is_ex_dataerr_and_stores_nothing(tmp_path):
    path = write_config(tmp_path, limits='max_message_size = "8KB"')
    (tmp_path / "var").mkdir()
    raw = mail(body="x" * 20_000)
    result = pipe(path, raw)
    assert result.returncode == EX_DATAERR
    assert one_line(result) == (f"helpdesk: the mail ({len(raw)} bytes) is larger than [limits] "
                                "max_message_size (8192 bytes); not stored")
    assert raw_rows(path) == []
    assert pipe(path, mail()).returncode == 0     # a mail within the limit passes


def test_a_config_that_does_not_load_is_ex_tempfail(tmp_path, config):
    good = config.read_text()
    config.write_text(good.replace('first_response = "4h"', 'first_response = "2 days"'))
    result = pipe(config, mail())
    assert result.returncode == EX_TEMPFAIL
    assert one_line(result).startswith(f"helpdesk: {config}: [tickets] first_response:")
    config.write_text(good)                        # fixed: the MTA's retry goes through
    assert pipe(config, mail()).returncode == 0


def test_a_missing_config_is_ex_tempfail(tmp_path):
    result = pipe(tmp_path / "nowhere.toml", mail())
    assert result.returncode == EX_TEMPFAIL
    assert "nowhere.toml: cannot read" in one_line(result)


def test_an_unknown_mailbox_is_ex_tempfail(config):
    result = pipe(config, mail(), "--mailbox", "sales")
    assert result.returncode == EX_TEMPFAIL
    assert one_line(result) == "helpdesk: no mailbox named 'sales' (configured: support, disputes)"


def test_a_database_locked_past_pipe_wait_is_ex_tempfail_then_the_retry_stores(any_config, db_url):
    config = any_config
    assert pipe(config, mail(message_id="first")).returncode == 0     # the schema exists
    with _write_lock(config, db_url):
        started = time.monotonic()
        result = pipe(config, mail(message_id="second"))
        waited = time.monotonic() - started
    assert result.returncode == EX_TEMPFAIL, result.stderr
    err = one_line(result)
    assert err.startswith("helpdesk: the mail was not stored, try again later: ")
    assert ("database is locked" if db_url is None else "lock timeout") in err
    assert 1.0 <= waited < 20, waited             # waited pipe_wait (1s), not the service's 30s
    assert [s for _, s in raw_rows(config)] == ["done"]
    assert pipe(config, mail(message_id="second")).returncode == 0
    assert len(tickets(config)) == 2


class _write_lock:
    """Another connection holding the write lock: an open write transaction on SQLite,
    an EXCLUSIVE table lock (reads pass, writes wait) on PostgreSQL."""

    def __init__(self, config, db_url):
        self.path = config.parent / "var" / "helpdesk.db"
        self.db_url = db_url

    def __enter__(self):
        if self.db_url is None:
            self.conn = sqlite3.connect(self.path, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("UPDATE meta SET value = value")
        else:
            import psycopg
            self.conn = psycopg.connect(self.db_url)
            self.conn.cursor().execute("LOCK TABLE raw_message IN EXCLUSIVE MODE")
        return self

    def __exit__(self, *exc):
        self.conn.rollback()
        self.conn.close()


def test_postgresql_unreachable_is_ex_tempfail(tmp_path):
    with socket.socket() as closed:              # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        path = write_config(tmp_path, db_url=PG_URL.replace(":5432", f":{port}"))
        started = time.monotonic()
        result = pipe(path, mail())
    assert result.returncode == EX_TEMPFAIL
    err = one_line(result)
    assert err.startswith(f"helpdesk: the mail was not stored, try again later: database "
                          f"postgresql://postgres@127.0.0.1:{port}/test: ")
    assert "refused" in err
    assert time.monotonic() - started < 20


# --- a full disk --------------------------------------------------------------------
#
# Two real ways: a 4 MB tmpfs filled to the last byte (root only: it is what a full disk
# is, ENOSPC, and SQLite reports "database or disk is full"), and RLIMIT_FSIZE in the
# pipe's process (anyone: the kernel refuses to let a file grow, EFBIG, which SQLite
# reports as an I/O error). Both must end in 75 and leave nothing half-stored.

@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_is_ex_tempfail_and_the_retry_stores_once_there_is_room(tmp_path, small_disk):
    path = write_config(tmp_path, extra='\n[intake]\npipe_wait = "1s"\n')
    path.write_text(path.read_text().replace('data_dir = "var"', f'data_dir = "{small_disk}"')
                    .replace('url = "sqlite:///var/helpdesk.db"', f'url = "sqlite:///{small_disk}/helpdesk.db"'))
    assert pipe(path, mail(message_id="small")).returncode == 0
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as handle, pytest.raises(OSError) as full:
        while True:
            handle.write(b"\0" * 4096)
    assert full.value.errno == 28                # ENOSPC: the filesystem is full
    big = mail(message_id="big", body="x" * 200_000)
    result = pipe(path, big)
    assert result.returncode == EX_TEMPFAIL, result.stderr
    err = one_line(result)
    assert err.startswith("helpdesk: the mail was not stored, try again later: ")
    assert "full" in err or "disk I/O error" in err, err
    filler.unlink()
    retried = pipe(path, big)
    assert retried.returncode == 0
    assert retried.stdout.decode().startswith("ingested: 1 new tickets"), retried.stderr
    assert [t["id"] for t in tickets(path)] == ["T-1", "T-2"]


def test_a_file_size_limit_is_ex_tempfail_and_the_retry_stores(config):
    # SQLite only: the limit is on the pipe's own files, and PostgreSQL writes in its server
    assert pipe(config, mail(message_id="small")).returncode == 0
    big = mail(message_id="big", body="x" * 300_000)

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # a write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    result = pipe(config, big, preexec=limited)
    assert result.returncode == EX_TEMPFAIL, result.stderr
    assert one_line(result) == ("helpdesk: the mail was not stored, try again later: "
                                "could not store raw message: OperationalError: disk I/O error")
    assert [s for _, s in raw_rows(config)] == ["done"]
    assert pipe(config, big).returncode == 0
    assert len(tickets(config)) == 2


def test_processing_that_fails_leaves_the_mail_stored_and_the_status_0(tmp_path, config):
    key = tmp_path / "var" / "secret.key"
    key.write_text("short\n")                    # loads, but the app refuses it: processing fails
    result = pipe(config, mail())
    assert result.returncode == 0
    assert "message 1 stored; not processed now (helpdesk run will)" in result.stderr.decode()
    assert "holds a key shorter than 16 characters" in result.stderr.decode()
    assert result.stdout.decode().strip() == "stored as message 1; helpdesk run will process it"
    assert raw_rows(config) == [("pipe", "pending")]
    key.write_text("a-long-enough-secret-key-0123456789\n")
    assert helpdesk(config, "run", "--once").returncode == 0
    assert [t["id"] for t in tickets(config)] == ["T-1"]
