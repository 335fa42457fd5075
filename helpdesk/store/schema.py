"""The peewee models and the numbered steps that build them: the schema.

SQLite is the embedded default and PostgreSQL the way to scale out, so only
portable SQL is used: no SQLite-only pragmas (those live in ``db.connect``),
no PostgreSQL-only types. Times are naive UTC (see ``clock``).

Schema changes are numbered steps in ``MIGRATIONS``; ``db.migrate`` applies
the missing ones, so an old database is upgraded in place.
"""

from __future__ import annotations

import peewee as pw

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
    # schema 5: a worker claims a batch (``raw.claim``); free again past claimed_until,
    # or at once when its worker is found dead (``workers.reap``)
    claimed_by = pw.IntegerField(null=True)
    claimed_until = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("status", "id"), False),)

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
    # schema 4: a Reply-To that differs from the requester's From, unverified: shown, never mailed
    reply_to = pw.CharField(max_length=320, null=True)

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
    # schema 3: an MTA's queue lifetime
    queued_at = pw.DateTimeField(null=True)     # put back in line (``outbox retry``); None: created_at
    failed_at = pw.DateTimeField(null=True)     # given up
    reported_at = pw.DateTimeField(null=True)   # the staff were told it failed
    # schema 5: the worker whose lease (next_attempt_at) holds the row, released when it dies
    claimed_by = pw.IntegerField(null=True)

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


class Worker(BaseModel):
    """A running ``helpdesk run``, kept alive by its heartbeat (``store.workers``).

    Claims and leases name their worker by id; a worker whose heartbeat is
    older than ``[intake] worker_timeout`` is dead, and any live worker frees
    what it held.
    """

    host = pw.CharField(max_length=255)
    pid = pw.IntegerField()
    started_at = pw.DateTimeField()
    heartbeat_at = pw.DateTimeField()


class Lease(BaseModel):
    """A named thing one worker at a time may do (an IMAP mailbox's reading):
    held by ``holder`` until ``expires_at``, renewed with the holder's heartbeat."""

    name = pw.CharField(max_length=255, primary_key=True)
    holder = pw.IntegerField(null=True)
    expires_at = pw.DateTimeField(null=True)


class Hold(BaseModel):
    """A mail from a claimed (unproven) sender, kept unapplied until the real person confirms it.

    ``participant`` is who we hold it for, at the address we hold for them; ``raw``
    is the mail itself, put back in line once they confirm (docs/trust.md)."""

    ticket = pw.ForeignKeyField(Ticket, on_delete="CASCADE")
    raw = pw.ForeignKeyField(RawMessage, null=True, on_delete="SET NULL")
    participant = pw.IntegerField()
    address = pw.CharField(max_length=320, index=True)
    status = pw.CharField(max_length=16, default="pending", index=True)  # pending|confirmed|applied|expired
    mailed = pw.BooleanField(default=False)                 # a confirmation mail went (the rate cap)
    created_at = pw.DateTimeField(index=True)
    expires_at = pw.DateTimeField()
    confirmed_at = pw.DateTimeField(null=True)
    announced_at = pw.DateTimeField(null=True)           # past the cap: told in the combined mail of then


class SenderFailure(BaseModel):
    """A mail our trusted MTA said failed DMARC or SPF: not acknowledged, counted in the digest."""

    raw = pw.ForeignKeyField(RawMessage, null=True, on_delete="SET NULL")
    address = pw.CharField(max_length=320)
    reason = pw.CharField(max_length=32)
    created_at = pw.DateTimeField(index=True)


class ThreadLock(BaseModel):
    """A bucket of Message-IDs that one transaction at a time may thread mail by.

    A batch takes the buckets of its mails' Message-IDs first (``store.thread_locks``),
    so two workers applying mails of one thread (a reply beside the mail it answers)
    do it in turn and the later sees the earlier's ticket (docs/scaling.md)."""

    bucket = pw.IntegerField(primary_key=True)


MODELS_1 = (Meta, RawMessage, RawContent, Ticket, Participant, Message, ThreadRef, Attachment, Outbox, Bounce)
MODELS_2 = (Timer, DigestRun, Order, Dispute, Proposal, DisputeEvent)
MODELS_5 = (Worker, Lease)
MODELS_6 = (Hold, SenderFailure)
MODELS_8 = (ThreadLock,)
MODELS = MODELS_1 + MODELS_2 + MODELS_5 + MODELS_6 + MODELS_8


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


def _schema_3(database: pw.Database) -> None:
    """The outbox's queue lifetime: when a mail was put back in line, given up, reported."""
    from playhouse.migrate import SchemaMigrator
    from playhouse.migrate import migrate as run_migrations

    have = {c.name for c in database.get_columns("outbox")}
    migrator = SchemaMigrator.from_database(database)
    run_migrations(*[migrator.add_column("outbox", name, Outbox._meta.fields[name])
                     for name in ("queued_at", "failed_at", "reported_at") if name not in have])


def _schema_4(database: pw.Database) -> None:
    """The ticket's unverified Reply-To (the requester is its From address)."""
    from playhouse.migrate import SchemaMigrator
    from playhouse.migrate import migrate as run_migrations

    if "reply_to" not in {c.name for c in database.get_columns("ticket")}:
        migrator = SchemaMigrator.from_database(database)
        run_migrations(migrator.add_column("ticket", "reply_to", Ticket._meta.fields["reply_to"]))


def _schema_5(database: pw.Database) -> None:
    """Workers that share the work: the worker and lease tables, who claimed a raw message
    or an outgoing mail, and the (status, id) index the claim of the next batch reads."""
    from playhouse.migrate import SchemaMigrator
    from playhouse.migrate import migrate as run_migrations

    migrator = SchemaMigrator.from_database(database)
    for model, names in ((RawMessage, ("claimed_by", "claimed_until")), (Outbox, ("claimed_by",))):
        table = model._meta.table_name
        have = {c.name for c in database.get_columns(table)}
        run_migrations(*[migrator.add_column(table, name, model._meta.fields[name])
                         for name in names if name not in have])
    RawMessage._schema.create_indexes(safe=True)
    database.create_tables(MODELS_5, safe=True)


def _schema_6(database: pw.Database) -> None:
    """Proven identity: held mail and the senders our MTA said failed (docs/trust.md)."""
    database.create_tables(MODELS_6, safe=True)


def _schema_7(database: pw.Database) -> None:
    """Held mail past the confirmation cap is announced in one combined mail a day."""
    from playhouse.migrate import SchemaMigrator
    from playhouse.migrate import migrate as run_migrations

    if "announced_at" not in {c.name for c in database.get_columns("hold")}:
        run_migrations(SchemaMigrator.from_database(database).add_column(
            "hold", "announced_at", Hold._meta.fields["announced_at"]))


def _schema_8(database: pw.Database) -> None:
    """Workers thread the mails of one thread in turn: the thread lock buckets."""
    database.create_tables(MODELS_8, safe=True)


# Each entry upgrades the schema by one version; never edit a released step.
# Step 1 builds whatever tables and columns the models have, so later steps
# check what exists before adding it.
MIGRATIONS: tuple = (lambda database: database.create_tables(MODELS, safe=True), _schema_2, _schema_3,
                     _schema_4, _schema_5, _schema_6, _schema_7, _schema_8)
