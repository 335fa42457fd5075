"""``[trust]``: its defaults, and a one-line error for each bad value."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.config.test_config import MINIMAL, error, load


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``load`` writes "config.toml" in the current folder: never the repository's own."""
    monkeypatch.chdir(tmp_path)


def test_defaults_trust_no_authentication_results():
    trust = load(MINIMAL).trust
    assert (trust.authserv_ids, trust.confirm_within, trust.confirm_rate_limit) == ((), dt.timedelta(days=3), 5)


def test_values_are_read_and_ids_compared_without_case():
    trust = load(MINIMAL + '\n[trust]\nauthserv_ids = ["MX.Shop.Example"]\nconfirm_within = "12h"\n'
                           "confirm_rate_limit = 0\n").trust
    assert (trust.authserv_ids, trust.confirm_within, trust.confirm_rate_limit) == (
        ("mx.shop.example",), dt.timedelta(hours=12), 0)


@pytest.mark.parametrize("line, says", [
    ('authserv_ids = "mx.shop.example"', "expected a list of authserv-ids"),
    ('authserv_ids = ["mx.shop.example; dkim=pass"]', "is not an authserv-id"),
    ('authserv_ids = [""]', "must not be empty"),
    ('confirm_within = "soon"', "confirm_within"),
    ("confirm_rate_limit = -1", "confirm_rate_limit"),
    ('unknown = 1', "unknown"),
])
def test_bad_values_are_one_line(line, says):
    assert says in error(MINIMAL + f"\n[trust]\n{line}\n")
