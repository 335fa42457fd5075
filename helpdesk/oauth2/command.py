"""A ``token_command``: a program that prints a fresh access token, as mutt, isync and
aerc use one, so any provider and any helper (oama, a vault, a script) will do.

It runs without a shell (the config split it already), with nothing on its
standard input and in a session of its own, so that on a time-out the whole
group is killed (a shell script's children too) instead of holding the pipe
open.  Its first line of output is the token; what it says on stderr may
appear in the error, its output never does.
"""

from __future__ import annotations

import os
import signal
import subprocess

from helpdesk.config.settings import OAuth2Settings
from helpdesk.errors import TokenError


def run(settings: OAuth2Settings) -> str:
    """The token the command printed; TokenError (permanent) if it printed none."""
    argv = settings.token_command or ()
    where = f"{settings.label}: token_command {os.path.basename(argv[0])}"
    timeout = settings.timeout.total_seconds()
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise TokenError(f"{where}: cannot be run ({exc.strerror or exc})", temporary=False) from None
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise TokenError(f"{where}: printed no token within {timeout:g} s (does it wait for input? "
                         "run it by hand once)", temporary=False) from None
    if process.returncode != 0:
        raise TokenError(f"{where}: failed ({_status(process.returncode)}{_said(err)})",
                         temporary=False)
    lines = out.decode("utf-8", "replace").strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise TokenError(f"{where}: printed no token{_said(err)}", temporary=False)
    return token


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        process.kill()
    try:
        process.communicate(timeout=5)
    except subprocess.TimeoutExpired:    # a child that left the group still holds the pipe
        process.kill()
        process.wait()


def _status(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


def _said(err: bytes) -> str:
    """The last line the command wrote to stderr, cut short: its own explanation."""
    lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1] if len(lines[-1]) <= 200 else lines[-1][:200] + "…"
    return f"; it said: {last}"
