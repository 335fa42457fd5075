"""The providers' token URLs and scopes, for each grant and protocol; the config's own win."""

from __future__ import annotations

import datetime as dt

import pytest

from helpdesk.config.settings import OAuth2Settings
from helpdesk.oauth2 import presets


def settings(provider, grant, protocol, tenant=None, **given) -> OAuth2Settings:
    values = {"provider": provider, "tenant": tenant, "grant": grant, "token_url": None, "scope": None,
              "client_id": "app", "client_secret_env": None, "client_secret_file": None,
              "refresh_token_file": None, "token_command": None, "timeout": dt.timedelta(seconds=30),
              "protocol": protocol}
    return OAuth2Settings(**{**values, **given})


MS_URL = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"


@pytest.mark.parametrize(("provider", "grant", "protocol", "expected"), [
    ("microsoft", "refresh_token", "imap", (MS_URL, "https://outlook.office.com/IMAP.AccessAsUser.All offline_access")),
    ("microsoft", "refresh_token", "smtp", (MS_URL, "https://outlook.office.com/SMTP.Send offline_access")),
    ("microsoft", "client_credentials", "imap", (MS_URL, "https://outlook.office365.com/.default")),
    ("microsoft", "client_credentials", "smtp", (MS_URL, "https://outlook.office365.com/.default")),
    ("google", "refresh_token", "imap", ("https://oauth2.googleapis.com/token", "https://mail.google.com/")),
    ("google", "refresh_token", "smtp", ("https://oauth2.googleapis.com/token", "https://mail.google.com/")),
])
def test_presets(provider, grant, protocol, expected):
    tenant = "contoso.onmicrosoft.com" if provider == "microsoft" else None
    assert presets.endpoint(settings(provider, grant, protocol, tenant)) == expected


def test_the_configs_own_url_and_scope_win():
    given = settings("microsoft", "refresh_token", "imap", "common", token_url="https://proxy.example/token",
                     scope="custom")
    assert presets.endpoint(given) == ("https://proxy.example/token", "custom")
    assert presets.endpoint(settings("microsoft", "refresh_token", "smtp", "common", scope="x"))[0] == (
        "https://login.microsoftonline.com/common/oauth2/v2.0/token")


def test_without_a_provider_the_url_is_the_configs_and_there_may_be_no_scope():
    assert presets.endpoint(settings(None, "refresh_token", "imap", token_url="https://sso.example/t")) == (
        "https://sso.example/t", None)
