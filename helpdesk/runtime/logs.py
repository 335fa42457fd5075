"""Where the helpdesk's log lines go and in what shape: text for people, JSON for collectors.

``[helpdesk] log_format = "json"`` writes one JSON object per line (``time``,
``level``, ``logger``, ``message``, and ``exception`` when there is one), so
journald, Loki, Fluent Bit or Vector take each record whole, a traceback included,
instead of guessing where a multi-line record ends.

The handler is installed once on the root logger and only when nobody else
configured logging (a test runner, an embedding program), as ``basicConfig`` does;
``configure`` may be called again (SIGHUP) and then changes that same handler.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
TEXT_DATES = "%Y-%m-%d %H:%M:%S"


class JsonFormatter(logging.Formatter):
    """One record, one line of JSON; newlines inside it are escaped by the encoder."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
                      .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT, datefmt=TEXT_DATES)


def configure(level: str, log_format: str = "text") -> None:
    """Our stderr handler at ``level`` in ``log_format``; a no-op where logging is someone else's."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "helpdesk", False)), None)
    if handler is None and not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.helpdesk = True
        root.addHandler(handler)
    if handler is not None:
        handler.setFormatter(formatter(log_format))
        root.setLevel(getattr(logging, level, logging.INFO))
    # aiosmtpd logs every SMTP command at INFO; our own handler logs what matters.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, root.level))
