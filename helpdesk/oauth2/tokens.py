"""The door to this package: ``source(settings)`` gives a login its ``Tokens``.

``token()`` answers from memory until shortly before the token runs out, so a
reconnect or the next burst of outgoing mail costs no request; ``token(fresh=True)``
asks anew, for the one retry after a server refused a token it should have
taken (revoked early, or expired while the clocks disagreed).  A token whose
lifetime is unknown (a ``token_command``'s) is not kept: the command is asked
at each login, as mutt asks it, and may keep its own cache.  One lock per login,
so two threads never refresh at once (with a rotating provider the second
would present a refresh token the first had just used up).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from helpdesk.clock import Clock
from helpdesk.config.settings import OAuth2Settings
from helpdesk.oauth2 import command, grants

log = logging.getLogger("helpdesk.oauth2")
MAX_MARGIN = 60.0        # seconds before expiry when a cached token is no longer handed out


@dataclass(frozen=True)
class Token:
    access: str = field(repr=False)     # never in a repr, a log line or an error
    expires: dt.datetime | None         # UTC; None when the source does not say


class Tokens:
    """The access tokens of one login (a mailbox's IMAP, or the outgoing relay)."""

    def __init__(self, settings: OAuth2Settings, clock: Clock | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._grant = grants.Grant(settings) if settings.token_command is None else None
        self._clock = clock or Clock()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: Token | None = None
        self._good_until = 0.0

    def token(self, fresh: bool = False) -> Token:
        """An access token; TokenError (``temporary`` or not) if none can be had."""
        with self._lock:
            if not fresh and self._cached is not None and self._monotonic() < self._good_until:
                return self._cached
            self._cached = None
            asked = self._monotonic()
            access, lifetime = self._fetch()
            expires = self._clock.now() + dt.timedelta(seconds=lifetime) if lifetime else None
            token = Token(access, expires)
            if lifetime:
                self._cached = token
                self._good_until = asked + lifetime - min(MAX_MARGIN, lifetime / 10)
            log.debug("%s: new access token from %s (%s)", self.settings.label, self.origin,
                      f"valid {lifetime:g} s" if lifetime else "lifetime unknown")
            return token

    @property
    def origin(self) -> str:
        """Where tokens come from, for people: the command's name or the token URL and grant."""
        if self._grant is None:
            return f"token_command {os.path.basename((self.settings.token_command or ('?',))[0])}"
        return f"{self._grant.token_url} ({self.settings.grant} grant)"

    def _fetch(self) -> tuple[str, float | None]:
        if self._grant is None:
            return command.run(self.settings), None
        return self._grant.fetch()


def source(settings: OAuth2Settings, clock: Clock | None = None) -> Tokens:
    """The tokens for the login these settings describe; nothing is asked for yet."""
    return Tokens(settings, clock)
