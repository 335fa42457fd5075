"""``auth = "oauth2"`` and the ``oauth2`` tables: what loads, and one line for every wrong value."""

from __future__ import annotations

import datetime as dt
import os
import re
import textwrap
from pathlib import Path

import pytest

from helpdesk.config import loader
from helpdesk.config.loader import load_config
from helpdesk.config.settings import Config
from helpdesk.errors import ConfigError
from helpdesk.oauth2 import presets

HELPDESK = '[helpdesk]\nsecret_key_file = "secret.key"\n'
IMAP = ('[[mailboxes]]\nname = "support"\naddress = "support@shop.example"\n'
        'source = "imaps://support%40shop.example@outlook.office365.com/INBOX"\n')
MS = '[mailboxes.oauth2]\nprovider = "microsoft"\ntenant = "contoso.onmicrosoft.com"\nclient_id = "app"\n'
RELAY = '[outgoing]\ntransport = "smtp://smtp.office365.com:587"\nusername = "support@shop.example"\n'


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("support.rt").write_text("rt-1\n")
    Path("client.secret").write_text("s3cret\n")


def load(text: str) -> Config:
    Path("config.toml").write_text(text, encoding="utf-8")
    return load_config("config.toml")


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------- what loads


def test_a_mailbox_with_microsoft_delegated_access(tmp_path):
    config = load(HELPDESK + IMAP + 'auth = "oauth2"\n' + MS + 'refresh_token_file = "support.rt"\n')

    (mailbox,) = config.mailboxes
    settings = mailbox.oauth2
    assert mailbox.auth == "oauth2" and mailbox.password_env is None
    assert (settings.provider, settings.tenant, settings.grant) == ("microsoft", "contoso.onmicrosoft.com",
                                                                     "refresh_token")
    assert settings.refresh_token_file == tmp_path / "support.rt"
    assert (settings.protocol, settings.label, settings.timeout) == ("imap", "mailbox support",
                                                                     dt.timedelta(seconds=30))
    assert presets.endpoint(settings) == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
        "https://outlook.office.com/IMAP.AccessAsUser.All offline_access")


def test_a_shared_mailbox_and_the_relay_with_app_only_access(monkeypatch):
    monkeypatch.setenv("MS_SECRET", "s3cret")
    app = ('grant = "client_credentials"\nclient_secret_env = "MS_SECRET"\n')
    config = load(HELPDESK + IMAP + 'auth = "oauth2"\n' + MS + app + RELAY + 'auth = "oauth2"\n'
                  + MS.replace("mailboxes", "outgoing") + app)

    imap, smtp = config.mailboxes[0].oauth2, config.outgoing.oauth2
    assert imap.client_secret() == smtp.client_secret() == "s3cret"
    assert (smtp.protocol, smtp.label) == ("smtp", "outgoing relay")
    assert presets.endpoint(imap)[1] == presets.endpoint(smtp)[1] == "https://outlook.office365.com/.default"


def test_google_for_the_relay_with_dotted_keys():
    config = load(HELPDESK + '[[mailboxes]]\nname = "support"\naddress = "support@shop.example"\n'
                  + RELAY + 'auth = "oauth2"\noauth2.provider = "google"\noauth2.client_id = "app"\n'
                  'oauth2.client_secret_file = "client.secret"\noauth2.refresh_token_file = "support.rt"\n')

    settings = config.outgoing.oauth2
    assert config.outgoing.auth == "oauth2" and settings.client_secret() == "s3cret"
    assert presets.endpoint(settings) == ("https://oauth2.googleapis.com/token", "https://mail.google.com/")


def test_microsoft_delegated_scope_for_smtp():
    config = load(HELPDESK + IMAP + 'password_env = "PW"\n' + RELAY + 'auth = "oauth2"\n'
                  + MS.replace("mailboxes", "outgoing") + 'refresh_token_file = "support.rt"\n')
    assert presets.endpoint(config.outgoing.oauth2)[1] == "https://outlook.office.com/SMTP.Send offline_access"


