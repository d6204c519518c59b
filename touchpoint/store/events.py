"""Events: recording quiet events in bulk and reading an account's event log.

Every function takes a ``Session`` and leaves the transaction to the caller; see `repo`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .columns import jsonable
from .common import _aware
from .db import defer
from .models import Event, utcnow


def record_events(s: Session, events: Sequence[Mapping[str, Any]]) -> None:
    """Store events (``id``, ``account_id``, ``type``, ``at``, ``data``) in one statement; an id
    already stored (by either path, or earlier in ``events``) is skipped: a repeat is a no-op.
    """
    if not events:
        return
    received = utcnow()
    rows = [
        {
            "id": e["id"],
            "account_id": e["account_id"],
            "type": e["type"],
            "at": _aware(e["at"], "event.at"),
            "data": jsonable(dict(e.get("data") or {})),
            "received_at": received,
            "applied_by": None,
        }
        for e in events
    ]
    defer(s, _RECORD_POSTGRESQL if s.get_bind().dialect.name == "postgresql" else _RECORD_SQLITE, rows, key=("id",))


_EVENTS = cast(Table, Event.__table__)
# Built once: a run's projection records its engine events on every enrollment's path.
_RECORD_POSTGRESQL = postgresql.insert(_EVENTS).on_conflict_do_nothing()
_RECORD_SQLITE = sqlite.insert(_EVENTS).on_conflict_do_nothing()


def event_log(
    s: Session, account_id: str, *, type: str | None = None, limit: int = 100, before: Event | None = None
) -> list[Event]:
    """An account's events, newest first (by ``at``, then by arrival), at most ``limit``.

    ``before`` continues a listing: only events that come after it in this order.
    """
    query = select(Event).where(Event.account_id == account_id)
    if type is not None:
        query = query.where(Event.type == type)
    if before is not None:
        query = query.where(tuple_(Event.at, Event.received_at, Event.id) < tuple_(before.at, before.received_at, before.id))
    query = query.order_by(Event.at.desc(), Event.received_at.desc(), Event.id.desc()).limit(limit)
    return list(s.scalars(query))


def get_event(s: Session, event_id: str) -> Event | None:
    """One stored event by id."""
    return s.get(Event, event_id)

