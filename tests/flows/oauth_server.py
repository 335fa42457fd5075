"""A small OAuth2 authorization server on 127.0.0.1 for the tests: real HTTP, short-lived tokens.

It speaks what the helpdesk and Dovecot speak to Microsoft's and Google's
endpoints: a token endpoint (RFC 6749 refresh-token grant, §6, and
client-credentials grant, §4.4, client authentication in the form body or by
HTTP Basic) and an introspection endpoint (RFC 7662) that Dovecot's ``oauth2``
passdb and the tests' SMTP relay ask whether a bearer token is good. Tests
steer it: tokens that live N seconds, a refresh token revoked, refresh tokens
rotated on use, the whole server answering 503.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Grant:
    """What a refresh token (or a client, for client credentials) is allowed: whose mailbox."""

    username: str
    client_id: str
    revoked: bool = False


@dataclass
class Issued:
    username: str
    expires: float
    scope: str


@dataclass
class OAuthServer:
    lifetime: float = 3600.0                   # seconds an access token lives
    rotate: bool = False                       # a new refresh token on each use, the old one dies
    down: bool = False                         # every endpoint answers 503
    clients: dict[str, str] = field(default_factory=dict)            # client id -> secret ("" for public)
    refresh_tokens: dict[str, Grant] = field(default_factory=dict)
    app_clients: dict[str, str] = field(default_factory=dict)        # client id -> mailbox (client credentials)
    tokens: dict[str, Issued] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)               # every token request's form
    introspections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="oauth-server", daemon=True)

    # --- the test's handle -------------------------------------------------------------

    def start(self) -> OAuthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Down for real: also the kept-alive connections a client (Dovecot) still holds."""
        self._http.shutdown()
        self._http.server_close()
        with self._lock:
            open_now = list(self._connections)
        for connection in open_now:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def introspection_url(self) -> str:
        return self.url + "/introspect"

    def add_client(self, client_id: str, secret: str = "") -> None:
        self.clients[client_id] = secret

    def add_refresh_token(self, username: str, client_id: str) -> str:
        token = "rt-" + secrets.token_urlsafe(16)
        self.refresh_tokens[token] = Grant(username, client_id)
        return token

    def add_app(self, client_id: str, secret: str, mailbox: str) -> None:
        """An app registration allowed to act for ``mailbox`` (client-credentials grant)."""
        self.clients[client_id] = secret
        self.app_clients[client_id] = mailbox

    def revoke(self, refresh_token: str) -> None:
        self.refresh_tokens[refresh_token].revoked = True

    def expire_all(self) -> None:
        """Every access token issued so far stops being valid now."""
        with self._lock:
            for issued in self.tokens.values():
                issued.expires = 0.0

    def issue(self, username: str, scope: str = "") -> str:
        """An access token minted directly (what a ``token_command`` helper would print)."""
        token = "at-" + secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = Issued(username, time.time() + self.lifetime, scope)
        return token

    def active(self, token: str) -> Issued | None:
        with self._lock:
            issued = self.tokens.get(token)
        return issued if issued is not None and issued.expires > time.time() else None

    # --- the endpoints -------------------------------------------------------------------

    def token_endpoint(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, dict]:
        self.requests.append(dict(form))
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if client_id not in self.clients or self.clients[client_id] != secret:
            return 401, {"error": "invalid_client", "error_description": "unknown client or wrong secret"}
        grant = form.get("grant_type")
        if grant == "refresh_token":
            return self._refresh(form.get("refresh_token", ""), client_id, form.get("scope", ""))
        if grant == "client_credentials":
            mailbox = self.app_clients.get(client_id)
            if mailbox is None:
                return 400, {"error": "unauthorized_client", "error_description": "no app permission"}
            return 200, self._answer(mailbox, form.get("scope", ""))
        return 400, {"error": "unsupported_grant_type"}

    def _refresh(self, refresh_token: str, client_id: str, scope: str) -> tuple[int, dict]:
        grant = self.refresh_tokens.get(refresh_token)
        if grant is None or grant.revoked or grant.client_id != client_id:
            return 400, {"error": "invalid_grant", "error_description": "refresh token expired or revoked"}
        answer = self._answer(grant.username, scope)
        if self.rotate:
            grant.revoked = True
            answer["refresh_token"] = self.add_refresh_token(grant.username, client_id)
        return 200, answer

    def _answer(self, username: str, scope: str) -> dict:
        token = self.issue(username, scope)
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(self.lifetime),
                "scope": scope}

    def introspect(self, token: str) -> dict:
        with self._lock:
            self.introspections += 1
        issued = self.active(token)
        if issued is None:
            return {"active": False}
        return {"active": True, "username": issued.username, "exp": int(issued.expires),
                "scope": issued.scope}


def _handler(server: OAuthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with server._lock:
                server._connections.add(self.connection)

        def finish(self) -> None:
            with server._lock:
                server._connections.discard(self.connection)
            super().finish()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            self._route(form)

        def do_GET(self) -> None:
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            self._route(query)

        def _route(self, form: dict[str, str]) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if server.down:
                return self._send(503, {"error": "temporarily_unavailable"})
            if path == "/token":
                return self._send(*server.token_endpoint(form, self._basic()))
            if path.startswith("/introspect"):
                token = form.get("token") or self._bearer() or path.rpartition("/")[2]
                return self._send(200, server.introspect(token))
            return self._send(404, {"error": "not_found"})

        def _basic(self) -> tuple[str, str] | None:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return None
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return urllib.parse.unquote(user), urllib.parse.unquote(password)

        def _bearer(self) -> str:
            header = self.headers.get("Authorization", "")
            return header[7:] if header.startswith("Bearer ") else ""

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    return Handler
