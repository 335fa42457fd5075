"""Only the topmost Authentication-Results of a trusted MTA proves a sender, and only when aligned."""

from __future__ import annotations

import pytest

from helpdesk.mail.authresults import NOTHING, aligned, verdict

TRUSTED = ("mx.shop.example",)


def ar(text: str, server: str = "mx.shop.example") -> str:
    return f"{server}; {text}"


@pytest.mark.parametrize("results, proven", [
    ("dmarc=pass header.from=shop.example", "dmarc"),
    ("dkim=pass header.d=shop.example", "dkim d=shop.example"),
    ("dkim=pass header.d=shop.example; spf=fail smtp.mailfrom=a@fwd.example", "dkim d=shop.example"),
    ("dkim=pass header.d=mail.shop.example", "dkim d=mail.shop.example"),
    ("dkim=pass header.i=@shop.example", "dkim d=shop.example"),
    ("dkim=fail header.d=shop.example; dkim=pass header.d=shop.example", "dkim d=shop.example"),
])
def test_trusted_pass_proves(results, proven):
    assert verdict([ar(results)], TRUSTED, "alice@shop.example").proven == proven


@pytest.mark.parametrize("results", [
    "dkim=fail header.d=shop.example",
    "dkim=pass header.d=evil.example",
    "dkim=pass header.d=example",               # a TLD-like signer aligns with nobody
    "dkim=pass header.d=notshop.example",
    "dmarc=pass header.from=evil.example",      # the MTA read another From than we did
    "dmarc=fail header.from=shop.example",
    "dmarc=pass",                               # a pass for no named domain proves no From
    "dmarc=pass header.from=",
    "dkim=pass header.d=shop.example; dmarc=fail header.from=shop.example",   # DMARC has the last word
    "spf=pass smtp.mailfrom=alice@shop.example",  # SPF alone is the envelope, not From
    "dkim=neutral header.d=shop.example",
    "none",
])
def test_no_proof(results):
    assert verdict([ar(results)], TRUSTED, "alice@shop.example").proven is None


def test_untrusted_authserv_id_is_the_senders_own_words():
    forged = ar("dmarc=pass header.from=shop.example; dkim=pass header.d=shop.example", "mx.evil.example")
    assert verdict([forged], TRUSTED, "alice@shop.example") == NOTHING


def test_no_trusted_ids_configured_means_nothing_counts():
    assert verdict([ar("dmarc=pass")], (), "alice@shop.example") == NOTHING


def test_only_the_topmost_trusted_header_counts():
    ours = ar("dmarc=fail header.from=shop.example; spf=fail smtp.mailfrom=alice@shop.example")
    forged_below = ar("dmarc=pass header.from=shop.example")
    result = verdict([ours, forged_below], TRUSTED, "alice@shop.example")
    assert result.proven is None and result.failed == "dmarc=fail"
    # an untrusted header on top is skipped, ours below it still speaks
    assert verdict([ar("dmarc=pass", "x.evil"), ours], TRUSTED, "alice@shop.example").failed == "dmarc=fail"


@pytest.mark.parametrize("garbage", ["", ";;;", "((((", "mx.shop.example; dkim=", "\x00\x01", "x" * 4000])
def test_garbage_is_no_proof_and_no_error(garbage):
    assert verdict([garbage], TRUSTED, "alice@shop.example").proven is None


def test_a_garbled_header_of_ours_stops_a_forged_one_below_from_speaking():
    assert verdict(["mx.shop.example; dkim=((", ar("dmarc=pass")], TRUSTED, "alice@shop.example") == NOTHING


def test_failures():
    assert verdict([ar("spf=fail smtp.mailfrom=a@b.example")], TRUSTED, "a@b.example").failed == "spf=fail"
    assert verdict([ar("dmarc=fail")], TRUSTED, "a@b.example").failed == "dmarc=fail"
    assert verdict([ar("spf=softfail")], TRUSTED, "a@b.example").failed is None


def test_authserv_id_compared_without_case():
    assert verdict([ar("dmarc=pass header.from=shop.example", "MX.Shop.Example")], TRUSTED,
                   "a@shop.example").proven == "dmarc"


@pytest.mark.parametrize("signer, domain, expected", [
    ("shop.example", "shop.example", True), ("shop.example", "mail.shop.example", True),
    ("mail.shop.example", "shop.example", True), ("evil.example", "shop.example", False),
    ("hop.example", "shop.example", False), ("", "shop.example", False), ("com", "shop.com", False),
])
def test_aligned(signer, domain, expected):
    assert aligned(signer, domain) is expected


def test_a_comment_before_the_authserv_id_does_not_hide_that_the_header_claims_ours():
    """``(x) mx.shop.example`` names our id (RFC 8601 allows the comment): a garbled one of
    those stops the search as a plain one does, and a parsed one is ours to judge."""
    assert verdict(["(x) mx.shop.example; dkim=((", ar("dmarc=pass header.from=shop.example")],
                   TRUSTED, "alice@shop.example") == NOTHING
