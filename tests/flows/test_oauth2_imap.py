"""IMAP mailboxes with ``auth = "oauth2"``: the whole helpdesk reading a Dovecot that takes
only bearer tokens, which it checks with the loopback OAuth2 server.

Nothing is mocked: a private Dovecot (``tests/flows/dovecot.py`` with ``oauth2=``)
asks the test authorization server (``tests/flows/oauth_server.py``) about every
OAUTHBEARER / XOAUTH2 login, and the helpdesk gets its tokens from that server's
token endpoint (refresh-token and client-credentials grants) or from a
``token_command``. Dovecot checks a token at login only (a session outlives it), so
"a token that expires mid-run" bites at the next reconnect: the tests restart
Dovecot to force one, as the password tests do. How Dovecot itself answers is
pinned down in ``test_dovecot_oauth2.py``.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from helpdesk import cli
from helpdesk.intake import imap
from helpdesk.oauth2 import sasl
from helpdesk.runtime import service
from helpdesk.store.schema import RawMessage, Ticket
from tests.flows import dovecot as dc
from tests.flows.oauth_server import OAuthServer
from tests.flows.test_imap import acks, customer, handled, ids, make_desk, running, wait_for

ROOT = Path(__file__).resolve().parents[2]
SECRET = "client-secret-never-logged"
GRANTS = ("refresh_token", "client_credentials", "token_command")


# --------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def oauth():
    server = OAuthServer().start()
    server.add_client("helpdesk", SECRET)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def steady(oauth, monkeypatch):
    """Every test starts with the authorization server up and quick reconnects."""
    oauth.down, oauth.lifetime = False, 3600.0
    monkeypatch.setattr(imap, "FIRST_RETRY", 0.2)
    yield
    oauth.down = False


def _dovecot(name: str, oauth: OAuthServer, **options) -> dc.Dovecot:
    return dc.started(name, oauth2=oauth.introspection_url, **options)


@pytest.fixture(scope="module")
def dovecot(oauth):
    server = _dovecot("oauth2-intake", oauth)
    yield server
    server.close()


@pytest.fixture
def own_dovecot(oauth):
    """A server of the test's own, for tests that restart it."""
    server = _dovecot("oauth2-own", oauth)
    yield server
    server.close()


@pytest.fixture
def desks():
    made = []
    yield made
    for desk in made:
        desk.app.close()


# --------------------------------------------------------------------- helpers


def mailbox_user() -> str:
    """A fresh mailbox, an address as at Microsoft 365 and Google."""
    return f"u{uuid.uuid4().hex[:10]}@shop.example"


def oauth_lines(server: dc.Dovecot, oauth: OAuthServer, folder: Path, login: str, grant: str = "refresh_token",
                extra: str = "") -> str:
    """The ``[[mailboxes]]`` keys that read ``login``'s INBOX with tokens from ``grant``; the
    refresh token is in ``<local part>.rt``."""
    name = login.split("@")[0]
    source = server.source(login.replace("@", "%40"))
    lines = f'source = "{source}"\nauth = "oauth2"\nstarttls = false\n{extra}\n'
    if grant == "token_command":
        return lines + f'oauth2.token_command = "{token_command(folder, oauth, login)}"\n'
    (folder / "client.secret").write_text(SECRET + "\n")
    lines += f'oauth2.token_url = "{oauth.token_url}"\noauth2.client_secret_file = "client.secret"\n'
    if grant == "client_credentials":
        oauth.add_app(f"app-{name}", SECRET, login)
        return lines + (f'oauth2.grant = "client_credentials"\noauth2.client_id = "app-{name}"\n'
                        'oauth2.scope = "https://outlook.office365.com/.default"\n')
    (folder / f"{name}.rt").write_text(oauth.add_refresh_token(login, "helpdesk") + "\n")
    return lines + f'oauth2.client_id = "helpdesk"\noauth2.refresh_token_file = "{name}.rt"\n'


