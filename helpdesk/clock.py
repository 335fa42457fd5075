"""The only source of time, so tests and ``--now`` can move it.

Times are timezone-aware UTC datetimes everywhere inside the helpdesk; the store
keeps them as naive UTC because SQLite and PostgreSQL agree on nothing else.
"""

from __future__ import annotations

import datetime as dt

UTC = dt.UTC


class Clock:
    """Real time, unless frozen at a moment (``--now``) or moved by tests."""

    def __init__(self, fixed: dt.datetime | None = None) -> None:
        self._fixed = to_utc(fixed) if fixed is not None else None

    def now(self) -> dt.datetime:
        return self._fixed if self._fixed is not None else dt.datetime.now(UTC)

    def set(self, moment: dt.datetime) -> None:
        self._fixed = to_utc(moment)

    def advance(self, delta: dt.timedelta) -> None:
        self._fixed = self.now() + delta


def to_utc(moment: dt.datetime) -> dt.datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """What the store keeps: UTC without tzinfo."""
    return to_utc(moment).replace(tzinfo=None)


def parse_iso(text: str) -> dt.datetime:
    """ISO 8601 as users type it, ``Z`` included; naive means UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    return to_utc(dt.datetime.fromisoformat(value))
