"""Where finished outgoing mail is handed over; the only module that speaks SMTP.

The outbox calls ``send()`` and learns one of three things: the message was
accepted (a short description comes back for the log), it should be retried
later (``TemporaryDeliveryError``) or it never will be accepted
(``PermanentDeliveryError``).  Every failure is a one-line message, because the
outbox records it next to the message and the command line prints it as is.

A relay may want an OAuth2 token instead of a password (``auth = "oauth2"``):
the transport is handed the login's ``Tokens`` and logs in with SASL
OAUTHBEARER or XOAUTH2 (``helpdesk.oauth2.sasl``).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import functools
import itertools
import logging
import os
import re
import smtplib
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Protocol, Self
from urllib.parse import urlsplit

from helpdesk.clock import Clock
from helpdesk.errors import (
    DeliveryError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    TokenError,
)
from helpdesk.oauth2 import sasl
from helpdesk.oauth2.tokens import Token, Tokens
from helpdesk.units import format_duration

log = logging.getLogger("helpdesk.outbound")

SECURITY_MODES = ("starttls", "tls", "none")

URL_FORMS = (
    "maildir:PATH, smtp://HOST[:PORT] (STARTTLS, default 587), "
    "smtps://HOST[:PORT] (implicit TLS, default 465) or "
    "smtp+plain://HOST[:PORT] (no TLS, default 25)"
)
_SCHEMES = {
    "smtp": ("starttls", 587),
    "smtps": ("tls", 465),
    "smtp+plain": ("none", 25),
}


class Transport(Protocol):
    def send(
        self, envelope_from: str, recipients: Sequence[str], message: bytes
    ) -> str:
        """Hand the message over; return where it went, or raise a DeliveryError."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------- Maildir


class MaildirTransport:
    """Delivers into a Maildir, for development and for a local MDA to pick up.

    Readers only ever look at ``new/``; the message is written completely in
    ``tmp/`` and renamed, so a crash leaves at worst an orphan in ``tmp/``,
    which ``remove_stale`` clears at the next start.
    """

    _counter = itertools.count()
    STALE = 3600.0      # seconds: a tmp/ file this old belongs to no delivery in progress

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        # Plain strings for the per-mail paths: pathlib's joining cost more than the
        # syscalls it names (a tenth of a group's delivery, measured).
        self._tmp, self._new = os.path.join(self.path, "tmp", ""), os.path.join(self.path, "new", "")
        # Read once: the host's name does not change under a running service, and
        # asking the kernel for it cost a syscall per mail.
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")

    def send(
        self, envelope_from: str, recipients: Sequence[str], message: bytes
    ) -> str:
        [result] = self.send_many([(envelope_from, recipients, message)])
        if isinstance(result, DeliveryError):
            raise result
        return result

    def send_many(self, items: Sequence[tuple[str, Sequence[str], bytes]]) -> list[str | DeliveryError]:
        """Deliver a group durably for the price of about two disk flushes.

        Every file is written into ``tmp/`` first; then one ``syncfs`` makes all
        their data durable at once (where there is none: an fsync per file);
        only then is each renamed into ``new/``, and one fsync of ``new/``
        makes the renames durable. The outbox marks the group sent after this
        returns. The order keeps the guarantee a per-file fsync gave: a file is
        in ``new/`` only with all its data on disk (a rename durable before the
        data could leave an empty or partial mail in ``new/`` after a power
        cut, ext4 allocating a new file's blocks late), and a mail marked sent
        is in ``new/`` after any crash. The fsync of ``new/`` commits the file
        system's journal, where each rename is one entry for both folders
        (ext4, XFS), so ``tmp/`` needs none.
        """
        results: list[str | DeliveryError] = []
        staged: list[tuple[int, str]] = []
        for _, _, message in items:
            name = self._unique_name()
            try:
                _write(self._tmp + name, message)
            except OSError as exc:
                results.append(self._error(exc))
                continue
            staged.append((len(results), name))
            results.append(f"maildir new/{name}")
        if not staged:
            return results
        try:
            _sync_data(self.path / "tmp", [name for _, name in staged])
        except OSError as exc:
            for index, name in staged:
                _unlink_quietly(self._tmp + name)
                results[index] = self._error(exc)
            return results
        renamed = [index for index, name in staged if self._rename(index, name, results)]
        if renamed:
            try:
                _fsync_dir(self.path / "new")
            except OSError as exc:
                for index in renamed:
                    results[index] = self._error(exc)
        return results

    def _rename(self, index: int, name: str, results: list) -> bool:
        """Move one synced file into ``new/``; False (and its error) if that failed."""
        tmp = self._tmp + name
        try:
            os.rename(tmp, self._new + name)
            return True
        except OSError as exc:
            _unlink_quietly(tmp)
            results[index] = self._error(exc)
            return False

    def remove_stale(self, older_than: float | None = None) -> int:
        """Remove what a crashed delivery left in ``tmp/`` (at start); how many files.

        Only files older than ``STALE``: another worker may be writing into the
        same Maildir right now, and its files live for milliseconds.
        """
        limit = time.time() - (self.STALE if older_than is None else older_than)
        removed = 0
        try:
            entries = list(os.scandir(self.path / "tmp"))
        except OSError as exc:
            log.warning("maildir %s: cannot read tmp/: %s", self.path, exc.strerror or exc)
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < limit:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue       # gone already, or not ours to remove: left alone
        if removed:
            log.info("maildir %s: removed %d stale file(s) from tmp/ left by an interrupted delivery",
                     self.path, removed)
        return removed

    def _error(self, exc: OSError) -> TemporaryDeliveryError:
        return TemporaryDeliveryError(f"maildir {self.path}: {exc.strerror or exc}")

    def close(self) -> None:
        pass

    def _unique_name(self) -> str:
        """time.MusecPpidQcounter.host, the classic Maildir recipe; the numbers are
        zero-padded so that names sort in the order the mail was written."""
        now = time.time()
        usec = int(now % 1 * 1_000_000)
        return f"{int(now)}.M{usec:06d}P{os.getpid()}Q{next(self._counter):09d}.{self._host}"


