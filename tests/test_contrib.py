"""The files in ``contrib/``: the systemd unit passes ``systemd-analyze verify`` (skipped where
systemd-analyze is not installed) with its hardening, and the Postfix example runs the command
this helpdesk really has."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONTRIB = Path(__file__).resolve().parents[1] / "contrib"
UNIT = CONTRIB / "helpdesk.service"
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def runnable_unit(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's executable: verify checks it exists."""
    executable = Path(sys.executable).parent / "helpdesk"
    assert executable.exists(), executable
    unit = tmp_path / "helpdesk.service"
    unit.write_text((text or UNIT.read_text()).replace("/opt/helpdesk/.venv/bin/helpdesk", str(executable)))
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                          check=False)


@needs_systemd
def test_the_unit_verifies_without_a_warning(tmp_path):
    result = verify(runnable_unit(tmp_path))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd
def test_verify_would_catch_a_mistake(tmp_path):
    """So the test above is not vacuous: a misspelt option is reported."""
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict")
    result = verify(runnable_unit(tmp_path, broken))
    assert "Unknown key" in result.stdout + result.stderr and "ProtectSystm" in result.stdout + result.stderr


@needs_systemd
def test_the_unit_is_hardened(tmp_path):
    """systemd's own exposure score (0 best, 10 worst) stays low: under 2.5 ("OK")."""
    result = subprocess.run([ANALYZE, "security", "--offline=yes", "--threshold=25", "--no-pager",
                             str(runnable_unit(tmp_path))], capture_output=True, text=True, timeout=60,
                            check=False)
    score = re.search(r"Overall exposure level for helpdesk.service: (\d+\.\d)", result.stdout)
    if score is None and "--offline" in result.stderr:
        pytest.skip("this systemd-analyze has no offline security check")
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) < 2.5, result.stdout
    assert result.returncode == 0           # --threshold is on a 0-100 scale: 25 is the 2.5 shown


def test_the_unit_has_what_the_deployment_relies_on():
    lines = {line.strip() for line in UNIT.read_text().splitlines() if line and not line.startswith("#")}
    for wanted in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "User=helpdesk",
                   "ExecReload=/bin/kill -HUP $MAINPID", "KillMode=mixed", "ProtectSystem=strict",
                   "ReadWritePaths=/var/lib/helpdesk", "NoNewPrivileges=yes", "PrivateTmp=yes",
                   "ProtectHome=yes", "CapabilityBoundingSet="):
        assert wanted in lines, wanted


def test_the_postfix_example_runs_pipe_mode_of_this_helpdesk():
    text = (CONTRIB / "postfix-master.cf.example").read_text()
    [command] = re.findall(r"^\s+flags=\S+ user=helpdesk argv=(.+)$", text, re.MULTILINE)
    args = command.split()
    assert args[0] == "/opt/helpdesk/.venv/bin/helpdesk" and args[-2:] == ["ingest", "-"]
    from helpdesk.cli import _parser
    parsed = _parser().parse_args(args[1:])                 # the options exist, in this order
    assert (parsed.command, parsed.files) == ("ingest", ["-"])
    assert "helpdesk_destination_recipient_limit = 1" in text
