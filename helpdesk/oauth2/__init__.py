"""OAuth2 access tokens for the logins to IMAP mailboxes and the SMTP relay.

Microsoft 365 and Google Workspace want a bearer token instead of a password
(SASL XOAUTH2 or OAUTHBEARER).  This package gets and keeps those tokens, and
nothing else: the IMAP source and the SMTP transport ask it for a token and
log in themselves.

- ``tokens``: the door: ``source(settings)`` -> ``Tokens``, whose
  ``token(fresh=False)`` answers from memory until shortly before expiry.
- ``grants``: the token endpoint (RFC 6749 refresh-token and client-credentials
  grants) over HTTPS; ``refresh_file`` keeps a rotated refresh token on disk.
- ``command``: a ``token_command`` that prints a token (any provider, any helper).
- ``presets``: Microsoft's and Google's token URLs and scopes.
- ``sasl``: pure: the XOAUTH2 and OAUTHBEARER strings, and which to use.

May import: ``config``, ``errors``, ``clock``, ``units`` and outside libraries
(``oauthlib``, ``urllib``, ``subprocess``); nothing from the store, intake,
outbound or the domains, which sit above it.
"""
