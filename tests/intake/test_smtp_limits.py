"""The SMTP session's limits over real sockets: long lines, bare line feeds (SMTP
smuggling), connections per client, idle sessions."""

from __future__ import annotations

import smtplib
import socket
import time

import pytest

from helpdesk.clock import Clock
from helpdesk.config.loader import load_config
from helpdesk.errors import ConfigError
from helpdesk.intake.smtp import SmtpIntake
from helpdesk.store import raw as raw_messages
from helpdesk.store.schema import RawContent, RawMessage
from tests.conftest import START, Desk, free_port, mail, write_config


def configured(tmp_path, **keys) -> Desk:
    path = write_config(tmp_path)
    lines = "".join(f"{k} = {v}\n" for k, v in keys.items())
    path.write_text(path.read_text().replace("[smtp_server]\n", "[smtp_server]\n" + lines, 1))
    return Desk(tmp_path, path, Clock(START))


@pytest.fixture
def server(tmp_path):
    running = []

    def start(**keys) -> int:
        desk = configured(tmp_path, **keys)
        smtp = SmtpIntake(desk.app.config, desk.app.store, host="127.0.0.1", port=free_port())
        _, port = smtp.start()
        running.append((desk, smtp))
        return port
    yield start
    for desk, smtp in running:
        smtp.stop()
        desk.app.close()


def contents() -> list[bytes]:
    return [bytes(c.raw) for c in RawContent.select().order_by(RawContent.message)]


def send_lines(port: int, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.ehlo("client.example")
        client.mail("bob@example.com")
        client.rcpt("support@shop.example")
        return client.data(raw.replace(b"\n", b"\r\n"))     # what an MTA puts on the wire


def test_a_line_far_longer_than_1000_characters_is_accepted(server):
    port = server()
    line = "x" * 20_000
    assert send_lines(port, mail(body=f"{line}\n"))[0] == 250       # aiosmtpd alone: 500
    assert line.encode() in contents()[0]


def test_a_line_over_the_configured_limit_is_refused(server):
    port = server(max_line_length='"2KB"')
    assert send_lines(port, mail(body="y" * 1900 + "\n")) == (250, b"2.0.0 Message accepted")
    assert send_lines(port, mail(body="z" * 3000 + "\n"))[0] == 500
    assert len(contents()) == 1


def test_bare_line_feeds_make_one_long_line(server):
    """A message whose lines end in a bare LF is, on the wire, one line up to the next
    CRLF: accepted up to the limit (stored as received), refused above it."""
    port = server(max_line_length='"2KB"')
    small, large = mail(subject="bare small"), mail(subject="bare large", body="z\n" * 1500)
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.ehlo("client.example")
        for raw, code in ((small, 250), (large, 500)):
            client.mail("bob@example.com")
            client.rcpt("support@shop.example")
            assert client.data(raw)[0] == code          # smtplib sends bytes as they are
    assert contents() == [b"Return-Path: <bob@example.com>\r\n" + small + b"\r\n"]


def test_bad_limits_are_one_line_config_errors(tmp_path):
    path = write_config(tmp_path)
    for key, value, says in (("max_line_length", '"500"', "at least 1000 bytes"),
                             ("max_connections_per_client", "0", "at least 1"),
                             ("idle_timeout", '"soon"', "is not a duration")):
        path.write_text(write_config(tmp_path).read_text()
                        .replace("[smtp_server]\n", f"[smtp_server]\n{key} = {value}\n", 1))
        with pytest.raises(ConfigError) as failed:
            load_config(path)
        assert f"[smtp_server] {key}" in str(failed.value) and says in str(failed.value)
        assert "\n" not in str(failed.value)


def replies(sock: socket.socket, until: bytes = b"221") -> list[bytes]:
    """Every reply line until one starting with ``until`` or the end of the connection."""
    sock.settimeout(5)
    data = b""
    while not any(line.startswith(until) for line in data.split(b"\r\n")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return [line for line in data.split(b"\r\n") if line]


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"])
def test_smuggled_end_of_data_is_message_text_not_a_second_mail(server, fake_end):
    port = server()
    smuggled = (b"MAIL FROM:<boss@shop.example>\r\nRCPT TO:<support@shop.example>\r\nDATA\r\n"
                b"From: Boss <boss@shop.example>\r\nSubject: smuggled\r\n\r\n#close\r\n")
    first = mail(subject="innocent").replace(b"\n", b"\r\n")
    session = (b"EHLO client.example\r\nMAIL FROM:<bob@example.com>\r\n"
               b"RCPT TO:<support@shop.example>\r\nDATA\r\n")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(session)
        time.sleep(0.2)          # the 354 before the data, as a pipelining client would wait
        sock.sendall(first + fake_end + smuggled + b"\r\n.\r\nQUIT\r\n")
        lines = replies(sock)
    codes = [line[:3] for line in lines if line[3:4] == b" "]
    # greeting, EHLO, MAIL, RCPT, 354, one 250 for the one message, QUIT
    assert codes == [b"220", b"250", b"250", b"250", b"354", b"250", b"221"], lines
    [stored] = contents()
    assert b"Subject: innocent" in stored and b"Subject: smuggled" in stored
    assert RawMessage.select().count() == 1
    assert raw_messages.pending(0, 10)[0].content == stored


def greeting(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(5)
    return sock, sock.recv(1024)


def test_connections_per_client_are_capped(server):
    port = server(max_connections_per_client=2)
    first, hello1 = greeting(port)
    second, hello2 = greeting(port)
    assert hello1.startswith(b"220") and hello2.startswith(b"220")
    third, refused = greeting(port)
    assert refused.startswith(b"421 4.7.0"), refused
    assert third.recv(1024) == b""                  # and closed
    third.close()
    first.close()
    deadline = time.monotonic() + 10                # a place is free again, once the server saw the close
    fourth, hello4 = greeting(port)
    while not hello4.startswith(b"220") and time.monotonic() < deadline:
        fourth.close()
        time.sleep(0.05)
        fourth, hello4 = greeting(port)
    assert hello4.startswith(b"220"), hello4
    for sock in (second, fourth):
        sock.close()


def test_an_idle_session_is_closed_with_421(server):
    port = server(idle_timeout='"1s"')
    sock, hello = greeting(port)
    assert hello.startswith(b"220")
    sock.sendall(b"EHLO client.example\r\n")
    started = time.monotonic()
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    waited = time.monotonic() - started
    assert b"421 4.4.2" in data, data
    assert 0.8 <= waited < 4, waited
    sock.close()


def test_a_slow_message_still_arriving_is_not_idle(server):
    port = server(idle_timeout='"1s"')
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example")
        client.mail("bob@example.com")
        client.rcpt("support@shop.example")
        assert client.docmd("DATA")[0] == 354
        raw = mail(subject="slow").replace(b"\n", b"\r\n")
        for i in range(0, len(raw), len(raw) // 4 + 1):        # 4 pieces over 2 s
            client.sock.sendall(raw[i:i + len(raw) // 4 + 1])
            time.sleep(0.5)
        client.sock.sendall(b"\r\n.\r\n")
        assert client.getreply()[0] == 250
    assert len(contents()) == 1
