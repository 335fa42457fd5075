"""Transports against real loopback relays (aiosmtpd), never a mocked smtplib.

The point of this module is what happens on the wire: dot-stuffing, STARTTLS,
certificate checks, AUTH, reply codes, dropped connections.  Mocks would only
repeat our assumptions about smtplib back to us.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from helpdesk.errors import (
    DeliveryError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from helpdesk.outbound.transports import (
    MaildirTransport,
    SmtpTransport,
    transport_from_url,
)

MESSAGE = (
    b"From: Support <support@shop.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: Re: [T-12] refund\r\n"
    b"\r\n"
    b"Hello Alice,\r\n"
    b".a line that needs dot-stuffing\r\n"
    b"\xc3\xa9t\xc3\xa9 8-bit body\r\n"
)


class Relay:
    """Records what arrived; scripted replies make it refuse or stall on cue."""

    def __init__(
        self, data_replies: list[str] | None = None, mail_replies: dict | None = None
    ) -> None:
        self.data_replies = list(data_replies or [])
        self.mail_replies = dict(mail_replies or {})  # MAIL number -> reply
        self.mails = 0
        self.received: list[tuple[str, list[str], bytes]] = []
        self.sessions: list[object] = []
        self.logins: list[tuple[str, bytes]] = []

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mails += 1
        reply = self.mail_replies.get(self.mails)
        if reply == "SILENCE":
            await asyncio.sleep(3)  # cancelled when the controller stops
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if not any(s is session for s in self.sessions):
            self.sessions.append(session)
        if self.data_replies:
            return self.data_replies.pop(0)
        self.received.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 2.0.0 Ok: queued as ABC123"

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((mechanism, auth_data.login))
        ok = auth_data.login == b"bob" and auth_data.password == b"s3cret"
        # handled=False makes aiosmtpd answer 535 itself instead of staying silent
        return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def serve():
    """Start relays on loopback; every one is stopped even if the test fails."""
    started = []

    def start(handler, **smtp_kwargs) -> Controller:
        controller = Controller(
            handler,
            hostname="127.0.0.1",
            port=free_port(),
            server_hostname="relay.test",
            **smtp_kwargs,
        )
        controller.start()
        started.append(controller)
        return controller

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made fresh so nothing expires."""
    where = tmp_path_factory.mktemp("tls")
    key, crt = where / "key.pem", where / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return key, crt


@pytest.fixture(scope="module")
def server_tls(cert) -> ssl.SSLContext:
    key, crt = cert
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    return context


def smtp(controller: Controller, security: str = "none", **kwargs) -> SmtpTransport:
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("local_hostname", "helpdesk.test")
    return SmtpTransport("127.0.0.1", controller.port, security, **kwargs)


# --------------------------------------------------------------------- Maildir


def test_maildir_writes_the_exact_bytes_into_new(tmp_path):
    transport = MaildirTransport(tmp_path / "out")
    where = transport.send("support@shop.test", ["alice@example.test"], MESSAGE)

    files = list((tmp_path / "out" / "new").iterdir())
    assert [f.read_bytes() for f in files] == [MESSAGE]
    assert where == f"maildir new/{files[0].name}"
    assert list((tmp_path / "out" / "tmp").iterdir()) == []
    assert (tmp_path / "out" / "cur").is_dir()


def test_maildir_two_sends_make_two_files(tmp_path):
    transport = MaildirTransport(tmp_path)
    first = transport.send("a@x.test", ["b@x.test"], b"one\n")
    second = transport.send("a@x.test", ["b@x.test"], b"two\n")

    assert first != second
    contents = sorted(f.read_bytes() for f in (tmp_path / "new").iterdir())
    assert contents == [b"one\n", b"two\n"]


def test_maildir_failure_is_temporary(tmp_path):
    transport = MaildirTransport(tmp_path)
    (tmp_path / "tmp").rmdir()
    (tmp_path / "tmp").write_text("in the way")

    with pytest.raises(TemporaryDeliveryError, match="maildir"):
        transport.send("a@x.test", ["b@x.test"], b"x\n")
    assert list((tmp_path / "new").iterdir()) == []


def test_maildir_group_is_written_whole_and_in_order(tmp_path):
    transport = MaildirTransport(tmp_path)
    bodies = [f"mail {i}\n".encode() for i in range(120)]
    results = transport.send_many([("a@x.test", ["b@x.test"], body) for body in bodies])

    names = [r.removeprefix("maildir new/") for r in results]
    assert len(set(names)) == 120
    assert [(tmp_path / "new" / n).read_bytes() for n in names] == bodies
    assert sorted(names) == names                       # names sort in the order written
    assert list((tmp_path / "tmp").iterdir()) == []