def _write(path: str | Path, data: bytes) -> None:
    """A new file with ``data`` in it, not yet synced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)


def _sync_data(folder: Path, names: list[str]) -> None:
    """Make the files' data durable: one ``syncfs`` of their file system (one writeback
    and one journal commit for the whole group) or, without it, an fsync per file."""
    syncfs = _syncfs()
    if syncfs is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            syncfs(fd)
        finally:
            os.close(fd)
        return
    for name in names:
        fd = os.open(folder / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@functools.cache
def _syncfs():
    """``os.syncfs`` where Python has it; else Linux's ``syncfs(2)`` from the C library
    (Python up to 3.13 does not wrap it); else None (fsync each file)."""
    if hasattr(os, "syncfs"):
        return os.syncfs
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes, call.restype = [ctypes.c_int], ctypes.c_int

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
    return syncfs


def _fsync_dir(path: Path) -> None:
    """Without this the rename itself may be lost in a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ------------------------------------------------------------------------ SMTP


class SmtpTransport:
    """Submits to a relay, keeping the connection open between messages.

    The outbox sends its queue in bursts; one TLS handshake and login per burst
    instead of per message keeps both sides cheap.  Not thread-safe: use one
    per sending thread.
    """

    def __init__(
        self,
        host: str,
        port: int,
        security: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        ca_file: Path | None = None,
        local_hostname: str | None = None,
        tokens: Tokens | None = None,
        login_pause: float = 60.0,
        clock: Clock | None = None,
        destination_down: float = 60.0,
    ) -> None:
        if security not in SECURITY_MODES:
            choices = ", ".join(SECURITY_MODES)
            raise ValueError(f"security must be one of {choices}, not {security!r}")
        self.host, self.port, self.security = host, port, security
        self.username, self.password = username, password
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._context = _tls_context(ca_file) if security != "none" else None
        self._conn: smtplib.SMTP | None = None
        self.tokens = tokens
        self.login: _TokenLogin | None = None    # how the token login went, once it did
        self._fault = _Fault(login_pause, clock or Clock())
        self._down = _Fault(destination_down, clock or Clock(), logging.WARNING)
        self._guard = _Guard()

    @property
    def relay(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def send(
        self, envelope_from: str, recipients: Sequence[str], message: bytes
    ) -> str:
        recipients = list(recipients)
        if not recipients:
            raise PermanentDeliveryError("no recipients given")
        self._fault.check()
        self._down.check()
        try:
            sent = self._send_reusing(envelope_from, recipients, _crlf(message))
        except DeliveryError:
            self._drop()
            raise
        except _StaleConnection as stale:
            self._drop()
            raise self._failed(stale.error) from stale.error
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise self._failed(exc) from exc
        self._down.clear(f"relay {self.relay} answers again")
        return sent

    def abort(self) -> None:
        """Close the connection in hand from another thread (SIGTERM while a relay hangs):
        the blocked read returns at once and the mail stays queued."""
        self._guard.abort()

    def _failed(self, exc: BaseException) -> DeliveryError:
        """The error for the outbox; a relay that timed out is marked down for
        ``destination_down``: the rest of the queue is deferred without connecting again
        (as Postfix does), instead of each mail waiting out the time-out in turn."""
        if self._guard.aborted:
            return TemporaryDeliveryError(f"relay {self.relay}: delivery interrupted (the service is stopping)")
        error = _translate(exc, self.relay, self.timeout)
        if not _timed_out(exc):
            return error
        return self._down.record(f"{error}; marked down for {format_duration(self._down.pause)}, "
                                 "its mail deferred without connecting until then")

    def check_login(self) -> None:
        """Connect and log in once, sending nothing (``helpdesk oauth2 test outgoing``)."""
        try:
            self._connection()
        except DeliveryError:
            self._drop()
            raise
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise _translate(exc, self.relay, self.timeout) from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()

    def probe(self) -> str:
        """Open a session as a delivery does (EHLO, STARTTLS, login), then QUIT: what
        it did, for ``helpdesk check``. A failure is the DeliveryError ``send`` would raise."""
        try:
            conn = self._open()
        except DeliveryError:
            raise
        except (smtplib.SMTPException, OSError) as exc:
            raise _translate(exc, self.relay, self.timeout) from exc
        greeting = (conn.ehlo_resp or b"").decode("utf-8", "replace").splitlines()[:1]
        steps = [f"EHLO answered by {greeting[0]}" if greeting else "EHLO answered",
                 {"starttls": "STARTTLS", "tls": "TLS", "none": "no TLS"}[self.security]]
        if self.username is not None:
            steps.append(f"logged in as {self.username}")
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()
        return ", ".join(steps)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send_reusing(
        self, envelope_from: str, recipients: list[str], message: bytes
    ) -> str:
        """A relay may drop or 421 an idle connection: reconnect once and redo.

        Only a failure at MAIL FROM is redone, so nothing can be delivered
        twice; on a fresh connection the same failure is simply reported.
        """
        if self._conn is None:
            return _transmit(self._connection(), envelope_from, recipients, message)
        try:
            return _transmit(self._conn, envelope_from, recipients, message)
        except _StaleConnection:
            self._drop()
        return _transmit(self._connection(), envelope_from, recipients, message)

    def _connection(self) -> smtplib.SMTP:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _drop(self) -> None:
        """Forget a connection in an unknown state, without a polite QUIT."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _open(self) -> smtplib.SMTP:
        conn = self._connect()
        try:
            self._greet(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self) -> smtplib.SMTP:
        """Connecting in the constructor is what makes smtplib remember the
        host name that TLS checks the certificate against."""
        if self.security == "tls":
            return _GuardedSSL(
                self._guard,
                self.host,
                self.port,
                local_hostname=self.local_hostname,
                timeout=self.timeout,
                context=self._context,
            )
        return _Guarded(
            self._guard,
            self.host,
            self.port,
            local_hostname=self.local_hostname,
            timeout=self.timeout,
        )

    def _greet(self, conn: smtplib.SMTP) -> None:
        conn.ehlo_or_helo_if_needed()
        if self.security == "starttls":
            self._starttls(conn)
        if self.tokens is not None:
            self._token_login(conn)
        elif self.username is not None:
            self._login(conn)

    def _starttls(self, conn: smtplib.SMTP) -> None:
        """Refuse to go on in clear text: the relay is expected to offer TLS."""
        if not conn.has_extn("starttls"):
            raise TemporaryDeliveryError(f"relay {self.relay} does not offer STARTTLS")
        conn.starttls(context=self._context)
        conn.ehlo()

    def _login(self, conn: smtplib.SMTP) -> None:
        """Wrong credentials stay wrong; a missing AUTH is likely a config slip."""
        if not conn.has_extn("auth"):
            raise TemporaryDeliveryError(
                f"relay {self.relay} does not offer AUTH"
                f" (needed to log in as {self.username})"
            )
        try:
            conn.login(self.username or "", self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            reply = _reply(exc.smtp_code, exc.smtp_error)
            if 400 <= exc.smtp_code < 500:
                raise TemporaryDeliveryError(
                    f"relay {self.relay} cannot log in {self.username} now: {reply}"
                ) from exc
            raise PermanentDeliveryError(
                f"relay rejected login for {self.username}: {reply}"
            ) from exc

    def _token_login(self, conn: smtplib.SMTP) -> None:
        """OAUTHBEARER if offered, else XOAUTH2.  A refused token gets one fresh token and
        one retry (the cached one may have been revoked early); a second refusal, or no
        token to be had, is temporary for the mail, which stays queued, and is logged
        once as an ERROR saying what to do.  Nothing the relay hears is ever logged."""
        offered = conn.esmtp_features.get("auth", "").split() if conn.has_extn("auth") else []
        if not offered:
            raise self._fault.record(f"relay {self.relay} does not offer AUTH (needed to log in as "
                                     f"{self.username} with a token)")
        mechanism = sasl.choose(offered)
        if mechanism is None:
            raise self._fault.record(
                f"relay {self.relay} offers no XOAUTH2 or OAUTHBEARER login (only {' '.join(offered)}); "
                "check the transport URL and that the relay takes OAuth2 tokens")
        refused = ""
        for fresh in (False, True):
            token = self._token(fresh)
            try:
                conn.auth(mechanism, _Responder(mechanism, self.username or "", token.access,
                                                self.host, self.port))
            except smtplib.SMTPAuthenticationError as exc:
                refused = _reply(exc.smtp_code, exc.smtp_error)
                continue
            self.login = _TokenLogin(mechanism, token)
            self._fault.clear(f"relay {self.relay}: logged in as {self.username} with a token again")
            return
        raise self._fault.record(
            f"relay {self.relay} refused the token for {self.username} with {mechanism} ({refused}), "
            "a fresh one too; check that this account may send through the relay (Microsoft 365: "
            "SMTP AUTH enabled for the mailbox, SMTP.Send or SMTP.SendAsApp granted)")

    def _token(self, fresh: bool) -> Token:
        assert self.tokens is not None
        try:
            return self.tokens.token(fresh=fresh)
        except TokenError as exc:
            raise self._fault.record(str(exc)) from None


class _TokenLogin(NamedTuple):
    mechanism: str
    token: Token


class _Responder:
    """smtplib's ``authobject``: the initial response, then (the relay's error challenge)
    the empty or ``^A`` answer that lets the relay end with its failure reply."""

    def __init__(self, mechanism: str, user: str, token: str, host: str, port: int) -> None:
        self.mechanism, self.user, self.token = mechanism, user, token
        self.host, self.port = host, port

    def __call__(self, challenge: bytes | None = None) -> str:
        if challenge is None:
            return sasl.initial_response(self.mechanism, self.user, self.token, self.host, self.port)
        return sasl.after_failure(self.mechanism)


class _Fault:
    """A login that failed stays failed for ``pause`` seconds: the rest of the queue is
    deferred at once instead of asking the token endpoint (or a relay that refuses the
    token) once per mail.  The same fault is logged once as an ERROR, then at DEBUG."""

    def __init__(self, pause: float, clock: Clock, level: int = logging.ERROR) -> None:
        self.pause = dt.timedelta(seconds=pause)
        self.clock = clock               # the outbox's, so a pause and a retry keep one time
        self.level = level
        self._error: TemporaryDeliveryError | None = None
        self._until: dt.datetime | None = None
        self._logged: str | None = None

    def check(self) -> None:
        if self._error is not None and self._until is not None and self.clock.now() < self._until:
            raise TemporaryDeliveryError(str(self._error))
        self._error = None

    def record(self, message: str) -> TemporaryDeliveryError:
        level = logging.DEBUG if message == self._logged else self.level
        log.log(level, "%s", message)
        self._logged = message
        self._error, self._until = TemporaryDeliveryError(message), self.clock.now() + self.pause
        return self._error

    def clear(self, recovered: str) -> None:
        if self._logged is not None:
            log.info("%s", recovered)
        self._error, self._logged = None, None


class _Guard:
    """The socket of the connection being opened or used, so that another thread can
    close it: smtplib blocks in ``recv`` until the time-out, and a relay that accepts and
    never greets would hold a stopping service for that long."""

    def __init__(self) -> None:
        self.conn: smtplib.SMTP | None = None
        self.sock: socket.socket | None = None     # until smtplib has it as ``conn.sock``
        self.aborted = False

    def opened(self, conn: smtplib.SMTP, sock: socket.socket) -> None:
        self.conn, self.sock, self.aborted = conn, sock, False

    def abort(self) -> None:
        self.aborted = True
        sock = getattr(self.conn, "sock", None) or self.sock   # after STARTTLS: the TLS socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass     # closed already


class _Guarding:
    """Mixed into ``smtplib.SMTP`` and ``SMTP_SSL``: tells the guard its socket as soon as
    it is connected, before the greeting is read (smtplib connects and reads it in the
    constructor)."""

    def __init__(self, guard: _Guard, *args, **kwargs) -> None:
        self._guard = guard
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        self._guard.opened(self, sock)
        return sock


class _Guarded(_Guarding, smtplib.SMTP):
    pass


class _GuardedSSL(_Guarding, smtplib.SMTP_SSL):
    pass


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verify the relay like a browser would; a private CA comes via ca_file."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load CA file {ca_file}: {exc.strerror or exc}"
        ) from exc


def _crlf(message: bytes) -> bytes:
    """SMTP wants CRLF line ends; relays increasingly reject bare LF."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", message)


