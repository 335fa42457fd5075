"""The peewee models and the database connection: the store layer's schema.

SQLite is the embedded default and PostgreSQL the way to scale out, so only
portable SQL is used: no SQLite-only pragmas outside ``connect()``, no
PostgreSQL-only types. Times are naive UTC (see ``clock``).

Schema changes are numbered steps in ``MIGRATIONS``; ``connect()`` applies the
missing ones, so an old database is upgraded in place.
"""

from __future__ import annotations

import contextlib

import peewee as pw
from playhouse.db_url import connect as url_connect

from helpdesk.errors import ConfigError, StoreError

db = pw.DatabaseProxy()


class BaseModel(pw.Model):
    class Meta:
        database = db
        legacy_table_names = False


class Meta(BaseModel):
    """Key/value facts about the database itself (schema version)."""

    key = pw.CharField(primary_key=True, max_length=64)
    value = pw.TextField()


class RawMessage(BaseModel):
    """Every inbound message exactly as received; the unit of exactly-once.

    ``dedupe_key`` is unique, so a second copy (from any source) is refused by
    the database itself, even from two processes at once.
    """

    dedupe_key = pw.CharField(max_length=64, unique=True)
    message_id = pw.TextField(null=True)
    mailbox = pw.CharField(max_length=64)
    source = pw.CharField(max_length=32)
    envelope_to = pw.TextField(default="")
    received_at = pw.DateTimeField()
    size = pw.IntegerField()
    status = pw.CharField(max_length=16, default="pending", index=True)
    reason = pw.TextField(null=True)
    outcome = pw.CharField(max_length=32, null=True)
    ticket_id = pw.IntegerField(null=True)
    processed_at = pw.DateTimeField(null=True)

    @property
    def raw(self) -> bytes:
        return bytes(RawContent.get_by_id(self.id).raw)


class RawContent(BaseModel):
    """The bytes of a raw message, apart: status updates then never rewrite a large row."""

    message = pw.ForeignKeyField(RawMessage, primary_key=True, on_delete="CASCADE")
    raw = pw.BlobField()


class Ticket(BaseModel):
    mailbox = pw.CharField(max_length=64)
    subject = pw.TextField()
    requester = pw.CharField(max_length=320, index=True)
    requester_name = pw.TextField(default="")
    status = pw.CharField(max_length=32, default="new")
    priority = pw.CharField(max_length=16, default="normal")
    assignee = pw.CharField(max_length=320, null=True)
    created_at = pw.DateTimeField()
    updated_at = pw.DateTimeField()
    follow_up_of = pw.IntegerField(null=True)
    # schema 2: staff work, deadlines, disputes
    kind = pw.CharField(max_length=16, default="ticket")   # "ticket", or "dispute" for a dispute's chat
    first_response_at = pw.DateTimeField(null=True)
    overdue = pw.BooleanField(default=False)
    resolved_at = pw.DateTimeField(null=True)
    closed_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("status", "updated_at"), False), (("created_at",), False),
                   (("overdue", "status"), False), (("assignee", "status"), False))


class Participant(BaseModel):
    """Who may post into a ticket; reply addresses are issued per participant."""

    ticket = pw.ForeignKeyField(Ticket, backref="participants", on_delete="CASCADE")
    address = pw.CharField(max_length=320)
    name = pw.TextField(default="")
    role = pw.CharField(max_length=16)

    class Meta:
        indexes = ((("ticket", "address"), True), (("address",), False))


class Message(BaseModel):
    """One entry of a ticket's conversation: inbound, outbound or internal note."""

    ticket = pw.ForeignKeyField(Ticket, backref="messages", on_delete="CASCADE")
    raw = pw.ForeignKeyField(RawMessage, null=True, on_delete="SET NULL")
    direction = pw.CharField(max_length=8)
    sender = pw.CharField(max_length=320)
    recipients = pw.TextField(default="")
    subject = pw.TextField(default="")
    body = pw.TextField(default="")
    full_text = pw.TextField(default="")
    message_id = pw.TextField(null=True)
    auto = pw.BooleanField(default=False)
    created_at = pw.DateTimeField()