def token_command(folder: Path, oauth: OAuthServer, login: str) -> Path:
    """A helper program, as oama would be: asks the authorization server, prints the token."""
    name = login.split("@")[0]
    oauth.add_app(f"cmd-{name}", SECRET, login)
    script = folder / f"token-{name}"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""\
        import json, urllib.parse, urllib.request
        form = urllib.parse.urlencode({{"grant_type": "client_credentials", "client_id": "cmd-{name}",
                                        "client_secret": "{SECRET}"}}).encode()
        with urllib.request.urlopen("{oauth.token_url}", data=form, timeout=10) as answer:
            print(json.load(answer)["access_token"])
        """))
    script.chmod(0o755)
    return script


def secrets_of(oauth: OAuthServer, folder: Path) -> list[str]:
    """Everything that must never be in a log line: the client secret, refresh tokens,
    access tokens, and the SASL strings that carry them (raw and base64)."""
    found = [SECRET, *oauth.refresh_tokens]
    for token, issued in list(oauth.tokens.items()):
        found.append(token)
        for response in (sasl.oauthbearer(issued.username, token), sasl.xoauth2(issued.username, token)):
            found.append(base64.b64encode(response.encode()).decode())
    return found


def dovecot_lines(server: dc.Dovecot, text: str) -> list[str]:
    return [line for line in (server.root / "dovecot.log").read_text().splitlines() if text in line]


def retries(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "helpdesk.imap"
            and r.getMessage().startswith(f"mailbox {name}: ") and "retrying in" in r.getMessage()]


# --------------------------------------------------------------------- each source of tokens


@pytest.mark.parametrize("grant", GRANTS)
def test_each_kind_of_token_reads_mail_end_to_end(dovecot, oauth, tmp_path, desks, caplog, grant):
    """Tickets made, acknowledged, mail moved to Processed; OAUTHBEARER (preferred);
    nothing secret in any log line, imaplib's protocol log included."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="imapclient")
    login = mailbox_user()
    desks.append(make_desk(tmp_path, oauth_lines(dovecot, oauth, tmp_path, login, grant)))
    dovecot.append(login, customer(1), customer(2))

    assert service.run(desks[0].app, once=True) == 0

    assert Ticket.select().count() == 2 and acks() == 2 and RawMessage.select().count() == 2
    assert ids(dovecot, login) == [] and sorted(ids(dovecot, login, "Processed")) == ["m1", "m2"]
    assert dovecot_lines(dovecot, f"Login: user=<{login}>, method=OAUTHBEARER,")
    assert "AUTHENTICATE" in caplog.text          # the protocol log was on
    leaked = [s for s in secrets_of(oauth, tmp_path) if s in caplog.text]
    assert leaked == []


def test_a_server_that_offers_only_xoauth2_gets_xoauth2(oauth, tmp_path, desks, capsys):
    server = _dovecot("xoauth2-intake", oauth, oauth2_mechanisms="xoauth2")
    try:
        login = mailbox_user()
        desks.append(make_desk(tmp_path, oauth_lines(server, oauth, tmp_path, login)))
        server.append(login, customer(1))
        config = str(desks[0].config_path)

        assert cli.main(["--config", config, "oauth2", "test", "support"]) == 0
        assert " with XOAUTH2; INBOX holds 1 message; " in capsys.readouterr().out

        assert service.run(desks[0].app, once=True) == 0
        assert Ticket.select().count() == 1 and ids(server, login) == []
        assert len(dovecot_lines(server, f"Login: user=<{login}>, method=XOAUTH2,")) == 2
        assert not dovecot_lines(server, "Unsupported authentication mechanism")
    finally:
        server.close()


# --------------------------------------------------------------------- tokens that die


