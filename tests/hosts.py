"""Running one scenario through both hosts of the interpreter and comparing their timelines.

The workflow host runs on the time-skipping server with real activities, so its clock moves a
few milliseconds while an activity runs; the server-less host's clock does not move at all.
Timelines are compared line by line with times allowed to differ by `TOLERANCE`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from touchpoint.dsl.runtime import EventIn, StepRecord
from touchpoint.dsl.schema import AccountDoc, Playbook, Workspace
from touchpoint.engine.local import LocalResult, Scripted, run_local
from touchpoint.engine.program import Program

TOLERANCE = timedelta(seconds=5)


def run_without_server(
    playbook: Playbook,
    workspace: Workspace,
    version: str,
    account: AccountDoc,
    templates: Path,
    *,
    start: datetime,
    events: list[tuple[float, str, dict[str, Any]]],
    days: float,
    run_id: str,
    trigger: EventIn | None = None,
) -> tuple[LocalResult, list[StepRecord]]:
    """The same run on the server-less host; ``events`` are (days after start, type, data)."""
    records: list[StepRecord] = []
    scripted = [Scripted(after=timedelta(days=a), type=t, data=d) for a, t, d in events]
    result = run_local(
        Program(playbook, workspace, version),
        account,
        templates=templates,
        start=start,
        horizon=timedelta(days=days),
        trigger=trigger or EventIn(type="manual"),
        events=scripted,
        run_id=run_id,
        sink=records.append,
    )
    return result, records


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) and isinstance(b, str) and a != b:
        try:
            return abs(datetime.fromisoformat(a) - datetime.fromisoformat(b)) <= TOLERANCE
        except ValueError:
            return False
    if isinstance(a, datetime) and isinstance(b, datetime):
        return abs(a - b) <= TOLERANCE
    return bool(a == b)


def assert_same_timeline(server: list[StepRecord], local: list[StepRecord]) -> None:
    """Both hosts ran the same steps in the same order, with the same details, at the same times."""
    shown = [(r.day, r.step, r.action) for r in server]
    assert shown == [(r.day, r.step, r.action) for r in local], f"server {shown}\nlocal  {[(r.day, r.step, r.action) for r in local]}"
    for a, b in zip(server, local, strict=True):
        assert abs(a.at - b.at) <= TOLERANCE, (a, b)
        assert _close(a.detail, b.detail), f"{a.step} {a.action}: server {a.detail} != local {b.detail}"
