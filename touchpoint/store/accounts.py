"""Accounts, their contacts, and the events recorded for them.

Every function takes a ``Session`` and leaves the transaction to the caller; see `repo`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.orm import Session

from .columns import jsonable
from .common import (
    CONTACT_FIELDS,
    _aware,
    insert_ignore,
    normalize_email,
)
from .models import (
    Account,
    AccountHistory,
    Contact,
    Event,
    utcnow,
)

# --- accounts ------------------------------------------------------------------------------


def _as_date(value: Any, what: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise ValueError(f"{what} must be a date such as 2025-06-30, got {value!r}")


def _account_columns(doc: Mapping[str, Any]) -> dict[str, Any]:
    csm = doc.get("csm") or {}
    csm_email = csm.get("email") if isinstance(csm, Mapping) else None
    return {
        "name": doc.get("name"),
        "segment": doc.get("segment"),
        "timezone": doc.get("timezone"),
        "csm_email": normalize_email(csm_email) if isinstance(csm_email, str) else None,
        "renewal_date": _as_date(doc.get("renewal_date"), "account.renewal_date"),
    }


def _normalize_contacts(contacts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_email: dict[str, dict[str, Any]] = {}
    for i, contact in enumerate(contacts):
        unknown = sorted(set(contact) - set(CONTACT_FIELDS))
        if unknown:
            raise ValueError(
                f"contacts[{i}]: unknown field(s) {', '.join(unknown)}; a contact has {', '.join(CONTACT_FIELDS)}"
            )
        email = contact.get("email")
        if not isinstance(email, str) or not email.strip():
            raise ValueError(f"contacts[{i}]: 'email' is required, got {email!r}")
        row = {field: contact.get(field) for field in CONTACT_FIELDS}
        row["email"] = normalized = normalize_email(email)
        # The same address twice would break unique(account_id, email): the last one wins.
        by_email[normalized] = row
    return list(by_email.values())


def _contact_dict(c: Contact) -> dict[str, Any]:
    return {field: getattr(c, field) for field in CONTACT_FIELDS}


def contacts_by_account(s: Session, account_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The contacts of each account, in insertion order (an empty list for none)."""
    result: dict[str, list[dict[str, Any]]] = {account_id: [] for account_id in account_ids}
    if not account_ids:
        return result
    rows = s.scalars(select(Contact).where(Contact.account_id.in_(account_ids)).order_by(Contact.id))
    for c in rows:
        result[c.account_id].append(_contact_dict(c))
    return result


def upsert_account(
    s: Session, doc: Mapping[str, Any], contacts: Sequence[Mapping[str, Any]], *, at: dt.datetime | None = None
) -> tuple[bool, dict[str, Any] | None]:
    """Insert or update an account and replace its contacts.

    Idempotent: the same document twice changes nothing (not even ``updated_at``). A new
    account, or a change of its ARR, seats, segment or metrics, adds an `account_history` row.

    Args:
        s: The session.
        doc: The account document (``id`` required); a ``contacts`` key in it is ignored.
        contacts: The account's contacts (``email`` required; emails are lower-cased, and a
            repeated address keeps its last entry).
        at: When the values held (default now): a backfill of older data passes its own time.

    Returns:
        ``(created, previous_doc)``: ``(True, None)`` for a new account, else ``(False, the
        document stored before)``.
    """
    account_id = doc.get("id")
    if not isinstance(account_id, str) or not account_id:
        raise ValueError(f"an account document needs a non-empty string 'id', got {account_id!r}")
    new_doc: dict[str, Any] = jsonable({k: v for k, v in doc.items() if k != "contacts"})
    columns = _account_columns(doc)
    new_contacts = _normalize_contacts(contacts)
    now = utcnow()
    created = insert_ignore(
        s,
        Account,
        {"id": account_id, **columns, "doc": new_doc, "created_at": now, "updated_at": now},
    )
    if created:
        # Core inserts: a new account is on every first enrollment's path, and the ORM's flush
        # of two new objects cost more than the statements.
        if new_contacts:
            s.execute(_INSERT_CONTACT, [{"account_id": account_id, **c} for c in new_contacts])
        s.execute(_INSERT_HISTORY, _history_values(account_id, new_doc, at or now))
        return True, None
    account = s.execute(
        select(Account).where(Account.id == account_id).with_for_update().execution_options(populate_existing=True)
    ).scalar_one()
    previous = account.doc
    changed = False
    if previous != new_doc:
        for name, value in columns.items():
            setattr(account, name, value)
        account.doc = new_doc
        changed = True
        if _tracked(previous) != _tracked(new_doc):
            s.add(_history_row(account_id, new_doc, at or now))
    if contacts_by_account(s, [account_id])[account_id] != new_contacts:
        s.execute(delete(Contact).where(Contact.account_id == account_id))
        s.add_all(Contact(account_id=account_id, **c) for c in new_contacts)
        changed = True
    if changed:
        account.updated_at = now
    s.flush()
    return False, previous


