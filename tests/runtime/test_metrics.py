"""``[metrics] listen``: the status figures scraped over HTTP from a running ``helpdesk run``
on 127.0.0.1, parsed with prometheus-client's own parser."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpdesk import cli
from helpdesk.clock import Clock
from helpdesk.config.loader import load_config
from helpdesk.config.settings import MetricsSettings
from helpdesk.runtime import metrics, service
from helpdesk.store import imap_cursor
from helpdesk.store.schema import MIGRATIONS, db
from tests.conftest import START, Desk, free_port, mail, write_config


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metrics_desk(folder, db_url=None, extra: str = "") -> tuple[Desk, int]:
    port = free_port()
    config = write_config(folder, db_url=db_url, extra=f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n{extra}')
    config.write_text(config.read_text().replace("[smtp_server]\n", "[smtp_server]\nenabled = false\n"))
    return Desk(folder, config, Clock(START)), port


@contextlib.contextmanager
def running(app, monkeypatch):
    """``service.run`` as in production, in a thread, until the block ends."""
    loops, errors = [], []
    monkeypatch.setattr(service, "_stop_on_signals", loops.append)
    runner = threading.Thread(target=lambda: _run(app, errors), daemon=True)
    runner.start()
    deadline = time.monotonic() + 10
    while not (loops or errors) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield
    finally:
        for loop in loops:
            loop.stop()
        runner.join(10)
    assert not runner.is_alive(), "service did not stop"
    assert errors == []


def _run(app, errors: list) -> None:
    try:
        service.run(app, once=False)
    except Exception as exc:  # noqa: BLE001 - reported by running()
        errors.append(exc)


def test_a_running_service_serves_the_status_figures(tmp_path, db_url, monkeypatch):
    desk, port = metrics_desk(tmp_path, db_url)
    try:
        desk.ingest(mail())
        desk.ingest(mail(frm="undisclosed"))                       # quarantined
        desk.app.tick()
        with running(desk.app, monkeypatch):
            found = scrape(port)
        assert found[("helpdesk_outbox_mails", (("status", "sent"),))] == 2
        assert found[("helpdesk_outbox_mails", (("status", "queued"),))] == 0
        assert found[("helpdesk_outbox_mails", (("status", "failed"),))] == 0
        assert found[("helpdesk_outbox_oldest_queued_age_seconds", ())] == 0
        assert found[("helpdesk_quarantined_messages", ())] == 1
        assert found[("helpdesk_overdue_timers", ())] == 0
        assert found[("helpdesk_deadline_tick_timestamp_seconds", ())] == START.timestamp()
        assert found[("helpdesk_schema_version", ())] == found[("helpdesk_schema_expected_version", ())] == len(MIGRATIONS)
        assert found[("helpdesk_database_up", ())] == 1
        assert found[("helpdesk_status", ())] == 1                  # the quarantined mail warns
        assert found[("process_open_fds", ())] > 0                  # the process's own figures too
    finally:
        desk.app.close()
    with pytest.raises(urllib.error.URLError):                      # stopped with the service
        scrape(port)


def test_imap_mailboxes_are_labelled(tmp_path):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(
        'source = "maildir:mailboxes/support"',
        'source = "imap://support@127.0.0.1:1/INBOX"\npassword_env = "NOT_USED"\nstarttls = false'))
    desk = Desk(tmp_path, config, Clock(START))
    try:
        imap_cursor.passed("support", START)
        imap_cursor.failed("support", "refused", START.replace(minute=1))
        figures = metrics.Figures(desk.app.config, desk.clock)
        found = {(s.name, tuple(s.labels.items())): s.value for f in figures.collect() for s in f.samples}
        assert found[("helpdesk_imap_last_pass_timestamp_seconds", (("mailbox", "support"),))] == START.timestamp()
        assert found[("helpdesk_imap_last_fault_timestamp_seconds", (("mailbox", "support"),))] == \
            START.timestamp() + 60
        assert found[("helpdesk_imap_failing", (("mailbox", "support"),))] == 1
    finally:
        desk.app.close()


def test_a_database_that_cannot_be_read_is_a_figure_too(desk):
    db.execute_sql("DROP TABLE outbox")
    found = {s.name: s.value for f in metrics.Figures(desk.app.config, desk.clock).collect() for s in f.samples}
    assert found == {"helpdesk_status": 2, "helpdesk_database_up": 0}


def test_a_port_in_use_stops_run_with_one_line(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = write_config(tmp_path, extra=f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
        code = cli.main(["--config", str(config), "run"])
    assert code == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"helpdesk: config.toml: [metrics] listen: cannot listen on 127.0.0.1:{port}: Address already in use")


def test_metrics_are_off_unless_listen_is_set(tmp_path):
    assert load_config(write_config(tmp_path)).metrics == MetricsSettings(host=None, port=None)
    bad = write_config(tmp_path, extra='\n[metrics]\nlisten = "9108"\n')
    with pytest.raises(Exception, match=r'\[metrics\] listen: "9108" is not a host:port'):
        load_config(bad)
