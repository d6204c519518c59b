"""Read-only queries behind the console's pages: counts per playbook and step, searches, pages.

Every function takes a ``Session`` and reads; none writes. Counts are computed by the database
(``GROUP BY``), so a page costs a few queries whatever the number of runs; lists are bounded by a
``limit``. See `repo` for the per-row helpers these pages also use.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, false, func, or_, select
from sqlalchemy.orm import Session, aliased

from .models import Account, Approval, Event, HealthScore, Message, Run, RunStep, Task


def run_counts(s: Session) -> dict[str, dict[str, int]]:
    """Runs per playbook and status: ``{playbook: {"running": n, "paused": n, "ended": n}}``."""
    counts: dict[str, dict[str, int]] = {}
    for playbook, status, n in s.execute(select(Run.playbook_id, Run.status, func.count()).group_by(Run.playbook_id, Run.status)):
        counts.setdefault(playbook, {})[status] = int(n)
    return counts


def emails_sent_since(s: Session, since: dt.datetime) -> dict[str | None, int]:
    """Emails sent (status ``sent``) after ``since``, per playbook (None: no playbook)."""
    query = (
        select(Message.playbook_id, func.count())
        .where(Message.status == "sent", Message.sent_at > since)
        .group_by(Message.playbook_id)
    )
    return {playbook: int(n) for playbook, n in s.execute(query)}


def task_counts(s: Session, now: dt.datetime) -> tuple[int, int]:
    """``(open, overdue)``: open tasks, and those of them due before ``now``."""
    open_ = s.scalar(select(func.count()).select_from(Task).where(Task.status == "open")) or 0
    overdue = s.scalar(select(func.count()).select_from(Task).where(Task.status == "open", Task.due_at < now)) or 0
    return int(open_), int(overdue)


def _latest_score() -> Any:
    """A correlated subquery: the id of the account's latest health score."""
    return (
        select(HealthScore.id)
        .where(HealthScore.account_id == Account.id)
        .order_by(HealthScore.at.desc(), HealthScore.id.desc())
        .limit(1)
        .correlate(Account)
        .scalar_subquery()
    )


def health_tiers(s: Session) -> dict[str, int]:
    """Accounts per tier of their latest score; accounts never scored count as ``unscored``."""
    latest = aliased(HealthScore)
    query = select(latest.tier, func.count()).select_from(Account).outerjoin(latest, latest.id == _latest_score()).group_by(latest.tier)
    return {tier or "unscored": int(n) for tier, n in s.execute(query)}


@dataclass(frozen=True)
class AccountRow:
    """One account as the console lists it."""

    id: str
    name: str | None
    segment: str | None
    csm_email: str | None
    doc: dict[str, Any]
    score: int | None
    tier: str | None


def search_accounts(s: Session, q: str = "", *, limit: int = 200) -> list[AccountRow]:
    """Accounts whose id, name, CSM address or segment contains ``q``, or whose latest health
    tier is ``q`` (case-insensitive; ``unscored``: none yet), ordered by name; all when ``q`` is empty."""
    latest = aliased(HealthScore)
    query = (
        select(Account, latest.score, latest.tier)
        .outerjoin(latest, latest.id == _latest_score())
        .order_by(func.lower(func.coalesce(Account.name, Account.id)), Account.id)
        .limit(limit)
    )
    needle = q.strip().lower()
    if needle:
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = f"%{escaped}%"
        query = query.where(
            or_(
                func.lower(Account.id).like(like, escape="\\"),
                func.lower(Account.name).like(like, escape="\\"),
                func.lower(Account.csm_email).like(like, escape="\\"),
                func.lower(Account.segment).like(like, escape="\\"),
                func.lower(latest.tier) == needle,
                latest.id.is_(None) if needle == "unscored" else false(),
            )
        )
    return [
        AccountRow(a.id, a.name, a.segment, a.csm_email, dict(a.doc or {}), score, tier)
        for a, score, tier in s.execute(query)
    ]


def runs_at_steps(s: Session, playbook_id: str) -> dict[tuple[str, str | None], int]:
    """Runs in flight (not ended) of a playbook per (version, step they are at)."""
    query = (
        select(Run.version, Run.step, func.count())
        .where(Run.playbook_id == playbook_id, Run.status != "ended")
        .group_by(Run.version, Run.step)
    )
    return {(version, step): int(n) for version, step, n in s.execute(query)}


