"""Shared fixtures: a whole helpdesk in a temporary folder, on SQLite or PostgreSQL.

``helpdesk`` builds the real app (real Maildirs, real database, real templates)
from a config written into ``tmp_path``, with a fixed clock. Tests that take the
``db_url`` parameter run once per database engine; PostgreSQL is the server on
127.0.0.1:5432 (database ``test``), in a schema of its own per test.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import socket
import textwrap
import uuid
from pathlib import Path

import pytest

from helpdesk.clock import Clock
from helpdesk.intake.spool import Incoming
from helpdesk.pipeline.batches import Tally
from helpdesk.runtime import app as app_module

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
START = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(folder: Path, *, db_url: str | None = None, extra: str = "",
                 limits: str = "", outgoing: str = 'transport = "maildir:mailboxes/outgoing"',
                 smtp_port: int | None = None) -> Path:
    """A complete config.toml for tests; ``extra`` is appended verbatim."""
    db_line = f'url = "{db_url}"' if db_url else 'url = "sqlite:///var/helpdesk.db"'
    text = textwrap.dedent(f"""\
        [helpdesk]
        name = "Difmark Support"
        secret_key_file = "var/secret.key"
        data_dir = "var"

        [database]
        {db_line}

        [[mailboxes]]
        name = "support"
        address = "support@shop.example"
        kind = "tickets"
        source = "maildir:mailboxes/support"

        [[mailboxes]]
        name = "disputes"
        address = "disputes@shop.example"
        kind = "disputes"
        source = "maildir:mailboxes/disputes"

        [smtp_server]
        listen = "127.0.0.1:{smtp_port or free_port()}"

        [outgoing]
        {outgoing}
        retry_delay = "1m"

        [[staff]]
        address = "alice@shop.example"
        name = "Alice"
        role = "agent"

        [[staff]]
        address = "carol@shop.example"
        name = "Carol"
        role = "admin"

        [tickets]
        first_response = "4h"

        [limits]
        {limits}
        """) + _trusting(extra)
    path = folder / "config.toml"
    path.write_text(text)
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each test that asks for this runs on both engines."""
    if request.param == "sqlite":
        yield None
        return
    psycopg = _pg_driver()
    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        conn = psycopg.connect(PG_URL, autocommit=True)
    except psycopg.OperationalError as exc:  # pragma: no cover - depends on the machine
        _pg_missing(f"PostgreSQL not reachable at {PG_URL}: {exc}".splitlines()[0])
    conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    from helpdesk.store.schema import db
    if db.obj is not None:
        db.close()
    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()


@pytest.fixture
def database(tmp_path, db_url):
    """A connected store on each engine, with this process registered as no worker."""
    from helpdesk.store import db as store_db
    from helpdesk.store import schema, workers
    store_db.connect(db_url or f"sqlite:///{tmp_path}/helpdesk.db")
    yield
    schema.db.close()
    workers._me = None


def _pg_driver():
    """psycopg 3, the driver the ``postgres`` extra installs. Without it the PostgreSQL
    half of the suite cannot run: a skip where PostgreSQL is optional, a failure where
    it is required (CI), so a missing driver can never pass for a green run."""
    try:
        import psycopg
    except ImportError as exc:
        _pg_missing(f"the PostgreSQL driver is not installed ({exc}): pip install -e '.[postgres]'")
    return psycopg


def _pg_missing(reason: str):
    if os.environ.get("HELPDESK_TEST_REQUIRE_PG"):
        pytest.fail(reason)
    pytest.skip(reason)


class Desk:
    """A test's handle on a running helpdesk: feed mail in, read mail out."""

    def __init__(self, folder: Path, config_path: Path, clock: Clock) -> None:
        self.folder = folder
        self.config_path = config_path
        self.clock = clock
        self.app = app_module.build(config_path, clock)

    def ingest(self, *raws: bytes, mailbox: str = "support", source: str = "file") -> Tally:
        stored = self.app.store([Incoming(r, mailbox, source) for r in raws])
        tally = self.app.process()
        tally.counts["duplicate"] += sum(s.duplicate for s in stored)
        self.app.deliver()
        return tally

    def outgoing(self) -> list[email.message.EmailMessage]:
        """Every delivered mail, oldest first, parsed with the modern policy."""
        folder = self.folder / "mailboxes" / "outgoing" / "new"
        paths = sorted(folder.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name)) if folder.exists() else []
        return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                for p in paths if not p.name.startswith(".")]

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.outgoing() if address in str(m["To"])]


@pytest.fixture
def desk(tmp_path, request) -> Desk:
    url = request.getfixturevalue("db_url") if "db_url" in request.fixturenames else None
    config = write_config(tmp_path, db_url=url)
    made = Desk(tmp_path, config, Clock(START))
    yield made
    made.app.close()


TRUSTED_MTA = "mx.shop.example"     # the test helpdesk's receiving MTA ([trust] authserv_ids)


def _trusting(extra: str) -> str:
    """``extra`` with our MTA trusted: in its own ``[trust]`` section if it has one (TOML
    allows a section once), else in one of ours."""
    trusted = f'authserv_ids = ["{TRUSTED_MTA}"]'
    if "[trust]" in extra and "authserv_ids" not in extra:
        return extra.replace("[trust]", f"[trust]\n{trusted}", 1)
    return extra if "[trust]" in extra else f"\n[trust]\n{trusted}\n" + extra


def authenticated(raw: bytes, domain: str | None = None, result: str = "dmarc=pass") -> bytes:
    """``raw`` as our trusted MTA passes it on: an Authentication-Results header on top saying the
    From domain (or ``domain``) passed DMARC. How a staff member's fresh mail carries proof."""
    if domain is None:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        domain = parsed["From"].addresses[0].domain
    header = f"Authentication-Results: {TRUSTED_MTA}; {result} header.from={domain}\n"
    return header.encode() + raw


def mail(*, frm: str = "Bob Buyer <bob@example.com>", to: str = "support@shop.example",
         subject: str = "Key does not work", body: str = "Hello,\n\nmy key does not work.\n\nBob\n",
         message_id: str | None = None, headers: dict[str, str] | None = None) -> bytes:
    """A small, valid plain-text message; every header can be overridden or added."""
    fields = {"From": frm, "To": to, "Subject": subject,
              "Date": "Thu, 26 Nov 2026 09:00:00 +0000",
              "Message-ID": f"<{message_id or uuid.uuid4().hex}@example.com>"}
    fields.update(headers or {})
    head = "".join(f"{k}: {v}\n" for k, v in fields.items() if v is not None)
    return (head + "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n" + body).encode()