def _tracked(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """The values `account_history` keeps: ARR, seats, segment and metrics."""
    row = _history_row("", doc, utcnow())
    return (row.arr, row.seats_licensed, row.seats_active, row.segment, row.metrics)


def _history_row(account_id: str, doc: Mapping[str, Any], at: dt.datetime) -> AccountHistory:
    return AccountHistory(**_history_values(account_id, doc, at))


def _history_values(account_id: str, doc: Mapping[str, Any], at: dt.datetime) -> dict[str, Any]:
    seats: Mapping[str, Any] = doc["seats"] if isinstance(doc.get("seats"), Mapping) else {}
    metrics: Mapping[str, Any] = doc["metrics"] if isinstance(doc.get("metrics"), Mapping) else {}
    return {
        "account_id": account_id,
        "at": at,
        "arr": float(doc.get("arr") or 0),
        "seats_licensed": int(seats.get("licensed") or 0),
        "seats_active": int(seats.get("active") or 0),
        "segment": doc.get("segment"),
        "metrics": dict(metrics),
    }


_INSERT_CONTACT = insert(cast(Table, Contact.__table__))
_INSERT_HISTORY = insert(cast(Table, AccountHistory.__table__))


def account_history(s: Session, account_ids: Sequence[str] | None = None, *, until: dt.datetime | None = None) -> list[AccountHistory]:
    """History rows (all accounts, or these), oldest first; with ``until``, only up to it."""
    query = select(AccountHistory).order_by(AccountHistory.account_id, AccountHistory.at, AccountHistory.id)
    if account_ids is not None:
        query = query.where(AccountHistory.account_id.in_(list(account_ids)))
    if until is not None:
        query = query.where(AccountHistory.at <= until)
    return list(s.scalars(query))


def get_account(s: Session, account_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The account's document and contacts, or None if unknown."""
    account = s.get(Account, account_id)
    if account is None:
        return None
    return account.doc, contacts_by_account(s, [account_id])[account_id]


def get_accounts(s: Session, account_ids: Sequence[str]) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The documents and contacts of these accounts in two queries (unknown ids left out)."""
    if not account_ids:
        return {}
    accounts = list(s.scalars(select(Account).where(Account.id.in_(list(account_ids)))))
    contacts = contacts_by_account(s, [a.id for a in accounts])
    return {a.id: (a.doc, contacts[a.id]) for a in accounts}


def list_accounts(
    s: Session, *, after: str | None = None, limit: int = 500, csm_email: str | None = None
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """One page of accounts ordered by id, with their contacts.

    Iterate with keyset paging, which stays fast however many accounts there are::

        page = list_accounts(s)
        while page:
            ...
            page = list_accounts(s, after=page[-1][0]["id"])

    Args:
        s: The session.
        after: Return accounts whose id sorts after this one (None: from the start).
        limit: Page size.
        csm_email: Only this CSM's book (case-insensitive).
    """
    query = select(Account).order_by(Account.id).limit(limit)
    if after is not None:
        query = query.where(Account.id > after)
    if csm_email is not None:
        query = query.where(func.lower(Account.csm_email) == csm_email.lower())
    accounts = list(s.scalars(query))
    contacts = contacts_by_account(s, [a.id for a in accounts])
    return [(a.doc, contacts[a.id]) for a in accounts]


# --- events --------------------------------------------------------------------------------


def record_event(
    s: Session,
    id: str,
    account_id: str,
    type: str,
    at: dt.datetime,
    data: Mapping[str, Any],
    *,
    applied_by: str | None = None,
) -> bool:
    """Store an accepted event; False (and nothing changes) if its id was seen before."""
    return insert_ignore(
        s,
        Event,
        {
            "id": id,
            "account_id": account_id,
            "type": type,
            "at": _aware(at, "event.at"),
            "data": jsonable(dict(data)),
            "applied_by": applied_by,
        },
    )


#: The order in which an account upsert derives its events.
_DERIVED_ORDER = {"account.created": 0, "account.updated": 1, "seats.changed": 2}


def derived_events(s: Session, event_id: str) -> list[Event]:
    """The events recorded as derived from ``event_id`` (ids ``<event_id>:<type>``), in order."""
    rows = list(s.scalars(select(Event).where(Event.id.startswith(f"{event_id}:", autoescape=True))))
    return sorted(rows, key=lambda e: (_DERIVED_ORDER.get(e.type, 9), e.id))


def list_events(
    s: Session,
    *,
    account_id: str | None = None,
    type: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = None,
) -> list[Event]:
    """Events in time order, filtered; ``since`` is exclusive and ``until`` inclusive."""
    query = select(Event).order_by(Event.at, Event.id)
    if account_id is not None:
        query = query.where(Event.account_id == account_id)
    if type is not None:
        query = query.where(Event.type == type)
    if since is not None:
        query = query.where(Event.at > since)
    if until is not None:
        query = query.where(Event.at <= until)
    if limit is not None:
        query = query.limit(limit)
    return list(s.scalars(query))
