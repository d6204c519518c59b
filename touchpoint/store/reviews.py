"""Reads for schedule playbooks: every account (or one CSM's book) and the events of a window."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Account, Contact, Event

PAGE = 1000


def _merge(rows: list[Account], s: Session) -> list[dict[str, Any]]:
    ids = [a.id for a in rows]
    contacts: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        for c in s.scalars(select(Contact).where(Contact.account_id.in_(ids)).order_by(Contact.id)):
            contacts[c.account_id].append(
                {"email": c.email, "name": c.name, "role": c.role, "locale": c.locale, "timezone": c.timezone, "country": c.country}
            )
    return [{**a.doc, "id": a.id, "contacts": contacts[a.id]} for a in rows]


def iter_account_docs(s: Session, *, csm_email: str | None = None) -> Iterator[dict[str, Any]]:
    """Account documents with their contacts, by id, in pages (a CSM's book when ``csm_email``)."""
    after: str | None = None
    while True:
        query = select(Account).order_by(Account.id).limit(PAGE)
        if csm_email is not None:
            query = query.where(func.lower(Account.csm_email) == csm_email.lower())
        if after is not None:
            query = query.where(Account.id > after)
        rows = list(s.scalars(query))
        if not rows:
            return
        yield from _merge(rows, s)
        after = rows[-1].id


def csms(s: Session) -> list[tuple[str, str | None]]:
    """Every CSM with a book: (email, name), by email."""
    found: dict[str, str | None] = {}
    query = select(Account.csm_email, Account.doc).where(Account.csm_email.is_not(None)).order_by(Account.csm_email)
    for email, doc in s.execute(query):
        key = str(email).lower()
        name = ((doc or {}).get("csm") or {}).get("name")
        if key not in found or (found[key] is None and name):
            found[key] = name
    return sorted(found.items())


def events_in_window(
    s: Session, event_type: str, since: dt.datetime, until: dt.datetime, *, csm_email: str | None = None
) -> list[tuple[Event, dict[str, Any] | None]]:
    """Events of one type with ``since < at <= until``, oldest first, each with its account."""
    query = (
        select(Event, Account)
        .join(Account, Account.id == Event.account_id, isouter=csm_email is None)
        .where(Event.type == event_type, Event.at > since, Event.at <= until)
        .order_by(Event.at, Event.id)
    )
    if csm_email is not None:
        query = query.where(func.lower(Account.csm_email) == csm_email.lower())
    rows = [(event, account) for event, account in s.execute(query).all()]
    accounts = _merge([a for _, a in rows if a is not None], s) if rows else []
    by_id = {doc["id"]: doc for doc in accounts}
    return [(event, by_id.get(event.account_id)) for event, _ in rows]