class ThreadRef(BaseModel):
    """Message-IDs known to belong to a ticket: its own, referenced and sent ones.

    A reply that arrives before the mail it answers still meets it here,
    because both carry the parent's Message-ID.
    """

    msgid = pw.CharField(max_length=255)
    ticket = pw.ForeignKeyField(Ticket, on_delete="CASCADE")
    ours = pw.BooleanField(default=False)     # a Message-ID the helpdesk generated

    class Meta:
        indexes = ((("msgid", "ticket"), True),)


class Attachment(BaseModel):
    message = pw.ForeignKeyField(Message, backref="attachments", on_delete="CASCADE")
    filename = pw.TextField()
    content_type = pw.CharField(max_length=255)
    size = pw.IntegerField()
    sha256 = pw.CharField(max_length=64, null=True)
    inline = pw.BooleanField(default=False)
    refused = pw.TextField(null=True)


class Outbox(BaseModel):
    """Mail waiting to leave, written in the same transaction as its cause."""

    kind = pw.CharField(max_length=32)
    ticket = pw.ForeignKeyField(Ticket, null=True, on_delete="SET NULL")
    message_id = pw.CharField(max_length=255, unique=True)
    envelope_from = pw.CharField(max_length=320)
    recipient = pw.CharField(max_length=320)
    headers = pw.TextField()
    subject = pw.TextField()
    text = pw.TextField()
    html = pw.TextField(null=True)
    status = pw.CharField(max_length=16, default="queued")
    attempts = pw.IntegerField(default=0)
    next_attempt_at = pw.DateTimeField()
    last_error = pw.TextField(null=True)
    created_at = pw.DateTimeField()
    sent_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = (
            (("status", "next_attempt_at"), False),
            (("recipient", "kind", "created_at"), False),
        )


class Bounce(BaseModel):
    """A delivery failure report, kept against the address that failed."""

    address = pw.CharField(max_length=320, index=True)
    raw = pw.ForeignKeyField(RawMessage, null=True, on_delete="SET NULL")
    ticket = pw.ForeignKeyField(Ticket, null=True, on_delete="SET NULL")
    status = pw.CharField(max_length=32, default="")
    diagnostic = pw.TextField(default="")
    created_at = pw.DateTimeField()


class Timer(BaseModel):
    """A deadline or reminder that fires exactly once.

    The scheduler's tick reads ``status = 'pending' AND fire_at <= now`` through
    the (status, fire_at) index, so its cost grows with what is due, not with
    the number of tickets. A timer is claimed by updating its status from
    pending in the same transaction as its effects: two processes on one
    database never fire it twice, and a crash before the commit fires it later.
    Fired and cancelled rows stay as the record of every firing.
    """

    subject = pw.CharField(max_length=16)          # "ticket" or "dispute"
    subject_id = pw.IntegerField()
    kind = pw.CharField(max_length=48)             # e.g. "first_response", "first_response.reminder"
    fire_at = pw.DateTimeField()
    status = pw.CharField(max_length=16, default="pending")   # pending | fired | cancelled
    created_at = pw.DateTimeField()
    fired_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("status", "fire_at"), False), (("subject", "subject_id", "status"), False))


class DigestRun(BaseModel):
    """One row per digest period: the unique key makes a digest go out once,
    whatever the number of workers or restarts."""

    period = pw.CharField(max_length=64, unique=True)
    created_at = pw.DateTimeField()
    recipients = pw.IntegerField(default=0)


class Order(BaseModel):
    """A marketplace order, imported from its export; the key is the marketplace's id."""

    order_id = pw.CharField(max_length=64, unique=True)
    buyer = pw.CharField(max_length=320, index=True)
    seller = pw.CharField(max_length=320, index=True)
    product = pw.TextField()
    amount = pw.DecimalField(max_digits=14, decimal_places=2)
    currency = pw.CharField(max_length=8)
    purchased_at = pw.DateTimeField()
    updated_at = pw.DateTimeField()


