"""What events do to an account document, and the events an account change emits (section 9)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from touchpoint.dsl.accounts import AccountDoc, Health
from touchpoint.dsl.runtime import EventIn

ACCOUNT_FIELDS = ("name", "segment", "region", "country", "timezone", "locale", "plan", "arr", "created_at", "renewal_date", "seats", "csm", "owner", "health", "metrics", "properties", "contacts")
"""The fields an `account.updated` event may name in `data.changed`."""


def merge_usage(account: AccountDoc, event: EventIn) -> AccountDoc:
    """`usage.reported` merges its numeric `data.metrics` into `account.metrics`."""
    metrics = event.data.get("metrics") or {}
    merged = {**account.metrics, **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}}
    return account.model_copy(update={"metrics": merged})


def health_of(event: EventIn, account: AccountDoc) -> Health:
    """`account.health` after a `health.changed` event (section 8)."""
    data = event.data
    return Health(
        score=data.get("score"),
        tier=data.get("tier"),
        previous_score=data.get("previous_score", account.health.score),
        previous_tier=data.get("previous_tier", account.health.tier),
        updated_at=event.at,
    )


def apply_event(account: AccountDoc, event: EventIn) -> AccountDoc | None:
    """The account after an event that changes it (`usage.reported`, `health.changed`), else None."""
    if event.type == "usage.reported":
        return merge_usage(account, event)
    if event.type == "health.changed":
        return account.model_copy(update={"health": health_of(event, account)})
    return None


def patched(account: AccountDoc, patch: dict[str, Any]) -> AccountDoc:
    """``account`` with the fields of ``patch`` merged in (a simulation's `{after, account}` entry).

    Raises:
        pydantic.ValidationError: when the result is not a valid account document.
    """
    data = account.model_dump(mode="python")
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key not in ("csm", "owner"):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return AccountDoc.model_validate(data)


def changes(previous: AccountDoc | None, doc: AccountDoc, at: datetime | None, event_id: str | None = None) -> list[EventIn]:
    """The events an upsert emits: `account.created`, else `account.updated` and `seats.changed`."""
    if previous is None:
        return [EventIn(id=event_id, type="account.created", at=at, data={"changed": list(ACCOUNT_FIELDS)})]
    old, new = previous.model_dump(mode="json"), doc.model_dump(mode="json")
    changed = [f for f in ACCOUNT_FIELDS if old.get(f) != new.get(f)]
    events: list[EventIn] = []
    if changed:
        events.append(EventIn(id=event_id, type="account.updated", at=at, data={"changed": changed}))
    if previous.seats != doc.seats:
        delta = doc.seats.licensed - previous.seats.licensed
        pct = round(delta / previous.seats.licensed * 100, 1) if previous.seats.licensed else None
        events.append(
            EventIn(
                type="seats.changed",
                at=at,
                data={
                    "licensed": doc.seats.licensed,
                    "previous_licensed": previous.seats.licensed,
                    "active": doc.seats.active,
                    "previous_active": previous.seats.active,
                    "delta": delta,
                    "delta_pct": pct,
                },
            )
        )
    return events
