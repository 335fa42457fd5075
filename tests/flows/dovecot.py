"""A private Dovecot for the IMAP tests and the IMAP benchmark.

``Dovecot(...)`` writes its own config into a fresh folder under /tmp and runs
``dovecot -F -c CONFIG`` as a child process on 127.0.0.1 (own ``base_dir``,
``state_dir`` and ``instance_name``, free ports), so the system's Dovecot
service and its config are never touched. Any user name logs in with
``PASSWORD`` (a static passdb), each user has a Maildir of its own, and mail
belongs to uid/gid 5000 (Dovecot refuses mail owned by root). ``tls=True``
adds a self-signed certificate for 127.0.0.1, STARTTLS on ``port`` and
implicit TLS on ``tls_port``, and refuses logins without TLS; Dovecot cannot
mix ``ssl = no`` with an IMAPS listener, so that is a second instance.
``capabilities`` replaces the capability list (e.g. one without MOVE).

``oauth2=INTROSPECTION_URL`` makes the users log in with a bearer token
instead (SASL OAUTHBEARER and XOAUTH2, or only those in ``oauth2_mechanisms``):
the passdb is Dovecot's ``oauth2`` driver, which asks that URL (RFC 7662, the
token POSTed as ``token=``) about every login and takes the answer's
``username``, which must be the login's, and ``active: true``. A password
login is refused (logged as "user disabled"); ``PASSWORD`` opens every mailbox
only as the master user (``user*MASTER`` with PLAIN), which is how ``client``,
``append`` and ``messages`` keep working. ``auth_verbose`` logs why Dovecot
refused a token ("oauth2 failed: Introspection failed: ...").

``find()`` says whether Dovecot is installed: tests skip without it, and fail
when ``HELPDESK_TEST_REQUIRE_DOVECOT=1`` (CI) says it must be there.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from imapclient import IMAPClient

PASSWORD = "secret"
MASTER = "master"     # the master user of an oauth2 instance: ``<user>*master`` with PASSWORD
MAIL_UID = 5000
# Dovecot 2.3's list after login, without MOVE (and IDLE, so that polling shows too).
WITHOUT_MOVE = ("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT THREAD=REFERENCES MULTIAPPEND "
                "UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 ESEARCH LITERAL+")
WITHOUT_MOVE_OR_UIDPLUS = WITHOUT_MOVE.replace(" UIDPLUS", "")


def find() -> str | None:
    """The dovecot binary, or None."""
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None)


def started(name: str, **options) -> Dovecot:
    """A private Dovecot, started; without Dovecot on the machine the test is skipped, or
    fails when ``HELPDESK_TEST_REQUIRE_DOVECOT=1`` (CI installs it, so there it must run)."""
    if find() is None:
        message = "Dovecot is not installed (apt-get install dovecot-imapd)"
        if os.environ.get("HELPDESK_TEST_REQUIRE_DOVECOT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return Dovecot(name, **options).start()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dovecot:
    def __init__(self, name: str = "plain", *, tls: bool = False, capabilities: str | None = None,
                 idle_notify: str = "2 mins", oauth2: str | None = None,
                 oauth2_mechanisms: str = "oauthbearer xoauth2") -> None:
        self.binary = find()
        if self.binary is None:
            raise RuntimeError("dovecot is not installed (Debian: apt-get install dovecot-imapd)")
        self.root = Path(tempfile.mkdtemp(prefix=f"helpdesk-dovecot-{name}-"))
        self.root.chmod(0o755)   # Dovecot's unprivileged processes walk into it
        self.name, self.tls, self.capabilities = name, tls, capabilities
        self.idle_notify = idle_notify
        self.oauth2, self.oauth2_mechanisms = oauth2, oauth2_mechanisms
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.cert = self._make_cert() if tls else None
        self.process: subprocess.Popen | None = None
        self._prepare()

    # ---------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 10.0) -> Dovecot:
        with open(self.root / "stderr.log", "ab") as log:
            self.process = subprocess.Popen([self.binary, "-F", "-c", str(self.root / "dovecot.conf")],
                                            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                            start_new_session=True)   # its own process group
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.process.returncode}: {self.log_tail()}")
            if all(_accepts(p) for p in (self.port, self.tls_port) if p):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"dovecot did not listen within {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to every process of the instance, as a service manager does on a restart.

        Dovecot's master alone would leave running IMAP sessions behind.
        """
        if self.process is None:
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        _signal_group(self.process.pid, signal.SIGKILL)   # whatever still lingers
        self.process = None
        deadline = time.monotonic() + 5
        while _accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        text = ""
        for name in ("stderr.log", "dovecot.log"):
            path = self.root / name
            if path.exists():
                text += path.read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-lines:])

    # ---------------------------------------------------------------- mail

    def source(self, user: str, scheme: str = "imap", folder: str = "INBOX") -> str:
        port = self.tls_port if scheme == "imaps" else self.port
        return f"{scheme}://{user}@127.0.0.1:{port}/{folder}"

    def connect(self) -> IMAPClient:
        """A test client not yet logged in (STARTTLS done on the TLS instance)."""
        client = IMAPClient("127.0.0.1", self.port, ssl=False, timeout=10)
        if self.tls:
            client.starttls(ssl.create_default_context(cafile=str(self.cert)))
        return client

    def client(self, user: str, password: str = PASSWORD) -> IMAPClient:
        """A logged-in test client; on an oauth2 instance, as the master user."""
        client = self.connect()
        if self.oauth2:
            client.plain_login(f"{user}*{MASTER}", password)
        else:
            client.login(user, password)
        return client

    def append(self, user: str, *raws: bytes, folder: str = "INBOX") -> None:
        client = self.client(user)
        try:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for raw in raws:
                client.append(folder, raw)
        finally:
            client.logout()

    def messages(self, user: str, folder: str = "INBOX") -> list[tuple[tuple[bytes, ...], bytes]]:
        """(flags, raw bytes) of every message in the folder, in UID order."""
        client = self.client(user)
        try:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            uids = sorted(client.search("ALL"))
            data = client.fetch(uids, ["FLAGS", "BODY.PEEK[]"]) if uids else {}
            return [(data[u][b"FLAGS"], data[u][b"BODY[]"]) for u in uids]
        finally:
            client.logout()

    def doveadm(self, *args: str) -> str:
        done = subprocess.run([shutil.which("doveadm") or "/usr/bin/doveadm", "-c",
                               str(self.root / "dovecot.conf"), *args],
                              capture_output=True, text=True, check=True, timeout=30)
        return done.stdout

    # ---------------------------------------------------------------- config

    def _prepare(self) -> None:
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir()
        uid = MAIL_UID if os.geteuid() == 0 else os.getuid()
        gid = MAIL_UID if os.geteuid() == 0 else os.getgid()
        if os.geteuid() == 0:
            os.chown(self.root / "mail", uid, gid)
        (self.root / "dovecot.conf").write_text(self._config(uid, gid))
        if self.oauth2:
            (self.root / "oauth2.conf.ext").write_text(self._oauth2_config())

    def _config(self, uid: int, gid: int) -> str:
        root = self.root
        as_user = "" if os.geteuid() == 0 else textwrap.dedent(f"""\
            default_internal_user = {pwd.getpwuid(os.getuid()).pw_name}
            default_login_user = {pwd.getpwuid(os.getuid()).pw_name}
            """)
        if self.tls:
            security = f"ssl = required\nssl_cert = <{self.cert}\nssl_key = <{self.cert.with_suffix('.key')}\n"
            imaps = f"address = 127.0.0.1\nport = {self.tls_port}\nssl = yes"
        else:
            security, imaps = "ssl = no\ndisable_plaintext_auth = no\n", "port = 0"
        capability = f"imap_capability = {self.capabilities}\n" if self.capabilities else ""
        return textwrap.dedent(f"""\
            base_dir = {root}/run
            state_dir = {root}/state
            instance_name = helpdesk-{self.name}-{os.getpid()}-{self.port}
            listen = 127.0.0.1
            protocols = imap
            log_path = {root}/dovecot.log
            auth_mechanisms = plain login{" " + self.oauth2_mechanisms if self.oauth2 else ""}
            auth_failure_delay = 0
            first_valid_uid = {uid}
            mail_uid = {uid}
            mail_gid = {gid}
            mail_location = maildir:~/Maildir
            mail_max_userip_connections = 200
            imap_idle_notify_interval = {self.idle_notify}
            # no growing delay after a failed login (the wrong-password test shares 127.0.0.1)
            service anvil {{
              unix_listener anvil-auth-penalty {{
                mode = 0
              }}
            }}
            userdb {{
              driver = static
              args = uid={uid} gid={gid} home={root}/mail/%u
            }}
            """) + self._passdb() + as_user + security + capability + (
            "service imap-login {\n"
            f"inet_listener imap {{\naddress = 127.0.0.1\nport = {self.port}\n}}\n"
            f"inet_listener imaps {{\n{imaps}\n}}\n"
            "}\n")

    def _passdb(self) -> str:
        if not self.oauth2:
            return f"passdb {{\n  driver = static\n  args = password={PASSWORD}\n}}\n"
        return textwrap.dedent(f"""\
            auth_verbose = yes
            auth_master_user_separator = *
            passdb {{
              driver = static
              args = password={PASSWORD}
              master = yes
              mechanisms = plain
            }}
            # a password (or a token sent as one) is refused, as Exchange Online refuses it
            passdb {{
              driver = static
              args = nopassword=y
              deny = yes
              mechanisms = plain login
            }}
            passdb {{
              driver = oauth2
              args = {self.root}/oauth2.conf.ext
              mechanisms = {self.oauth2_mechanisms}
            }}
            """)

    def _oauth2_config(self) -> str:
        return textwrap.dedent(f"""\
            introspection_url = {self.oauth2}
            introspection_mode = post
            username_attribute = username
            active_attribute = active
            active_value = true
            timeout_msecs = 30000
            """)

    def _make_cert(self) -> Path:
        cert, key = self.root / "cert.pem", self.root / "cert.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
                        "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True)
        return cert


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