def find_runs(
    s: Session,
    *,
    playbook_id: str | None = None,
    version: str | None = None,
    step: str | None = None,
    status: str | None = None,
    in_flight: bool = False,
    account_id: str | None = None,
    limit: int = 500,
) -> list[Run]:
    """Runs, latest started first, filtered; ``in_flight`` keeps those not ended."""
    query = select(Run).order_by(Run.started_at.desc(), Run.id).limit(limit)
    conditions = []
    if playbook_id is not None:
        conditions.append(Run.playbook_id == playbook_id)
    if version is not None:
        conditions.append(Run.version == version)
    if step is not None:
        conditions.append(Run.step == step)
    if status is not None:
        conditions.append(Run.status == status)
    if in_flight:
        conditions.append(Run.status != "ended")
    if account_id is not None:
        conditions.append(Run.account_id == account_id)
    if conditions:
        query = query.where(and_(*conditions))
    return list(s.scalars(query))


def timelines(s: Session, run_ids: Sequence[str]) -> dict[str, list[RunStep]]:
    """The timelines of these runs in one query, each in order (an empty list for none)."""
    result: dict[str, list[RunStep]] = {run_id: [] for run_id in run_ids}
    if not run_ids:
        return result
    rows = s.scalars(select(RunStep).where(RunStep.run_id.in_(list(run_ids))).order_by(RunStep.at, RunStep.seq, RunStep.id))
    for row in rows:
        result[row.run_id].append(row)
    return result


def account_messages(s: Session, account_id: str, *, limit: int = 200) -> list[Message]:
    """The account's emails, latest first."""
    query = select(Message).where(Message.account_id == account_id).order_by(Message.sent_at.desc(), Message.id).limit(limit)
    return list(s.scalars(query))


def delivery_status(s: Session, account_id: str) -> dict[str, str]:
    """The latest provider event per message id of the account (``email.delivered``, ...)."""
    query = (
        select(Event.data, Event.type)
        .where(Event.account_id == account_id, Event.type.in_(DELIVERY_EVENTS))
        .order_by(Event.at, Event.id)
    )
    found: dict[str, str] = {}
    for data, type_ in s.execute(query):
        message_id = (data or {}).get("message_id")
        if isinstance(message_id, str):
            found[message_id] = type_.removeprefix("email.")
    return found


DELIVERY_EVENTS = ("email.delivered", "email.opened", "email.clicked", "email.bounced", "email.unsubscribed")
"""Provider events that tell what became of a sent email, in the order they usually come."""


def account_labels(s: Session, account_ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
    """``{account id: (name, time zone)}`` for these accounts, in one query (unknown ids left out)."""
    ids = sorted({a for a in account_ids if a})
    if not ids:
        return {}
    rows = s.execute(select(Account.id, Account.name, Account.timezone).where(Account.id.in_(ids)))
    return {id_: (name, tz) for id_, name, tz in rows}


def approval_counts(s: Session) -> dict[str, int]:
    """Approval requests per status (``pending``: waiting for a person)."""
    return {status: int(n) for status, n in s.execute(select(Approval.status, func.count()).group_by(Approval.status))}


def approvals_to_review(s: Session, *, approver: str | None = None, status: str | None = None, limit: int = 200) -> list[Approval]:
    """Requests as a reviewer goes through them: pending first, the soonest to expire first; then
    the rest, the latest decided first. Filtered by approver (any case) and status."""
    query = select(Approval).order_by(
        case((Approval.status == "pending", 0), else_=1),
        case((Approval.status == "pending", Approval.expires_at), else_=None),
        func.coalesce(Approval.decided_at, Approval.requested_at).desc(),
        Approval.id,
    )
    if approver:
        query = query.where(Approval.approver == approver.strip().lower())
    if status:
        query = query.where(Approval.status == status)
    return list(s.scalars(query.limit(limit)))


def messages_by_keys(s: Session, keys: Sequence[str]) -> list[Message]:
    """The messages recorded under these ledger keys (an approval's recipients), oldest first."""
    if not keys:
        return []
    return list(s.scalars(select(Message).where(Message.ledger_key.in_(list(keys))).order_by(Message.sent_at, Message.id)))
