"""Prepared SQL for the per-message hot path, built once from the peewee models.

Measured on the ingest benchmark, building a query through peewee costs
100–250 µs per call, while the database executes it in about 8 µs; with a
dozen statements per inbound mail that overhead alone capped intake at a few
hundred messages a second. These helpers generate the same portable SQL once
per (table, columns) from the model definitions — column names and value
conversions still come from peewee — and then only execute it.

Only standard SQL that SQLite (>= 3.35) and PostgreSQL both run is used:
``INSERT ... RETURNING``, ``ON CONFLICT DO NOTHING``, plain UPDATE and SELECT.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from functools import cache

import peewee as pw

from helpdesk.store.schema import db


def insert(model: type[pw.Model], **values) -> int:
    """Insert one row; returns its id. Field defaults apply as with peewee."""
    values = _with_defaults(model, values)
    sql, convert = _insert_sql(model, tuple(values), False, True)
    return _execute(sql, convert(values.values())).fetchone()[0]


def insert_rows(model: type[pw.Model], rows: Sequence[dict], ignore_conflicts: bool = False) -> None:
    """Insert many rows with one prepared statement (all rows have the same keys)."""
    if not rows:
        return
    rows = [_with_defaults(model, row) for row in rows]
    sql, convert = _insert_sql(model, tuple(rows[0]), ignore_conflicts, False)
    cursor = db.cursor()
    cursor.executemany(sql, [convert(row.values()) for row in rows])


def update(model: type[pw.Model], row_id: int, only_if: dict | None = None,
           at_most: tuple[str, object] | None = None, **values) -> int:
    """UPDATE one row by id, optionally only while ``only_if`` columns equal their
    values and the ``at_most`` column is <= its value; returns the row count."""
    conditions = tuple(only_if or ())
    sql, convert_set, convert_where = _update_sql(model, tuple(values), conditions,
                                                  at_most[0] if at_most else None)
    where = list((only_if or {}).values()) + ([at_most[1]] if at_most else [])
    params = convert_set(values.values()) + [row_id] + convert_where(where)
    return _execute(sql, params).rowcount


def update_rows(model: type[pw.Model], rows: Sequence[tuple[int, dict]], only_if: dict | None = None) -> None:
    """UPDATE many rows by id with one prepared statement (every dict has the same
    keys), each only while ``only_if`` holds: one round trip on PostgreSQL
    (psycopg pipelines ``executemany``) instead of one per row."""
    if not rows:
        return
    conditions = tuple(only_if or ())
    sql, convert_set, convert_where = _update_sql(model, tuple(rows[0][1]), conditions, None)
    where = convert_where(list((only_if or {}).values()))
    db.cursor().executemany(sql, [convert_set(values.values()) + [row_id] + where for row_id, values in rows])


def select(model: type[pw.Model], columns: Sequence[str], where: dict, *,
           in_column: str | None = None, in_values: Sequence = (),
           order_by: str | None = None, limit: int | None = None) -> list[tuple]:
    """A simple SELECT: equality conditions, at most one IN list, optional order and limit."""
    sql, convert = _select_sql(model, tuple(columns), tuple(where), in_column, len(in_values),
                               order_by, limit)
    return _execute(sql, convert(where.values()) + list(in_values)).fetchall()


def scalar(model: type[pw.Model], expression: str, where: dict, since: tuple[str, object] | None = None):
    """One value, e.g. ``COUNT(*)``, with equality conditions and one ``>=`` bound."""
    sql, convert = _scalar_sql(model, expression, tuple(where), since[0] if since else None)
    params = convert(list(where.values()) + ([since[1]] if since else []))
    return _execute(sql, params).fetchone()[0]


# --- SQL generation (cached per shape) ----------------------------------------

def cursor_execute(sql: str, params: list):
    """Run hand-written portable SQL (placeholders from ``db.param``) on the cursor."""
    return _execute(sql, params)


def _execute(sql: str, params: list):
    """Straight to the driver's cursor: these statements always run inside a transaction
    the caller opened, so peewee's autocommit and logging wrapper has nothing to add."""
    cursor = db.cursor()
    cursor.execute(sql, params)
    return cursor


