"""Running one scenario through both hosts of the interpreter and comparing their timelines.

The workflow host runs on the time-skipping server with real activities, so its clock moves a
few milliseconds while an activity runs; the server-less host's clock does not move at all.
Timelines are compared line by line with times allowed to differ by `TOLERANCE`.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn, RunResult, RunStatus, StartRequest, StepRecord
from touchpoint.dsl.schema import Playbook
from touchpoint.dsl.workspace import Workspace
from touchpoint.engine.local import LocalResult, Scripted, run_local
from touchpoint.engine.program import Program
from workflows import names
from workflows.messages import AccountState, RunControl

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


def stored_status(sessions: Any, account_id: str, playbook: str) -> RunStatus | None:
    """The newest run of ``playbook`` for the account as the store has it: row and timeline.

    Runs are hosted by their account's workflow, which projects every step to the store; this
    is what `touchpoint status` and `GET /runs` read.
    """
    from touchpoint.store import repo

    with sessions() as s:
        rows = [r for r in repo.list_runs(s, account_id=account_id, playbook_id=playbook)]
        if not rows:
            return None
        row = max(rows, key=lambda r: r.started_at)
        history = [StepRecord(at=x.at, day=x.day, step=x.step, action=x.action, detail=dict(x.detail or {}), seq=x.seq or 0) for x in repo.run_steps(s, row.id)]
        return RunStatus(
            id=row.id, workflow_id=row.workflow_id, playbook=row.playbook_id, version=row.version, account_id=row.account_id,
            status=row.status, step=row.step, outcome=row.outcome, paused_reason=row.paused_reason, started_at=row.started_at,
            vars=dict(row.vars or {}), scorecard=row.scorecard, waiting=list(row.waiting or []), history=history,
        )


@dataclass
class OneRun:
    """One run in an account workflow that ends with it (`AccountState.finish_after_run`)."""

    handle: WorkflowHandle[Any, RunResult]
    run_id: str

    async def result(self) -> RunResult:
        return await self.handle.result()

    async def status(self, timeout: float = 30.0) -> RunStatus:
        """The run as its account workflow's `runs` query shows it.

        The workflow lists the run once its first activation has prepared the start (a local
        activity): a query answered before that sees no run yet, so look again until it does.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            runs: list[RunStatus] = await self.handle.query("runs", result_type=list[RunStatus])
            found = next((r for r in runs if r.id == self.run_id), None)
            if found is not None:
                return found
            assert asyncio.get_running_loop().time() < deadline, f"run {self.run_id} never listed by {self.handle.id}"
            await asyncio.sleep(0.02)

    async def control(self, action: str) -> None:
        """Pause, resume or cancel the run."""
        await self.handle.signal("control", RunControl(action=action, run_id=self.run_id))  # type: ignore[arg-type]


async def start_one_run(client: Client, task_queue: str, account: AccountDoc, playbook: str, *, run_id: str | None = None) -> OneRun:
    """Start ``playbook`` for ``account`` now, in an account workflow that ends with the run.

    The workflow id is unique per run, so tests may reuse one account document.
    """
    run_id = run_id or f"run-{uuid.uuid4().hex[:8]}"
    state = AccountState(account_id=account.id, account=account, finish_after_run=True, starts=[StartRequest(playbook=playbook, run_id=run_id)])
    handle = await client.start_workflow(names.ACCOUNT, state, id=f"account/{account.id}/{run_id}", task_queue=task_queue, result_type=RunResult)
    return OneRun(handle, run_id)
