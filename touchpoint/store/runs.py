"""Runs as their account workflows project them, and each run's timeline.

Every function takes a ``Session`` and leaves the transaction to the caller; see `repo`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

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
_RUNS = cast(Table, Run.__table__)
_KEY_COLUMNS = ("playbook_id", "version", "started_at", "ended_at", "enrolled_until", "variant", "held_out", "status", "outcome")
_NEW_RUN_DEFAULTS: dict[str, Any] = {"ended_at": None, "enrolled_until": None, "variant": None, "held_out": False, "status": "running", "outcome": None}
# Statements built once: the run writes are on every step's path, and building and keying a
# statement per call cost more than running it. Core, not the ORM: a run row is written from
# a projection's fields, never read back as an object on this path.
_READ_RUN = select(*(_RUNS.c[name] for name in ("position", *_KEY_COLUMNS))).where(_RUNS.c.id == bindparam("run_id"))
_INSERT_RUN = insert(_RUNS)
_UPDATE_RUN = update(_RUNS).where(_RUNS.c.id == bindparam("run_id_"))
_UPDATE_SAME_KEY = _UPDATE_RUN.where(
    _RUNS.c.position <= bindparam("at_most_"), *(_RUNS.c[name].is_not_distinct_from(bindparam(f"{name}_")) for name in _KEY_COLUMNS)
)
"""A run's row updated only if it holds an older projection under the same rollup key (one
statement where a read and an update would be two; `project_run`)."""


def upsert_run(s: Session, **fields: Any) -> None:
    """Insert or update the projection of a run (by ``id``); other fields are set as given.

    Args:
        s: The session.
        **fields: ``id`` and any ``Run`` columns; a new run also needs ``workflow_id``,
            ``playbook_id``, ``version`` and ``started_at``. ``updated_at`` defaults to now.
    """
    run_id, stored = _stored_run(s, fields, "upsert_run")
    _write_run(s, run_id, stored, fields)


def add_run(s: Session, **fields: Any) -> bool:
    """Insert a run's first row unless it is stored (a retried start keeps what the run wrote since).

    Returns:
        False when the run was stored already (nothing written).
    """
    run_id = _run_id(fields, "add_run")
    values = _new_run_values(run_id, fields)
    if not insert_ignore(s, _RUNS, values):  # one statement: no read first
        return False
    rollups.move_run(s, None, _new_run_key(values))
    return True


def _stored_run(s: Session, fields: Mapping[str, Any], caller: str) -> tuple[str, dict[str, Any] | None]:
    """The run id of ``fields`` (checked) and its stored position and rollup key columns, if any."""
    run_id = _run_id(fields, caller)
    stored = s.execute(_READ_RUN, {"run_id": run_id}).mappings().first()
    return run_id, dict(stored) if stored is not None else None


def _run_id(fields: Mapping[str, Any], caller: str) -> str:
    _check_fields(Run, fields)
    run_id = fields.get("id")
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"{caller} needs the run's 'id', got {run_id!r}")
    return run_id


def _new_run_values(run_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` as a new run's row (checked: a new run needs `_NEW_RUN_FIELDS`)."""
    _as_stored(fields)
    missing = [f for f in _NEW_RUN_FIELDS if fields.get(f) is None]
    if missing:
        raise ValueError(f"run {run_id!r} is not in the store yet, so it needs {', '.join(missing)} too")
    return fields


def _new_run_key(values: Mapping[str, Any]) -> rollups.RunKey:
    """The rollup key of a run just inserted with ``values`` (the columns' defaults for the rest)."""
    return rollups.run_key(_KeyView.of({**_NEW_RUN_DEFAULTS, **{k: v for k, v in values.items() if k in _KEY_COLUMNS}}))


def _as_stored(fields: dict[str, Any]) -> None:
    """``updated_at`` (now unless given) and JSON-ready ``vars`` and ``scorecard``, in place."""
    fields.setdefault("updated_at", utcnow())
    for name in ("vars", "scorecard"):
        if name in fields:
            fields[name] = jsonable(fields[name])