def test_explicit_token_url_and_scope(tmp_path):
    config = load(HELPDESK + IMAP + 'auth = "oauth2"\n[mailboxes.oauth2]\n'
                  'token_url = "https://sso.shop.example/oauth2/token"\nscope = "mail"\nclient_id = "app"\n'
                  'refresh_token_file = "support.rt"\ntimeout = "10s"\n')
    settings = config.mailboxes[0].oauth2
    assert presets.endpoint(settings) == ("https://sso.shop.example/oauth2/token", "mail")
    assert settings.timeout == dt.timedelta(seconds=10) and settings.client_secret() is None


def test_a_loopback_token_url_may_be_plain_http():
    config = load(HELPDESK + IMAP + 'auth = "oauth2"\n[mailboxes.oauth2]\n'
                  'token_url = "http://127.0.0.1:8080/token"\nclient_id = "app"\nrefresh_token_file = "support.rt"\n')
    assert config.mailboxes[0].oauth2.token_url == "http://127.0.0.1:8080/token"


def test_token_command_is_split_like_a_shell_line(tmp_path):
    Path("bin").mkdir()
    Path("bin/get-token").write_text("#!/bin/sh\necho t\n")
    Path("bin/get-token").chmod(0o755)
    config = load(HELPDESK + IMAP + 'auth = "oauth2"\n[mailboxes.oauth2]\n'
                  "token_command = \"bin/get-token --account 'support desk' x\"\n" + RELAY
                  + 'auth = "oauth2"\noauth2.token_command = "sh -c \'echo t\'"\n')
    assert config.mailboxes[0].oauth2.token_command == (str(tmp_path / "bin/get-token"), "--account",
                                                         "support desk", "x")
    assert config.mailboxes[0].oauth2.grant is None
    assert config.outgoing.oauth2.token_command == ("sh", "-c", "echo t")


def test_the_presets_know_the_providers_the_config_accepts():
    assert presets.PROVIDERS == loader.PROVIDERS


# --------------------------------------------------------------- auth and the table


AUTH_ERRORS = [
    (IMAP + 'auth = "oauth2"\n',
     ('config.toml: [[mailboxes]] #1 (support) oauth2: missing (auth = "oauth2" needs an oauth2 table: '
      "token_command, or provider or token_url with client_id)")),
    (IMAP + 'password_env = "PW"\n' + MS + 'refresh_token_file = "support.rt"\n',
     'config.toml: [[mailboxes]] #1 (support) auth: "password", but an oauth2 table is given: set auth = "oauth2"'),
    (IMAP + 'auth = "oauth2"\npassword_env = "PW"\n' + MS + 'refresh_token_file = "support.rt"\n',
     ('config.toml: [[mailboxes]] #1 (support) password_env: not used with auth = "oauth2" '
      "(the token replaces the password)")),
    (IMAP + 'auth = "oauth2"\npassword_file = "support.rt"\n' + MS + 'refresh_token_file = "support.rt"\n',
     ('config.toml: [[mailboxes]] #1 (support) password_file: not used with auth = "oauth2" '
      "(the token replaces the password)")),
    (IMAP + 'auth = "token"\n',
     'config.toml: [[mailboxes]] #1 (support) auth: "token" is not one of "password", "oauth2"'),
    (('[[mailboxes]]\nname = "support"\naddress = "support@shop.example"\nauth = "oauth2"\n'
      'oauth2.token_command = "true"\n'),
     ('config.toml: [[mailboxes]] #1 (support) auth: "oauth2" is for IMAP sources '
      '(this one is "maildir:mailboxes/support")')),
    (IMAP + 'auth = "oauth2"\noauth2 = "microsoft"\n',
     'config.toml: [[mailboxes]] #1 (support) oauth2: expected a table, got "microsoft"'),
    (IMAP + 'auth = "oauth2"\n' + MS + 'refresh_token_file = "support.rt"\nclient_secret = "inline"\n',
     'config.toml: [[mailboxes]] #1 (support) oauth2: unknown key "client_secret"'),
    (IMAP + 'password_env = "PW"\n[outgoing]\nauth = "oauth2"\noauth2.token_command = "true"\n',
     'config.toml: [outgoing] auth: "oauth2" is for an SMTP relay (the transport is a Maildir)'),
    (IMAP + 'password_env = "PW"\n[outgoing]\ntransport = "smtp://relay.example:587"\nauth = "oauth2"\n'
     'oauth2.token_command = "true"\n',
     'config.toml: [outgoing] username: missing (auth = "oauth2" logs in as this account)'),
    (IMAP + 'password_env = "PW"\n' + RELAY + 'auth = "oauth2"\npassword_env = "PW"\noauth2.token_command = "true"\n',
     'config.toml: [outgoing] password_env: not used with auth = "oauth2" (the token replaces the password)'),
    (IMAP + 'password_env = "PW"\n' + RELAY + 'auth = "oauth2"\n',
     ('config.toml: [outgoing] oauth2: missing (auth = "oauth2" needs an oauth2 table: token_command, '
      "or provider or token_url with client_id)")),
    (IMAP + 'password_env = "PW"\n' + RELAY + 'oauth2.token_command = "true"\n',
     'config.toml: [outgoing] auth: "password", but an oauth2 table is given: set auth = "oauth2"'),
]


