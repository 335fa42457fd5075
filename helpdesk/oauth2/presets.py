"""The token URL and scope of the providers people ask for, so a config names the
provider and its tenant instead of copying URLs out of their documentation.

Microsoft wants a scope per resource: a delegated token (a person's consent,
refresh-token grant) names the one permission it is used for, and asks for
``offline_access`` so that a refresh token keeps coming; an app-only token
(client-credentials grant) asks for the resource's ``.default``, i.e. whatever
the app was granted there (``IMAP.AccessAsApp``, ``SMTP.SendAsApp``).  Google has
one scope for IMAP and SMTP alike and no client-credentials grant for mail.
"""

from __future__ import annotations

from urllib.parse import quote

from helpdesk.config.settings import OAuth2Settings

PROVIDERS = ("microsoft", "google")

MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
MICROSOFT_SCOPES = {
    ("refresh_token", "imap"): "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
    ("refresh_token", "smtp"): "https://outlook.office.com/SMTP.Send offline_access",
    ("client_credentials", "imap"): "https://outlook.office365.com/.default",
    ("client_credentials", "smtp"): "https://outlook.office365.com/.default",
}
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_SCOPE = "https://mail.google.com/"


def endpoint(settings: OAuth2Settings) -> tuple[str, str | None]:
    """The token URL and scope to ask with: the config's own, else the provider's."""
    token_url, scope = settings.token_url, settings.scope
    if settings.provider == "microsoft":
        token_url = token_url or MICROSOFT_TOKEN_URL.format(tenant=quote(settings.tenant or "", safe=""))
        scope = scope or MICROSOFT_SCOPES[settings.grant or "refresh_token", settings.protocol]
    elif settings.provider == "google":
        token_url, scope = token_url or GOOGLE_TOKEN_URL, scope or GOOGLE_SCOPE
    if token_url is None:
        raise ValueError(f"{settings.label}: no token_url and no provider")  # the config forbids it
    return token_url, scope
