"""``[helpdesk] log_format = "json"``: one JSON object per line, as log collectors read them."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys

from helpdesk.runtime.logs import JsonFormatter
from tests.conftest import mail, write_config

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_a_record_is_one_line_with_time_level_logger_message_and_exception():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("helpdesk.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("first line\nsecond line: %s", "ünïcode")
        try:
            raise ValueError("bad value")
        except ValueError:
            logger.exception("it failed")
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2                                  # a newline in a message stays escaped
    first, second = map(json.loads, lines)
    assert set(first) == {"time", "level", "logger", "message"}
    assert TIME.fullmatch(first["time"])
    assert (first["level"], first["logger"], first["message"]) == (
        "WARNING", "helpdesk.test-json", "first line\nsecond line: ünïcode")
    assert (second["level"], second["message"]) == ("ERROR", "it failed")
    assert second["exception"].startswith("Traceback (most recent call last):")
    assert second["exception"].endswith("ValueError: bad value")


def test_the_service_logs_json_lines_when_configured(tmp_path):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('data_dir = "var"', 'data_dir = "var"\nlog_format = "json"'))
    new = tmp_path / "mailboxes" / "support" / "new"
    new.mkdir(parents=True)
    (new / "1.host").write_bytes(mail())
    result = subprocess.run([sys.executable, "-m", "helpdesk", "--config", str(config), "run", "--once"],
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.decode().splitlines()]
    assert records and all(set(r) == {"time", "level", "logger", "message"} for r in records)
    assert all(TIME.fullmatch(r["time"]) for r in records)
    assert {"level": "INFO", "logger": "helpdesk.pipeline", "message": "message 1: new_ticket T-1 "} in [
        {k: r[k] for k in ("level", "logger", "message")} for r in records]
    assert len(os.listdir(tmp_path / "mailboxes" / "outgoing" / "new")) == 2


def test_an_unknown_log_format_is_a_config_error(tmp_path):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('data_dir = "var"', 'data_dir = "var"\nlog_format = "xml"'))
    result = subprocess.run([sys.executable, "-m", "helpdesk", "--config", str(config), "tickets"],
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        f'helpdesk: {config}: [helpdesk] log_format: "xml" is not one of "text", "json"')