@pytest.mark.parametrize(("text", "message"), AUTH_ERRORS)
def test_auth_and_the_oauth2_table_must_agree(text, message):
    assert error(HELPDESK + text) == message


# --------------------------------------------------------------- the table's own keys

TABLE = IMAP + 'auth = "oauth2"\n[mailboxes.oauth2]\n'
WHERE = "config.toml: [[mailboxes]] #1 (support) oauth2."

TABLE_ERRORS = [
    ('client_id = "app"\nrefresh_token_file = "support.rt"\n',
     'token_url: missing (give provider = "microsoft" or "google", or the token_url)'),
    ('provider = "yahoo"\n', 'provider: "yahoo" is not one of "microsoft", "google"'),
    ('provider = "microsoft"\nclient_id = "app"\nrefresh_token_file = "support.rt"\n',
     ('tenant: missing (provider = "microsoft" needs the directory (tenant) id or domain, '
      'e.g. "contoso.onmicrosoft.com")')),
    ('provider = "microsoft"\ntenant = "contoso/../x"\n',
     'tenant: "contoso/../x" is not a tenant like "contoso.onmicrosoft.com" or a directory id'),
    ('provider = "google"\ntenant = "x"\nclient_id = "app"\n', 'tenant: only used with provider = "microsoft"'),
    ('token_url = "https://sso.example/token"\ntenant = "x"\nclient_id = "app"\n',
     'tenant: only used with provider = "microsoft"'),
    ('provider = "google"\ngrant = "client_credentials"\nclient_id = "app"\nclient_secret_file = "client.secret"\n',
     'grant: Google has no client-credentials grant for mail: use "refresh_token", or a token_command'),
    ('provider = "google"\ngrant = "password"\n',
     'grant: "password" is not one of "refresh_token", "client_credentials"'),
    ('provider = "google"\nrefresh_token_file = "support.rt"\n',
     "client_id: missing (required, unless token_command gets the token)"),
    ('provider = "google"\nclient_id = "app"\n',
     'refresh_token_file: missing (grant = "refresh_token" needs the file that holds the refresh token)'),
    ('provider = "google"\nclient_id = "app"\nrefresh_token_file = "nowhere.rt"\n',
     'refresh_token_file: cannot read "{tmp}/nowhere.rt": [Errno 2] No such file or directory'),
    ('provider = "microsoft"\ntenant = "t"\ngrant = "client_credentials"\nclient_id = "app"\n',
     'client_secret_env: missing (grant = "client_credentials" needs client_secret_env or client_secret_file)'),
    (('provider = "microsoft"\ntenant = "t"\ngrant = "client_credentials"\nclient_id = "app"\n'
      'client_secret_file = "client.secret"\nrefresh_token_file = "support.rt"\n'),
     'refresh_token_file: not used with grant = "client_credentials"'),
    ('provider = "google"\nclient_id = "app"\nclient_secret_env = "S"\nclient_secret_file = "client.secret"\n',
     "client_secret_file: give client_secret_env or client_secret_file, not both"),
    ('provider = "google"\nclient_id = "app"\nclient_secret_env = "MY-SECRET"\n',
     'client_secret_env: "MY-SECRET" is not an environment variable name'),
    ('provider = "google"\nclient_id = "app"\nclient_secret_file = "missing.secret"\n',
     'client_secret_file: cannot read "{tmp}/missing.secret": [Errno 2] No such file or directory'),
    ('token_url = "http://login.example.com/token"\n',
     ('token_url: "http://login.example.com/token" is not a token URL like "https://login.example.com/oauth2/token" '
      "(https; plain http only to 127.0.0.1 or localhost)")),
    ('token_url = "https://app:secret@login.example.com/token"\n',
     ("token_url: must not hold a user or password (the client secret goes in client_secret_env or "
      "client_secret_file)")),
    ('token_url = "login.example.com/token"\n',
     ('token_url: "login.example.com/token" is not a token URL like "https://login.example.com/oauth2/token" '
      "(https; plain http only to 127.0.0.1 or localhost)")),
    ('provider = "google"\nscope = ""\n', "scope: must not be empty"),
    ('token_command = "true"\nclient_id = "app"\n',
     "client_id: not used with token_command (the command alone gets the token)"),
    ('token_command = "true"\nprovider = "google"\n',
     "provider: not used with token_command (the command alone gets the token)"),
    ("token_command = \"get-token 'unclosed\"\n",
     "token_command: cannot be split into a program and its arguments (No closing quotation)"),
    ('token_command = "no-such-helper-xyz --account support"\n',
     'token_command: program "no-such-helper-xyz" is not found on PATH'),
    ('token_command = "bin/missing"\n', 'token_command: program "{tmp}/bin/missing" is not an executable file'),
    ('token_command = "   "\n', "token_command: must not be empty"),
    ('token_command = "true"\ntimeout = "soon"\n',
     'timeout: "soon" is not a duration like "30m", "4h", "48h" or "3d"'),
]


