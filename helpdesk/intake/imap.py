"""IMAP intake with imapclient: fetch by UID, store durably, only then flag and move.

One pass over a mailbox's folder (``drain``):

1. SELECT the folder and compare its UIDVALIDITY with the saved cursor
   (``store.imap_cursor``). A new UIDVALIDITY (or another source URL) means the UIDs
   we remember mean nothing any more: the whole folder is read again, and the
   dedupe key in ``intake.spool`` turns the copies into no-ops.
2. Messages at or below the cursor's UID were stored by an earlier pass that
   died before moving them: they are only flagged and moved.
3. The others are fetched with ``BODY.PEEK[]`` (so nothing is marked read
   before it is stored) in batches; each batch is stored in one transaction,
   the cursor saved, and only then the messages are marked ``\\Seen`` and moved
   to the processed folder (MOVE, or COPY + ``\\Deleted`` + EXPUNGE).
   A UID the server answers without its body (or size) is looked up with
   ``UID SEARCH``: gone means expunged meanwhile; still there is an ERROR, and
   the cursor stays below it, so it is fetched again (never moved unstored).

A crash between any two steps loses nothing (mail stays in the folder until
it is stored) and doubles nothing (the cursor and the dedupe key).

Logging in (``Login``): with the mailbox's password, or, for ``auth = "oauth2"``,
with an access token from ``helpdesk.oauth2`` over SASL OAUTHBEARER (XOAUTH2 when
that is all the server offers). The mailbox's ``Tokens`` live as long as its
``Login``, across reconnects, so a reconnect costs no token request. A token the
server refuses (expired or revoked early) gets one fresh token and one retry;
then it is a lasting fault, like a wrong password. ``[UNAVAILABLE]`` (the server
could not check the token) and a token endpoint that is down are passing faults.

``poll_once`` is one pass on a fresh connection (``helpdesk run --once``).
``Watcher`` is a thread per mailbox for ``helpdesk run``: passes until one
finds nothing new (mail that arrives during a pass is announced in the reply
to our own commands, which IDLE never repeats), then IDLE until the server
announces new mail (or a sleep of ``poll_interval`` on servers without IDLE),
and a reconnect with backoff after any fault. Every fault is one log line
naming the mailbox; nothing here raises into the service.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, IMAPClientAbortError, IMAPClientError, LoginError

from helpdesk.clock import Clock
from helpdesk.config.settings import Mailbox
from helpdesk.errors import ConfigError, HelpdeskError, TemporaryStoreError, TokenError
from helpdesk.intake.spool import Incoming, Stored
from helpdesk.oauth2 import sasl, tokens
from helpdesk.oauth2.tokens import Token, Tokens
from helpdesk.store import imap_cursor
from helpdesk.store.imap_cursor import Cursor

log = logging.getLogger("helpdesk.imap")
if logging.getLogger("imapclient").level == logging.NOTSET:
    # imapclient reports every closed connection at INFO: noise in the service's log.
    logging.getLogger("imapclient").setLevel(logging.WARNING)
Store = Callable[[list[Incoming]], list[Stored]]

IDLE_RENEW = 10 * 60.0     # longest single IDLE: servers may drop one after 30 minutes (RFC 2177)
FIRST_RETRY = 1.0          # seconds before the first reconnect; doubles up to MAX_RETRY
MAX_RETRY = 60.0
SLOW_RETRY = 300.0         # after a fault only a person can fix (password, certificate, config)
BATCH_BYTES = 32 * 1024 * 1024   # per fetch, so a few huge mails cannot fill the memory
SEEN, DELETED = b"\\Seen", b"\\Deleted"
# Answers to a failed SELECT/CREATE that a retry may cure; any other is a config error.
PASSING = ("[UNAVAILABLE]", "[INUSE]", "[SERVERBUG]", "[LIMIT]")


class Fault(Exception):
    """One log line's worth of failure; ``lasting`` faults are retried slowly."""

    def __init__(self, reason: str, lasting: bool = False) -> None:
        super().__init__(reason)
        self.lasting = lasting


@dataclass
class Reader:
    """What a pass needs besides the connection: where to put mail, and whom to tell."""

    mailbox: Mailbox
    store: Store
    batch_size: int
    on_stored: Callable[[], object] = lambda: None


