"""PostgreSQL's driver: psycopg 3 from the ``postgres`` extra; missing, a clear error, and
in a run that requires PostgreSQL (CI) a failure, never a silent skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpdesk.errors import ConfigError
from helpdesk.store.db import connect

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_driver_is_one_config_error_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)       # import psycopg now raises ImportError
    with pytest.raises(ConfigError) as caught:
        connect("postgresql://helpdesk:secret@127.0.0.1:5432/helpdesk")
    message = str(caught.value)
    assert message.startswith("database postgresql://helpdesk:***@127.0.0.1:5432/helpdesk: PostgreSQL needs "
                              "the psycopg driver, the postgres extra: pip install 'helpdesk[postgres]' (")
    assert "secret" not in message and "\n" not in message


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_psycopg_3_is_the_driver(db_url):
    from helpdesk.store.schema import db
    connect(db_url)
    assert type(db.obj.connection()).__module__.split(".")[0] == "psycopg"     # not psycopg2


def _suite_without_driver(tmp_path, require: bool) -> subprocess.CompletedProcess:
    """One PostgreSQL test of the suite, run where ``import psycopg`` fails."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "psycopg.py").write_text("raise ImportError('psycopg blocked for this test')\n")
    env = {k: v for k, v in os.environ.items() if k != "HELPDESK_TEST_REQUIRE_PG"}
    env["PYTHONPATH"] = str(blocker)
    if require:
        env["HELPDESK_TEST_REQUIRE_PG"] = "1"
    test = "tests/store/test_pg_driver.py::test_psycopg_3_is_the_driver[postgresql]"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", test],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_without_the_driver_the_postgresql_tests_fail_when_required(tmp_path):
    done = _suite_without_driver(tmp_path, require=True)
    assert done.returncode == 1, done.stdout
    assert "1 error" in done.stdout and "the PostgreSQL driver is not installed" in done.stdout


def test_without_the_driver_the_postgresql_tests_skip_when_not_required(tmp_path):
    done = _suite_without_driver(tmp_path, require=False)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout and "the PostgreSQL driver is not installed" in done.stdout
