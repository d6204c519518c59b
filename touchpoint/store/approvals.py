"""Approval requests: stored once by the run's activity, decided once, closed with their run.

A request is written by the `request_approval` activity (idempotent by its id), decided by the
API or the CLI with a conditional update (the first decision wins: a second one finds it no
longer ``pending``), and settled from the run's own timeline when its account workflow projects
it: a ``timed_out`` line sets that status, and a run that ended closes what it left pending.
The run is the authority (Temporal is the log): a decision the run did not take (it timed out
first) is overwritten by what the run did.

Every function takes a ``Session`` and leaves the transaction to the caller; see `repo`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from .columns import jsonable
from .common import insert_ignore
from .models import Approval, Run

STATUSES = ("pending", "approved", "rejected", "timed_out", "closed")
DECIDED = ("approved", "rejected", "timed_out")


def add_approval(s: Session, **fields: Any) -> Approval:
    """Store a request once (by ``id``); a retry returns the stored one unchanged.

    A request whose run already ended (cancelled while the request was on its way) is stored
    ``closed``.
    """
    run = s.get(Run, fields.get("run_id"))
    values = {**fields, "approver": str(fields["approver"]).lower(), "emails": jsonable(fields.get("emails") or []), "request": jsonable(fields.get("request") or {})}
    values.setdefault("status", "closed" if run is not None and run.status == "ended" else "pending")
    insert_ignore(s, Approval, values)
    found = s.execute(select(Approval).where(Approval.id == fields["id"]).execution_options(populate_existing=True)).scalar_one()
    return found


def get_approval(s: Session, approval_id: str) -> Approval | None:
    """One request, or None."""
    return s.get(Approval, approval_id)


def list_approvals(
    s: Session, *, status: str | None = None, approver: str | None = None, account_id: str | None = None, run_id: str | None = None
) -> list[Approval]:
    """Requests, oldest first, filtered by status, approver (any case), account and run."""
    query = select(Approval).order_by(Approval.requested_at, Approval.id)
    if status is not None:
        query = query.where(Approval.status == status)
    if approver is not None:
        query = query.where(Approval.approver == approver.strip().lower())
    if account_id is not None:
        query = query.where(Approval.account_id == account_id)
    if run_id is not None:
        query = query.where(Approval.run_id == run_id)
    return list(s.scalars(query))


def claim_decision(
    s: Session,
    approval_id: str,
    *,
    decision: str,
    by: str,
    at: dt.datetime,
    subject: str | None = None,
    html: str | None = None,
    reason: str | None = None,
) -> bool:
    """Record a decision if the request is still pending; False when another came first."""
    statement = (
        update(Approval)
        .where(Approval.id == approval_id, Approval.status == "pending")
        .values(status=decision, decided_by=by, decided_at=at, subject=subject, html=html, reason=reason)
    )
    result = cast(CursorResult[Any], s.execute(statement, execution_options={"preserve_rowcount": True}))
    return result.rowcount == 1


def release_decision(s: Session, approval_id: str, decision: str) -> None:
    """Undo `claim_decision` (its event could not be delivered): the request is pending again."""
    s.execute(
        update(Approval)
        .where(Approval.id == approval_id, Approval.status == decision)
        .values(status="pending", decided_by=None, decided_at=None, subject=None, html=None, reason=None)
    )


def settle_from_timeline(s: Session, run_id: str, ended: bool, records: Iterable[Mapping[str, Any]]) -> None:
    """What the run did with its requests (its `approval` timeline lines), and close what it
    left pending when it ended."""
    for record in records:
        detail = record.get("detail") or {}
        status, approval_id = detail.get("status"), detail.get("approval_id")
        if record.get("action") != "approval" or status not in DECIDED or not approval_id:
            continue
        values: dict[str, Any] = {"status": status, "decided_by": detail.get("by"), "decided_at": record.get("at")}
        if status == "approved":
            values.update(subject=detail.get("subject"), html=detail.get("html"))
        elif status == "rejected":
            values["reason"] = detail.get("reason")
        s.execute(update(Approval).where(Approval.id == str(approval_id)).values(**values))
    if ended:
        s.execute(_CLOSE, {"run_id_": run_id})


_CLOSE = update(Approval).where(Approval.run_id == bindparam("run_id_"), Approval.status == "pending").values(status="closed")
"""What a run that ended left pending is closed (built once: every run's end runs it)."""
