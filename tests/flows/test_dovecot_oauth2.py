"""Dovecot checks bearer tokens with the test authorization server: the ground the helpdesk's OAuth2 login stands on.

A private Dovecot (``tests/flows/dovecot.py`` with ``oauth2=``) whose passdb is
its ``oauth2`` driver asks the loopback OAuth2 server's introspection endpoint
(``tests/flows/oauth_server.py``) about every SASL OAUTHBEARER and XOAUTH2
login. Only imapclient talks to it here, no helpdesk code, so these tests pin
down what the server side does: which tokens it takes, what it answers when it
refuses one, that it asks again at every login (no cache), that a session
outlives its token, and that an authorization server answering 503 is a
temporary failure, told apart from a refused token by the response code.
"""

from __future__ import annotations

import time
import uuid

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.flows import dovecot as dc
from tests.flows.oauth_server import OAuthServer

MECHANISMS = ("OAUTHBEARER", "XOAUTH2")
REFUSED = r"^\[AUTHENTICATIONFAILED\] Authentication failed\.$"
UNAVAILABLE = r"^\[UNAVAILABLE\] Temporary authentication failure\."


# --------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def oauth():
    server = OAuthServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def answering(oauth):
    """Every test starts with the authorization server up."""
    oauth.down = False
    yield
    oauth.down = False


def _dovecot(name: str, oauth: OAuthServer, **options) -> dc.Dovecot:
    return dc.started(name, oauth2=oauth.introspection_url, **options)


@pytest.fixture(scope="module")
def dovecot(oauth):
    server = _dovecot("oauth2", oauth)
    yield server
    server.close()


@pytest.fixture(scope="module")
def dovecot_xoauth2(oauth):
    """A server that offers XOAUTH2 only, as some providers' IMAP does."""
    server = _dovecot("xoauth2", oauth, oauth2_mechanisms="xoauth2")
    yield server
    server.close()


# --------------------------------------------------------------------- helpers


def mailbox() -> str:
    """A fresh mailbox login, an address as at Microsoft 365 and Google."""
    return f"u{uuid.uuid4().hex[:10]}@shop.example"


def login(server: dc.Dovecot, mechanism: str, user: str, token: str) -> IMAPClient:
    client = server.connect()
    try:
        if mechanism == "OAUTHBEARER":
            client.oauthbearer_login(user, token)
        else:
            client.oauth2_login(user, token)
    except BaseException:
        client.shutdown()
        raise
    return client


def logged(server: dc.Dovecot, text: str, timeout: float = 5.0) -> str:
    """The first line of Dovecot's log holding ``text`` (its log process writes a moment later)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in (server.root / "dovecot.log").read_text().splitlines() if text in line]
        if found or time.monotonic() > deadline:
            assert found, f"not in dovecot.log: {text}"
            return found[0]
        time.sleep(0.05)


def note(n: int) -> bytes:
    return (f"From: c{n}@example.com\r\nTo: support@shop.example\r\nMessage-ID: <n{n}@example.com>\r\n"
            f"Subject: note {n}\r\n\r\nHello {n}.\r\n").encode()


# --------------------------------------------------------------------- logging in


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_token_the_server_issued_opens_its_mailbox(dovecot, oauth, mechanism):
    user = mailbox()
    dovecot.append(user, note(1))            # as the master user: the passdb takes no password
    asked = oauth.introspections

    client = login(dovecot, mechanism, user, oauth.issue(user))
    try:
        assert client.select_folder("INBOX")[b"EXISTS"] == 1
    finally:
        client.logout()

    assert oauth.introspections == asked + 1
    assert logged(dovecot, f"Login: user=<{user}>, method={mechanism},")


def test_every_login_asks_the_authorization_server_again(dovecot, oauth):
    """No cache (``auth_cache_size = 0``): a token that dies is refused at the very next login."""
    user = mailbox()
    token = oauth.issue(user)
    asked = oauth.introspections
    for mechanism in MECHANISMS * 2:
        login(dovecot, mechanism, user, token).logout()
    assert oauth.introspections == asked + 4

    oauth.expire_all()
    with pytest.raises(LoginError, match=REFUSED):
        login(dovecot, "OAUTHBEARER", user, token)


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("fault", ["expired", "unknown", "another mailbox's"])
def test_a_bad_token_is_refused_and_the_log_says_why(dovecot, oauth, mechanism, fault):
    user = mailbox()
    token = {"expired": lambda: oauth.issue(user), "unknown": lambda: "at-never-issued-" + user,
             "another mailbox's": lambda: oauth.issue("someone@shop.example")}[fault]()
    if fault == "expired":
        oauth.expire_all()

    with pytest.raises(LoginError, match=REFUSED):
        login(dovecot, mechanism, user, token)

    why = ("Username '" if fault == "another mailbox's" else "Provided token is not valid")
    line = logged(dovecot, f"oauth2({user},")
    assert "oauth2 failed: Introspection failed: " + why in line
    assert token not in (dovecot.root / "dovecot.log").read_text()   # verbose, but never the token


def test_oauthbearer_needs_the_mailbox_in_its_header(dovecot, oauth):
    """Dovecot 2.3 takes the user from OAUTHBEARER's ``a=``, not from the token."""
    user = mailbox()
    with pytest.raises(LoginError, match=REFUSED):
        login(dovecot, "OAUTHBEARER", "", oauth.issue(user))
    assert "Missing username or token" in logged(dovecot, "oauthbearer(?,")


