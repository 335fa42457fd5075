"""The disputes' store door: only the open-order clash is "already open"."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import peewee as pw
import pytest

from helpdesk.errors import AlreadyOpen
from helpdesk.store import disputes
from helpdesk.store.db import write_transaction
from helpdesk.store.orders import OrderRow

pytestmark = pytest.mark.usefixtures("db_url")
NOW = dt.datetime(2026, 11, 26, 9, 0)
ORDER = OrderRow("100", "bob@example.com", "sam@seller.example", "Game key", Decimal("9.99"), "EUR", NOW)


def create(order: OrderRow = ORDER) -> tuple[int, int]:
    return disputes.create("disputes", "Order 100", order, "Bob", "not received", "nothing came",
                           "awaiting_seller", NOW + dt.timedelta(hours=48), NOW)


def test_a_second_open_dispute_for_the_order_is_already_open_and_the_first_stays(desk):
    with write_transaction():
        _, first = create()
        with pytest.raises(AlreadyOpen, match="order 100 already has an open dispute"):
            create()
    assert disputes.read(first).status == "awaiting_seller"


def test_any_other_integrity_error_is_not_taken_for_already_open(desk):
    with pytest.raises(pw.IntegrityError) as failed, write_transaction():
        create(OrderRow("101", None, "sam@seller.example", "Game key", Decimal(1), "EUR", NOW))
    assert not isinstance(failed.value, AlreadyOpen)
