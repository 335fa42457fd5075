"""Thread keys taken before a batch is applied, so workers thread one thread in turn.

Under PostgreSQL's READ COMMITTED, a worker routing a reply cannot see the
ticket another worker is making for the mail it answers until that commits:
both batches in flight, the reply became a ticket of its own. A batch now
upserts one row per bucket of its mails' Message-IDs (their own, In-Reply-To,
References) before routing: the upsert row-locks the bucket until the commit,
so the second batch waits there and its lookups, later statements, see the
first batch's thread. The buckets are taken in sorted order, so two batches
never wait on each other crosswise. Plain SQL both engines run; on SQLite, whose
write lock already admits one batch at a time, the rows are taken all the same
(they cost about as much as one more insert per mail).

Message-IDs are hashed into 2**24 buckets: the table stays bounded whatever the
traffic, and two unrelated threads sharing a bucket only wait for each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from peewee import EXCLUDED

from helpdesk.store.schema import ThreadLock

BUCKETS = 1 << 24
CHUNK = 500          # rows per statement, well under either engine's parameter limit


def bucket(msgid: str) -> int:
    digest = hashlib.blake2b(msgid.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def take(msgids: Iterable[str]) -> None:
    """Lock the buckets of ``msgids`` for the rest of the caller's transaction."""
    buckets = sorted({bucket(m) for m in msgids})
    for start in range(0, len(buckets), CHUNK):
        (ThreadLock.insert_many([(b,) for b in buckets[start:start + CHUNK]], fields=[ThreadLock.bucket])
         .on_conflict(conflict_target=[ThreadLock.bucket], update={ThreadLock.bucket: EXCLUDED.bucket})
         .execute())
