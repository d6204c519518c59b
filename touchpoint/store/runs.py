"""Runs as their account workflows project them, and each run's timeline.

Every function takes a ``Session`` and leaves the transaction to the caller; see `repo`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import rollups
from .columns import jsonable
from .common import (
    _check_fields,
    insert_ignore,
)
from .models import (
    Run,
    RunStep,
    utcnow,
)

# --- runs ----------------------------------------------------------------------------------

_NEW_RUN_FIELDS = ("workflow_id", "playbook_id", "version", "started_at")


def upsert_run(s: Session, **fields: Any) -> Run:
    """Insert or update the projection of a run (by ``id``); other fields are set as given.

    Args:
        s: The session.
        **fields: ``id`` and any ``Run`` columns; a new run also needs ``workflow_id``,
            ``playbook_id``, ``version`` and ``started_at``. ``updated_at`` defaults to now.

    Returns:
        The stored run.
    """
    _check_fields(Run, fields)
    run_id = fields.get("id")
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"upsert_run needs the run's 'id', got {run_id!r}")
    fields.setdefault("updated_at", utcnow())
    for name in ("vars", "scorecard"):
        if name in fields:
            fields[name] = jsonable(fields[name])
    run = s.get(Run, run_id)
    counted = None
    if run is None:
        missing = [f for f in _NEW_RUN_FIELDS if fields.get(f) is None]
        if missing:
            raise ValueError(f"run {run_id!r} is not in the store yet, so upsert_run needs {', '.join(missing)} too")
        run = Run(**fields)
        s.add(run)
    else:
        counted = rollups.run_key(run)
        for name, value in fields.items():
            setattr(run, name, value)
    s.flush()
    rollups.move_run(s, counted, rollups.run_key(run))
    return run


def add_run_step(
    s: Session,
    run_id: str,
    at: dt.datetime,
    day: int,
    step: str,
    action: str,
    detail: Mapping[str, Any],
    *,
    seq: int | None = None,
) -> bool:
    """Append a line to the run's timeline; with ``seq``, once (False if it is there already).

    A line inserted counts in the analytics rollups of its run (`rollups.count_line`).
    """
    run = s.get(Run, run_id)
    prior = rollups.timeline(s, run_id) if run is not None else []
    values = {
        "run_id": run_id,
        "at": at,
        "day": day,
        "step": step,
        "action": action,
        "detail": jsonable(dict(detail)),
        "seq": seq,
    }
    if seq is None:
        s.add(RunStep(**values))
        s.flush()
    elif not insert_ignore(s, RunStep, values):
        return False
    if run is not None:
        rollups.count_line(s, run, prior, rollups.Line(step, action, values["detail"], at))
    return True


def project_run(s: Session, *, id: str, position: int, **fields: Any) -> bool:
    """Write where a run stands unless the row holds a newer projection (a higher ``position``).

    Args:
        s: The session.
        id: The run id.
        position: The projection's counter (`RunState.position`).
        **fields: ``Run`` columns; a run not in the store yet needs ``workflow_id``,
            ``playbook_id``, ``version`` and ``started_at``.

    Returns:
        False when a newer projection was there already (nothing written).
    """
    run = s.get(Run, id)
    if run is not None and run.position > position:
        return False
    upsert_run(s, id=id, position=position, **fields)
    return True


def get_run(s: Session, run_id: str) -> Run | None:
    """The run's projection, or None."""
    return s.get(Run, run_id)


def list_runs(
    s: Session,
    *,
    account_id: str | None = None,
    playbook_id: str | None = None,
    status: str | None = None,
    step: str | None = None,
) -> list[Run]:
    """Runs ordered by start time, filtered by account, playbook, status and current step."""
    query = select(Run).order_by(Run.started_at, Run.id)
    if account_id is not None:
        query = query.where(Run.account_id == account_id)
    if playbook_id is not None:
        query = query.where(Run.playbook_id == playbook_id)
    if status is not None:
        query = query.where(Run.status == status)
    if step is not None:
        query = query.where(Run.step == step, Run.status != "ended")
    return list(s.scalars(query))


def run_steps(s: Session, run_id: str) -> list[RunStep]:
    """The run's timeline in order."""
    return list(
        s.scalars(select(RunStep).where(RunStep.run_id == run_id).order_by(RunStep.at, RunStep.seq, RunStep.id))
    )


def count_runs_on_older_versions(s: Session, playbook_id: str, current_version: str) -> int:
    """How many runs of the playbook are in flight (not ended) on another version."""
    count = s.scalar(
        select(func.count())
        .select_from(Run)
        .where(
            Run.playbook_id == playbook_id,
            Run.version != current_version,
            Run.status != "ended",
        )
    )
    return int(count or 0)
