"""``[metrics] listen``: ``helpdesk status``'s figures as Prometheus metrics over HTTP.

The figures are read at scrape time, not kept up to date by the service: a
scrape costs the same few indexed queries as ``helpdesk status``, and a
service that is stuck shows stale timestamps (the last tick, each mailbox's
last pass) rather than figures frozen at their last good value. The HTTP
server (prometheus-client's, a thread per request) is started by ``helpdesk
run`` only when ``listen`` is set; each scrape closes the database connection
its thread opened.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from helpdesk.clock import Clock
from helpdesk.config.settings import Config
from helpdesk.errors import ConfigError
from helpdesk.runtime import status
from helpdesk.store import health
from helpdesk.store import outbox as outbox_rows

log = logging.getLogger("helpdesk.metrics")


class Figures(Collector):
    """One ``status.evaluate`` per scrape, as gauges. ``config`` is the configuration, or a
    function giving the one in force now (a SIGHUP may change the thresholds)."""

    def __init__(self, config: Config | Callable[[], Config], clock: Clock) -> None:
        self.config_now = config if callable(config) else (lambda: config)
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            report = status.evaluate(self.config_now(), self.clock)
        finally:
            health.release()
        yield _gauge("helpdesk_status", "status's verdict: 0 ok, 1 warning, 2 critical", report.level)
        f = report.figures
        yield _gauge("helpdesk_database_up", "1 if the figures could be read from the database",
                     int(f is not None))
        if f is None:
            return
        yield _gauge("helpdesk_schema_version", "the database's schema version", f.schema.version)
        yield _gauge("helpdesk_schema_expected_version", "the schema version this helpdesk needs",
                     f.schema.expected)
        if not f.schema.current:
            return
        yield from _outbox(f)
        yield _gauge("helpdesk_quarantined_messages", "messages in quarantine", f.quarantine)
        yield _gauge("helpdesk_overdue_timers", "pending timers due longer ago than [status] tick_warning",
                     f.overdue_timers)
        if f.last_tick is not None:
            yield _gauge("helpdesk_deadline_tick_timestamp_seconds", "when the last deadline tick ran",
                         _epoch(f.last_tick))
        yield from _mailboxes(f)


def _outbox(f: status.Figures) -> Iterator[GaugeMetricFamily]:
    mails = GaugeMetricFamily("helpdesk_outbox_mails", "outgoing mail by status", labels=["status"])
    for name in sorted({*outbox_rows.STATUSES, *f.outbox}):
        mails.add_metric([name], f.outbox.get(name, 0))
    yield mails
    age = f.age(f.oldest_queued)
    yield _gauge("helpdesk_outbox_oldest_queued_age_seconds", "how long the oldest queued mail has waited "
                 "(0: none queued)", age.total_seconds() if age is not None else 0)


def _mailboxes(f: status.Figures) -> Iterator[GaugeMetricFamily]:
    passed = GaugeMetricFamily("helpdesk_imap_last_pass_timestamp_seconds",
                               "when an IMAP mailbox was last read to its end", labels=["mailbox"])
    failed = GaugeMetricFamily("helpdesk_imap_last_fault_timestamp_seconds",
                               "when a pass over an IMAP mailbox last failed", labels=["mailbox"])
    failing = GaugeMetricFamily("helpdesk_imap_failing",
                                "1 if an IMAP mailbox's last fault is newer than its last pass", labels=["mailbox"])
    for m in f.mailboxes:
        if m.passed_at is not None:
            passed.add_metric([m.name], _epoch(m.passed_at))
        if m.failed_at is not None:
            failed.add_metric([m.name], _epoch(m.failed_at))
        failing.add_metric([m.name], int(m.failed_at is not None and
                                         (m.passed_at is None or m.failed_at > m.passed_at)))
    yield from (passed, failed, failing)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _epoch(naive_utc: dt.datetime) -> float:
    return calendar.timegm(naive_utc.timetuple()) + naive_utc.microsecond / 1e6


def serve(config: Config, clock: Clock, config_now: Callable[[], Config] | None = None):
    """Start the listener of ``[metrics] listen``; the server, to ``shutdown()`` at the end.
    A port that cannot be had is a ConfigError: one line, before anything else starts.
    ``config_now`` gives the configuration in force at each scrape (after a SIGHUP)."""
    registry = CollectorRegistry()
    registry.register(Figures(config_now or config, clock))
    ProcessCollector(registry=registry)    # memory, CPU and open files of the service
    host, port = config.metrics.host, config.metrics.port
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"{config.path.name}: [metrics] listen: cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}") from None
    log.info("metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host, server.server_port)
    return server


def stop(server) -> None:
    server.shutdown()
    server.server_close()