@dataclass
class Pass:
    """What one ``drain`` did."""

    stored: int = 0                                     # new messages stored
    tried: list[int] = field(default_factory=list)      # UIDs above the cursor it fetched
    held: list[int] = field(default_factory=list)       # still in the folder, not stored: an ERROR
    announced: bool = False                             # the server told of new mail after SELECT


@dataclass
class Polled:
    """What ``poll_once`` / ``poll_all`` did: ``failed`` names the mailboxes that did not
    finish their pass (a fault, or a message left unstored)."""

    stored: int = 0
    failed: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ connecting


def where(mailbox: Mailbox) -> str:
    """The source for log lines (the URL never holds a password)."""
    return f"{mailbox.source_kind}://{mailbox.imap_host}:{mailbox.imap_port}/{mailbox.imap_folder}"


def tls_context(mailbox: Mailbox) -> ssl.SSLContext:
    """Verify the server like a browser would; a private CA comes via ``ca_file``."""
    try:
        return ssl.create_default_context(cafile=str(mailbox.ca_file) if mailbox.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise Fault(f"cannot load ca_file {mailbox.ca_file}: {exc.strerror or exc}", lasting=True) from exc


def connect(mailbox: Mailbox, login: Login | None = None) -> IMAPClient:
    """A logged-in client, over TLS unless the config says ``starttls = false``."""
    client = _open(mailbox)
    try:
        (login or Login(mailbox))(client)
        _ensure_folder(client, mailbox)
        return client
    except BaseException:
        _close(client)
        raise


def _open(mailbox: Mailbox) -> IMAPClient:
    """A client not logged in yet, TLS done (implicit, or STARTTLS)."""
    implicit = mailbox.source_kind == "imaps"
    context = tls_context(mailbox) if implicit or mailbox.starttls else None
    client = IMAPClient(mailbox.imap_host, mailbox.imap_port, ssl=implicit, ssl_context=context,
                        timeout=mailbox.timeout.total_seconds())
    _quiet_imaplib(client)
    try:
        if mailbox.starttls:
            client.starttls(context)
        elif not implicit and not _loopback(mailbox.imap_host):
            log.warning("mailbox %s: plain IMAP to %s (starttls = false): the %s is sent "
                        "unencrypted", mailbox.name, mailbox.imap_host,
                        "access token" if mailbox.auth == "oauth2" else "password")
        return client
    except BaseException:
        _close(client)
        raise


class Login:
    """How one mailbox logs in: its password, read at every login, or OAuth2 tokens.

    Keep one per mailbox across reconnects: its ``Tokens`` cache the access token
    until shortly before it expires. ``mechanism`` and ``token`` tell how the last
    token login went (``helpdesk oauth2 test``)."""

    def __init__(self, mailbox: Mailbox, clock: Clock | None = None) -> None:
        self.mailbox = mailbox
        self.tokens: Tokens | None = None
        if mailbox.auth == "oauth2" and mailbox.oauth2 is not None:
            self.tokens = tokens.source(mailbox.oauth2, clock)
        self.mechanism: str | None = None
        self.token: Token | None = None

    def __call__(self, client: IMAPClient) -> None:
        if self.tokens is None:
            client.login(self.mailbox.imap_user, self.mailbox.password() or "")
        else:
            self._with_token(client, self.tokens)

    def _with_token(self, client: IMAPClient, source: Tokens) -> None:
        """OAUTHBEARER if offered, else XOAUTH2 (capabilities read after STARTTLS: on
        loopback a server may offer AUTH= before it). Refused: one fresh token, one retry."""
        mailbox, server = self.mailbox, _server(self.mailbox)
        offered = [c.decode("ascii", "replace")[5:] for c in client.capabilities()
                   if c.upper().startswith(b"AUTH=")]
        mechanism = sasl.choose(offered)
        if mechanism is None:
            only = f"only {' '.join(offered)}" if offered else "no AUTH= at all"
            raise Fault(f"{server} offers no OAUTHBEARER or XOAUTH2 login ({only}); auth = \"oauth2\" "
                        "needs a server that takes OAuth2 tokens: check source", lasting=True)
        refused = ""
        for fresh in (False, True):
            token = self._token(source, fresh)
            try:
                if mechanism == "OAUTHBEARER":
                    client.oauthbearer_login(mailbox.imap_user, token.access)
                else:
                    client.oauth2_login(mailbox.imap_user, token.access)
            except LoginError as exc:
                if isinstance(exc.__context__, IMAPClientAbortError):   # the connection, not the token
                    raise exc.__context__ from None
                refused = _text(exc)
                if "[UNAVAILABLE]" in refused.upper():
                    raise Fault(f"login as {mailbox.imap_user} at {server} failed for now ({refused}): "
                                "the server could not check the token") from None
                continue
            self.mechanism, self.token = mechanism, token
            return
        raise Fault(f"login as {mailbox.imap_user} at {server} with {mechanism} refused ({refused}), "
                    f"a fresh token from {source.origin} too; check that the token is for this account "
                    "and may read its mail (Microsoft 365: IMAP.AccessAsApp or IMAP.AccessAsUser.All "
                    "granted, and for app-only access the service principal's permission on the "
                    "mailbox; see docs/oauth2.md)", lasting=True)

    def _token(self, source: Tokens, fresh: bool) -> Token:
        """TokenError as a Fault: temporary ones (the endpoint down) are passing."""
        try:
            return source.token(fresh=fresh)
        except TokenError as exc:
            raise Fault(str(exc).removeprefix(f"{source.settings.label}: "),
                        lasting=not exc.temporary) from None


def _quiet_imaplib(client: IMAPClient) -> None:
    """imapclient turns imaplib's debug level to 5, and imaplib then formats a repr of every
    response -- each whole message -- for a log line nobody reads: a third of the fetch time.
    It is turned off unless that logger is really on."""
    if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        client._imap.debug = 0


@contextlib.contextmanager
def connected(mailbox: Mailbox, login: Login | None = None) -> Iterator[IMAPClient]:
    """LOGOUT after a clean end; after a fault just drop the connection (it may hang)."""
    with _session(connect(mailbox, login)) as client:
        yield client


@contextlib.contextmanager
def logged_in(mailbox: Mailbox, login: Login) -> Iterator[IMAPClient]:
    """Logged in, nothing else (no processed folder made)."""
    client = _open(mailbox)
    try:
        login(client)
    except BaseException:
        _close(client)
        raise
    with _session(client):
        yield client


@contextlib.contextmanager
def _session(client: IMAPClient) -> Iterator[IMAPClient]:
    try:
        yield client
    except BaseException:
        _close(client)
        raise
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - gone already: nothing to say goodbye to
        _close(client)


def _close(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()


def _ensure_folder(client: IMAPClient, mailbox: Mailbox) -> None:
    folder = mailbox.processed_folder
    if client.folder_exists(folder):
        return
    try:
        client.create_folder(folder)
    except IMAPClientAbortError:
        raise
    except IMAPClientError as exc:
        if not client.folder_exists(folder):  # not made meanwhile by another poller
            raise _folder_fault(exc, f"cannot create processed_folder {_quoted(folder)} at "
                                f"{_server(mailbox)}", "check processed_folder") from exc


def _select(client: IMAPClient, mailbox: Mailbox, readonly: bool = False) -> dict:
    try:
        return client.select_folder(mailbox.imap_folder, readonly=readonly)
    except IMAPClientAbortError:
        raise
    except IMAPClientError as exc:
        raise _folder_fault(exc, f"cannot select folder {_quoted(mailbox.imap_folder)} at "
                            f"{_server(mailbox)}", "check the folder at the end of source") from exc


def _folder_fault(exc: IMAPClientError, what: str, hint: str) -> Fault:
    """A folder the server refuses is a config error (slow retries, an ERROR), unless the
    server says it is busy or broken for now."""
    text = re.sub(r"^\w+ failed: ", "", _text(exc))
    lasting = not any(code in text.upper() for code in PASSING)
    return Fault(f"{what} ({text}); {hint}" if lasting else f"{what} ({text})", lasting=lasting)


def _server(mailbox: Mailbox) -> str:
    return f"{mailbox.imap_host}:{mailbox.imap_port}"


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def try_login(mailbox: Mailbox, login: Login | None = None) -> int:
    """Log in once and EXAMINE the folder (read-only: nothing moves, nothing is created),
    for ``helpdesk oauth2 test``; the number of messages in it. A failure is raised as
    the Fault the watcher would log."""
    try:
        with logged_in(mailbox, login or Login(mailbox)) as client:
            return _select(client, mailbox, readonly=True).get(b"EXISTS", 0)
    except Exception as exc:  # noqa: BLE001 - every fault becomes its one line
        raise describe(exc, mailbox) from None


# ------------------------------------------------------------------ one pass


def drain(client: IMAPClient, reader: Reader, after: int = 0, held: list[int] | None = None) -> Pass:
    """Store and acknowledge everything in the folder; returns what it did.

    A repeated pass (the watcher's) skips the UIDs up to ``after``, which an earlier
    pass already tried, and keeps the cursor below the UIDs that pass ``held``."""
    mailbox = reader.mailbox
    uidvalidity = _select(client, mailbox)[b"UIDVALIDITY"]
    client._imap.untagged_responses.pop("EXISTS", None)   # SELECT's own; later ones are news
    cursor = _cursor(mailbox, uidvalidity)
    uids = sorted(client.search("UNDELETED"))
    for chunk in _chunks([u for u in uids if u <= cursor.last_uid], reader.batch_size):
        acknowledge(client, chunk, mailbox.processed_folder)   # stored before, never moved
    done = Pass(tried=[u for u in uids if u > max(cursor.last_uid, after)], held=list(held or []))
    for chunk in _chunks(done.tried, reader.batch_size):
        for batch in _by_size(client, chunk):
            cursor = _take(client, reader, cursor, batch, done)
    done.announced = bool(client._imap.untagged_responses.pop("EXISTS", None))
    return done


def _cursor(mailbox: Mailbox, uidvalidity: int) -> Cursor:
    """The saved cursor, or a fresh one (UID 0) when it belongs to another folder or epoch.

    A fresh cursor replacing a saved one is saved at once: an empty folder would
    otherwise repeat the warning at every pass."""
    saved = imap_cursor.load(mailbox.name)
    if saved is None:
        return Cursor(mailbox.source, uidvalidity, 0)
    if (saved.source, saved.uidvalidity) == (mailbox.source, uidvalidity):
        return saved
    log.warning("mailbox %s: UIDVALIDITY or source changed (%s %s -> %s %s): reading the whole "
                "folder again; messages already stored are skipped", mailbox.name,
                saved.source, saved.uidvalidity, mailbox.source, uidvalidity)
    fresh = Cursor(mailbox.source, uidvalidity, 0)
    imap_cursor.save(mailbox.name, fresh)
    return fresh


def _take(client: IMAPClient, reader: Reader, cursor: Cursor, uids: list[int], done: Pass) -> Cursor:
    """Fetch, store (one transaction), save the cursor, and only then acknowledge.

    The cursor never passes a UID that is still in the folder but was not stored."""
    name = reader.mailbox.name
    fetched = client.fetch(uids, ["BODY.PEEK[]"])
    bodies = {u: fetched.get(u, {}).get(b"BODY[]") for u in uids}
    present = [u for u in uids if isinstance(bodies[u], bytes)]
    _hold(client, reader, [u for u in uids if u not in present], done)
    results = reader.store([Incoming(bodies[u], name, "imap") for u in present]) if present else []
    last = min(done.held) - 1 if done.held else max(uids)
    cursor = replace(cursor, last_uid=max(cursor.last_uid, last))
    imap_cursor.save(name, cursor)
    acknowledge(client, present, reader.mailbox.processed_folder)
    new = sum(not r.duplicate for r in results)
    done.stored += new
    if results:
        log.info("mailbox %s: stored %d messages from %s%s", name, new, where(reader.mailbox),
                 f" ({len(results) - new} copies of stored ones skipped)" if new < len(results) else "")
    if new:
        reader.on_stored()
    return cursor


def _hold(client: IMAPClient, reader: Reader, missing: list[int], done: Pass) -> None:
    """UIDs the server left out of a FETCH: expunged meanwhile, or still there and not
    readable -- then an ERROR, and they are held (never moved, the cursor stays below)."""
    if not missing:
        return
    there = sorted(client.search(["UID", ",".join(map(str, missing)), "UNDELETED"]))
    for uid in there:
        log.error("mailbox %s: the server sent UID %d of %s without its body; it stays in the "
                  "folder, not stored, and is fetched again at the next pass", reader.mailbox.name,
                  uid, where(reader.mailbox))
    done.held = sorted(set(done.held) | set(there))


def acknowledge(client: IMAPClient, uids: list[int], folder: str) -> None:
    """Mark stored messages read and move them out of the folder that is polled."""
    if not uids:
        return
    client.add_flags(uids, [SEEN], silent=True)
    if client.has_capability("MOVE"):
        client.move(uids, folder)
        return
    client.copy(uids, folder)
    client.add_flags(uids, [DELETED], silent=True)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)
    else:
        client.expunge()   # without UIDPLUS: every \Deleted message in the folder goes


def _by_size(client: IMAPClient, uids: list[int]) -> Iterator[list[int]]:
    """Split a chunk so that one fetch holds at most BATCH_BYTES (a huge mail goes alone).

    A UID without a size (expunged meanwhile, or a server's slip) goes alone too: the
    body fetch tells which."""
    sizes = client.fetch(uids, ["RFC822.SIZE"])
    batch, total = [], 0
    for uid in uids:
        size = sizes.get(uid, {}).get(b"RFC822.SIZE")
        if not isinstance(size, int):
            if batch:
                yield batch
            yield [uid]
            batch, total = [], 0
            continue
        if batch and total + size > BATCH_BYTES:
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def poll_once(mailbox: Mailbox, store: Store, batch_size: int,
              on_stored: Callable[[], object] = lambda: None, login: Login | None = None) -> Polled:
    """One pass on a fresh connection; a fault is logged (naming the mailbox), not raised,
    and the mailbox is in ``failed``."""
    try:
        with connected(mailbox, login) as client:
            done = drain(client, Reader(mailbox, store, batch_size, on_stored))
            if not done.held:
                imap_cursor.passed(mailbox.name)
            return Polled(done.stored, [mailbox.name] if done.held else [])
    except Exception as exc:
        fault = describe(exc, mailbox)
        imap_cursor.failed(mailbox.name, str(fault))
        log.error("mailbox %s: %s", mailbox.name, fault)
        log.debug("mailbox %s: traceback", mailbox.name, exc_info=True)
        return Polled(0, [mailbox.name])


def poll_all(mailboxes: list[Mailbox], store: Store, batch_size: int,
             meanwhile: Callable[[], object]) -> Polled:
    """``poll_once`` for every mailbox in a thread, running ``meanwhile`` here after each
    stored batch: processing the mail already stored overlaps with fetching the rest."""
    stored, done, counts = threading.Event(), threading.Event(), []

    def poll() -> None:
        try:
            counts.extend(poll_once(m, store, batch_size, stored.set) for m in mailboxes)
        finally:
            imap_cursor.release()
            done.set()
            stored.set()

    thread = threading.Thread(target=poll, name="imap-once", daemon=True)
    thread.start()
    try:
        while not done.is_set():
            stored.wait()
            stored.clear()
            meanwhile()
    finally:
        thread.join()
    return total(counts)


def total(results: list[Polled]) -> Polled:
    return Polled(sum(r.stored for r in results), [name for r in results for name in r.failed])


# ------------------------------------------------------------------ faults


def describe(exc: BaseException, mailbox: Mailbox) -> Fault:
    """A one-line reason for a log, and whether retrying soon could help."""
    server = _server(mailbox)
    if isinstance(exc, Fault):
        return exc
    if isinstance(exc, LoginError):
        return Fault(f"login as {mailbox.imap_user} at {server} refused ({_text(exc)}); "
                     "check the password in password_env / password_file", lasting=True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Fault(f"the TLS certificate of {server} is not trusted ({exc.verify_message}); "
                     "set ca_file to the CA that signed it", lasting=True)
    if isinstance(exc, CapabilityError) and "STARTTLS" in str(exc).upper():
        secret = "access token" if mailbox.auth == "oauth2" else "password"
        return Fault(f"{server} does not offer STARTTLS, and the {secret} is not sent in clear "
                     "(set starttls = false only for a server on this machine)", lasting=True)
    if isinstance(exc, ConfigError):
        return Fault(str(exc), lasting=True)
    if isinstance(exc, HelpdeskError):
        return Fault(f"{exc}; the messages stay on the server")
    return Fault(_network(exc, server))


def _network(exc: BaseException, server: str) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {server}: connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"{server} did not answer in time"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {server}: {exc.strerror}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {server} failed: {exc.reason or exc}"
    if isinstance(exc, IMAPClientAbortError):
        return f"connection to {server} lost ({_text(exc)})"
    if isinstance(exc, IMAPClientError):
        return f"{server} refused: {_text(exc)}"
    if isinstance(exc, OSError):
        return f"connection to {server} failed: {exc.strerror or exc}"
    return f"unexpected {type(exc).__name__}: {_text(exc)}"


def _text(exc: BaseException) -> str:
    """imapclient puts the server's bytes into messages as ``b'...'``; show the text,
    without Dovecot's timing suffix ``(0.001 + 0.000 secs)`` or the ``[host:date time]``
    of its temporary failures, which would make every repeat of a fault look new."""
    text = str(exc)
    if text[:2] in ("b'", 'b"') and text[-1:] in ("'", '"'):
        text = text[2:-1]
    # (?<!\s): a match starts where the blanks start, not again inside them (quadratic)
    text = re.sub(r"(?<!\s)\s*\(\d+(?:\.\d+)?(?: \+ \d+(?:\.\d+)?)* secs\)\.?", "", text)
    text = re.sub(r"(?<!\s)\s*\[[^\[\]\s]+:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]$", "", text)   # [host:time]
    return " ".join(text.split()) or type(exc).__name__


# ------------------------------------------------------------------ the watcher


class Backoff:
    """Reconnect delays: FIRST_RETRY doubling to MAX_RETRY; SLOW_RETRY for lasting faults."""

    def __init__(self) -> None:
        self.delay = FIRST_RETRY

    def reset(self) -> None:
        self.delay = FIRST_RETRY

    def next(self, lasting: bool) -> float:
        if lasting:
            return SLOW_RETRY
        delay, self.delay = self.delay, min(self.delay * 2, MAX_RETRY)
        return delay


class _Unleased:
    """The lease of a watcher that needs none (a single process): always held."""

    check_every = IDLE_RENEW

    def acquire(self, stopping: threading.Event) -> bool:
        return True

    def held(self) -> bool:
        return True

    def release(self) -> None:
        pass


class Watcher:
    """One mailbox read continuously by its own thread: a pass, then IDLE (or a sleep).

    With workers sharing a database, ``lease`` (``runtime.membership.MailboxLease``)
    lets one worker at a time read the mailbox: the watcher waits for it before it
    connects, checks it after every IDLE (which lasts at most ``lease.check_every``)
    and disconnects when another worker took it over."""

    def __init__(self, reader: Reader, lease=None) -> None:
        self.reader = reader
        self.lease = lease or _Unleased()
        self.mailbox = reader.mailbox
        self.login = Login(self.mailbox)         # one per mailbox: its token cache outlives reconnects
        self.stopping = threading.Event()
        self.idling = threading.Event()          # set while waiting for new mail (tests, benchmark)
        self._wake_r, self._wake_w = os.pipe()   # stop() interrupts an IDLE at once
        self._thread = threading.Thread(target=self._run, name=f"imap-{self.mailbox.name}", daemon=True)
        self._failed: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(timeout)
        if not self._thread.is_alive():
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)

    def _run(self) -> None:
        backoff = Backoff()
        try:
            while not self.stopping.is_set():
                try:
                    if not self.lease.acquire(self.stopping):
                        break
                    with connected(self.mailbox, self.login) as client:
                        self._serve(client, backoff)
                except Exception as exc:  # noqa: BLE001 - every fault: log, wait, reconnect
                    if self.stopping.is_set():
                        break
                    self._pause(describe(exc, self.mailbox), backoff)
        finally:
            with contextlib.suppress(Exception):     # a database that is down: the lease runs out
                self.lease.release()
            imap_cursor.release()

    def _serve(self, client: IMAPClient, backoff: Backoff) -> None:
        while not self.stopping.is_set():
            self._drain_all(client)
            imap_cursor.passed(self.mailbox.name)
            if self._failed is not None:
                log.info("mailbox %s: reading %s again", self.mailbox.name, where(self.mailbox))
                self._failed = None
            backoff.reset()
            self._wait(client)
            if not self.lease.held():
                log.warning("mailbox %s: another worker took over reading it", self.mailbox.name)
                return

    def _drain_all(self, client: IMAPClient) -> None:
        """Passes until one finds nothing new, so IDLE starts on a folder read to the end.

        Mail that arrives during a pass is announced (``* n EXISTS``) in the reply to
        one of our commands; IDLE would not announce it again."""
        after, held = 0, []
        while not self.stopping.is_set():
            done = drain(client, self.reader, after, held)
            if not done.tried and not done.announced:
                return
            after, held = max([after, *done.tried]), done.held

    def _pause(self, fault: Fault, backoff: Backoff) -> None:
        """Log a fault once (repeats go to DEBUG), then sleep its backoff.

        A fault only a person can fix is an ERROR; a network fault, which the
        reconnect usually cures, a WARNING."""
        delay = backoff.next(fault.lasting)
        level = logging.ERROR if fault.lasting else logging.WARNING
        level = logging.DEBUG if str(fault) == self._failed else level
        log.log(level, "mailbox %s: %s; retrying in %ds", self.mailbox.name, fault, delay)
        with contextlib.suppress(TemporaryStoreError):   # the fault may be the database itself:
            imap_cursor.failed(self.mailbox.name, str(fault))   # noting it must not end the watcher
        self._failed = str(fault)
        self._sleep(delay)

    def _wait(self, client: IMAPClient) -> None:
        """Until new mail may be there: IDLE if the server has it (renewed every
        ``poll_interval``, at most IDLE_RENEW), else a sleep of ``poll_interval``."""
        interval = min(self.mailbox.poll_interval.total_seconds(), self.lease.check_every)
        if client.has_capability("IDLE"):
            self._idle(client, min(interval, IDLE_RENEW))
            return
        self.idling.set()
        try:
            self._sleep(interval)
        finally:
            self.idling.clear()

    def _idle(self, client: IMAPClient, limit: float) -> None:
        client.idle()
        self.idling.set()
        try:
            if _buffered(client):   # news came with "+ idling": the socket will not tell
                return
            deadline = time.monotonic() + limit
            while not self.stopping.is_set() and time.monotonic() < deadline:
                if not self._readable(client.socket(), deadline - time.monotonic()):
                    continue
                responses = client.idle_check(timeout=0)
                # Nothing readable after all means a closed connection: DONE will tell.
                if not responses or any(len(r) > 1 and r[1] == b"EXISTS" for r in responses):
                    return
        finally:
            self.idling.clear()
            client.idle_done()

    def _readable(self, sock: socket.socket, timeout: float) -> bool:
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            return any(key.fileobj is sock for key, _ in selector.select(max(timeout, 0)))

    def _sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)


def _buffered(client: IMAPClient) -> bool:
    """Whether imaplib has read bytes from the socket that nobody has parsed yet.

    Mail that arrives after a pass's last command and before IDLE is announced
    (``* n EXISTS``) by Dovecot right after ``+ idling``, in the same packet; imaplib's
    buffered reader takes both, and a select() on the socket would then wait for the
    next mail or the IDLE renewal. Peeking with the socket non-blocking never waits."""
    peek = getattr(getattr(client._imap, "file", None), "peek", None)
    if peek is None:
        return False
    sock = client.socket()
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(peek(1))
    except (OSError, ValueError):      # nothing there (BlockingIOError, SSLWantReadError)
        return False
    finally:
        sock.settimeout(timeout)


def start_watchers(mailboxes, store: Store, batch_size: int,
                   on_stored: Callable[[], object], lease_for: Callable[[str], object] | None = None) -> list[Watcher]:
    """A running watcher for every IMAP mailbox; ``lease_for(name)``: its lease, or None."""
    watchers = [Watcher(Reader(m, store, batch_size, on_stored), lease_for(m.name) if lease_for else None)
                for m in mailboxes if m.source_kind in ("imap", "imaps")]
    for watcher in watchers:
        watcher.start()
    return watchers