def _with_defaults(model: type[pw.Model], values: dict) -> dict:
    missing = [(n, d) for n, d in _defaults(model) if n not in values]
    if not missing:
        return values
    return {**values, **{n: d() if callable(d) else d for n, d in missing}}


@cache
def _defaults(model: type[pw.Model]) -> tuple[tuple[str, object], ...]:
    return tuple((f.name, f.default) for f in model._meta.sorted_fields
                 if f.default is not None and not f.primary_key)


def _q(name: str) -> str:
    return f'"{name}"'


def _fields(model: type[pw.Model], names: Iterable[str]) -> list[pw.Field]:
    return [model._meta.fields[name] for name in names]


# A value already of the type these fields store passes through peewee's
# ``db_value`` unchanged (so does None); skipping the call for it halves the cost
# of binding parameters on the hot path. Anything else still goes through peewee.
_PASS_THROUGH = {pw.CharField: str, pw.TextField: str, pw.IntegerField: int, pw.AutoField: int,
                 pw.BooleanField: bool, pw.DateTimeField: dt.datetime}


def _stored_type(field: pw.Field) -> type | None:
    if type(field) is pw.ForeignKeyField:
        return _stored_type(field.rel_field)
    return _PASS_THROUGH.get(type(field))


def _converter(fields: list[pw.Field]):
    steps = [(f.db_value, _stored_type(f) or type(None)) for f in fields]

    def convert(values: Iterable) -> list:
        return [v if v is None or type(v) is kind else to_db(v)
                for (to_db, kind), v in zip(steps, values)]
    return convert


@cache
def _insert_sql(model, names: tuple[str, ...], ignore_conflicts: bool, returning: bool):
    fields = _fields(model, names)
    columns = ", ".join(_q(f.column_name) for f in fields)
    marks = ", ".join([db.param] * len(fields))
    sql = f"INSERT INTO {_q(model._meta.table_name)} ({columns}) VALUES ({marks})"
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += f" RETURNING {_q(model._meta.primary_key.column_name)}"
    return sql, _converter(fields)


@cache
def _update_sql(model, names: tuple[str, ...], conditions: tuple[str, ...], at_most: str | None):
    fields = _fields(model, names)
    where = _fields(model, conditions + ((at_most,) if at_most else ()))
    assignments = ", ".join(f"{_q(f.column_name)} = {db.param}" for f in fields)
    sql = (f"UPDATE {_q(model._meta.table_name)} SET {assignments} "
           f"WHERE {_q(model._meta.primary_key.column_name)} = {db.param}")
    for f in where[:len(conditions)]:
        sql += f" AND {_q(f.column_name)} = {db.param}"
    if at_most:
        sql += f" AND {_q(where[-1].column_name)} <= {db.param}"
    return sql, _converter(fields), _converter(where)


@cache
def _select_sql(model, columns, conditions, in_column, in_count, order_by, limit):
    where = _fields(model, conditions)
    clauses = [f"{_q(f.column_name)} = {db.param}" for f in where]
    if in_column is not None:
        marks = ", ".join([db.param] * in_count)
        clauses.append(f"{_q(model._meta.fields[in_column].column_name)} IN ({marks})")
    names = ", ".join(_q(f.column_name) for f in _fields(model, columns))
    sql = f"SELECT {names} FROM {_q(model._meta.table_name)}"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    if order_by:
        sql += f" ORDER BY {_q(model._meta.fields[order_by].column_name)}"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return sql, _converter(where)


@cache
def _scalar_sql(model, expression: str, conditions: tuple[str, ...], since: str | None):
    fields = _fields(model, conditions + ((since,) if since else ()))
    clauses = [f"{_q(f.column_name)} = {db.param}" for f in fields[:len(conditions)]]
    if since:
        clauses.append(f"{_q(fields[-1].column_name)} >= {db.param}")
    sql = f"SELECT {expression} FROM {_q(model._meta.table_name)} WHERE " + " AND ".join(clauses)
    return sql, _converter(fields)


def reset() -> None:
    """Forget generated SQL (the placeholder style changes with the database)."""
    for cached in (_insert_sql, _update_sql, _select_sql, _scalar_sql):
        cached.cache_clear()
