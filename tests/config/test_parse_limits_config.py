"""[limits] max_parts, max_attachments, parse_timeout, parse_memory: one clear line for a bad value."""

from __future__ import annotations

import datetime as dt

import pytest

from helpdesk.config.loader import load_config
from helpdesk.errors import ConfigError
from tests.conftest import write_config


def test_defaults(tmp_path):
    limits = load_config(write_config(tmp_path)).limits
    assert (limits.max_parts, limits.max_attachments) == (1000, 100)
    assert (limits.parse_timeout, limits.parse_memory) == (dt.timedelta(seconds=30), 1 << 30)


@pytest.mark.parametrize("line, message", [
    ("max_parts = 5", "[limits] max_parts: must be between 10 and 1000000, got 5"),
    ('max_attachments = "many"', '[limits] max_attachments: expected an integer, got "many"'),
    ('parse_timeout = "soon"', '[limits] parse_timeout: "soon" is not a duration'),
    ('parse_memory = "10MB"', '[limits] parse_memory: "10MB" is too small: a parse worker needs at least 64MB'),
    ('parse_memory = "lots"', '[limits] parse_memory: "lots" is not a size'),
])
def test_a_bad_value_is_one_specific_line(tmp_path, line, message):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, limits=line))
    assert message in str(caught.value) and "\n" not in str(caught.value)
