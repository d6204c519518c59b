"""`touchpoint report`: the three layers of customer-success metrics, for a period.

1. **Revenue** (from `account_history`, written by every upsert and CRM sync that changes an
   account's ARR, seats, segment or metrics): the cohort of accounts with ARR above zero at the
   period's start; for each, its ARR at the end against its ARR at the start is expansion (up),
   contraction (down, still above zero) or churn (down to zero). NRR = (starting + expansion -
   contraction - churn) / starting; GRR leaves expansion out. Accounts with no ARR at the start
   and some at the end are new business, outside NRR.
2. **Leading indicators** (workspace `indicators`): among customers at the period's end (ARR above
   zero), per segment and overall, the share whose `account.metrics.<name>` is above zero, and
   active users per licensed seat (all active seats over all licensed seats).
3. **CSM activities** (workspace `activities`): in the period, the events of each activity's
   type, or the lines of each activity's playbook step (a `wait_for` that timed out, a failed or
   skipped step and bookkeeping lines do not count; an email step counts once per recipient),
   per account and per CSM (the account's CSM now; `(no CSM)` without one).

`--segment` keeps the accounts whose segment was that at the period's start (at its end for
those that arrived during it). Periods are read in the workspace's time zone.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from touchpoint.dsl.timing import zone
from touchpoint.dsl.workspace import Workspace

NO_CSM = "(no CSM)"
ALL = "all"
_PERIOD = re.compile(r"^(?P<year>\d{4})(?:-(?:Q(?P<quarter>[1-4])|(?P<month>0[1-9]|1[0-2])))?$")


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in UTC, and how it was asked for."""

    label: str
    start: datetime
    end: datetime


def parse_period(value: str | None, tz: str, *, now: datetime | None = None) -> Period:
    """`2026-Q3`, `2026-07`, `2026` or `2026-07-01..2026-09-30` (inclusive), in the workspace's
    zone; default the current quarter.

    Raises:
        ValueError: saying which forms are accepted.
    """
    now = now or datetime.now(UTC)
    if value is None:
        today = now.astimezone(zone(tz)).date()
        value = f"{today.year}-Q{(today.month - 1) // 3 + 1}"
    if ".." in value:
        first_text, last_text = value.split("..", 1)
        try:
            first, last = date.fromisoformat(first_text), date.fromisoformat(last_text)
        except ValueError:
            raise ValueError(f"--period {value!r}: expected two dates such as 2026-07-01..2026-09-30") from None
        if last < first:
            raise ValueError(f"--period {value!r}: the last day is before the first")
        return Period(value, _midnight(first, tz), _midnight(date.fromordinal(last.toordinal() + 1), tz))
    found = _PERIOD.match(value)
    if not found:
        raise ValueError(f"--period {value!r}: expected a quarter (2026-Q3), a month (2026-07), a year (2026) or dates (2026-07-01..2026-09-30)")
    year = int(found["year"])
    if found["quarter"]:
        first_month, months = (int(found["quarter"]) - 1) * 3 + 1, 3
    elif found["month"]:
        first_month, months = int(found["month"]), 1
    else:
        first_month, months = 1, 12
    end_year, end_month = divmod(first_month - 1 + months, 12)
    return Period(value, _midnight(date(year, first_month, 1), tz), _midnight(date(year + end_year, end_month + 1, 1), tz))


def _midnight(day: date, tz: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone(tz)).astimezone(UTC)


# ---------------------------------------------------------------------------- 1. revenue


@dataclass
class Revenue:
    """ARR movements of the period's starting cohort, and new business."""

    starting_arr: float = 0.0
    expansion: float = 0.0
    contraction: float = 0.0
    churn: float = 0.0
    new_arr: float = 0.0
    ending_arr: float = 0.0
    """All customers' ARR at the period's end (the cohort's and new business)."""
    nrr: float | None = None
    grr: float | None = None
    accounts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("starting", "expanded", "contracted", "churned", "new"), 0))


@dataclass(frozen=True)
class Snapshot:
    """An account's values as of a moment (its latest history row at or before it)."""

    arr: float
    seats_licensed: int
    seats_active: int
    segment: str | None
    metrics: Mapping[str, Any]


def snapshots(rows: Sequence[Any], moment: datetime) -> dict[str, Snapshot]:
    """Each account's latest values at or before ``moment`` (rows ordered by account, then time)."""
    found: dict[str, Snapshot] = {}
    for row in rows:
        if row.at <= moment:
            found[row.account_id] = Snapshot(row.arr, row.seats_licensed, row.seats_active, row.segment, row.metrics or {})
    return found


