"""Helpers shared by the store's query modules: idempotent inserts, time and field checks.

Every function takes a ``Session`` and leaves the transaction to the caller; see `repo`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from .columns import UTC
from .models import (
    Base,
)

LedgerStatus = Literal["reserved", "done", "failed", "skipped"]
SuppressionReason = Literal["unsubscribed", "bounced", "spamreport", "manual"]

CONTACT_FIELDS = ("email", "name", "role", "locale", "timezone", "country")
LEDGER_STATUSES = ("reserved", "done", "failed", "skipped")
SUPPRESSION_REASONS = ("unsubscribed", "bounced", "spamreport", "manual")

# --- helpers -------------------------------------------------------------------------------


def insert_ignore(s: Session, table: type[Base] | Table, values: Mapping[str, Any]) -> bool:
    """Insert a row unless it would violate a unique key (``INSERT ... ON CONFLICT DO NOTHING``).

    Column defaults (ids, timestamps) apply as for a normal insert.

    Args:
        s: The session whose transaction the insert joins.
        table: A model class or a ``Table``.
        values: Column name to value.

    Returns:
        True if the row was inserted, False if a conflicting row already existed.
    """
    tbl = table if isinstance(table, Table) else cast(Table, table.__table__)
    # Built once per table and dialect, the values passed at execution: building and keying a
    # statement per row cost more than running it.
    stmt = _IGNORE.get((dialect_of(s), tbl))
    if stmt is None:
        stmt = _IGNORE[(dialect_of(s), tbl)] = upsert_insert(s, tbl).on_conflict_do_nothing()
    # Without preserve_rowcount, drivers may report -1 for an INSERT.
    result = cast(CursorResult[Any], s.execute(stmt, dict(values), execution_options={"preserve_rowcount": True}))
    return result.rowcount == 1


_IGNORE: dict[tuple[str, Table], postgresql.Insert | sqlite.Insert] = {}


def dialect_of(s: Session) -> str:
    """The session's database: ``sqlite`` or ``postgresql``."""
    return s.get_bind().dialect.name


def upsert_insert(s: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of the session's dialect that takes ``ON CONFLICT`` clauses."""
    dialect = dialect_of(s)
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"upserts support sqlite and postgresql, not {dialect!r}")


def normalize_email(email: str) -> str:
    """The form in which the store keeps and compares email addresses."""
    return email.strip().lower()


def _aware(value: dt.datetime, what: str) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{what} must be timezone-aware, got naive {value.isoformat()}: "
            "use e.g. datetime.now(UTC) or value.replace(tzinfo=UTC)"
        )
    return value.astimezone(UTC)


def _check_fields(model: type[Base], fields: Mapping[str, Any]) -> None:
    known = set(model.__table__.columns.keys())
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(
            f"unknown {model.__name__} field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}"
        )


def _add_once(s: Session, model: type[Base], fields: Mapping[str, Any]) -> bool:
    """Insert a row; with a ``ledger_key`` already stored (a retried activity), nothing.

    One ``INSERT ... ON CONFLICT DO NOTHING``: no read, no ORM object.

    Returns:
        True if the row was stored now.
    """
    _check_fields(model, fields)
    return insert_ignore(s, model, fields)
