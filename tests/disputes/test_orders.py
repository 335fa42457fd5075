"""``helpdesk orders import``: CSV and JSON exports, bad rows by line, upserts by order id."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

from helpdesk.cli import main
from helpdesk.disputes import orders
from helpdesk.errors import UserError
from helpdesk.runtime import app as app_module
from helpdesk.store.schema import Order
from tests.conftest import START, write_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def config(tmp_path, db_url):
    return str(write_config(tmp_path, db_url=db_url))


def imported(config, path, capsys):
    code = main(["--config", config, "orders", "import", str(path)])
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip().splitlines()


def test_csv_export_good_rows_in_bad_rows_reported_by_line(config, capsys):
    code, out, err = imported(config, FIXTURES / "orders.csv", capsys)
    assert code == 1
    assert out == "orders: 3 new, 0 updated, 0 unchanged, 3 bad rows"
    csv_name = str(FIXTURES / "orders.csv")
    assert err == [
        f"helpdesk: {csv_name}:5: buyer 'not-an-address' is not an email address",
        f"helpdesk: {csv_name}:6: amount 'abc' is not a number",
        f"helpdesk: {csv_name}:7: purchase date 'yesterday' is not a date like 2026-11-20 or 2026-11-20T14:30:00Z",
    ]
    order = Order.get(Order.order_id == "100234")
    assert (order.buyer, order.seller, order.product) == ("bob@example.com", "sam@seller.example",
                                                          "Space Game (Steam key)")
    assert (order.amount, order.currency, order.purchased_at) == (Decimal("19.99"), "EUR", dt.datetime(2026, 11, 20))


def test_reimport_updates_and_never_duplicates(config, capsys):
    imported(config, FIXTURES / "orders.csv", capsys)
    _, out, err = imported(config, FIXTURES / "orders.json", capsys)
    assert out == "orders: 1 new, 0 updated, 1 unchanged, 2 bad rows"
    json_name = str(FIXTURES / "orders.json")
    assert err == [f"helpdesk: {json_name}:8: buyer and seller are the same address (carl@example.com)",
                   f"helpdesk: {json_name}:11: missing seller"]
    order = Order.get(Order.order_id == "200001")
    assert (order.amount, order.currency, order.purchased_at) == (Decimal("120.00"), "EUR", dt.datetime(2026, 11, 23, 7))
    assert Order.select().count() == 4


def test_a_changed_row_is_updated(tmp_path, config, capsys):
    imported(config, FIXTURES / "orders.csv", capsys)
    changed = tmp_path / "changed.csv"
    changed.write_text("Order ID;Buyer;Seller;Product;Price;Currency;Date\n"
                       "100234;bob@example.com;sam@seller.example;Space Game (Steam key);17,50;eur;2026-11-20\n"
                       "100235;bob@example.com;sam@seller.example;Office Suite licence;49.00;EUR;2026-11-21T10:30:00Z\n")
    code, out, _ = imported(config, changed, capsys)
    assert (code, out) == (0, "orders: 0 new, 1 updated, 1 unchanged, 0 bad rows")
    assert Order.get(Order.order_id == "100234").amount == Decimal("17.50")
    assert Order.select().count() == 3


def test_json_lines_and_the_orders_key(tmp_path, config):
    app_module.build(config).close()      # connects the database
    lines = tmp_path / "orders.jsonl"
    lines.write_text('{"order_id": "1", "buyer": "a@x.example", "seller": "b@x.example", "product": "P",'
                     ' "amount": 1, "currency": "EUR", "purchased_at": 1764144000}\n'
                     "{broken\n")
    report = orders.import_file(lines, START)
    assert (report.new, [(b.line, b.reason[:14]) for b in report.bad]) == (1, [(2, "not valid JSON")])
    wrapped = tmp_path / "export.json"
    wrapped.write_text(json.dumps({"orders": [{"id": "2", "buyer_email": "a@x.example",
                                               "seller_email": "b@x.example", "title": "Q", "total": "2.5",
                                               "currency": "usd", "date": "2026-11-01"}]}, indent=1))
    assert orders.import_file(wrapped, START).new == 1
    assert Order.get(Order.order_id == "2").amount == Decimal("2.50")


@pytest.mark.parametrize("content, message", [
    ("order_id,buyer\n1,a@x.example\n", "missing column(s) seller, product, amount, currency, purchased_at"),
    ("", "empty file"),
    ("[{]", "not valid JSON"),
])
def test_an_unusable_file_is_one_line(tmp_path, config, capsys, content, message):
    path = tmp_path / ("bad.json" if content.startswith("[") else "bad.csv")
    path.write_text(content)
    code, out, err = imported(config, path, capsys)
    assert code == 1 and len(err) == 1 and message in err[0] and out == ""


def test_row_checks():
    good = {"order_id": "1", "buyer": "A <A@X.example>", "seller": "b@x.example", "product": "P",
            "amount": "3", "currency": "eur", "purchased_at": "2026-11-20T10:00:00+02:00"}
    assert orders.check(good)["buyer"] == "a@x.example"
    assert orders.check(good)["purchased_at"] == dt.datetime(2026, 11, 20, 8)
    assert orders.check({**good, "amount": "1.234"}) == "amount '1.234' has more than 2 decimals"
    assert orders.check({**good, "amount": "-1"}) == "amount '-1' is out of range"
    assert orders.check({**good, "currency": "euro dollars"}).startswith("currency")
    assert orders.check({**good, "order_id": "a b"}).startswith("order id")
    with pytest.raises(UserError):
        orders.read_records(Path("/nonexistent/orders.csv"))


@pytest.mark.parametrize("value, expected", [
    ("A-100_234", "A-100_234"),
    (100234, "100234"),
    (Decimal("100234.0"), "100234"),          # a JSON number written as 100234.0
    (Decimal("1E+5"), "100000"),
    (" 42 ", "42"),
])
def test_order_ids_become_plain_text(value, expected):
    good = {"order_id": value, "buyer": "a@x.example", "seller": "b@x.example", "product": "P",
            "amount": "3", "currency": "EUR", "purchased_at": "2026-11-20"}
    assert orders.check(good)["order_id"] == expected


@pytest.mark.parametrize("value", ["A/1", "100234.0", "order#1", "ключ-1", "a.b", "x" * 65, Decimal("1.5"), True])
def test_order_ids_outside_letters_digits_hyphen_and_underscore_are_bad_rows(value):
    good = {"order_id": value, "buyer": "a@x.example", "seller": "b@x.example", "product": "P",
            "amount": "3", "currency": "EUR", "purchased_at": "2026-11-20"}
    assert orders.check(good).startswith("order id ")


def test_a_bad_order_id_is_reported_with_its_line_and_json_numbers_are_ids(tmp_path, config, capsys):
    export = tmp_path / "orders.json"
    export.write_text('[\n {"order_id": 100234.0, "buyer": "a@x.example", "seller": "b@x.example",'
                      ' "product": "P", "amount": 1, "currency": "EUR", "purchased_at": "2026-11-20"},\n'
                      ' {"order_id": "../etc", "buyer": "a@x.example", "seller": "b@x.example",'
                      ' "product": "P", "amount": 1, "currency": "EUR", "purchased_at": "2026-11-20"}\n]\n')
    code, out, err = imported(config, export, capsys)
    assert (code, out) == (1, "orders: 1 new, 0 updated, 0 unchanged, 1 bad rows")
    assert err == [(f"helpdesk: {export}:3: order id '../etc' is not an id "
                    "(letters, digits, - and _ only, at most 64 characters)")]
    assert [o.order_id for o in Order.select()] == ["100234"]
