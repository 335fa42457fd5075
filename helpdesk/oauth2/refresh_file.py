"""The refresh-token file: read at every refresh, rewritten when the provider rotates it.

Reading it each time means a person who ran the consent again and wrote the
new token there fixes a running helpdesk without a restart.  Writing goes
through a private temporary file in the same folder, synced and renamed over
the old one, so a crash leaves the old token or the new one, never half of
either, and the token is never readable by others (0600) even for a moment.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def read(path: Path) -> str:
    """The token in the file, without surrounding white space; OSError or ValueError."""
    with open(path, encoding="utf-8") as handle:
        token = handle.read().strip()
    if not token or any(c.isspace() for c in token):
        raise ValueError("it does not hold one refresh token on a line of its own")
    return token


def write(path: Path, token: str) -> None:
    """Replace the file's content with ``token`` atomically, mode 0600; OSError if it cannot."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:   # mkstemp makes it 0600
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        _unlink_quietly(temporary)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Without it the rename, and so the new token, may be lost in a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
