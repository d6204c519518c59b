"""Reads for schedule playbooks: every account (or one CSM's book) and the events of a window."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import repo
from .models import Account, Event

PAGE = 1000


def iter_account_docs(s: Session, *, csm_email: str | None = None) -> Iterator[dict[str, Any]]:
    """Account documents with their contacts, by id, in pages (a CSM's book when ``csm_email``)."""
    page = repo.list_accounts(s, limit=PAGE, csm_email=csm_email)
    while page:
        for doc, contacts in page:
            yield {**doc, "contacts": contacts}
        page = repo.list_accounts(s, after=page[-1][0]["id"], limit=PAGE, csm_email=csm_email)


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
    contacts = repo.contacts_by_account(s, list({a.id for _, a in rows if a is not None}))
    return [(event, {**account.doc, "contacts": contacts[account.id]} if account else None) for event, account in rows]
