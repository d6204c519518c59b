"""Bookkeeping: provider event dedupe, health scores, fired date triggers and cursors.

Every function takes a ``Session`` and leaves the transaction to the caller; see `repo`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .columns import jsonable
from .common import (
    _aware,
    insert_ignore,
)
from .models import (
    Cursor,
    DateTriggerFired,
    HealthScore,
    ProviderEvent,
    utcnow,
)

# --- dedupe, health, date triggers ---------------------------------------------------------


def record_provider_event(s: Session, id: str) -> bool:
    """Remember a provider webhook event id; False if it was processed before."""
    return insert_ignore(s, ProviderEvent, {"id": id})


def add_health_score(
    s: Session,
    account_id: str,
    at: dt.datetime,
    score: int,
    tier: str,
    breakdown: Mapping[str, Any],
) -> HealthScore:
    """Record an account's health score."""
    row = HealthScore(account_id=account_id, at=at, score=score, tier=tier, breakdown=jsonable(dict(breakdown)))
    s.add(row)
    s.flush()
    return row


def health_history(s: Session, account_id: str, *, since: dt.datetime | None = None) -> list[HealthScore]:
    """The account's health scores, oldest first (``since`` exclusive)."""
    query = select(HealthScore).where(HealthScore.account_id == account_id).order_by(HealthScore.at, HealthScore.id)
    if since is not None:
        query = query.where(HealthScore.at > since)
    return list(s.scalars(query))


def latest_health(s: Session, account_id: str) -> HealthScore | None:
    """The account's most recent health score, or None."""
    return s.scalars(
        select(HealthScore)
        .where(HealthScore.account_id == account_id)
        .order_by(HealthScore.at.desc(), HealthScore.id.desc())
        .limit(1)
    ).first()


def mark_date_trigger_fired(s: Session, account_id: str, playbook_id: str, date_value: dt.date) -> bool:
    """Remember that a date trigger fired; False if it already had for that date value."""
    return insert_ignore(
        s,
        DateTriggerFired,
        {"account_id": account_id, "playbook_id": playbook_id, "date_value": date_value},
    )


# --- cursors -------------------------------------------------------------------------------


def get_cursor(s: Session, name: str) -> Cursor | None:
    """A cursor of scheduled work, or None before its first run."""
    return s.get(Cursor, name)


def set_cursor(s: Session, name: str, *, at: dt.datetime | None = None, value: Any = None) -> None:
    """Create or move a cursor (call inside the transaction that did the work it records)."""
    row = s.get(Cursor, name)
    if row is None:
        row = Cursor(name=name)
        s.add(row)
    row.at = _aware(at, "cursor.at") if at is not None else None
    row.value = jsonable(value) if value is not None else None
    row.updated_at = utcnow()
    s.flush()


def delete_cursor(s: Session, name: str) -> bool:
    """Forget a cursor (the work starts afresh); False if there was none."""
    row = s.get(Cursor, name)
    if row is None:
        return False
    s.delete(row)
    s.flush()
    return True
