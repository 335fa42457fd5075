"""The SMTP transport logging in with OAuth2 tokens, against a real aiosmtpd relay that asks
the loopback OAuth2 server (RFC 7662 introspection) about every token it is shown."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from helpdesk.clock import Clock
from helpdesk.config.settings import OAuth2Settings
from helpdesk.errors import TemporaryDeliveryError
from helpdesk.oauth2.tokens import Tokens
from helpdesk.outbound.transports import SmtpTransport
from tests.flows import oauth_relay
from tests.flows.oauth_relay import Login, TokenRelay
from tests.flows.oauth_server import OAuthServer

USER = "support@shop.example"
SECRET = "client-secret-never-logged"
MESSAGE = b"From: support@shop.example\r\nTo: bob@example.com\r\nSubject: hello\r\n\r\nHello Bob\r\n"
START = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def oauth():
    server = OAuthServer().start()
    server.add_client("helpdesk", SECRET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return oauth_relay.certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def relay(oauth, tls):
    """Start a relay offering the given mechanisms; each is stopped after the test."""
    started = []

    def start(mechanisms=("OAUTHBEARER", "XOAUTH2")) -> tuple[TokenRelay, int]:
        handler = TokenRelay(oauth)
        controller = oauth_relay.start(handler, tls[1], mechanisms)
        started.append(controller)
        return handler, controller.port

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def grant(oauth, tmp_path, monkeypatch):
    """Refresh-token settings for USER; the refresh token in a file, the secret in the environment."""
    (tmp_path / "support.rt").write_text(oauth.add_refresh_token(USER, "helpdesk"))
    monkeypatch.setenv("HD_SECRET", SECRET)
    return OAuth2Settings(provider=None, tenant=None, grant="refresh_token", token_url=oauth.token_url,
                          scope=None, client_id="helpdesk", client_secret_env="HD_SECRET",
                          client_secret_file=None, refresh_token_file=tmp_path / "support.rt",
                          token_command=None, timeout=dt.timedelta(seconds=30), protocol="smtp",
                          label="outgoing relay")


def transport(port: int, tls, settings: OAuth2Settings, clock: Clock | None = None, **kwargs) -> SmtpTransport:
    clock = clock or Clock(START)
    # 30 s: the relay asks the OAuth2 server over HTTP before it answers AUTH, and a CI
    # machine running two suites once took longer than 5 s; no test here is about time-outs.
    return SmtpTransport("127.0.0.1", port, "starttls", username=USER, timeout=30, ca_file=tls[0],
                         local_hostname="helpdesk.test", tokens=Tokens(settings, clock), clock=clock, **kwargs)


def send(smtp: SmtpTransport) -> str:
    return smtp.send("support@shop.example", ["bob@example.com"], MESSAGE)


# --------------------------------------------------------------- logging in


def test_oauthbearer_when_the_relay_offers_it(relay, tls, grant):
    handler, port = relay()
    with transport(port, tls, grant) as smtp:
        assert send(smtp).startswith("250")
        assert smtp.login.mechanism == "OAUTHBEARER"

    assert handler.logins == [Login("OAUTHBEARER", USER, True)]
    assert handler.received == [("support@shop.example", ["bob@example.com"], MESSAGE)]
    [said] = handler.initial_responses
    assert said.startswith(f"n,a={USER},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer at-")


def test_a_relay_offering_only_xoauth2(relay, tls, grant):
    handler, port = relay(("XOAUTH2",))
    with transport(port, tls, grant) as smtp:
        send(smtp)
    assert handler.logins == [Login("XOAUTH2", USER, True)]
    assert handler.initial_responses[0].startswith(f"user={USER}\x01auth=Bearer at-")
    assert len(handler.received) == 1


def test_one_login_and_one_token_for_a_burst(relay, tls, grant, oauth):
    handler, port = relay()
    with transport(port, tls, grant) as smtp:
        for _ in range(3):
            send(smtp)
    assert len(handler.logins) == 1 and len(oauth.requests) == 1 and len(handler.received) == 3


def test_a_token_from_a_token_command(relay, tls, oauth, tmp_path):
    handler, port = relay()
    helper = tmp_path / "get-token"
    helper.write_text(f"#!/bin/sh\necho {oauth.issue(USER)}\n")
    helper.chmod(0o700)
    settings = OAuth2Settings(provider=None, tenant=None, grant=None, token_url=None, scope=None, client_id=None,
                              client_secret_env=None, client_secret_file=None, refresh_token_file=None,
                              token_command=(str(helper),), timeout=dt.timedelta(seconds=30), protocol="smtp",
                              label="outgoing relay")
    with transport(port, tls, settings) as smtp:
        send(smtp)
    assert handler.logins == [Login("OAUTHBEARER", USER, True)]


# --------------------------------------------------------------- a refused token


def test_an_expired_token_is_refused_then_a_fresh_one_logs_in(relay, tls, grant, oauth):
    handler, port = relay()
    with transport(port, tls, grant) as smtp:
        send(smtp)
        smtp.close()                     # the next burst opens a new connection
        oauth.expire_all()               # the cached token died early (revoked, or clocks apart)
        assert send(smtp).startswith("250")

    assert [login.accepted for login in handler.logins] == [True, False, True]
    assert len(oauth.requests) == 2 and len(handler.received) == 2


def test_a_token_refused_twice_is_temporary_logged_once_and_paused(relay, tls, oauth, grant, caplog):
    """The token is good, but for another account: the relay refuses it, fresh or not."""
    grant.refresh_token_file.write_text(oauth.add_refresh_token("someone-else@shop.example", "helpdesk"))
    handler, port = relay()
    clock = Clock(START)
    smtp = transport(port, tls, grant, clock, login_pause=60)

    with caplog.at_level(logging.DEBUG, logger="helpdesk"):
        for _ in range(3):                               # the rest of the queue, at once
            with pytest.raises(TemporaryDeliveryError) as caught:
                send(smtp)
    message = str(caught.value)
    assert message.startswith(f"relay 127.0.0.1:{port} refused the token for {USER} with OAUTHBEARER "
                              "(535 5.7.8 Authentication credentials invalid), a fresh one too; check that")
    assert len(handler.logins) == 2 and len(oauth.requests) == 2        # not once per mail
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [message]

    clock.advance(dt.timedelta(seconds=61))                             # the pause is over: tried again
    with caplog.at_level(logging.DEBUG, logger="helpdesk"), pytest.raises(TemporaryDeliveryError):
        send(smtp)
    assert len(handler.logins) == 4
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1   # the same fault: not again
    assert handler.received == []


def test_a_revoked_refresh_token_is_temporary_for_the_mail_and_says_what_to_do(relay, tls, oauth, grant,
                                                                              caplog):
    refresh = grant.refresh_token_file.read_text()
    oauth.revoke(refresh)
    handler, port = relay()
    clock = Clock(START)
    smtp = transport(port, tls, grant, clock)

    with caplog.at_level(logging.DEBUG), pytest.raises(TemporaryDeliveryError) as caught:
        send(smtp)
    assert str(caught.value) == (f"outgoing relay: token endpoint {oauth.token_url} refused the refresh token "
                                 "(invalid_grant: refresh token expired or revoked); it expired or was revoked: "
                                 "run the provider's consent again and write the new refresh token to "
                                 f"{grant.refresh_token_file}")
    assert handler.logins == []
    assert [r.levelname for r in caplog.records if r.name.startswith("helpdesk")] == ["ERROR"]
    assert refresh not in caplog.text and SECRET not in caplog.text

    grant.refresh_token_file.write_text(oauth.add_refresh_token(USER, "helpdesk"))   # the consent, again
    clock.advance(dt.timedelta(minutes=2))
    with caplog.at_level(logging.INFO, logger="helpdesk"):
        assert send(smtp).startswith("250")
    assert "logged in as support@shop.example with a token again" in caplog.text
    for token in oauth.tokens:
        assert token not in caplog.text


def test_the_token_endpoint_down_is_temporary(relay, tls, oauth, grant):
    _, port = relay()
    oauth.down = True
    with pytest.raises(TemporaryDeliveryError, match="answered HTTP 503; trying again later$"):
        send(transport(port, tls, grant))


def test_a_relay_without_a_token_mechanism(relay, tls, oauth, grant):
    _, port = relay(("PLAIN", "LOGIN"))
    with pytest.raises(TemporaryDeliveryError) as caught:
        send(transport(port, tls, grant))
    assert str(caught.value) == (f"relay 127.0.0.1:{port} offers no XOAUTH2 or OAUTHBEARER login (only LOGIN "
                                 "PLAIN); check the transport URL and that the relay takes OAuth2 tokens")
    assert oauth.requests == []          # no token asked for a relay that cannot take one


def test_check_login_logs_in_and_sends_nothing(relay, tls, grant):
    handler, port = relay(("XOAUTH2",))
    smtp = transport(port, tls, grant)
    smtp.check_login()
    smtp.close()
    assert smtp.login.mechanism == "XOAUTH2" and smtp.login.token.expires == START + dt.timedelta(hours=1)
    assert handler.logins == [Login("XOAUTH2", USER, True)] and handler.received == []