def test_maildir_group_failure_is_per_mail_and_temporary(tmp_path):
    transport = MaildirTransport(tmp_path)
    (tmp_path / "new").rmdir()                          # the renames fail, the writes do not
    results = transport.send_many([("a@x.test", ["b@x.test"], b"x\n"), ("a@x.test", ["c@x.test"], b"y\n")])

    assert all(isinstance(r, TemporaryDeliveryError) and "maildir" in str(r) for r in results)
    assert list((tmp_path / "tmp").iterdir()) == []     # nothing half-delivered left behind


def test_maildir_disk_full_leaves_nothing_behind_and_is_temporary(tmp_path, monkeypatch):
    """A full disk while syncing the group, or while writing a file: every mail of the
    group is deferred and no file stays in tmp/ or new/."""
    from helpdesk.outbound import transports

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    transport = MaildirTransport(tmp_path)
    monkeypatch.setattr(transports, "_sync_data", full)
    results = transport.send_many([("a@x.test", ["b@x.test"], b"x\n"), ("a@x.test", ["c@x.test"], b"y\n")])
    assert all(isinstance(r, TemporaryDeliveryError) and "No space left" in str(r) for r in results)
    monkeypatch.undo()

    real_write = os.write
    monkeypatch.setattr(transports.os, "write", lambda fd, data: real_write(fd, data[:1]) and full())
    with pytest.raises(TemporaryDeliveryError, match="No space left"):
        transport.send("a@x.test", ["b@x.test"], b"half a mail\n")
    monkeypatch.undo()
    assert list((tmp_path / "tmp").iterdir()) == [] and list((tmp_path / "new").iterdir()) == []


# ------------------------------------------------------------ plain SMTP


def test_relay_receives_envelope_and_exact_bytes(serve):
    relay = Relay()
    with smtp(serve(relay)) as transport:
        where = transport.send("support@shop.test", ["alice@example.test"], MESSAGE)

    assert where == "250 2.0.0 Ok: queued as ABC123"
    assert relay.received == [("support@shop.test", ["alice@example.test"], MESSAGE)]


def test_bare_lf_is_sent_as_crlf(serve):
    relay = Relay()
    with smtp(serve(relay)) as transport:
        transport.send("", ["alice@example.test"], b"Subject: x\n\nbody\n")

    assert relay.received == [
        ("<>", ["alice@example.test"], b"Subject: x\r\n\r\nbody\r\n")
    ]


def test_451_is_temporary_and_the_retry_succeeds(serve):
    relay = Relay(data_replies=["451 4.3.0 try later"])
    with smtp(serve(relay)) as transport:
        try_later = "^relay said 451 4.3.0 try later$"
        with pytest.raises(TemporaryDeliveryError, match=try_later):
            transport.send("support@shop.test", ["alice@example.test"], MESSAGE)
        where = transport.send("support@shop.test", ["alice@example.test"], MESSAGE)

    assert where == "250 2.0.0 Ok: queued as ABC123"

    assert len(relay.received) == 1


def test_550_for_the_recipient_is_permanent(serve):
    with (
        smtp(serve(Relay())) as transport,
        pytest.raises(PermanentDeliveryError, match="550 5.1.1 no such user"),
    ):
        transport.send("support@shop.test", ["nobody@example.test"], MESSAGE)


def test_554_after_data_is_permanent(serve):
    relay = Relay(data_replies=["554 5.7.1 looks like spam"])
    with (
        smtp(serve(relay)) as transport,
        pytest.raises(
            PermanentDeliveryError, match="^relay said 554 5.7.1 looks like spam$"
        ),
    ):
        transport.send("support@shop.test", ["alice@example.test"], MESSAGE)


def test_partly_refused_recipients_are_reported_not_raised(serve):
    relay = Relay()
    with smtp(serve(relay)) as transport:
        where = transport.send(
            "s@shop.test", ["alice@example.test", "nobody@example.test"], MESSAGE
        )

    assert "refused nobody@example.test: 550 5.1.1 no such user" in where
    assert relay.received[0][1] == ["alice@example.test"]


