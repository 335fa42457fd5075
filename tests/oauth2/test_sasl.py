"""The SASL strings byte for byte (RFC 7628's own example), and the choice of mechanism."""

from __future__ import annotations

import pytest

from helpdesk.oauth2 import sasl


def test_oauthbearer_is_rfc_7628s_example():
    # RFC 7628 §4.1, before base64
    assert sasl.oauthbearer("user@example.com", "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
                            "server.example.com", 143) == (
        "n,a=user@example.com,\x01host=server.example.com\x01port=143"
        "\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01")


def test_oauthbearer_without_host_and_port_and_with_a_comma_in_the_user():
    assert sasl.oauthbearer("a,b=c@example.com", "t") == "n,a=a=2Cb=3Dc@example.com,\x01auth=Bearer t\x01\x01"


def test_xoauth2_is_googles_format():
    assert sasl.xoauth2("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg") == (
        "user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01")


@pytest.mark.parametrize(("offered", "chosen"), [
    (["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"], "OAUTHBEARER"),
    (["xoauth2", "plain"], "XOAUTH2"),
    (["OAUTHBEARER"], "OAUTHBEARER"),
    (["PLAIN", "LOGIN"], None),
    ([], None),
])
def test_oauthbearer_is_preferred_xoauth2_taken_else_none(offered, chosen):
    assert sasl.choose(offered) == chosen


def test_initial_response_and_the_answer_to_a_failure():
    assert sasl.initial_response("XOAUTH2", "u", "t") == sasl.xoauth2("u", "t")
    assert sasl.initial_response("OAUTHBEARER", "u", "t", "h", 587) == sasl.oauthbearer("u", "t", "h", 587)
    assert (sasl.after_failure("XOAUTH2"), sasl.after_failure("OAUTHBEARER")) == ("", "\x01")
    with pytest.raises(ValueError):
        sasl.initial_response("PLAIN", "u", "t")


@pytest.mark.parametrize(("challenge", "status"), [
    (b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}', "401"),
    (b'{"status":"invalid_token"}', "invalid_token"),
    (b"not json", None),
    (b"[1, 2]", None),
])
def test_the_status_of_an_error_challenge(challenge, status):
    assert sasl.failure_status(challenge) == status
