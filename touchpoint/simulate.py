"""`touchpoint simulate`: one playbook for one account on the time-skipping server.

The same workflows and activities as production, with the outbox backend and a temporary SQLite
store; the run's clock is shifted so the simulation starts at `--start`, past or future.

Wall time is most of what a user waits for here (goal: under 2 s for a 90-day onboarding, server
start included), so the test server is started as soon as the inputs are valid and comes up
while the worker's modules load, and the throwaway store lives in memory-backed `/dev/shm`.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from touchpoint.dsl.durations import parse_duration
from touchpoint.dsl.errors import ContractError, Problem
from touchpoint.dsl.runtime import EventIn, RunInput, RunResult, StepRecord, segment_of
from touchpoint.dsl.schema import AccountDoc, Playbook, Workspace
from touchpoint.dsl.timing import zone
from touchpoint.dsl.validate import Project, load_project
from touchpoint.dsl.yamlpos import load_yaml

if TYPE_CHECKING:
    from temporalio.testing import WorkflowEnvironment


@dataclass
class Simulated:
    """The outcome and timeline of a simulation."""

    outcome: str
    records: list[StepRecord]
    account: AccountDoc
    result: RunResult


def load_account(path: Path, workspace: Workspace) -> AccountDoc:
    """An account document from YAML or JSON, with the workspace's defaults applied.

    Raises:
        ContractError: naming the file, line and field of each problem.
    """
    from touchpoint.dsl.validate import validate_model

    data, positions, yaml_problems = load_yaml(path.read_text(encoding="utf-8"))
    problems = [Problem(str(path), p.line, "", p.message) for p in yaml_problems]
    account = validate_model(AccountDoc, data, path, positions, problems) if not problems else None
    if problems or account is None:
        raise ContractError(problems)
    return apply_workspace_defaults(account, workspace)


def apply_workspace_defaults(account: AccountDoc, workspace: Workspace) -> AccountDoc:
    """Time zone from the workspace, and the first matching segment rule when none is given."""
    update: dict[str, Any] = {}
    if account.timezone is None:
        update["timezone"] = workspace.timezone
    if account.segment is None:
        segment = segment_of(account, workspace, datetime.now(UTC))
        if segment is not None:
            update["segment"] = segment
    return account.model_copy(update=update) if update else account


def load_events(path: Path) -> list[dict[str, Any]]:
    """A list of ``{after: 10d, type, data}``; ``after`` becomes seconds.

    Raises:
        ContractError: for entries without `after` or `type`.
    """
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    items = data.get("events", []) if isinstance(data, dict) else data
    out, problems = [], []
    for i, item in enumerate(items):
        try:
            after = parse_duration(item["after"]).total_seconds()
            out.append({"after": after, "type": str(item["type"]), "data": dict(item.get("data") or {})})
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(Problem(str(path), 1, f"[{i}]", f"expected {{after: 10d, type: ..., data: {{...}}}}: {exc}"))
    if problems:
        raise ContractError(problems)
    return out


async def simulate(
    playbook_file: Path,
    account_file: Path,
    *,
    events_file: Path | None = None,
    start: datetime | None = None,
    days: int = 730,
    trigger_data: dict[str, Any] | None = None,
) -> Simulated:
    """Run one playbook for one account until it ends or `days` have passed.

    ``trigger_data`` (extension, `--trigger-data`) fills `event.data` of the triggering event,
    e.g. the `delta` of a `seats.changed`; the contract's default is `{}`.
    """
    from touchpoint.temporal_server import start_time_skipping

    project = load_project(playbook_file)
    project.raise_for_problems()
    (loaded,) = project.playbooks.values()
    account = load_account(account_file, project.workspace)
    events = load_events(events_file) if events_file else []
    # The inputs are valid: start the test server now and let it come up (~0.1 s, another
    # process) while this one imports the worker's modules and migrates the temporary store.
    server = asyncio.create_task(start_time_skipping())
    await asyncio.sleep(0)  # run the task up to the server's spawn before the blocking work
    try:
        return await _run(server, project, loaded.playbook, loaded.version, account, events, start=start, days=days, trigger_data=trigger_data)
    finally:
        await _shutdown(server)


async def _run(
    server: asyncio.Task[WorkflowEnvironment],
    project: Project,
    playbook: Playbook,
    version: str,
    account: AccountDoc,
    events: list[dict[str, Any]],
    *,
    start: datetime | None,
    days: int,
    trigger_data: dict[str, Any] | None,
) -> Simulated:
    from temporalio.worker import Worker

    from activities.deps import Deps
    from touchpoint.config import load_settings
    from touchpoint.deploy import deploy_project
    from worker import build_worker
    from workflows.simulation import SimEvent, SimInput

    with tempfile.TemporaryDirectory(prefix="touchpoint-sim-", dir=_scratch_dir()) as tmp:
        settings = load_settings(home=Path(tmp), database_url=f"sqlite:///{tmp}/sim.db", email_backend="outbox", crm_backend="local")
        deps = Deps.from_settings(settings)
        try:
            with deps.sessions.begin() as s:
                deploy_project(s, project)
            env = await server
            queue = f"sim-{uuid.uuid4().hex[:8]}"
            worker: Worker = build_worker(env.client, deps, task_queue=queue, build_id="touchpoint-simulation")
            async with worker:
                offset = ((start or datetime.now(UTC)) - datetime.now(UTC)).total_seconds()
                trigger_type = getattr(playbook.trigger, "event", None) or "manual"
                run = RunInput(
                    run_id=f"sim-{uuid.uuid4().hex[:12]}",
                    playbook=playbook,
                    version=version,
                    account=account,
                    workspace=project.workspace,
                    event=EventIn(type=trigger_type, data=dict(trigger_data or {})),
                    clock_offset=offset,
                    simulation=True,
                )
                sim = SimInput(run=run, events=[SimEvent(**e) for e in events], horizon=days * 86400.0)
                result: RunResult = await env.client.execute_workflow(
                    "Simulation", sim, id=f"simulation/{run.run_id}", task_queue=queue, result_type=RunResult
                )
        finally:
            await deps.close()
    records = [r for r in result.history if r.action not in ("milestone", "repeat")]
    return Simulated(outcome=result.outcome, records=records, account=account, result=result)


async def _shutdown(server: asyncio.Task[WorkflowEnvironment]) -> None:
    # Wait for a start still under way rather than cancel it, so that no server process is left
    # behind. A start that failed has nothing to stop: `_run` raised its error when it awaited
    # the server, or is raising an earlier error of its own that this one must not hide.
    try:
        env = await server
    except Exception:
        return
    await env.shutdown()


_SHM = "/dev/shm"
_SHM_FREE = 32 * 1024 * 1024


def _scratch_dir() -> str | None:
    """Where the throwaway store and outbox go: `/dev/shm` when usable, else the default.

    Every activity commits to the store, and on a disk each commit waits for an fsync (~0.1 s
    over a 90-day onboarding here) that nobody needs for files deleted when the simulation ends.
    `/dev/shm` is memory-backed on Linux; it is used only when writable with room to spare.
    """
    try:
        if not os.access(_SHM, os.W_OK | os.X_OK):
            return None
        stat = os.statvfs(_SHM)
    except OSError:
        return None
    return _SHM if stat.f_bavail * stat.f_frsize >= _SHM_FREE else None


def timeline_json(sim: Simulated, tz: str) -> list[str]:
    """The `--json` lines: one object per step that ran, then the outcome."""
    lines = []
    for record in sim.records:
        item: dict[str, Any] = {
            "at": record.at.astimezone(zone(tz)).isoformat(timespec="seconds"),
            "day": record.day,
            "step": record.step,
            "action": record.action,
        }
        item.update({k: v for k, v in record.detail.items() if k not in item})
        lines.append(json.dumps(item, ensure_ascii=False, default=str))
    lines.append(json.dumps({"outcome": sim.outcome}))
    return lines


def parse_start(value: str | None) -> datetime | None:
    """`--start` as an aware datetime (a date means 00:00 UTC; a naive time means UTC)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