class Dispute(BaseModel):
    """A buyer–seller dispute. Its chat lives in a Ticket row of kind "dispute",
    so messages, attachments, thread references, participants (buyer, seller,
    admin) and outgoing mail reuse the ticket tables."""

    ticket = pw.ForeignKeyField(Ticket, unique=True, on_delete="CASCADE")
    order_id = pw.CharField(max_length=64, index=True)
    buyer = pw.CharField(max_length=320, index=True)
    seller = pw.CharField(max_length=320, index=True)
    reason = pw.CharField(max_length=64)
    description = pw.TextField(default="")
    status = pw.CharField(max_length=32, default="awaiting_seller", index=True)
    created_at = pw.DateTimeField()
    updated_at = pw.DateTimeField()
    seller_due_at = pw.DateTimeField()               # 48 h after opening
    seller_answered_at = pw.DateTimeField(null=True)
    window_closes_at = pw.DateTimeField(null=True)   # 3 days after the seller's first answer
    admin_due_at = pw.DateTimeField(null=True)       # 72 h: the administration steps in
    decided_for = pw.CharField(max_length=16, null=True)   # "buyer" or "seller"
    decision = pw.TextField(null=True)
    # the order id while the dispute is open, NULL once final: the unique index
    # lets the database itself refuse a second open dispute for one order
    open_order = pw.CharField(max_length=64, null=True, unique=True)


class Proposal(BaseModel):
    """A solution offered in a dispute, numbered per dispute."""

    dispute = pw.ForeignKeyField(Dispute, backref="proposals", on_delete="CASCADE")
    number = pw.IntegerField()
    author = pw.CharField(max_length=16)             # "buyer" or "seller"
    text = pw.TextField()
    created_at = pw.DateTimeField()
    accepted_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("dispute", "number"), True),)


class DisputeEvent(BaseModel):
    """The history of a dispute: every state change with its time, actor and reason."""

    dispute = pw.ForeignKeyField(Dispute, backref="events", on_delete="CASCADE")
    at = pw.DateTimeField()
    actor = pw.CharField(max_length=320)             # "buyer", "seller", "admin:<address>", "system"
    from_status = pw.CharField(max_length=32, null=True)
    to_status = pw.CharField(max_length=32)
    reason = pw.TextField(default="")


MODELS_1 = (Meta, RawMessage, RawContent, Ticket, Participant, Message, ThreadRef, Attachment, Outbox, Bounce)
MODELS_2 = (Timer, DigestRun, Order, Dispute, Proposal, DisputeEvent)
MODELS = MODELS_1 + MODELS_2


def _schema_2(database: pw.Database) -> None:
    """Staff work, deadlines and disputes: new tables, new ticket columns."""
    from playhouse.migrate import SchemaMigrator
    from playhouse.migrate import migrate as run_migrations

    have = {c.name for c in database.get_columns("ticket")}
    new = ("kind", "first_response_at", "overdue", "resolved_at", "closed_at")
    migrator = SchemaMigrator.from_database(database)
    run_migrations(*[migrator.add_column("ticket", name, Ticket._meta.fields[name])
                     for name in new if name not in have])
    Ticket._schema.create_indexes(safe=True)
    database.create_tables(MODELS_2, safe=True)


# Each entry upgrades the schema by one version; never edit a released step.
# Step 1 builds whatever tables and columns the models have, so later steps
# check what exists before adding it.
MIGRATIONS: tuple = (lambda database: database.create_tables(MODELS, safe=True), _schema_2)


# WAL lets the SMTP thread write while the loop reads; FULL makes a commit
# durable before we answer 250. temp_store: savepoints journal in memory.
# wal_autocheckpoint: copy the log into the database every 40 MB rather than
# 4 MB, so a page written by many commits (an index's hot pages) is copied
# once, and there are a tenth as many checkpoint fsyncs (measured: about 0.3 s
# less per 10,000 ingested messages).
SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "full", "foreign_keys": 1,
                  "busy_timeout": 30000, "cache_size": -32000, "temp_store": "memory",
                  "wal_autocheckpoint": 10000}