def _write_run(s: Session, run_id: str, stored: Mapping[str, Any] | None, fields: dict[str, Any]) -> None:
    """Write a run row over ``stored`` (its position and rollup key columns, None for a new run)
    and move its count in the rollups."""
    if stored is None:
        s.execute(_INSERT_RUN, _new_run_values(run_id, fields))
        counted = None
        after = _new_run_key(fields)
    else:
        _as_stored(fields)
        s.execute(_UPDATE_RUN, {"run_id_": run_id, **{k: v for k, v in fields.items() if k != "id"}})
        counted = rollups.run_key(_KeyView.of(stored))
        after = rollups.run_key(_KeyView.of({**stored, **{k: v for k, v in fields.items() if k in _KEY_COLUMNS}}))
        loaded = s.identity_map.get(identity_key(Run, run_id))
        if loaded is not None:
            s.expire(loaded)  # an object this session read before the update reads it again
    rollups.move_run(s, counted, after)


@dataclass(frozen=True)
class _KeyView:
    """A run's rollup key columns (`rollups.RunLike`)."""

    playbook_id: str
    version: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    enrolled_until: dt.datetime | None
    variant: str | None
    held_out: bool
    status: str
    outcome: str | None

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> _KeyView:
        v = values
        return cls(
            playbook_id=v["playbook_id"], version=v["version"], started_at=v["started_at"], ended_at=v["ended_at"],
            enrolled_until=v["enrolled_until"], variant=v["variant"], held_out=bool(v["held_out"]),
            status=v["status"] or "running", outcome=v["outcome"],
        )


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
    run: rollups.RunOfLine | None = None,
    prior: list[rollups.Line] | None = None,
) -> bool:
    """Append a line to the run's timeline; with ``seq``, once (False if it is there already).

    A line inserted counts in the analytics rollups of its run (`rollups.count_line`); ``run``
    (its row's playbook, version and start) and ``prior`` (its lines before this one), when the
    caller has them, save reading them. The line is appended to ``prior``.
    """
    if run is None:
        run = s.execute(rollups.RUN_OF_LINE, {"run_id": run_id}).first()
    if prior is None:
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
    line = rollups.Line(step, action, values["detail"], at)
    added = True
    if seq is None:
        s.add(RunStep(**values))
        s.flush()
    else:
        added = insert_ignore(s, RunStep, values)
    if added and run is not None:
        rollups.count_line(s, run, prior, line)
    prior.append(line)  # stored now or by a retried write before: a line before the next ones
    return added


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
    _check_fields(Run, fields)
    if fields.get("status") != "ended" and _update_same_key(s, id, position, fields):
        return True
    stored = s.execute(_READ_RUN, {"run_id": id}).mappings().first()
    if stored is not None and stored["position"] > position:
        return False
    _write_run(s, id, dict(stored) if stored is not None else None, {"id": id, "position": position, **fields})
    return True


def _update_same_key(s: Session, run_id: str, position: int, fields: dict[str, Any]) -> bool:
    """Write a projection that moves no rollup count, in one statement: the row is updated only
    if it is stored, older than ``position`` (or as old) and under the key ``fields`` name.

    A run's steps between its start and its end change none of its rollup key columns, so this
    is how most projections are written; otherwise (a new run, a newer projection stored, a key
    column that changes or is not given) nothing is written and False sends the caller to the
    read-then-write path, which moves the counts.
    """
    if any(name not in fields for name in _KEY_COLUMNS):
        return False
    values = {"id": run_id, "position": position, **fields}
    _as_stored(values)
    key = {f"{name}_": values[name] for name in _KEY_COLUMNS}
    params = {"run_id_": run_id, "at_most_": position, **key, **{k: v for k, v in values.items() if k != "id"}}
    result = cast(CursorResult[Any], s.execute(_UPDATE_SAME_KEY, params, execution_options={"preserve_rowcount": True}))
    if result.rowcount != 1:
        return False
    loaded = s.identity_map.get(identity_key(Run, run_id))
    if loaded is not None:
        s.expire(loaded)  # an object this session read before the update reads it again
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
