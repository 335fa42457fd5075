"""An SMTP relay on 127.0.0.1 (aiosmtpd) that takes OAuth2 bearer tokens, as Exchange
Online's and Gmail's submission servers do, and asks the test OAuth2 server's
introspection endpoint (RFC 7662) whether each one is good, as Dovecot does.

aiosmtpd finds a custom AUTH mechanism as a handler method ``auth_<NAME>(server,
args)`` (``args`` is the AUTH line split, ``args[1]`` the initial response if the
client sent one) that returns an ``AuthResult``.  A refused token gets the
error challenge these servers send (``334`` + base64 JSON with ``status``), the
client's empty or ``^A`` answer is read, then ``535``.  ``mechanisms`` picks
what the EHLO advertises: both, or XOAUTH2 only (an older server).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, AuthResult

from tests.flows.oauth_server import OAuthServer

ERROR_CHALLENGE = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})


@dataclass
class Login:
    mechanism: str
    user: str
    accepted: bool


@dataclass
class TokenRelay:
    oauth: OAuthServer
    logins: list[Login] = field(default_factory=list)
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    initial_responses: list[str] = field(default_factory=list)     # decoded, for the tests that look

    async def auth_XOAUTH2(self, server, args) -> AuthResult:
        return await self._login(server, args, "XOAUTH2", _parse_xoauth2)

    async def auth_OAUTHBEARER(self, server, args) -> AuthResult:
        return await self._login(server, args, "OAUTHBEARER", _parse_oauthbearer)

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Ok: queued"

    async def _login(self, server, args, mechanism: str, parse) -> AuthResult:
        if len(args) > 1:
            blob = base64.b64decode(args[1])
        else:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        text = blob.decode("utf-8", "replace")
        self.initial_responses.append(text)
        user, token = parse(text)
        good = await asyncio.get_running_loop().run_in_executor(None, self._vouched, user, token)
        self.logins.append(Login(mechanism, user, good))
        if good:
            return AuthResult(success=True, auth_data=user)
        if await server.challenge_auth(ERROR_CHALLENGE) is MISSING:   # the client's empty/^A answer
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message="535 5.7.8 Authentication credentials invalid")

    def _vouched(self, user: str, token: str) -> bool:
        body = urllib.parse.urlencode({"token": token}).encode()
        with urllib.request.urlopen(self.oauth.introspection_url, data=body, timeout=30) as answer:
            said = json.load(answer)
        return bool(said.get("active")) and said.get("username") == user


def _parse_xoauth2(text: str) -> tuple[str, str]:
    fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
    return fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ")


def _parse_oauthbearer(text: str) -> tuple[str, str]:
    gs2, _, rest = text.partition("\x01")
    authzid = next((p[2:] for p in gs2.split(",") if p.startswith("a=")), "")
    fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
    user = authzid.replace("=2C", ",").replace("=3D", "=")
    return user, fields.get("auth", "").removeprefix("Bearer ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(relay: TokenRelay, tls: ssl.SSLContext, mechanisms: tuple[str, ...] = ("OAUTHBEARER", "XOAUTH2"),
          ) -> Controller:
    """A STARTTLS relay that offers only ``mechanisms`` and wants a login before MAIL."""
    excluded = [m for m in ("PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2") if m not in mechanisms]
    controller = Controller(relay, hostname="127.0.0.1", port=free_port(), server_hostname="relay.test",
                            tls_context=tls, require_starttls=True, auth_required=True,
                            auth_exclude_mechanism=excluded)
    controller.start()
    return controller


def certificate(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A fresh self-signed certificate for 127.0.0.1: the CA file for the client, and the
    server's TLS context."""
    key, crt = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    return crt, context
