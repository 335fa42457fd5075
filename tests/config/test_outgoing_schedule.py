"""The keys of issue 12's outbox: ``[outgoing] retry_max_delay``, ``give_up_after``, the old
``max_attempts`` (still honoured, never together with ``give_up_after``) and
``[limits] bounce_suppression``; and the shipped config.toml loads with them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.config.test_config import MINIMAL, error, load

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_the_schedule_keys_are_read():
    out = load(MINIMAL + '[outgoing]\nretry_delay = "2m"\nretry_max_delay = "30m"\ngive_up_after = "2d"\n').outgoing
    assert (out.retry_delay, out.retry_max_delay, out.give_up_after, out.max_attempts) == (
        dt.timedelta(minutes=2), dt.timedelta(minutes=30), dt.timedelta(days=2), None)


def test_max_attempts_alone_keeps_the_count_and_has_no_lifetime():
    out = load(MINIMAL + "[outgoing]\nmax_attempts = 8\n").outgoing
    assert (out.max_attempts, out.give_up_after) == (8, None)


def test_a_long_retry_delay_raises_the_default_cap_with_it():
    out = load(MINIMAL + '[outgoing]\nmax_attempts = 5\nretry_delay = "2h"\n').outgoing
    assert out.retry_max_delay == dt.timedelta(hours=2)


@pytest.mark.parametrize("text, message", [
    ("[outgoing]\nmax_attempts = 8\ngive_up_after = \"5d\"\n",
     ("config.toml: [outgoing] max_attempts: give max_attempts (a count of attempts) or give_up_after "
     "(a time), not both")),
    ('[outgoing]\nretry_delay = "10m"\nretry_max_delay = "5m"\n',
     "config.toml: [outgoing] retry_max_delay: must not be shorter than retry_delay"),
    ('[outgoing]\ngive_up_after = "0s"\n', 'config.toml: [outgoing] give_up_after: "0s" must be longer than zero'),
    ('[outgoing]\nretry_max_delay = "an hour"\n',
     'config.toml: [outgoing] retry_max_delay: "an hour" is not a duration like "30m", "4h", "48h" or "3d"'),
    ('[limits]\nbounce_suppression = "a week"\n',
     ('config.toml: [limits] bounce_suppression: "a week" is not a duration like "30m", "4h", "48h" or "3d", '
     'or "off"')),
])
def test_wrong_values_are_one_line(text, message):
    assert error(MINIMAL + text) == message


def test_bounce_suppression_defaults_to_a_week_and_can_be_off():
    assert load(MINIMAL).limits.bounce_suppression == dt.timedelta(days=7)
    assert load(MINIMAL + '[limits]\nbounce_suppression = "2d"\n').limits.bounce_suppression == dt.timedelta(days=2)
    assert load(MINIMAL + '[limits]\nbounce_suppression = "off"\n').limits.bounce_suppression == dt.timedelta(0)


def test_the_shipped_config_uses_the_new_schedule(tmp_path):
    text = (ROOT / "config.toml").read_text()
    out = load(text).outgoing
    assert (out.max_attempts, out.give_up_after, out.retry_max_delay) == (
        None, dt.timedelta(days=5), dt.timedelta(hours=1))
    assert load(text).limits.bounce_suppression == dt.timedelta(days=7)