# ------------------------------------------------------------ one transaction


def _transmit(
    conn: smtplib.SMTP, envelope_from: str, recipients: list[str], message: bytes
) -> str:
    """smtplib.sendmail, but keeping the relay's final reply for the log."""
    _start(conn, envelope_from, _mail_options(conn, envelope_from, recipients, message))
    refused = {}
    for rcpt in recipients:
        code, text = conn.rcpt(rcpt)
        if code not in (250, 251):
            refused[rcpt] = (code, text)
    if len(refused) == len(recipients):
        raise smtplib.SMTPRecipientsRefused(refused)
    code, text = conn.data(message)
    if code != 250:
        raise smtplib.SMTPDataError(code, text)
    return _describe_accepted(code, text, refused)


class _StaleConnection(Exception):
    """MAIL FROM met a closed or closing connection; nothing was sent yet."""

    def __init__(self, error: smtplib.SMTPException) -> None:
        super().__init__(str(error))
        self.error = error


def _start(conn: smtplib.SMTP, envelope_from: str, options: list[str]) -> None:
    try:
        code, text = conn.mail(envelope_from, options)
    except smtplib.SMTPServerDisconnected as exc:
        raise _StaleConnection(exc) from exc
    if code == 421:
        raise _StaleConnection(smtplib.SMTPSenderRefused(code, text, envelope_from))
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, text, envelope_from)