@pytest.mark.parametrize(("text", "message"), TABLE_ERRORS)
def test_every_wrong_oauth2_value_is_one_line_naming_the_key(tmp_path, text, message):
    assert error(HELPDESK + TABLE + text) == WHERE + message.replace("{tmp}", str(tmp_path))


def test_the_same_errors_name_the_outgoing_section():
    text = HELPDESK + IMAP + 'password_env = "PW"\n' + RELAY + 'auth = "oauth2"\n[outgoing.oauth2]\nprovider = "google"\n'
    assert error(text) == "config.toml: [outgoing] oauth2.client_id: missing (required, unless token_command gets the token)"


def test_the_client_secret_is_read_when_asked_for(monkeypatch):
    config = load(HELPDESK + TABLE + 'provider = "google"\nclient_id = "app"\nclient_secret_env = "G_SECRET"\n'
                  'refresh_token_file = "support.rt"\n')
    monkeypatch.setenv("G_SECRET", "s3cret")
    assert config.mailboxes[0].oauth2.client_secret() == "s3cret"
    monkeypatch.delenv("G_SECRET")
    with pytest.raises(ConfigError) as info:
        config.mailboxes[0].oauth2.client_secret()
    assert str(info.value) == ('config.toml: [[mailboxes]] #1 (support) oauth2.client_secret_env: '
                               'environment variable "G_SECRET" is not set')


def test_an_unreadable_secret_file_is_named_when_read(tmp_path):
    config = load(HELPDESK + TABLE + 'provider = "google"\nclient_id = "app"\nclient_secret_file = "client.secret"\n'
                  'refresh_token_file = "support.rt"\n')
    os.unlink("client.secret")
    with pytest.raises(ConfigError, match=r'oauth2.client_secret_file: cannot read ".*client.secret": \[Errno 2\]'):
        config.mailboxes[0].oauth2.client_secret()


# --------------------------------------------------------------- the documentation's examples

DOCS = Path(__file__).resolve().parents[2] / "docs" / "oauth2.md"


def doc_examples() -> list[str]:
    blocks = re.findall(r"^( *)```toml\n(.*?)^\1```", DOCS.read_text(), re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(block) for _, block in blocks if "[[mailboxes]]" in block]


@pytest.mark.parametrize("example", doc_examples())
def test_the_examples_in_docs_oauth2_load(example):
    Path("var").mkdir()
    for name in ("ms-client.secret", "google-client.secret", "support.rt"):
        (Path("var") / name).write_text("x\n")
    config = load(HELPDESK + re.sub(r"<[^>]+>", "placeholder", example))
    assert config.mailboxes[0].auth == "oauth2" and config.mailboxes[0].oauth2 is not None
    assert config.outgoing.auth in ("password", "oauth2")


def test_the_docs_have_examples_to_check():
    assert len(doc_examples()) == 3
