"""The token endpoint: RFC 6749's refresh-token grant (§6) and client-credentials grant
(§4.4), one POST each, with the answer sorted into a token or a one-line error.

oauthlib does the protocol's details: it builds the form body and parses the
answer, raising a typed error for each RFC 6749 error code (``invalid_grant``,
``invalid_client`` ...).  It is pure (no HTTP of its own), so the POST is
``urllib.request``'s, with a time-out and without following redirects (a token
request re-sent elsewhere is never what the config meant).  Sorting: what
waiting cures (unreachable, a time-out, 5xx, ``temporarily_unavailable``) is
temporary; everything else needs a person, and the message says what to do.
Neither the client secret nor a token ever goes into a message or a log line.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import urllib.error
import urllib.request

from oauthlib.oauth2.rfc6749 import errors as oauth_errors
from oauthlib.oauth2.rfc6749.parameters import parse_token_response, prepare_token_request

from helpdesk.config.schema import quote
from helpdesk.config.settings import OAuth2Settings
from helpdesk.errors import ConfigError, TokenError
from helpdesk.oauth2 import presets, refresh_file

log = logging.getLogger("helpdesk.oauth2")
MAX_ANSWER = 1 << 20          # a token answer is a few KB; anything bigger is not one
TEMPORARY_ERRORS = ("temporarily_unavailable", "server_error")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs) -> None:
        return None             # urllib then raises HTTPError with the 3xx


_OPENER = urllib.request.build_opener(_NoRedirect)


class Grant:
    """Asks one token endpoint for access tokens, as one client, for one login."""

    def __init__(self, settings: OAuth2Settings) -> None:
        self.settings = settings
        self.token_url, self.scope = presets.endpoint(settings)
        self._unsaved: str | None = None   # a rotated refresh token the file would not take

    @property
    def where(self) -> str:
        return f"{self.settings.label}: token endpoint {self.token_url}"

    def fetch(self) -> tuple[str, float | None]:
        """A new access token and its lifetime in seconds (None if the answer had none)."""
        refresh = self._refresh_token() if self.settings.grant == "refresh_token" else None
        answer = self._parse(*self._post(self._body(refresh)))
        rotated = answer.get("refresh_token")
        if refresh is not None and rotated and rotated != refresh:
            self._keep(rotated)
        return answer["access_token"], _lifetime(answer.get("expires_in"))

    # --- the request --------------------------------------------------------------

    def _body(self, refresh: str | None) -> str:
        try:
            secret = self.settings.client_secret()
        except ConfigError as exc:
            raise TokenError(f"{self.settings.label}: {exc}", temporary=False) from None
        fields = {"client_id": self.settings.client_id, "scope": self.scope, "client_secret": secret}
        if refresh is not None:
            fields["refresh_token"] = refresh
        return prepare_token_request(self.settings.grant, **fields)

    def _post(self, body: str) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.token_url, data=body.encode("utf-8"), method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
        timeout = self.settings.timeout.total_seconds()
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                return response.status, response.read(MAX_ANSWER)
        except urllib.error.HTTPError as exc:          # 4xx and 5xx: the body says why
            with exc:
                return exc.code, exc.read(MAX_ANSWER)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc, timeout) from None

    def _unreachable(self, exc: Exception, timeout: float) -> TokenError:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):
            return TokenError(f"{self.where}: TLS certificate not trusted ({reason.verify_message})",
                              temporary=False)
        if isinstance(reason, TimeoutError):
            why = f"no answer within {timeout:g} s"
        else:
            why = getattr(reason, "strerror", None) or " ".join(str(reason).split()) or type(reason).__name__
        return TokenError(f"{self.where}: unreachable ({why}); trying again later", temporary=True)

    # --- the answer ---------------------------------------------------------------

    def _parse(self, status: int, body: bytes) -> dict:
        if status >= 500:
            raise TokenError(f"{self.where}: answered HTTP {status}; trying again later", temporary=True)
        try:
            # scope=None: Microsoft answers with fewer scopes than asked for (no
            # offline_access); that is normal, not the "scope changed" warning.
            return dict(parse_token_response(body.decode("utf-8", "replace"), scope=None))
        except oauth_errors.OAuth2Error as exc:
            raise self._refused(exc, status) from None
        except (ValueError, TypeError, Warning):
            raise self._refused(oauth_errors.MissingTokenError(), status) from None

    def _refused(self, exc: oauth_errors.OAuth2Error, status: int) -> TokenError:
        code, settings = exc.error or "unknown", self.settings
        said = f"{code}: {_one_line(exc.description)}" if exc.description else code
        if code in TEMPORARY_ERRORS:
            return TokenError(f"{self.where}: {said}; trying again later", temporary=True)
        if code == "invalid_grant" and settings.grant == "refresh_token":
            todo = (f"it expired or was revoked: run the provider's consent again and write the new "
                    f"refresh token to {settings.refresh_token_file}")
            return TokenError(f"{self.where} refused the refresh token ({said}); {todo}", temporary=False)
        if code == "invalid_client":
            return TokenError(f"{self.where} refused client {quote(settings.client_id or '')} ({said}); "
                              f"check client_id and the client secret in {self._secret_key()} "
                              "(a client secret expires: make a new one in the app registration)",
                              temporary=False)
        if code in ("unauthorized_client", "invalid_scope", "access_denied"):
            return TokenError(f"{self.where} refused the request ({said}); check the app registration's "
                              f"permissions and the scope {quote(self.scope or '')}", temporary=False)
        if code == "missing_token":
            return TokenError(f"{self.where} answered HTTP {status} without an access token; "
                              "check token_url", temporary=False)
        if status not in (200, 400, 401):                  # RFC 6749 errors come with 400 or 401
            return TokenError(f"{self.where} answered HTTP {status} ({said}); check token_url",
                              temporary=False)
        return TokenError(f"{self.where} refused the request ({said})", temporary=False)

    def _secret_key(self) -> str:
        if self.settings.client_secret_env:
            return f"client_secret_env ({self.settings.client_secret_env})"
        if self.settings.client_secret_file:
            return f"client_secret_file ({self.settings.client_secret_file})"
        return "client_secret_env / client_secret_file (none is configured)"

    # --- the refresh token ----------------------------------------------------------

    def _refresh_token(self) -> str:
        if self._unsaved is not None:
            self._keep(self._unsaved)
            if self._unsaved is not None:
                return self._unsaved
        path = self.settings.refresh_token_file
        try:
            return refresh_file.read(path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise TokenError(f"{self.settings.label}: cannot use the refresh token file {path} ({why}); "
                             "write the provider's refresh token to it", temporary=False) from None

    def _keep(self, token: str) -> None:
        """The provider rotated the refresh token: the file must have the new one before
        the old one stops working; if it cannot, memory keeps it until a restart."""
        path = self.settings.refresh_token_file
        try:
            refresh_file.write(path, token)
        except OSError as exc:
            if self._unsaved != token:
                log.error("%s: cannot save the new refresh token in %s (%s); it is kept in memory "
                          "and lost at a restart: make the file and its folder writable",
                          self.settings.label, path, exc.strerror or exc)
            self._unsaved = token
            return
        self._unsaved = None
        log.info("%s: the provider rotated the refresh token; saved in %s", self.settings.label, path)


def _lifetime(value: object) -> float | None:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"
