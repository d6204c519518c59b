"""Store queries of the date sweep: candidate accounts, fired date values, first deploys.

Two ways to find candidates, both keyset-paged so memory stays bounded at any account count:

- :func:`renewal_candidates` for `date: account.renewal_date`: a range scan of the indexed
  ``accounts.renewal_date`` column, leaving out accounts already fired for that renewal date
  (``NOT EXISTS`` on the primary key of ``date_triggers_fired``). An hourly sweep of 100,000
  accounts reads the few hundred accounts renewing on two or three days, not the table.
- `repo.list_accounts` for any other date expression: every account, in id order (the
  expression can only be evaluated in Python, per account).

Like `repo`, every function takes a ``Session`` and leaves the transaction to the caller.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Select, and_, exists, or_, select
from sqlalchemy.orm import Session

from .models import Account, DateTriggerFired, Deployment


@dataclass(frozen=True)
class Candidate:
    """An account the sweep looks at: just what deciding whether it is due needs."""

    id: str
    timezone: str | None
    renewal_date: dt.date | None


def renewal_candidates(
    s: Session,
    playbook: str,
    first: dt.date,
    last: dt.date,
    *,
    after: tuple[dt.date, str] | None = None,
    limit: int = 1000,
) -> list[Candidate]:
    """Accounts renewing in ``[first, last]`` that have not fired ``playbook`` for that date.

    Uses the ``renewal_date`` index; ordered by (renewal_date, id) for keyset paging.

    Args:
        s: The session.
        playbook: The date-triggered playbook.
        first: The first renewal date (inclusive).
        last: The last renewal date (inclusive).
        after: The (renewal_date, id) of the previous page's last account.
        limit: Page size.
    """
    return [Candidate(id=r.id, timezone=r.timezone, renewal_date=r.renewal_date) for r in s.execute(renewal_query(playbook, first, last, after=after, limit=limit))]


def renewal_query(
    playbook: str, first: dt.date, last: dt.date, *, after: tuple[dt.date, str] | None = None, limit: int = 1000
) -> Select[str, str | None, dt.date | None]:
    """The statement behind :func:`renewal_candidates` (tests check its plan uses the index)."""
    fired = exists().where(
        DateTriggerFired.account_id == Account.id,
        DateTriggerFired.playbook_id == playbook,
        DateTriggerFired.date_value == Account.renewal_date,
    )
    query = (
        select(Account.id, Account.timezone, Account.renewal_date)
        .where(Account.renewal_date >= first, Account.renewal_date <= last, ~fired)
        .order_by(Account.renewal_date, Account.id)
        .limit(limit)
    )
    if after is not None:
        day, account_id = after
        query = query.where(or_(Account.renewal_date > day, and_(Account.renewal_date == day, Account.id > account_id)))
    return query


def fired_values(s: Session, playbook: str, account_ids: Collection[str]) -> set[tuple[str, dt.date]]:
    """The (account, date value) pairs of ``playbook`` that already fired, for these accounts."""
    if not account_ids:
        return set()
    query = select(DateTriggerFired.account_id, DateTriggerFired.date_value).where(
        DateTriggerFired.playbook_id == playbook, DateTriggerFired.account_id.in_(list(account_ids))
    )
    return {(r.account_id, r.date_value) for r in s.execute(query)}


def first_deployed_at(s: Session, playbook: str) -> dt.datetime | None:
    """When the playbook was first deployed (its earliest version), or None if never."""
    return s.scalar(
        select(Deployment.deployed_at)
        .where(Deployment.kind == "playbook", Deployment.name == playbook)
        .order_by(Deployment.deployed_at)
        .limit(1)
    )
