"""The token layer against a real OAuth2 server on 127.0.0.1 (tests/flows/oauth_server.py):
both grants, the cache, rotation, and every way of not getting a token."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import stat
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from helpdesk.clock import Clock
from helpdesk.config.settings import OAuth2Settings
from helpdesk.errors import TokenError
from helpdesk.oauth2 import tokens
from tests.flows.oauth_server import OAuthServer

START = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
SECRET = "client-secret-do-not-log"


@pytest.fixture
def oauth():
    server = OAuthServer().start()
    yield server
    server.stop()


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(**changes) -> OAuth2Settings:
    base = OAuth2Settings(provider=None, tenant=None, grant="refresh_token", token_url=None, scope=None,
                          client_id="helpdesk", client_secret_env=None, client_secret_file=None,
                          refresh_token_file=None, token_command=None, timeout=dt.timedelta(seconds=30),
                          protocol="imap", label="mailbox support")
    return replace(base, **changes)


@pytest.fixture
def refresh_grant(oauth, tmp_path, monkeypatch):
    """A refresh-token grant for support@shop.example, its secret in the environment."""
    oauth.add_client("helpdesk", SECRET)
    rt = oauth.add_refresh_token("support@shop.example", "helpdesk")
    path = tmp_path / "support.rt"
    path.write_text(rt + "\n")
    path.chmod(0o600)
    monkeypatch.setenv("HD_CLIENT_SECRET", SECRET)
    return settings(token_url=oauth.token_url, client_secret_env="HD_CLIENT_SECRET", refresh_token_file=path,
                    scope="https://mail.example/imap offline_access")


def source(config: OAuth2Settings, ticker: Ticker | None = None) -> tokens.Tokens:
    return tokens.Tokens(config, Clock(START), ticker or Ticker())


# --------------------------------------------------------------- the two grants


def test_refresh_token_grant_gets_a_token_the_server_vouches_for(oauth, refresh_grant):
    token = source(refresh_grant).token()

    issued = oauth.active(token.access)
    assert issued is not None and issued.username == "support@shop.example"
    assert issued.scope == "https://mail.example/imap offline_access"
    assert token.expires == START + dt.timedelta(seconds=3600)
    [form] = oauth.requests
    assert form["grant_type"] == "refresh_token" and form["client_id"] == "helpdesk"
    assert form["client_secret"] == SECRET
    assert SECRET not in repr(token) and token.access not in repr(token)


def test_client_secret_from_a_file(oauth, refresh_grant, tmp_path):
    (tmp_path / "secret").write_text(SECRET + "\n")
    config = replace(refresh_grant, client_secret_env=None, client_secret_file=tmp_path / "secret")

    assert oauth.active(source(config).token().access)
    assert oauth.requests[0]["client_secret"] == SECRET


def test_client_credentials_grant_for_a_shared_mailbox(oauth, tmp_path):
    oauth.add_app("app-id", SECRET, "shared@shop.example")
    (tmp_path / "secret").write_text(SECRET)
    config = settings(grant="client_credentials", token_url=oauth.token_url, client_id="app-id",
                      client_secret_file=tmp_path / "secret", scope="https://outlook.office365.com/.default")

    token = source(config).token()

    assert oauth.active(token.access).username == "shared@shop.example"
    [form] = oauth.requests
    assert (form["grant_type"], form["scope"]) == ("client_credentials", "https://outlook.office365.com/.default")
    assert "refresh_token" not in form


def test_a_public_client_sends_no_secret(oauth, tmp_path):
    oauth.add_client("thunderbird-like")            # no secret: "" on the server
    path = tmp_path / "rt"
    path.write_text(oauth.add_refresh_token("support@shop.example", "thunderbird-like"))
    config = settings(token_url=oauth.token_url, client_id="thunderbird-like", refresh_token_file=path)

    assert oauth.active(source(config).token().access)
    assert "client_secret" not in oauth.requests[0]


# --------------------------------------------------------------- the cache


def test_a_second_token_within_its_lifetime_asks_nothing(oauth, refresh_grant):
    ticker = Ticker()
    tokens_ = source(refresh_grant, ticker)
    first = tokens_.token()
    ticker.now += 3000
    assert tokens_.token() is first
    assert len(oauth.requests) == 1


def test_shortly_before_expiry_a_new_token_is_asked_for(oauth, refresh_grant):
    ticker = Ticker()
    tokens_ = source(refresh_grant, ticker)
    first = tokens_.token()
    ticker.now += 3600 - 59                          # within the last minute
    second = tokens_.token()
    assert second.access != first.access and len(oauth.requests) == 2


def test_a_short_lifetime_is_kept_for_most_of_it(oauth, refresh_grant):
    oauth.lifetime = 10
    ticker = Ticker()
    tokens_ = source(refresh_grant, ticker)
    first = tokens_.token()
    ticker.now += 8.9
    assert tokens_.token() is first
    ticker.now += 0.2                               # 9.1 s: past lifetime minus a tenth
    assert tokens_.token() is not first
    assert len(oauth.requests) == 2


def test_fresh_asks_even_with_a_good_cached_token(oauth, refresh_grant):
    tokens_ = source(refresh_grant)
    first = tokens_.token()
    oauth.expire_all()                               # the server forgot it early
    second = tokens_.token(fresh=True)
    assert second.access != first.access and oauth.active(second.access)
    assert tokens_.token() is second


def test_concurrent_callers_share_one_refresh(oauth, refresh_grant):
    oauth.rotate = True                              # a second refresh with the old token would fail
    tokens_ = source(refresh_grant)
    got, failed = [], []

    def ask() -> None:
        try:
            got.append(tokens_.token().access)
        except TokenError as exc:
            failed.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == [] and len(set(got)) == 1 and len(oauth.requests) == 1


# --------------------------------------------------------------- rotation


def test_a_rotated_refresh_token_is_written_back_atomically_0600(oauth, refresh_grant, caplog):
    oauth.rotate = True
    path = refresh_grant.refresh_token_file
    path.chmod(0o644)                                # even a file that was too open becomes 0600
    old = path.read_text().strip()
    inode = path.stat().st_ino
    tokens_ = source(refresh_grant)

    with caplog.at_level(logging.INFO, logger="helpdesk.oauth2"):
        tokens_.token()
    new = path.read_text().strip()
    assert new != old and oauth.refresh_tokens[old].revoked and not oauth.refresh_tokens[new].revoked
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != inode               # replaced by a rename, not rewritten in place
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    assert new not in caplog.text and old not in caplog.text
    assert "rotated the refresh token; saved in" in caplog.text

    tokens_.token(fresh=True)                        # the saved one works, and is rotated again
    assert path.read_text().strip() not in (old, new)


def test_a_rotated_token_that_cannot_be_saved_is_kept_in_memory(oauth, refresh_grant, caplog):
    """/proc/self/fd/N reads the file through an open descriptor, and nobody, not even
    root, may create a file in /proc/self/fd: the save fails as it would on a read-only disk."""
    oauth.rotate = True
    with open(refresh_grant.refresh_token_file) as handle:
        config = replace(refresh_grant, refresh_token_file=Path(f"/proc/self/fd/{handle.fileno()}"))
        tokens_ = source(config)
        with caplog.at_level(logging.ERROR, logger="helpdesk.oauth2"):
            first = tokens_.token()
            second = tokens_.token(fresh=True)       # with the rotated one, from memory
    assert oauth.active(first.access) and oauth.active(second.access)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("cannot save the new refresh token in /proc/self/fd/" in e for e in errors)
    assert "kept in memory and lost at a restart" in errors[0]


def test_the_refresh_token_file_is_read_at_each_refresh(oauth, refresh_grant):
    """A person who writes a new token there fixes a running helpdesk without a restart."""
    path = refresh_grant.refresh_token_file
    oauth.revoke(path.read_text().strip())
    tokens_ = source(refresh_grant)
    with pytest.raises(TokenError):
        tokens_.token()
    path.write_text(oauth.add_refresh_token("support@shop.example", "helpdesk"))
    assert oauth.active(tokens_.token().access)


# --------------------------------------------------------------- refusals: permanent


def test_a_revoked_refresh_token_is_permanent_and_says_what_to_do(oauth, refresh_grant):
    rt = refresh_grant.refresh_token_file.read_text().strip()
    oauth.revoke(rt)

    with pytest.raises(TokenError) as caught:
        source(refresh_grant).token()

    message = str(caught.value)
    assert caught.value.temporary is False
    assert message == (f"mailbox support: token endpoint {oauth.token_url} refused the refresh token "
                       "(invalid_grant: refresh token expired or revoked); it expired or was revoked: run "
                       "the provider's consent again and write the new refresh token to "
                       f"{refresh_grant.refresh_token_file}")
    assert rt not in message and SECRET not in message


def test_a_wrong_client_secret_is_permanent_and_names_where_it_is(oauth, refresh_grant, monkeypatch):
    monkeypatch.setenv("HD_CLIENT_SECRET", "wrong-secret-value")
    with pytest.raises(TokenError) as caught:
        source(refresh_grant).token()
    message = str(caught.value)
    assert caught.value.temporary is False
    assert 'refused client "helpdesk" (invalid_client: unknown client or wrong secret)' in message
    assert "client_secret_env (HD_CLIENT_SECRET)" in message
    assert "wrong-secret-value" not in message


def test_an_unset_secret_variable_is_a_permanent_token_error(refresh_grant, monkeypatch):
    monkeypatch.delenv("HD_CLIENT_SECRET")
    with pytest.raises(TokenError) as caught:
        source(replace(refresh_grant, _origin="config.toml: [[mailboxes]] #1 (support)")).token()
    assert caught.value.temporary is False
    assert str(caught.value) == ('mailbox support: config.toml: [[mailboxes]] #1 (support) '
                                 'oauth2.client_secret_env: environment variable "HD_CLIENT_SECRET" is not set')


def test_a_client_without_app_permission_is_permanent(oauth, tmp_path):
    oauth.add_client("app-id", SECRET)               # a client, but not allowed client credentials
    (tmp_path / "secret").write_text(SECRET)
    config = settings(grant="client_credentials", token_url=oauth.token_url, client_id="app-id",
                      client_secret_file=tmp_path / "secret")
    with pytest.raises(TokenError, match="unauthorized_client: no app permission.*check the app registration"):
        source(config).token()


@pytest.mark.parametrize("content", ["", "\n", "two tokens\n"])
def test_a_refresh_token_file_without_one_token_is_permanent(refresh_grant, content):
    refresh_grant.refresh_token_file.write_text(content)
    with pytest.raises(TokenError, match="cannot use the refresh token file .*write the provider's refresh token"):
        source(refresh_grant).token()


def test_a_missing_refresh_token_file_is_permanent(refresh_grant):
    refresh_grant.refresh_token_file.unlink()
    with pytest.raises(TokenError, match=r"No such file or directory\); write the provider's") as caught:
        source(refresh_grant).token()
    assert caught.value.temporary is False


def test_a_url_that_is_no_token_endpoint_is_permanent(oauth, refresh_grant):
    with pytest.raises(TokenError, match=r"answered HTTP 404 \(not_found\); check token_url"):
        source(replace(refresh_grant, token_url=oauth.url + "/nothing")).token()


# --------------------------------------------------------------- unreachable: temporary


def test_a_server_answering_503_is_temporary(oauth, refresh_grant):
    oauth.down = True
    with pytest.raises(TokenError, match="answered HTTP 503; trying again later$") as caught:
        source(refresh_grant).token()
    assert caught.value.temporary is True


def test_a_server_that_is_gone_is_temporary(oauth, refresh_grant):
    url = oauth.token_url
    oauth.stop()
    with pytest.raises(TokenError, match=r"unreachable \(Connection refused\); trying again later") as caught:
        source(replace(refresh_grant, token_url=url)).token()
    assert caught.value.temporary is True


def test_a_silent_server_times_out_as_temporary(refresh_grant):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/token"
        config = replace(refresh_grant, token_url=url, timeout=dt.timedelta(seconds=1))
        with pytest.raises(TokenError, match=r"unreachable \(no answer within 1 s\)") as caught:
            source(config).token()
    assert caught.value.temporary is True


def test_a_failure_is_not_cached(oauth, refresh_grant):
    tokens_ = source(refresh_grant)
    oauth.down = True
    with pytest.raises(TokenError):
        tokens_.token()
    oauth.down = False
    assert oauth.active(tokens_.token().access)


# --------------------------------------------------------------- token_command


def script(tmp_path: Path, body: str) -> tuple[str, ...]:
    path = tmp_path / "get-token"
    path.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    path.chmod(0o700)
    return (str(path),)


def command(argv: tuple[str, ...], timeout: float = 30) -> OAuth2Settings:
    return settings(grant=None, client_id=None, token_command=argv, timeout=dt.timedelta(seconds=timeout))


def test_token_command_prints_the_token(oauth, tmp_path):
    minted = oauth.issue("support@shop.example")
    tokens_ = source(command(script(tmp_path, f"print({minted!r})")))

    token = tokens_.token()
    assert (token.access, token.expires) == (minted, None)
    assert tokens_.origin == "token_command get-token"


def test_token_command_is_asked_at_each_login(tmp_path):
    counter = tmp_path / "count"
    argv = script(tmp_path, f"p = {str(counter)!r}\nimport os\n"
                            "n = int(open(p).read()) + 1 if os.path.exists(p) else 1\n"
                            "open(p, 'w').write(str(n))\nprint('token-%d' % n)")
    tokens_ = source(command(argv))
    assert [tokens_.token().access for _ in range(3)] == ["token-1", "token-2", "token-3"]


def test_token_command_with_arguments_and_no_shell(tmp_path):
    argv = script(tmp_path, "print(sys.argv[1] + '|' + sys.argv[2])")
    assert source(command((*argv, "a b", "$HOME;x"))).token().access == "a b|$HOME;x"


def test_token_command_failing_is_permanent_with_its_own_explanation(tmp_path):
    argv = script(tmp_path, "print('the-token-it-half-printed')\n"
                            "print('oama: refresh token expired, run oama authorize', file=sys.stderr)\n"
                            "sys.exit(3)")
    with pytest.raises(TokenError) as caught:
        source(command(argv)).token()
    assert caught.value.temporary is False
    assert str(caught.value) == ("mailbox support: token_command get-token: failed (exit status 3; it said: "
                                 "oama: refresh token expired, run oama authorize)")


def test_token_command_printing_nothing_is_permanent(tmp_path):
    with pytest.raises(TokenError, match="^mailbox support: token_command get-token: printed no token$") as caught:
        source(command(script(tmp_path, "print()"))).token()
    assert caught.value.temporary is False


def test_token_command_that_hangs_is_killed_with_its_children(tmp_path):
    """A shell script's child keeps the pipe open: the whole group goes, on time."""
    pid_file = tmp_path / "child.pid"
    argv = ("/bin/sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait")
    started = dt.datetime.now()
    with pytest.raises(TokenError, match=r"printed no token within 1 s \(does it wait for input") as caught:
        source(command(argv, timeout=1)).token()
    assert (dt.datetime.now() - started).total_seconds() < 5
    assert caught.value.temporary is False
    assert gone(int(pid_file.read_text()))


def gone(pid: int, within: float = 2.0) -> bool:
    """Not running: no such process, or a zombie waiting for whoever adopted it.
    (A killed process closes its files a moment before it turns zombie.)"""
    deadline = time.monotonic() + within
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_token_command_that_cannot_run_is_permanent(tmp_path):
    path = tmp_path / "not-executable"
    path.write_text("#!/bin/sh\necho x\n")
    with pytest.raises(TokenError, match="token_command not-executable: cannot be run .*Permission denied"):
        source(command((str(path),))).token()
