"""Store queries of the health recompute, beyond `repo`'s one-account helpers.

A recompute walks the accounts in id order, one page at a time (keyset paging: the cost of a
page does not grow with the number of accounts, and no more than a page is ever in memory),
reading each account with its contacts and its previous score in a couple of indexed queries,
then writes the page's scores in one bulk insert.

Scores of one recompute all carry the recompute's time (`at`): a row for (account, at) is how a
retried batch knows the score is already written, so it never writes a second one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, exists, insert, select
from sqlalchemy.orm import Session, aliased

from .columns import UTC, jsonable
from .common import CONTACT_FIELDS
from .models import Account, Contact, HealthScore


@dataclass
class AccountForHealth:
    """One account of a page: its document and contacts, and what the recompute needs to know."""

    doc: dict[str, Any]
    contacts: list[dict[str, Any]] = field(default_factory=list)
    previous_score: int | None = None
    """The latest score stored before the recompute's time (None: never scored)."""
    previous_tier: str | None = None
    already_scored: bool = False
    """A score at exactly the recompute's time exists: an earlier attempt of this batch wrote it."""

    @property
    def id(self) -> str:
        """The account id."""
        return str(self.doc["id"])


def _aware(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"the recompute time must be timezone-aware, got naive {at.isoformat()}")
    return at.astimezone(UTC)


def accounts_page_for_health(
    s: Session,
    at: dt.datetime,
    *,
    after: str | None = None,
    limit: int = 500,
    account_id: str | None = None,
) -> list[AccountForHealth]:
    """One page of accounts ordered by id, each with its contacts and its previous score.

    Args:
        s: The session.
        at: The recompute's time: the previous score is the latest one strictly before it, and
            ``already_scored`` tells whether one at exactly this time exists.
        after: Accounts whose id sorts after this one (None: from the start).
        limit: Page size.
        account_id: Only this account (the page then has at most one entry).
    """
    at = _aware(at)
    latest = (
        select(HealthScore.id)
        .where(HealthScore.account_id == Account.id, HealthScore.at < at)
        .order_by(HealthScore.at.desc(), HealthScore.id.desc())
        .limit(1)
        .correlate(Account)
        .scalar_subquery()
    )
    done = exists().where(and_(HealthScore.account_id == Account.id, HealthScore.at == at)).correlate(Account)
    previous = aliased(HealthScore)
    query = (
        select(Account.id, Account.doc, previous.score, previous.tier, done.label("done"))
        .outerjoin(previous, previous.id == latest)
        .order_by(Account.id)
        .limit(limit)
    )
    if account_id is not None:
        query = query.where(Account.id == account_id)
    if after is not None:
        query = query.where(Account.id > after)
    page = [
        AccountForHealth(doc={**doc, "id": id}, previous_score=score, previous_tier=tier, already_scored=bool(flag))
        for id, doc, score, tier, flag in s.execute(query)
    ]
    by_id = {item.id: item for item in page}
    for account_id_, contact in _contacts(s, list(by_id)):
        by_id[account_id_].contacts.append(contact)
    return page


def _contacts(s: Session, account_ids: Sequence[str]) -> Iterable[tuple[str, dict[str, Any]]]:
    if not account_ids:
        return []
    columns = [getattr(Contact, name) for name in CONTACT_FIELDS]
    rows = s.execute(select(Contact.account_id, *columns).where(Contact.account_id.in_(account_ids)).order_by(Contact.id))
    return [(row[0], dict(zip(CONTACT_FIELDS, row[1:], strict=True))) for row in rows]


def add_health_scores(s: Session, at: dt.datetime, scores: Sequence[tuple[str, int, str, dict[str, Any]]]) -> int:
    """Insert a page of scores, all at the recompute's time, in one statement.

    Args:
        s: The session (a write transaction).
        at: The recompute's time.
        scores: (account id, score, tier, breakdown) for each account.

    Returns:
        The number of rows inserted.
    """
    if not scores:
        return 0
    at = _aware(at)
    s.execute(
        insert(HealthScore),
        [
            {"account_id": account_id, "at": at, "score": score, "tier": tier, "breakdown": jsonable(breakdown)}
            for account_id, score, tier, breakdown in scores
        ],
    )
    return len(scores)


def scored_accounts(s: Session, at: dt.datetime, account_ids: Sequence[str]) -> set[str]:
    """Which of these accounts already have a score at exactly ``at``."""
    if not account_ids:
        return set()
    rows = s.scalars(
        select(HealthScore.account_id).where(HealthScore.account_id.in_(account_ids), HealthScore.at == _aware(at))
    )
    return set(rows)