def _mail_options(
    conn: smtplib.SMTP, envelope_from: str, recipients: list[str], message: bytes
) -> list[str]:
    options = []
    if conn.has_extn("size"):
        options.append(f"SIZE={len(message)}")
    if not message.isascii() and conn.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    if not all(addr.isascii() for addr in [envelope_from, *recipients]):
        if not conn.has_extn("smtputf8"):
            raise PermanentDeliveryError(
                "relay does not offer SMTPUTF8, needed for a non-ASCII address"
            )
        options.append("SMTPUTF8")
    return options


def _describe_accepted(code: int, text: bytes, refused: dict) -> str:
    accepted = _reply(code, text)
    if not refused:
        return accepted
    return f"{accepted}; refused {_describe_refused(refused)}"


def _describe_refused(refused: dict) -> str:
    return "; ".join(
        f"{rcpt}: {_reply(code, text)}" for rcpt, (code, text) in refused.items()
    )


# ------------------------------------------------------------ error mapping


def _translate(exc: BaseException, relay: str, timeout: float) -> DeliveryError:
    """Order matters: every smtplib exception is also an OSError."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return _recipients_refused(exc)
    if isinstance(exc, smtplib.SMTPConnectError):
        reply = _reply(exc.smtp_code, exc.smtp_error)
        return TemporaryDeliveryError(f"relay {relay} refused the session: {reply}")
    if isinstance(exc, smtplib.SMTPResponseException):
        return _by_code(
            exc.smtp_code, f"relay said {_reply(exc.smtp_code, exc.smtp_error)}"
        )
    if _timed_out(exc):
        return TemporaryDeliveryError(
            f"relay {relay} did not answer within {timeout:g} s"
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TemporaryDeliveryError(
            f"relay {relay} closed the connection unexpectedly"
        )
    if isinstance(exc, smtplib.SMTPException):
        return TemporaryDeliveryError(f"relay {relay}: {_one_line(str(exc))}")
    return TemporaryDeliveryError(_describe_os_error(exc, relay))


def _describe_os_error(exc: BaseException, relay: str) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"relay {relay} refused connection"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"relay {relay}: TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"relay {relay}: TLS failed ({exc.reason or exc})"
    if isinstance(exc, socket.gaierror):
        return f"relay {relay}: cannot resolve host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"relay {relay}: {exc.strerror}"
    return f"relay {relay}: {_one_line(str(exc)) or type(exc).__name__}"


def _recipients_refused(exc: smtplib.SMTPRecipientsRefused) -> DeliveryError:
    """Worth retrying if any refusal was temporary: the rest may follow suit."""
    codes = [code for code, _ in exc.recipients.values()]
    message = f"relay refused {_describe_refused(exc.recipients)}"
    if any(400 <= code < 500 for code in codes) or not codes:
        return TemporaryDeliveryError(message)
    return _by_code(min(codes), message)


def _by_code(code: int, message: str) -> DeliveryError:
    """5xx is final; 4xx and anything odd (smtplib's -1 for garbage) is not."""
    if 500 <= code < 600:
        return PermanentDeliveryError(message)
    return TemporaryDeliveryError(message)


def _timed_out(exc: BaseException | None) -> bool:
    """smtplib hides a read timeout behind SMTPServerDisconnected; look under it."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return _one_line(f"{code} {text}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------- URLs


def transport_from_url(
    url: str,
    base_dir: Path,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 30.0,
    ca_file: Path | None = None,
    tokens: Tokens | None = None,
    login_pause: float = 60.0,
    clock: Clock | None = None,
    destination_down: float = 60.0,
) -> Transport:
    """Build a transport from the one-line form kept in the configuration."""
    scheme, sep, rest = url.strip().partition(":")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"transport {url!r} is not a URL; use {URL_FORMS}")
    if scheme == "maildir":
        if not rest:
            raise ValueError(f"transport {url!r} names no directory; use {URL_FORMS}")
        return MaildirTransport(Path(base_dir) / rest)
    if scheme not in _SCHEMES:
        raise ValueError(
            f"transport scheme {scheme!r} is not supported; use {URL_FORMS}"
        )
    host, port = _host_port(url, _SCHEMES[scheme][1])
    return SmtpTransport(
        host,
        port,
        _SCHEMES[scheme][0],
        username=username,
        password=password,
        timeout=timeout,
        ca_file=ca_file,
        tokens=tokens,
        login_pause=login_pause,
        clock=clock,
        destination_down=destination_down,
    )


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    """Credentials are refused before any message can echo the URL back."""
    bad = ValueError(f"transport {url!r} is malformed; use {URL_FORMS}")
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise bad from None
    if "@" in parts.netloc:
        raise ValueError(
            "a transport URL must not hold credentials;"
            " configure username and password instead"
        )
    try:
        port = parts.port
    except ValueError:
        raise bad from None
    if not parts.hostname or parts.path not in ("", "/"):
        raise bad
    if parts.query or parts.fragment or port == 0:
        raise bad
    return parts.hostname, port or default_port
