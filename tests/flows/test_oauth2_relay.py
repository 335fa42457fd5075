"""The whole helpdesk sending through a relay that wants OAuth2 tokens, and
``helpdesk oauth2 test``: real relay (aiosmtpd), real OAuth2 server, real outbox."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys

import pytest

from helpdesk.cli import main
from helpdesk.clock import Clock
from helpdesk.reports import listings
from tests.conftest import START, Desk, mail, write_config
from tests.flows import oauth_relay
from tests.flows.oauth_relay import TokenRelay
from tests.flows.oauth_server import OAuthServer

USER = "support@shop.example"
SECRET = "client-secret-never-printed"


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
    handler = TokenRelay(oauth)
    controller = oauth_relay.start(handler, tls[1])
    yield handler, controller.port
    controller.stop()


@pytest.fixture
def config(tmp_path, oauth, relay, tls):
    """A helpdesk whose outgoing relay wants a token from a refresh-token grant."""
    (tmp_path / "client.secret").write_text(SECRET + "\n")
    (tmp_path / "support.rt").write_text(oauth.add_refresh_token(USER, "helpdesk") + "\n")
    outgoing = (f'transport = "smtp://127.0.0.1:{relay[1]}"\nusername = "{USER}"\nca_file = "{tls[0]}"\n'
                f'auth = "oauth2"\noauth2.token_url = "{oauth.token_url}"\noauth2.client_id = "helpdesk"\n'
                'oauth2.client_secret_file = "client.secret"\noauth2.refresh_token_file = "support.rt"')
    return write_config(tmp_path, outgoing=outgoing)


def outbox_rows(desk: Desk) -> list[dict]:
    return listings.ticket_detail("T-1")["outbox"]


def test_mail_goes_out_through_the_relay_with_a_token(tmp_path, config, relay, oauth):
    handler, _ = relay
    desk = Desk(tmp_path, config, Clock(START))
    try:
        desk.ingest(mail())
        assert {row["status"] for row in outbox_rows(desk)} == {"sent"}
    finally:
        desk.app.close()
    assert sorted(rcpts[0] for _, rcpts, _ in handler.received) == ["alice@shop.example", "bob@example.com"]
    assert [login.accepted for login in handler.logins] == [True] and len(oauth.requests) == 1


def test_a_revoked_refresh_token_leaves_the_mail_queued_with_one_clear_error(tmp_path, config, relay, oauth,
                                                                             caplog):
    handler, _ = relay
    revoked = (tmp_path / "support.rt").read_text().strip()
    oauth.revoke(revoked)
    desk = Desk(tmp_path, config, Clock(START))
    try:
        with caplog.at_level(logging.INFO):
            desk.ingest(mail())                          # the acknowledgement and the staff notice
        rows = outbox_rows(desk)
        assert {row["status"] for row in rows} == {"queued"} and len(rows) == 2      # to be retried
        assert all("refused the refresh token" in row["last_error"] and "consent" in row["last_error"]
                   for row in rows)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0] == rows[0]["last_error"]
        assert errors[0].startswith(f"outgoing relay: token endpoint {oauth.token_url} refused the refresh "
                                    "token (invalid_grant")
        assert len(oauth.requests) == 1 and handler.logins == []        # asked once, not once per mail
        assert revoked not in caplog.text and SECRET not in caplog.text

        (tmp_path / "support.rt").write_text(oauth.add_refresh_token(USER, "helpdesk"))   # consent again
        desk.clock.advance(dt.timedelta(minutes=2))
        report = desk.app.deliver()
        assert (report.sent, report.deferred) == (2, 0)
        assert {row["status"] for row in outbox_rows(desk)} == {"sent"}
    finally:
        desk.app.close()
    assert len(handler.received) == 2


def test_the_token_endpoint_down_defers_and_the_mail_goes_once_it_is_back(tmp_path, config, relay, oauth):
    handler, _ = relay
    oauth.down = True
    desk = Desk(tmp_path, config, Clock(START))
    try:
        desk.ingest(mail())
        assert {row["status"] for row in outbox_rows(desk)} == {"queued"}
        oauth.down = False
        desk.clock.advance(dt.timedelta(minutes=2))
        assert desk.app.deliver().sent == 2
    finally:
        desk.app.close()
    assert len(handler.received) == 2


# --------------------------------------------------------------- helpdesk oauth2 test


def test_oauth2_test_outgoing_logs_in_once_and_says_how(config, relay, capsys):
    handler, port = relay
    assert main(["--config", str(config), "oauth2", "test", "outgoing"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    [line] = out.splitlines()
    assert line.startswith(f"outgoing relay 127.0.0.1:{port}: logged in as {USER} with OAUTHBEARER; "
                           "the token is valid until ")
    assert line.endswith(" UTC")
    assert [login.accepted for login in handler.logins] == [True] and handler.received == []


def test_oauth2_test_outgoing_failing_is_one_line_on_stderr_and_exit_1(tmp_path, config, oauth):
    oauth.revoke((tmp_path / "support.rt").read_text().strip())
    done = subprocess.run([sys.executable, "-m", "helpdesk", "--config", str(config), "oauth2", "test", "outgoing"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [(
        f"helpdesk: outgoing relay: token endpoint {oauth.token_url} refused the refresh token (invalid_grant: "
        "refresh token expired or revoked); it expired or was revoked: run the provider's consent again and "
        f"write the new refresh token to {tmp_path / 'support.rt'}")]
    assert SECRET not in done.stderr


@pytest.fixture
def imap_config(tmp_path, oauth):
    """A third mailbox read over IMAP with a client-credentials grant (no IMAP server listens)."""
    oauth.add_app("app-id", "app-secret", "shared@shop.example")
    (tmp_path / "app.secret").write_text("app-secret")
    extra = ('\n[[mailboxes]]\nname = "shared"\naddress = "shared@shop.example"\n'
             'source = "imaps://shared%40shop.example@127.0.0.1:1/INBOX"\nauth = "oauth2"\n'
             f'[mailboxes.oauth2]\ntoken_url = "{oauth.token_url}"\ngrant = "client_credentials"\n'
             'client_id = "app-id"\nclient_secret_file = "app.secret"\n'
             'scope = "https://outlook.office365.com/.default"\n')
    return write_config(tmp_path, extra=extra)


def test_oauth2_test_a_mailbox_whose_server_is_not_there_is_one_line_and_exit_1(imap_config, oauth, capsys):
    """The login itself is tried now (tests/flows/test_oauth2_imap.py); here nothing listens."""
    assert main(["--config", str(imap_config), "oauth2", "test", "shared"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["helpdesk: mailbox shared: cannot connect to 127.0.0.1:1: connection refused"]


@pytest.mark.parametrize(("name", "message"), [
    ("sales", "helpdesk: no mailbox named 'sales': NAME is 'outgoing' or a mailbox (support, disputes, shared)"),
    ("support", 'helpdesk: mailbox support logs in with auth = "password": nothing to test (see docs/oauth2.md)'),
    ("outgoing", 'helpdesk: [outgoing] logs in with auth = "password": nothing to test (see docs/oauth2.md)'),
])
def test_oauth2_test_what_cannot_be_tested(imap_config, capsys, name, message):
    assert main(["--config", str(imap_config), "oauth2", "test", name]) == 1
    out, err = capsys.readouterr()
    assert (out, err.splitlines()) == ("", [message])


def test_check_logs_in_to_the_relay_with_a_token_as_delivery_does(config, relay):
    from helpdesk.config.loader import load_config
    from helpdesk.runtime import check

    handler, _port = relay
    result = check.relay(load_config(config))
    assert result.level == "ok", result.line()
    assert [login.accepted for login in handler.logins] == [True] and handler.received == []
