"""Durations, sizes and dispute reasons as people write them."""

from __future__ import annotations

import datetime as dt

import pytest

from helpdesk.units import format_duration, normalise_reason, parse_duration, parse_size


@pytest.mark.parametrize("text, seconds", [("45s", 45), ("30m", 1800), (" 4h ", 14400), ("3d", 259200),
                                           ("1w", 604800)])
def test_durations(text, seconds):
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["4", "4 hours", "h", "-1h", "1.5h", 4])
def test_what_is_not_a_duration(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sizes():
    assert [parse_size(x) for x in (1048576, "512KB", "25MB", "1G", "10b")] == [1048576, 524288, 26214400,
                                                                                 1073741824, 10]
    for bad in (-1, "1T", "lots", True):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_durations_read_as_text_for_mail():
    assert format_duration(dt.timedelta(hours=4)) == "4 hours"
    assert format_duration(dt.timedelta(days=1)) == "1 day"
    assert format_duration(dt.timedelta(days=2, hours=4)) == "2 days 4 hours"
    assert format_duration(dt.timedelta(0)) == "0 seconds"
    assert format_duration(-dt.timedelta(minutes=1)) == "-1 minute"


def test_reasons_compare_alike_however_written():
    assert normalise_reason('  "Not-Received". ') == "not received"
    assert normalise_reason("key_does_not  work!") == "key does not work"