@pytest.mark.parametrize("wait", ["idle", "polling"])
def test_a_token_that_expires_mid_run_is_replaced_at_the_next_reconnect(oauth, tmp_path, desks, monkeypatch,
                                                                       caplog, wait):
    """The session outlives its token; after a restart the cached token is refused, one
    fresh token is asked for and the mail goes on: nothing lost, nothing doubled."""
    options = {"capabilities": dc.WITHOUT_MOVE} if wait == "polling" else {}   # no IDLE
    server = _dovecot(f"expiry-{wait}", oauth, **options)
    try:
        login = mailbox_user()
        poll = 'poll_interval = "1s"' if wait == "polling" else 'poll_interval = "1h"'
        desks.append(make_desk(tmp_path, oauth_lines(server, oauth, tmp_path, login, extra=poll)))
        with running(desks[0].app, monkeypatch) as watchers:
            [watcher] = watchers
            assert watcher.login.tokens is not None
            server.append(login, customer(1))
            wait_for(lambda: Ticket.select().count() == 1, 10)
            asked = len(oauth.requests)

            oauth.expire_all()                                  # the token dies mid-run
            server.append(login, customer(2))                   # the open session does not care
            wait_for(lambda: Ticket.select().count() == 2 and not ids(server, login), 10)
            server.restart()                                    # the next login needs a new token
            server.append(login, customer(3))
            wait_for(lambda: Ticket.select().count() == 3 and not ids(server, login), 20)
            assert watcher.login.mechanism == "OAUTHBEARER"
        assert len(oauth.requests) == asked + 1                 # one fresh token, not one per retry
        assert sorted(ids(server, login, "Processed")) == ["m1", "m2", "m3"]
        assert [line for line in dovecot_lines(server, f"oauth2({login},") if "Provided token is not valid" in line]
    finally:
        server.close()
    assert RawMessage.select().count() == 3 and acks() == 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_revoked_refresh_token_is_one_error_naming_the_mailbox_and_the_other_goes_on(
        own_dovecot, oauth, tmp_path, desks, monkeypatch, caplog):
    """Revoked while the helpdesk runs, and its access token dead too: the login is refused,
    the fresh token cannot be had, one ERROR says what to do; the other mailbox reads on.
    A new refresh token written to the file is picked up at the next slow retry."""
    caplog.set_level(logging.DEBUG, logger="helpdesk")
    monkeypatch.setattr(imap, "SLOW_RETRY", 0.5)
    support, disputes = mailbox_user(), mailbox_user()
    hour = 'poll_interval = "1h"'
    desks.append(make_desk(tmp_path, oauth_lines(own_dovecot, oauth, tmp_path, support, extra=hour),
                           oauth_lines(own_dovecot, oauth, tmp_path, disputes, extra=hour)))
    refresh_file = tmp_path / f"{disputes.split('@')[0]}.rt"
    with running(desks[0].app, monkeypatch) as watchers:
        wait_for(lambda: len(watchers) == 2 and all(w.idling.is_set() for w in watchers), 10)
        oauth.revoke(refresh_file.read_text().strip())
        oauth.expire_all()
        own_dovecot.restart()
        own_dovecot.append(support, customer(1))
        own_dovecot.append(disputes, customer(2, to="disputes@shop.example"))
        wait_for(lambda: Ticket.select().count() == 1 and len(retries(caplog, "disputes")) >= 3, 20)
        assert handled("disputes") == 0 and ids(own_dovecot, disputes) == ["m2"]

        refused = [r for r in retries(caplog, "disputes") if "refresh token" in r.getMessage()]
        assert refused[0].levelno == logging.ERROR
        assert all(r.levelno == logging.DEBUG for r in refused[1:])      # logged once
        assert refused[0].getMessage() == (
            f"mailbox disputes: token endpoint {oauth.token_url} refused the refresh token (invalid_grant: "
            "refresh token expired or revoked); it expired or was revoked: run the provider's consent again "
            f"and write the new refresh token to {refresh_file}; retrying in 0s")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == refused[:1]                                     # support: nothing to say

        refresh_file.write_text(oauth.add_refresh_token(disputes, "helpdesk") + "\n")   # consent again
        wait_for(lambda: handled("disputes") == 1 and not ids(own_dovecot, disputes), 10)
    assert "mailbox disputes: reading imap://127.0.0.1:" in caplog.text
    assert Ticket.get().mailbox == "support" and ids(own_dovecot, support) == []
    leaked = [s for s in secrets_of(oauth, tmp_path) if s in caplog.text]
    assert leaked == []


def test_a_token_refused_again_when_fresh_is_one_error_and_run_once_exits_1(dovecot, oauth, tmp_path, desks,
                                                                            caplog):
    """A token_command that prints another account's token: refused, the fresh one too."""
    login, other = mailbox_user(), mailbox_user()
    lines = oauth_lines(dovecot, oauth, tmp_path, login, "token_command")
    token_command(tmp_path, oauth, other).rename(tmp_path / f"token-{login.split('@')[0]}")   # the wrong one
    desks.append(make_desk(tmp_path, lines))
    dovecot.append(login, customer(1))

    assert cli.main(["--config", str(desks[0].config_path), "run", "--once"]) == 1
    [error] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.startswith(f"mailbox support: login as {login} at 127.0.0.1:{dovecot.port} with OAUTHBEARER "
                            "refused ([AUTHENTICATIONFAILED] Authentication failed.), a fresh token from "
                            f"token_command token-{login.split('@')[0]} too; check that the token is for this account")
    assert "password" not in error
    assert len([line for line in dovecot_lines(dovecot, f"oauth2({login},") if "did not match" in line]) == 2
    assert RawMessage.select().count() == 0 and ids(dovecot, login) == ["m1"]


# --------------------------------------------------------------------- the authorization server down