def test_a_password_is_refused_even_a_token_sent_as_one(dovecot, oauth):
    user = mailbox()
    for secret in (dc.PASSWORD, oauth.issue(user)):
        client = dovecot.connect()
        with pytest.raises(LoginError, match=r"\[AUTHENTICATIONFAILED\]"):
            client.login(user, secret)
        client.shutdown()
    assert "(user disabled)" in logged(dovecot, f"user=<{user}>, method=PLAIN")


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_the_authorization_server_down_is_a_temporary_failure(dovecot, oauth, mechanism):
    user = mailbox()
    token = oauth.issue(user)
    oauth.down = True
    with pytest.raises(LoginError, match=UNAVAILABLE):
        login(dovecot, mechanism, user, token)
    assert "oauth2 failed: Introspection failed: 503 Service Unavailable" in logged(dovecot, f"oauth2({user},")

    oauth.down = False
    login(dovecot, mechanism, user, token).logout()


# --------------------------------------------------------------------- a session outlives its token


def test_an_idle_session_goes_on_after_its_token_expired(dovecot, oauth):
    """Dovecot checks the token at login only: IDLE still announces mail, FETCH and MOVE still work."""
    user = mailbox()
    token = oauth.issue(user)
    client = login(dovecot, "XOAUTH2", user, token)
    try:
        client.create_folder("Processed")
        client.select_folder("INBOX")
        client.idle()
        oauth.expire_all()
        dovecot.append(user, note(1))
        announced: list = []
        deadline = time.monotonic() + 5
        while not any(item[1] == b"EXISTS" for item in announced) and time.monotonic() < deadline:
            announced += client.idle_check(timeout=0.5)
        client.idle_done()
        assert (1, b"EXISTS") in announced

        [uid] = client.search("ALL")
        assert client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"] == note(1)
        client.move([uid], "Processed")
        assert client.search("ALL") == []
    finally:
        client.logout()

    with pytest.raises(LoginError, match=REFUSED):       # but the next login needs a new token
        login(dovecot, "XOAUTH2", user, token)
    login(dovecot, "XOAUTH2", user, oauth.issue(user)).logout()


# --------------------------------------------------------------------- a server with XOAUTH2 only


def test_a_server_with_xoauth2_only_does_not_offer_oauthbearer(dovecot_xoauth2, oauth):
    user = mailbox()
    client = dovecot_xoauth2.connect()
    capabilities = client.capabilities()
    client.shutdown()
    assert b"AUTH=XOAUTH2" in capabilities and b"AUTH=OAUTHBEARER" not in capabilities

    with pytest.raises(LoginError, match="Unsupported authentication mechanism"):
        login(dovecot_xoauth2, "OAUTHBEARER", user, oauth.issue(user))

    dovecot_xoauth2.append(user, note(1))
    client = login(dovecot_xoauth2, "XOAUTH2", user, oauth.issue(user))
    try:
        assert client.select_folder("INBOX")[b"EXISTS"] == 1
    finally:
        client.logout()
