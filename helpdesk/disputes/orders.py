"""The marketplace's order export (CSV or JSON) → the ``order`` table.

Disputes need to know who sold what to whom, and the marketplace is the only
source of that truth, so its export is loaded as it is: a bad row is reported
with its line number and skipped, the good rows are imported anyway, and a
re-import updates rows by ``order_id`` instead of duplicating them (unchanged
rows are not written at all). One transaction per file: an import is
all-good-rows or nothing. Reading and checking are done here; ``store.orders``
writes the good rows.

Accepted shapes: CSV with a header row (``,``, ``;`` or tab separated), a JSON
array of objects, or JSON Lines (one object per line). Column names are
matched case-insensitively, with common aliases (``buyer_email``,
``purchase_date``...). Times without an offset are UTC; a bare date is
midnight UTC. Order ids are letters, digits, ``-`` and ``_`` (a whole JSON
number is one too: ``100234.0`` is "100234").
"""

from __future__ import annotations

import csv
import datetime as dt
import email.utils
import io
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from helpdesk.clock import naive_utc, parse_iso
from helpdesk.errors import UserError
from helpdesk.store import orders as store
from helpdesk.store.db import write_transaction

FIELDS = ("order_id", "buyer", "seller", "product", "amount", "currency", "purchased_at")
ALIASES = {
    "order": "order_id", "id": "order_id", "order_number": "order_id", "order_no": "order_id",
    "buyer_email": "buyer", "buyer_address": "buyer", "customer_email": "buyer",
    "seller_email": "seller", "seller_address": "seller", "vendor_email": "seller",
    "product_name": "product", "item": "product", "title": "product",
    "price": "amount", "total": "amount",
    "purchase_date": "purchased_at", "purchased": "purchased_at", "date": "purchased_at",
    "created_at": "purchased_at", "ordered_at": "purchased_at",
}
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CURRENCY = re.compile(r"^[A-Z0-9]{2,8}$")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_ORDERS_KEY = re.compile(r'\s*\{\s*"orders"\s*:\s*\[')     # {"orders": [...]}


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


@dataclass
class ImportReport:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    bad: list[BadRow] = field(default_factory=list)

    def summary(self) -> str:
        return (f"orders: {self.new} new, {self.updated} updated, {self.unchanged} unchanged, "
                f"{len(self.bad)} bad rows")


def import_file(path: Path, now: dt.datetime) -> ImportReport:
    """Read, check and upsert one export file; UserError when the file itself is unusable."""
    records = read_records(path)
    report = ImportReport()
    rows: dict[str, dict] = {}
    for line, record in records:
        checked = check(record)
        if isinstance(checked, str):
            report.bad.append(BadRow(line, checked))
        else:
            rows[checked["order_id"]] = checked     # a later row for the same order wins
    with write_transaction():
        report.new, report.updated, report.unchanged = store.upsert(list(rows.values()), naive_utc(now))
    return report