def test_refused_connection_is_temporary():
    port = free_port()
    transport = SmtpTransport("127.0.0.1", port, "none", timeout=2)
    with pytest.raises(
        TemporaryDeliveryError, match=f"^relay 127.0.0.1:{port} refused connection$"
    ):
        transport.send("a@x.test", ["b@x.test"], MESSAGE)


def test_silent_server_times_out_as_temporary():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        transport = SmtpTransport(
            "127.0.0.1", port, "none", timeout=1, local_hostname="h.test"
        )
        started = time.monotonic()
        with pytest.raises(TemporaryDeliveryError, match="did not answer within 1 s"):
            transport.send("a@x.test", ["b@x.test"], MESSAGE)
    assert time.monotonic() - started < 3


def test_silence_after_mail_from_times_out_as_temporary(serve):
    relay = Relay(mail_replies={1: "SILENCE"})
    with (
        smtp(serve(relay), timeout=1) as transport,
        pytest.raises(TemporaryDeliveryError, match="did not answer within 1 s"),
    ):
        transport.send("a@x.test", ["b@x.test"], MESSAGE)


# ------------------------------------------------------------------ TLS


def test_starttls_with_trusted_certificate(serve, server_tls, cert):
    relay = Relay()
    controller = serve(relay, tls_context=server_tls, require_starttls=True)
    with smtp(controller, "starttls", ca_file=cert[1]) as transport:
        transport.send("support@shop.test", ["alice@example.test"], MESSAGE)

    assert relay.received[0][2] == MESSAGE
    assert relay.sessions[0].ssl is not None


def test_starttls_with_untrusted_certificate_fails_clearly(serve, server_tls):
    relay = Relay()
    controller = serve(relay, tls_context=server_tls, require_starttls=True)
    with (
        smtp(controller, "starttls") as transport,
        pytest.raises(DeliveryError, match="certificate not trusted") as caught,
    ):
        transport.send("support@shop.test", ["alice@example.test"], MESSAGE)

    assert "\n" not in str(caught.value)
    assert relay.received == []


def test_starttls_required_but_not_offered(serve):
    controller = serve(Relay())
    with (
        smtp(controller, "starttls") as transport,
        pytest.raises(TemporaryDeliveryError, match="does not offer STARTTLS"),
    ):
        transport.send("support@shop.test", ["alice@example.test"], MESSAGE)


def test_implicit_tls(serve, server_tls, cert):
    relay = Relay()
    with smtp(
        serve(relay, ssl_context=server_tls), "tls", ca_file=cert[1]
    ) as transport:
        transport.send("support@shop.test", ["alice@example.test"], MESSAGE)

    assert relay.received == [("support@shop.test", ["alice@example.test"], MESSAGE)]


# ----------------------------------------------------------------- AUTH


@pytest.fixture
def auth_relay(serve, server_tls):
    def start(mechanism: str) -> tuple[Relay, Controller]:
        relay = Relay()
        other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
        controller = serve(
            relay,
            tls_context=server_tls,
            require_starttls=True,
            auth_required=True,
            authenticator=relay.authenticator,
            auth_exclude_mechanism=[other],
        )
        return relay, controller

    return start


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_login_with_the_right_password_delivers(auth_relay, cert, mechanism):
    relay, controller = auth_relay(mechanism)
    with smtp(
        controller, "starttls", ca_file=cert[1], username="bob", password="s3cret"
    ) as transport:
        transport.send("support@shop.test", ["alice@example.test"], MESSAGE)

    assert relay.logins == [(mechanism, b"bob")]
    assert len(relay.received) == 1


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_login_with_a_wrong_password_is_permanent(auth_relay, cert, mechanism):
    relay, controller = auth_relay(mechanism)
    with (
        smtp(
            controller, "starttls", ca_file=cert[1], username="bob", password="guess"
        ) as transport,
        pytest.raises(
            PermanentDeliveryError, match="relay rejected login for bob: 535"
        ),
    ):
        transport.send("support@shop.test", ["alice@example.test"], MESSAGE)

    assert relay.received == []


# ------------------------------------------------------- connection reuse


def test_two_sends_share_one_connection(serve):
    relay = Relay()
    with smtp(serve(relay)) as transport:
        transport.send("s@shop.test", ["a@example.test"], MESSAGE)
        transport.send("s@shop.test", ["b@example.test"], MESSAGE)

    assert len(relay.received) == 2
    assert len(relay.sessions) == 1


