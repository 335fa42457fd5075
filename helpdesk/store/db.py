"""The connection, the schema upgrade and the kinds of transaction.

Every other store module reaches the database through ``schema.db``, the proxy
that ``connect`` binds; the rest of the helpdesk reaches it only through the
store's functions and the transactions defined here.
"""

from __future__ import annotations

import contextlib
import os

import peewee as pw
from playhouse.db_url import parse as url_parse

from helpdesk.errors import ConfigError, StorageFull, StoreError, StoreUnavailable
from helpdesk.store import recovery, sql
from helpdesk.store.schema import MIGRATIONS, Meta, db

# WAL lets the SMTP thread write while the loop reads; FULL makes a commit
# durable before we answer 250. temp_store: savepoints journal in memory.
# wal_autocheckpoint: copy the log into the database every 40 MB rather than
# 4 MB, so a page written by many commits (an index's hot pages) is copied
# once, and there are a tenth as many checkpoint fsyncs (measured: about 0.3 s
# less per 10,000 ingested messages).
SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "full", "foreign_keys": 1,
                  "busy_timeout": 30000, "cache_size": -32000, "temp_store": "memory",
                  "wal_autocheckpoint": 10000}


def connect(url: str, wait: float | None = None) -> None:
    """Open the database named by ``url``, bind the models, upgrade the schema.

    ``wait`` (seconds) bounds how long a statement waits for a lock and a connection
    for the server, in place of the generous defaults: pipe mode must answer its MTA
    with "try again later" rather than hold the delivery for half a minute.
    """
    database = _open(url, wait)
    db.initialize(database)
    sql.reset()     # its SQL depends on the engine's placeholder style
    try:
        database.connect(reuse_if_open=True)
        migrate(database)
    except (pw.OperationalError, StoreError) as exc:
        raise StoreError(f"database {redact(url)}: {exc}".splitlines()[0]) from exc


def _open(url: str, wait: float | None = None) -> pw.Database:
    if url.startswith("sqlite:"):
        pragmas = SQLITE_PRAGMAS if wait is None else {**SQLITE_PRAGMAS, "busy_timeout": round(wait * 1000)}
        path = url.removeprefix("sqlite:///")
        _create_private(path)
        return pw.SqliteDatabase(path, pragmas=pragmas, check_same_thread=False)
    if url.startswith(("postgresql:", "postgres:")):
        try:
            import psycopg  # noqa: F401 - peewee's driver: missing, it would fail later with a traceback
        except ImportError as exc:
            raise ConfigError(f"database {redact(url)}: PostgreSQL needs the psycopg driver, "
                              f"the postgres extra: pip install 'helpdesk[postgres]' ({exc})") from None
        params = url_parse(url)
        if not params.get("database"):
            raise ConfigError(f"database url {redact(url)}: no database name (postgresql://host/name)")
        if wait is not None:   # options, not a SET: a reconnected connection has them too
            params["connect_timeout"] = max(1, round(wait))
            params["options"] = f"{params.get('options', '')} -c lock_timeout={max(1, round(wait * 1000))}".strip()
        # psycopg 3 even where psycopg2 is installed too; lost connections are reopened
        return recovery.ReconnectingPostgres(**params, prefer_psycopg3=True)
    raise ConfigError(f"database url {redact(url)}: expected sqlite:/// or postgresql://")


def _create_private(path: str) -> None:
    """A new SQLite file is made 0600, like the secret key: it holds every customer's mail.
    SQLite gives its -wal and -shm files the database file's mode. An existing file keeps
    the mode its owner chose."""
    if not path or path.startswith((":memory:", "file:")):
        return
    # Already there, or no folder or no right to it: SQLite's own open says so, in its words.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


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


@contextlib.contextmanager
def temporary_faults(writes: bool = True):
    """Turn a lost connection or a full disk inside the block into ``StoreUnavailable`` or
    ``StorageFull`` (``store.recovery``), naming the real cause; the transaction it broke
    is rolled back whole, never retried here: its caller tries it again or leaves the
    work pending. A full disk is logged once, and once more when a write succeeds again."""
    try:
        yield
    except StoreError as exc:
        _report(exc)
        raise
    except Exception as exc:
        mapped = recovery.temporary(exc)
        if mapped is None:
            raise
        _report(mapped)
        raise mapped from exc
    if writes:
        recovery.DISK.ok()
    recovery.BUSY.ok()


def _report(exc: StoreError) -> None:
    """Once per streak (PostgreSQL's lost connections are told by its reconnection)."""
    if isinstance(exc, StorageFull):
        recovery.DISK.failed(str(exc).removeprefix("storage full: "))
    elif isinstance(exc, StoreUnavailable) and not isinstance(db.obj, recovery.ReconnectingPostgres):
        recovery.BUSY.failed(str(exc).removeprefix("database unavailable: "))


@contextlib.contextmanager
def read_snapshot():
    """A read transaction, so every figure read inside it sees the same data (nothing is
    locked): the digest's numbers must add up."""
    with temporary_faults(writes=False), db.atomic():
        yield


@contextlib.contextmanager
def write_transaction():
    """A transaction that takes the write lock up front.

    On SQLite a deferred transaction that reads first can fail to upgrade when
    another process wrote meanwhile; IMMEDIATE waits for the lock instead.
    PostgreSQL locks rows as they are written, so a plain transaction is right.
    """
    with temporary_faults(), (db.atomic("IMMEDIATE") if isinstance(db.obj, pw.SqliteDatabase) else db.atomic()):
        yield


@contextlib.contextmanager
def rebuildable_transaction():
    """A write transaction whose commit does not wait for the disk (see ``_rebuildable``)."""
    with temporary_faults(), _rebuildable():
        yield


@contextlib.contextmanager
def _rebuildable():
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