def read_records(path: Path) -> list[tuple[int, dict]]:
    """(line number, record with canonical keys) for every row of a CSV or JSON file."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    start = text.lstrip()[:1]
    if path.suffix.lower() in (".json", ".jsonl", ".ndjson") or start in ("[", "{"):
        return _json_records(path, text)
    return _csv_records(path, text)


def check(record: dict) -> dict | str:
    """A row ready for the table, or why it is not (one short phrase)."""
    if "_error" in record:
        return record["_error"]
    missing = [name for name in FIELDS if _blank(record.get(name))]
    if missing:
        return "missing " + ", ".join(missing)
    try:
        row = {"order_id": _order_id(record["order_id"]), "buyer": _address(record["buyer"], "buyer"),
               "seller": _address(record["seller"], "seller"), "product": _text(record["product"]),
               "amount": _amount(record["amount"]), "currency": _currency(record["currency"]),
               "purchased_at": _moment(record["purchased_at"])}
    except ValueError as exc:
        return str(exc)
    if row["buyer"] == row["seller"]:
        return f"buyer and seller are the same address ({row['buyer']})"
    return row


# --- reading -------------------------------------------------------------------

def _csv_records(path: Path, text: str) -> list[tuple[int, dict]]:
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise UserError(f"{path}: empty file") from None
    keys = [_canonical(name) for name in header]
    _require_columns(path, keys, header)
    records, last = [], reader.line_num
    try:
        for values in reader:
            line, last = last + 1, reader.line_num
            if any(v.strip() for v in values):
                records.append((line, dict(zip(keys, values))))
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: {exc}") from None
    return records


def _json_records(path: Path, text: str) -> list[tuple[int, dict]]:
    decoder = json.JSONDecoder(parse_float=Decimal)
    array = _ORDERS_KEY.match(text) if text.lstrip().startswith("{") else None
    if text.lstrip().startswith("[") or array:
        items = _json_array(path, text, decoder, array.end() if array else text.index("[") + 1)
    else:
        items = _json_lines(text, decoder)
    records = []
    for line, item in items:
        if isinstance(item, _Invalid):
            records.append((line, {"_error": item.reason}))
        elif not isinstance(item, dict):
            records.append((line, {"_error": "not a JSON object"}))
        else:
            records.append((line, {_canonical(k): v for k, v in item.items()}))
    return records


def _json_array(path: Path, text: str, decoder: json.JSONDecoder, index: int) -> list[tuple[int, object]]:
    """Each element with the line it starts on (``json.loads`` forgets positions)."""
    items = []
    try:
        while True:
            index = _skip_space(text, index)
            if text.startswith("]", index):
                return items
            item, end = decoder.raw_decode(text, index)
            items.append((text.count("\n", 0, index) + 1, item))
            index = _skip_space(text, end)
            if text.startswith(",", index):
                index += 1
            elif not text.startswith("]", index):
                raise json.JSONDecodeError("expected ',' or ']'", text, index)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None


def _json_lines(text: str, decoder: json.JSONDecoder) -> list[tuple[int, object]]:
    """JSON Lines: a broken line is a bad row, not a broken file."""
    items: list[tuple[int, object]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                items.append((number, decoder.decode(line)))
            except json.JSONDecodeError as exc:
                items.append((number, _Invalid(f"not valid JSON: {exc.msg}")))
    return items


@dataclass(frozen=True)
class _Invalid:
    reason: str


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _canonical(name: str) -> str:
    key = re.sub(r"[\s-]+", "_", str(name).strip().lower())
    return ALIASES.get(key, key)


def _require_columns(path: Path, keys: list[str], header: list[str]) -> None:
    missing = [name for name in FIELDS if name not in keys]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} "
                        f"(found: {', '.join(h.strip() for h in header)})")


# --- checking values ---------------------------------------------------------

def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value, limit: int = 1000) -> str:
    text = _CONTROLS.sub(" ", str(value)).strip()
    if len(text) > limit:
        raise ValueError(f"product longer than {limit} characters")
    return text


def _order_id(value) -> str:
    """Letters, digits, ``-`` and ``_``: what the dispute mail's "Order 100234" can name. A JSON
    number is an id when it is a whole one (100234 or 100234.0 → "100234")."""
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        value = int(value)
    text = str(value).strip()
    if isinstance(value, bool) or not _ORDER_ID.match(text):
        raise ValueError(f"order id {text[:70]!r} is not an id "
                         "(letters, digits, - and _ only, at most 64 characters)")
    return text


def _address(value, role: str) -> str:
    address = email.utils.parseaddr(str(value))[1].strip().lower()
    if len(address) > 320 or not _ADDRESS.match(address):     # the length first: the match is quadratic
        raise ValueError(f"{role} {str(value)[:80]!r} is not an email address")
    return address


def _amount(value) -> Decimal:
    text = str(value).strip()
    if "," in text and "." not in text:
        text = text.replace(",", ".")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"amount {str(value)[:40]!r} is not a number") from None
    if not amount.is_finite() or amount < 0 or amount >= Decimal(10) ** 12:
        raise ValueError(f"amount {text!r} is out of range")
    if amount != amount.quantize(Decimal("0.01")):
        raise ValueError(f"amount {text!r} has more than 2 decimals")
    return amount.quantize(Decimal("0.01"))


def _currency(value) -> str:
    code = str(value).strip().upper()
    if not _CURRENCY.match(code):
        raise ValueError(f"currency {str(value)[:20]!r} is not a code like EUR or USD")
    return code


def _moment(value) -> dt.datetime:
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        try:
            return naive_utc(dt.datetime.fromtimestamp(int(value), dt.UTC))
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"purchase date {value} is out of range") from None
    try:
        return naive_utc(parse_iso(str(value)))
    except ValueError:
        raise ValueError(f"purchase date {str(value)[:40]!r} is not a date like 2026-11-20 "
                         "or 2026-11-20T14:30:00Z") from None