def connect(url: str) -> pw.Database:
    """Open the database named by ``url``, bind the models, upgrade the schema."""
    from helpdesk import statements  # its SQL depends on the engine's placeholder style

    database = _open(url)
    db.initialize(database)
    statements.reset()
    try:
        database.connect(reuse_if_open=True)
        migrate(database)
    except pw.OperationalError as exc:
        raise StoreError(f"database {redact(url)}: {exc}".splitlines()[0]) from exc
    return database


def _open(url: str) -> pw.Database:
    if url.startswith("sqlite:"):
        return pw.SqliteDatabase(url.removeprefix("sqlite:///"), pragmas=SQLITE_PRAGMAS,
                                 check_same_thread=False)
    if url.startswith(("postgresql:", "postgres:")):
        try:
            return url_connect(url)
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError(
                "PostgreSQL needs the driver: pip install 'helpdesk[postgres]'") from exc
    raise ConfigError(f"database url {redact(url)}: expected sqlite:/// or postgresql://")


def migrate(database: pw.Database) -> None:
    """Apply the migration steps this database has not seen yet.

    A current database is only read, so many processes can start at once; an
    upgrade takes the write lock first and checks the version again under it.
    """
    if _schema_version(database) == len(MIGRATIONS):
        return
    atomic = database.atomic("IMMEDIATE") if isinstance(database, pw.SqliteDatabase) else database.atomic()
    with atomic:
        if isinstance(database, pw.PostgresqlDatabase):   # SQLite's IMMEDIATE does this there
            database.execute_sql("SELECT pg_advisory_xact_lock(7215001)")   # one migrator at a time
        database.create_tables([Meta], safe=True)
        version = _schema_version(database)
        for step in MIGRATIONS[version:]:
            step(database)
        (Meta.insert(key="schema_version", value=str(len(MIGRATIONS)))
         .on_conflict(conflict_target=[Meta.key], update={Meta.value: str(len(MIGRATIONS))})
         .execute())


def _schema_version(database: pw.Database) -> int:
    if not database.table_exists("meta"):
        return 0
    row = Meta.get_or_none(Meta.key == "schema_version")
    return int(row.value) if row else 0


def write_transaction():
    """A transaction that takes the write lock up front.

    On SQLite a deferred transaction that reads first can fail to upgrade when
    another process wrote meanwhile; IMMEDIATE waits for the lock instead.
    PostgreSQL locks rows as they are written, so a plain transaction is right.
    """
    if isinstance(db.obj, pw.SqliteDatabase):
        return db.atomic("IMMEDIATE")
    return db.atomic()


@contextlib.contextmanager
def rebuildable_transaction():
    """A write transaction whose commit does not wait for the disk.

    For state that can be rebuilt from what is already durable: the pipeline's
    batches, derived from raw messages that were committed durably before
    their source was acknowledged. A power cut may undo such a commit (never
    corrupt it: SQLite's WAL and PostgreSQL's WAL recover to an earlier
    commit), and the messages are then simply pending again. Nothing derived
    from it leaves the helpdesk before a durable commit: the outbox claims
    mail in a normal transaction first, and that commit makes every earlier
    one durable with it, both engines writing their log in order.
    """
    if db.in_transaction():
        with write_transaction():      # a savepoint of the caller's transaction
            yield
        return
    if isinstance(db.obj, pw.SqliteDatabase):
        db.execute_sql("PRAGMA synchronous = NORMAL")
        try:
            with db.atomic("IMMEDIATE"):
                yield
        finally:
            _restore_synchronous()
        return
    with db.atomic():
        db.execute_sql("SET LOCAL synchronous_commit TO OFF")
        yield


def _restore_synchronous() -> None:
    """Back to FULL; a connection that cannot be set back is closed instead, so
    its next use reconnects with the usual pragmas rather than staying NORMAL."""
    try:
        db.execute_sql(f"PRAGMA synchronous = {SQLITE_PRAGMAS['synchronous']}")
    except Exception:
        db.close()
        raise


def redact(url: str) -> str:
    """A URL fit for a log line: the password replaced."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, cred = head.partition("//")
    return f"{scheme}//{cred.split(':', 1)[0]}:***@{tail}"
