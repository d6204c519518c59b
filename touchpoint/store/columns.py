"""Column types and JSON handling shared by the models and the engine."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

UTC = dt.UTC


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware datetime stored in UTC on every backend.

    PostgreSQL keeps ``timestamptz`` natively; SQLite has no time zones, so values are stored as
    naive UTC text (which also sorts correctly) and come back with ``tzinfo=UTC`` attached.
    Naive datetimes are rejected: a naive value is ambiguous, and silently guessing its zone is
    how schedules drift by hours.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Convert an aware datetime to UTC (naive UTC on SQLite)."""
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(
                f"expected a datetime, got {value!r} ({type(value).__name__}); "
                "pass e.g. datetime.now(UTC) or date values to Date columns"
            )
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} cannot be stored: attach a time zone, "
                "e.g. value.replace(tzinfo=UTC) or datetime.now(UTC)"
            )
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        """Return the stored value as an aware UTC datetime."""
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_type() -> JSON:
    """A JSON column type whose Python ``None`` is SQL ``NULL`` (not the JSON literal ``null``)."""
    return JSON(none_as_null=True)


def _json_default(value: object) -> str:
    if isinstance(value, dt.date):  # datetime is a date too
        return value.isoformat()
    raise TypeError(
        f"{value!r} of type {type(value).__name__} cannot be stored as JSON: pass plain JSON "
        "values (dump pydantic models with model_dump(mode='json'))"
    )


def json_dumps(value: object) -> str:
    """Serialise a value for a JSON column; dates and datetimes become ISO 8601 strings."""
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def jsonable(value: Any) -> Any:
    """The value as it will read back from a JSON column (dates as ISO strings, tuples as lists).

    Comparing a new document with a stored one is only meaningful in this form.
    """
    return json.loads(json_dumps(value))