def revenue(at_start: Mapping[str, Snapshot], at_end: Mapping[str, Snapshot]) -> Revenue:
    """Layer 1 over accounts already filtered by segment (see the module docs)."""
    out = Revenue()
    for account_id, before in at_start.items():
        if before.arr <= 0:
            continue
        after = at_end[account_id].arr if account_id in at_end else 0.0
        out.starting_arr += before.arr
        out.accounts["starting"] += 1
        if after <= 0:
            out.churn += before.arr
            out.accounts["churned"] += 1
        elif after > before.arr:
            out.expansion += after - before.arr
            out.accounts["expanded"] += 1
        elif after < before.arr:
            out.contraction += before.arr - after
            out.accounts["contracted"] += 1
    for account_id, now in at_end.items():
        if now.arr > 0:
            out.ending_arr += now.arr
            if account_id not in at_start or at_start[account_id].arr <= 0:
                out.new_arr += now.arr
                out.accounts["new"] += 1
    if out.starting_arr > 0:
        kept = out.starting_arr - out.contraction - out.churn
        out.nrr = round((kept + out.expansion) / out.starting_arr, 4)
        out.grr = round(kept / out.starting_arr, 4)
    return out


# ---------------------------------------------------------------------------- 2. indicators


def indicators(at_end: Mapping[str, Snapshot], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Layer 2: per segment (and `all`), customers, the share above zero of each indicator, and
    active users per licensed seat."""
    groups: dict[str, list[Snapshot]] = defaultdict(list)
    for snap in at_end.values():
        if snap.arr > 0:
            groups[snap.segment or "(none)"].append(snap)
            groups[ALL].append(snap)
    out: dict[str, dict[str, Any]] = {}
    for segment in sorted(groups, key=lambda g: (g == ALL, g)):
        members = groups[segment]
        licensed = sum(s.seats_licensed for s in members)
        shares = {name: round(sum(1 for s in members if _number(s.metrics.get(name)) > 0) / len(members), 4) for name in names}
        out[segment] = {
            "customers": len(members),
            "above_zero": shares,
            "active_per_seat": round(sum(s.seats_active for s in members) / licensed, 4) if licensed else None,
        }
    return out


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


# ---------------------------------------------------------------------------- 3. activities

_NOT_DONE = frozenset({"warning", "when", "task_overdue", "milestone", "paused", "repeat", "if", "split"})


def activities(s: Session, workspace: Workspace, period: Period, accounts: set[str] | None) -> dict[str, dict[str, Any]]:
    """Layer 3: each activity's count in the period, in all, per CSM and per account."""
    from touchpoint.store.models import Account, Event, Run, RunStep

    csm = {account_id: email or NO_CSM for account_id, email in s.execute(select(Account.id, Account.csm_email))}
    out: dict[str, dict[str, Any]] = {}
    for name, spec in workspace.activities.items():
        per_account: Counter[str] = Counter()
        if spec.event is not None:
            query = select(Event.account_id).where(Event.type == spec.event, Event.at >= period.start, Event.at < period.end)
            per_account.update(account_id for (account_id,) in s.execute(query))
        else:
            assert spec.step is not None
            playbook, step = spec.step.split(":", 1)
            query = (
                select(Run.account_id, RunStep.action, RunStep.detail)
                .join(Run, Run.id == RunStep.run_id)
                .where(Run.playbook_id == playbook, RunStep.step == step, RunStep.at >= period.start, RunStep.at < period.end)
            )
            for row in s.execute(query):
                if row.account_id is not None and _done(row.action, row.detail or {}):
                    per_account[row.account_id] += 1
        if accounts is not None:
            per_account = Counter({a: n for a, n in per_account.items() if a in accounts})
        per_csm: Counter[str] = Counter()
        for account_id, n in per_account.items():
            per_csm[csm.get(account_id, NO_CSM)] += n
        out[name] = {
            "total": sum(per_account.values()),
            "by_csm": dict(sorted(per_csm.items())),
            "by_account": dict(sorted(per_account.items())),
        }
    return out


def _done(action: str, detail: Mapping[str, Any]) -> bool:
    if action in _NOT_DONE or detail.get("status") in ("failed", "skipped"):
        return False
    return not (action == "wait_for" and detail.get("timeout"))


# ---------------------------------------------------------------------------- the report


def build_report(s: Session, workspace: Workspace, period: Period, *, segment: str | None = None) -> dict[str, Any]:
    """The three layers for ``period`` (and ``segment``), as the `--json` object."""
    from touchpoint.store.accounts import account_history

    rows = account_history(s, until=period.end)
    at_start = snapshots(rows, period.start - _TICK)
    at_end = snapshots(rows, period.end - _TICK)
    if segment is not None:
        chosen = {a for a, snap in at_end.items() if (at_start[a].segment if a in at_start else snap.segment) == segment}
        at_start = {a: v for a, v in at_start.items() if a in chosen}
        at_end = {a: v for a, v in at_end.items() if a in chosen}
    return {
        "period": {"label": period.label, "start": period.start.isoformat(), "end": period.end.isoformat(), "timezone": workspace.timezone},
        "segment": segment,
        "revenue": asdict(revenue(at_start, at_end)),
        "indicators": {"names": list(workspace.indicators), "segments": indicators(at_end, workspace.indicators)},
        "activities": activities(s, workspace, period, set(at_end) if segment is not None else None),
    }


_TICK = datetime.resolution
"""Values at a period's start are those held just before it: a change at midnight is the new period's."""
