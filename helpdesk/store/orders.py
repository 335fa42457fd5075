"""The door to the marketplace's orders: read by disputes, written by the import.

The marketplace's export is the only source of who sold what to whom; the
import (``disputes.orders``) checks its rows and hands the good ones here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from helpdesk.store.schema import Order

CHUNK = 200
IMPORTED = ("buyer", "seller", "product", "amount", "currency", "purchased_at")  # besides the key


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    buyer: str
    seller: str
    product: str
    amount: Decimal
    currency: str
    purchased_at: dt.datetime


def find(order_id: str) -> OrderRow | None:
    order = Order.get_or_none(Order.order_id == order_id)
    if order is None:
        return None
    return OrderRow(order.order_id, *(getattr(order, name) for name in IMPORTED))


def products(order_ids: list[str]) -> dict[str, str]:
    """The product of each order (lists and status mails name them), 500 orders per query."""
    found: dict[str, str] = {}
    unique = list(dict.fromkeys(order_ids))
    for start in range(0, len(unique), 500):
        found.update(Order.select(Order.order_id, Order.product)
                     .where(Order.order_id.in_(unique[start:start + 500])).tuples())
    return found


def upsert(rows: list[dict], now: dt.datetime) -> tuple[int, int, int]:
    """New and changed rows only, in chunks: one SELECT and one INSERT … ON CONFLICT each.
    Rows are keyed by ``order_id`` and hold the ``IMPORTED`` columns; a row equal to the
    stored one is not written at all. Returns how many were (new, updated, unchanged)."""
    new = updated = unchanged = 0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        known = {o.order_id: o for o in Order.select().where(
            Order.order_id.in_([r["order_id"] for r in chunk]))}
        changed = [r for r in chunk if r["order_id"] not in known or _differs(known[r["order_id"]], r)]
        new += sum(r["order_id"] not in known for r in chunk)
        updated += sum(r["order_id"] in known for r in changed)
        unchanged += len(chunk) - len(changed)
        if changed:
            (Order.insert_many([{**r, "updated_at": now} for r in changed])
             .on_conflict(conflict_target=[Order.order_id],
                          preserve=[getattr(Order, name) for name in IMPORTED] + [Order.updated_at])
             .execute())
    return new, updated, unchanged


def _differs(order: Order, row: dict) -> bool:
    return any(getattr(order, name) != row[name] for name in IMPORTED)
