"""The SASL initial responses that carry a bearer token, and which mechanism to use.

Pure string building, kept apart so that the IMAP source and the SMTP
transport send byte-for-byte the same thing and tests can check it without a
server.  OAUTHBEARER (RFC 7628) is the standard; XOAUTH2 is Google's older
form that Microsoft and Google both still accept.  A server that offers both
gets OAUTHBEARER.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

MECHANISMS = ("OAUTHBEARER", "XOAUTH2")   # most preferred first


def choose(offered: Iterable[str]) -> str | None:
    """The mechanism to use among those a server advertises; None if it takes no token."""
    names = {name.upper() for name in offered}
    return next((m for m in MECHANISMS if m in names), None)


def xoauth2(user: str, token: str) -> str:
    """``user=<user>^Aauth=Bearer <token>^A^A``, before base64."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def oauthbearer(user: str, token: str, host: str | None = None, port: int | None = None) -> str:
    """RFC 7628 §3.1: a GS2 header naming the user, then host, port and the token."""
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    fields = [f"host={host}"] if host else []
    fields += [f"port={port}"] if port else []
    fields.append(f"auth=Bearer {token}")
    return f"n,a={authzid}," + "".join(f"\x01{f}" for f in fields) + "\x01\x01"


def initial_response(mechanism: str, user: str, token: str, host: str | None = None,
                     port: int | None = None) -> str:
    if mechanism == "OAUTHBEARER":
        return oauthbearer(user, token, host, port)
    if mechanism == "XOAUTH2":
        return xoauth2(user, token)
    raise ValueError(f"not a token mechanism: {mechanism!r}")


def after_failure(mechanism: str) -> str:
    """What the client answers to the server's error challenge so that the server
    can end the exchange with its failure reply: nothing (XOAUTH2), or a lone
    ``^A`` (OAUTHBEARER, RFC 7628 §3.2.3)."""
    return "\x01" if mechanism == "OAUTHBEARER" else ""


def failure_status(challenge: bytes) -> str | None:
    """The ``status`` of a server's JSON error challenge (``"401"``, ``"invalid_token"``), if any."""
    try:
        status = json.loads(challenge.decode("utf-8")).get("status")
    except (ValueError, AttributeError):
        return None
    return str(status) if status is not None else None