@pytest.mark.parametrize("where", ["token endpoint", "introspection"])
def test_the_authorization_server_down_is_retried_and_the_mail_read_once_it_is_back(
        own_dovecot, oauth, tmp_path, desks, monkeypatch, caplog, where):
    """Down before the first token (our token request fails), or down while Dovecot checks a
    cached token (``[UNAVAILABLE]``): a WARNING, reconnects after 1, 2, 4 ... s, no ERROR."""
    caplog.set_level(logging.DEBUG, logger="helpdesk")
    login = mailbox_user()
    desks.append(make_desk(tmp_path, oauth_lines(own_dovecot, oauth, tmp_path, login,
                                                 extra='poll_interval = "1h"')))
    oauth.down = where == "token endpoint"              # before the first token is asked for
    with running(desks[0].app, monkeypatch) as watchers:
        if where == "introspection":
            wait_for(lambda: watchers and all(w.idling.is_set() for w in watchers), 10)
            oauth.down = True
            own_dovecot.restart()                       # the next login needs the introspection
        wait_for(lambda: len(retries(caplog, "support")) >= 3, 15)
        own_dovecot.append(login, customer(1))
        oauth.down = False
        wait_for(lambda: Ticket.select().count() == 1 and not ids(own_dovecot, login), 15)
    down = [r for r in retries(caplog, "support") if "connection" not in r.getMessage()
            and "cannot connect" not in r.getMessage()]
    assert down and down[0].levelno == logging.WARNING
    assert all(r.levelno in (logging.WARNING, logging.DEBUG) for r in retries(caplog, "support"))
    message = down[0].getMessage()
    if where == "token endpoint":
        assert message.startswith(f"mailbox support: token endpoint {oauth.token_url}: answered HTTP 503; "
                                  "trying again later; retrying in ")
    else:
        assert message.startswith(f"mailbox support: login as {login} at 127.0.0.1:{own_dovecot.port} failed "
                                  "for now ([UNAVAILABLE] Temporary authentication failure.): the server could "
                                  "not check the token; retrying in ")
    assert len({r.getMessage() for r in down}) <= 5        # the same line, only the delay grows
    assert "mailbox support: reading imap://" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert RawMessage.select().count() == 1


# --------------------------------------------------------------------- helpdesk oauth2 test MAILBOX


def test_oauth2_test_a_mailbox_logs_in_and_looks_into_its_folder(dovecot, oauth, tmp_path, desks, capsys):
    login = mailbox_user()
    desks.append(make_desk(tmp_path, oauth_lines(dovecot, oauth, tmp_path, login, "client_credentials")))
    dovecot.append(login, customer(1), customer(2))

    assert cli.main(["--config", str(desks[0].config_path), "oauth2", "test", "support"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    [line] = out.splitlines()
    assert line.startswith(f"mailbox support: logged in to 127.0.0.1:{dovecot.port} as {login} with OAUTHBEARER; "
                           "INBOX holds 2 messages; the token is valid until ")
    assert line.endswith(" UTC")
    assert ids(dovecot, login) == ["m1", "m2"]                        # read-only: nothing moved
    with dovecot.client(login) as client:
        assert not client.folder_exists("Processed")                  # nor made


@pytest.mark.parametrize("fault", ["revoked", "wrong account"])
def test_oauth2_test_a_mailbox_failing_is_one_line_on_stderr_and_exit_1(dovecot, oauth, tmp_path, desks, fault):
    login = mailbox_user()
    grant = "refresh_token" if fault == "revoked" else "token_command"
    desks.append(make_desk(tmp_path, oauth_lines(dovecot, oauth, tmp_path, login, grant)))
    name = login.split("@")[0]
    if fault == "revoked":
        oauth.revoke((tmp_path / f"{name}.rt").read_text().strip())
        expected = (f"helpdesk: mailbox support: token endpoint {oauth.token_url} refused the refresh token "
                    "(invalid_grant: refresh token expired or revoked); it expired or was revoked: run the "
                    f"provider's consent again and write the new refresh token to {tmp_path / (name + '.rt')}")
    else:
        token_command(tmp_path, oauth, mailbox_user()).rename(tmp_path / f"token-{name}")
        expected = (f"helpdesk: mailbox support: login as {login} at 127.0.0.1:{dovecot.port} with OAUTHBEARER "
                    "refused ([AUTHENTICATIONFAILED] Authentication failed.), a fresh token from token_command "
                    f"token-{name} too; check that the token is for this account")
    done = subprocess.run([sys.executable, "-m", "helpdesk", "--config", str(desks[0].config_path),
                           "oauth2", "test", "support"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(expected)
    assert SECRET not in done.stderr


def test_check_logs_in_to_an_oauth2_mailbox_with_its_token_and_says_a_revoked_one_fails(
        dovecot, oauth, tmp_path, desks):
    from helpdesk.config.loader import load_config
    from helpdesk.runtime import check

    login = mailbox_user()
    desks.append(make_desk(tmp_path, oauth_lines(dovecot, oauth, tmp_path, login)))
    mailbox = load_config(desks[0].config_path).mailbox("support")
    line = check.imap_login(mailbox).line()
    assert line.startswith("warn  mailbox support: ") and "logged in" in line   # Processed not made yet
    oauth.revoke((tmp_path / f"{login.split('@')[0]}.rt").read_text().strip())
    line = check.imap_login(mailbox).line()
    assert line.startswith("FAIL  mailbox support: ") and "revoked" in line
    assert "\n" not in line
