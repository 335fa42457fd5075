"""Durations, sizes and dispute reasons as people write them in config.toml and mail.

Pure text <-> number conversions with no dependency on the rest of the helpdesk,
so the config loader, the domains' notices and the digest all share one spelling.
"""

from __future__ import annotations

import datetime as dt
import re

_DURATION_RE = re.compile(r"(\d+)([smhdw])", re.ASCII)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_RE = re.compile(r"(\d+)\s*([kmg]?)b?", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_duration(text: str) -> dt.timedelta:
    """``"45s"``, ``"30m"``, ``"4h"``, ``"3d"``, ``"1w"``; ValueError otherwise."""
    match = _DURATION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return dt.timedelta(seconds=int(match[1]) * _DURATION_UNITS[match[2]])


def parse_size(text: str | int) -> int:
    """Bytes from ``1048576``, ``"512KB"``, ``"25MB"``, ``"1G"``; ValueError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"negative size: {text!r}")
        return text
    match = _SIZE_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(match[1]) * _SIZE_UNITS[match[2].lower()]


def format_duration(td: dt.timedelta) -> str:
    """Human text for mail: ``"4 hours"``, ``"1 day"``, ``"2 days 4 hours"``."""
    seconds = int(td.total_seconds())
    if seconds < 0:
        return "-" + format_duration(-td)
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts) or "0 seconds"


def normalise_reason(text: str) -> str:
    """"Key does NOT work." and "key-does-not-work" both mean "key does not work".

    The configured reasons go through this too (``config``), so both sides compare alike.
    """
    cleaned = re.sub(r"[\s_-]+", " ", text.lower())
    return cleaned.strip(" \"'“”‘’«».,;:!?")