def test_send_after_the_relay_dropped_the_idle_connection(serve):
    relay = Relay()
    with smtp(serve(relay, timeout=0.2)) as transport:
        transport.send("s@shop.test", ["a@example.test"], MESSAGE)
        time.sleep(1.5)         # the relay's 0.2 s idle timer, late under a loaded machine
        where = transport.send("s@shop.test", ["b@example.test"], MESSAGE)

    assert where.startswith("250")
    assert [rcpts for _, rcpts, _ in relay.received] == [
        ["a@example.test"],
        ["b@example.test"],
    ]
    assert len(relay.sessions) == 2


def test_421_on_a_reused_connection_reconnects(serve):
    relay = Relay(mail_replies={2: "421 4.4.2 idle too long"})
    with smtp(serve(relay)) as transport:
        transport.send("s@shop.test", ["a@example.test"], MESSAGE)
        transport.send("s@shop.test", ["b@example.test"], MESSAGE)

    assert [rcpts for _, rcpts, _ in relay.received] == [
        ["a@example.test"],
        ["b@example.test"],
    ]
    assert len(relay.sessions) == 2


def test_421_on_a_fresh_connection_is_reported(serve):
    relay = Relay(mail_replies={1: "421 4.3.2 shutting down"})
    with (
        smtp(serve(relay)) as transport,
        pytest.raises(TemporaryDeliveryError, match="^relay said 421 4.3.2 shutting"),
    ):
        transport.send("s@shop.test", ["a@example.test"], MESSAGE)


# ---------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "host", "port", "security"),
    [
        ("smtp://mail.example.com", "mail.example.com", 587, "starttls"),
        ("smtp://mail.example.com:2587", "mail.example.com", 2587, "starttls"),
        ("smtps://mail.example.com", "mail.example.com", 465, "tls"),
        ("SMTPS://mail.example.com:4650/", "mail.example.com", 4650, "tls"),
        ("smtp+plain://127.0.0.1", "127.0.0.1", 25, "none"),
        ("smtp+plain://[::1]:2525", "::1", 2525, "none"),
        ("smtps://[2001:db8::5]", "2001:db8::5", 465, "tls"),
    ],
)
def test_smtp_urls(tmp_path, url, host, port, security):
    transport = transport_from_url(
        url, tmp_path, username="bob", password="pw", timeout=7
    )

    assert isinstance(transport, SmtpTransport)
    assert (transport.host, transport.port, transport.security) == (
        host,
        port,
        security,
    )
    assert (transport.username, transport.password, transport.timeout) == (
        "bob",
        "pw",
        7,
    )


def test_ipv6_relay_is_shown_in_brackets(tmp_path):
    assert transport_from_url("smtp+plain://[::1]:2525", tmp_path).relay == "[::1]:2525"


def test_maildir_urls_are_relative_to_base_dir(tmp_path):
    relative = transport_from_url("maildir:mailboxes/outgoing", tmp_path)
    absolute = transport_from_url(f"maildir:{tmp_path / 'abs'}", Path("/nonexistent"))

    assert isinstance(relative, MaildirTransport)
    assert relative.path == tmp_path / "mailboxes" / "outgoing"
    assert (relative.path / "new").is_dir()
    assert absolute.path == tmp_path / "abs"


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example.com",
        "mail.example.com",
        "maildir:",
        "smtp://",
        "smtp://mail.example.com:notaport",
        "smtp://mail.example.com:70000",
        "smtp://mail.example.com:0",
        "smtp://[::1:25",
        "smtp://mail.example.com/path",
        "smtp://mail.example.com?x=1",
    ],
)
def test_bad_urls_say_what_is_accepted(tmp_path, url):
    with pytest.raises(ValueError, match="maildir:PATH, smtp://HOST") as caught:
        transport_from_url(url, tmp_path)
    assert "\n" not in str(caught.value)


def test_credentials_in_the_url_are_refused_without_echoing_them(tmp_path):
    with pytest.raises(ValueError) as caught:
        transport_from_url("smtp://bob:hunter2@mail.example.com", tmp_path)
    assert "hunter2" not in str(caught.value)


def test_unknown_security_mode_and_missing_ca_file_are_config_errors(tmp_path):
    with pytest.raises(ValueError, match="security"):
        SmtpTransport("localhost", 25, "ssl")
    with pytest.raises(ValueError, match="cannot load CA file"):
        SmtpTransport("localhost", 587, "starttls", ca_file=tmp_path / "missing.pem")
