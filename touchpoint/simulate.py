"""`touchpoint simulate`: one playbook for one account, on a simulated clock.

By default the run is hosted without a server (`touchpoint.engine.local`): the same interpreter
the workflows host, effects performed in memory, a 90-day onboarding in milliseconds, and the
timeline streamed as it happens (an endless `repeat` simulated for years needs no more memory
than one round). `simulate_on_server` runs the same scenario on the time-skipping Temporal server
with the real workflows and activities; the suite checks that both print the same timeline.

This module imports neither Temporal nor SQLAlchemy on the server-less path: a simulation is a
command people run while they write a playbook, and its start-up time is most of what they wait.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.durations import parse_duration
from touchpoint.dsl.errors import ContractError, Problem
from touchpoint.dsl.runtime import EventIn, StepRecord, segment_of
from touchpoint.dsl.schema import EVENT_TYPE_RE, Playbook
from touchpoint.dsl.timing import run_day, zone
from touchpoint.dsl.validate import Project, load_project
from touchpoint.dsl.workspace import Workspace
from touchpoint.dsl.yamlpos import load_yaml
from touchpoint.engine.effects import LocalEffects
from touchpoint.engine.local import Scripted, run_local
from touchpoint.engine.program import Program

if TYPE_CHECKING:
    from temporalio.testing import WorkflowEnvironment

HIDDEN_ACTIONS = ("milestone", "repeat", "warning", "skipped")
"""Timeline lines that are not steps: kept in the run's history, not printed by `simulate`."""


@dataclass
class Simulated:
    """The outcome and timeline of a simulation."""

    outcome: str
    because: str
    at: datetime
    day: int
    records: list[StepRecord]
    account: AccountDoc
    warnings: list[str] = field(default_factory=list)
    scorecard: dict[str, Any] | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    held_out: bool | None = None
    """With a playbook `holdout`: whether the run was held out (None: no holdout)."""


def load_account(path: Path, workspace: Workspace) -> AccountDoc:
    """An account document from YAML or JSON, with the workspace's defaults applied.

    Raises:
        ContractError: naming the file, line and field of each problem.
    """
    from touchpoint.dsl.located import validate_model

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


def load_events(path: Path) -> list[Scripted]:
    """The events file: a list of ``{after: 10d, type, data}`` or ``{after: 6d, account: {...}}``.

    Raises:
        ContractError: each bad entry with its line, the field and what was expected.
    """
    import re

    data, positions, yaml_problems = load_yaml(path.read_text(encoding="utf-8"))
    problems = [Problem(str(path), p.line, "", p.message) for p in yaml_problems]
    items = data.get("events", []) if isinstance(data, dict) else (data or [])
    prefix: tuple[str | int, ...] = ("events",) if isinstance(data, dict) else ()
    out: list[Scripted] = []
    if not isinstance(items, list):
        problems.append(Problem(str(path), 1, "", "expected a list of {after: 10d, type: ..., data: {...}}"))
        items = []
    for i, item in enumerate(items):
        where = (*prefix, i)

        def bad(key: str, message: str, item_path: tuple[str | int, ...] = where, index: int = i) -> None:
            line = positions.line_of((*item_path, key) if key else item_path)
            problems.append(Problem(str(path), line, f"[{index}]" + (f".{key}" if key else ""), message))

        if not isinstance(item, dict):
            bad("", f"expected {{after: 10d, type: ..., data: {{...}}}}, found {item!r}")
            continue
        unknown = sorted(set(item) - {"after", "type", "data", "account"})
        for key in unknown:
            bad(key, "unknown key (expected after, type, data or account)")
        try:
            after = parse_duration(item.get("after"))
        except (TypeError, ValueError) as exc:
            bad("after", f"expected a duration such as 10d: {exc}")
            continue
        if "account" in item:
            if not isinstance(item["account"], dict) or "type" in item:
                bad("account", "expected {after: 6d, account: {field: value, ...}} (no type)")
                continue
            out.append(Scripted(after=after, account=dict(item["account"])))
            continue
        kind = item.get("type")
        if not isinstance(kind, str) or not re.match(EVENT_TYPE_RE, kind):
            bad("type", f"expected an event type such as integration.connected, found {kind!r}")
            continue
        payload = item.get("data") or {}
        if not isinstance(payload, dict):
            bad("data", "expected a mapping")
            continue
        out.append(Scripted(after=after, type=kind, data=dict(payload)))
    if problems:
        raise ContractError(problems)
    return out


def listens(playbook: Playbook, event_type: str) -> bool:
    """Whether an event of this type can reach a run of ``playbook`` (contract section 9).

    The production rule (`touchpoint.dsl.listening`) applied to this one playbook: a simulated
    event of any other type would be quiet.
    """
    from touchpoint.dsl.listening import of_playbook

    return of_playbook(playbook).hears(event_type)


def simulate(
    playbook_file: Path,
    account_file: Path,
    *,
    events_file: Path | None = None,
    start: datetime | None = None,
    days: int = 730,
    trigger_data: dict[str, Any] | None = None,
    sink: Callable[[StepRecord], None] | None = None,
    warn: Callable[[str], None] | None = None,
    holdout: Literal["in", "out"] | None = None,
) -> Simulated:
    """Run one playbook for one account until it ends or ``days`` have passed, without a server.

    ``trigger_data`` (extension, `--trigger-data`) fills `event.data` of the triggering event,
    e.g. the `delta` of a `seats.changed`; the contract's default is `{}`. ``sink`` receives each
    timeline line as it happens (then `Simulated.records` stays empty: nothing is kept).

    Raises:
        ContractError: the playbook, the account or the events file is not valid.
    """
    project, playbook, version, account, events = _inputs(playbook_file, account_file, events_file)
    warnings: list[str] = []

    def note(text: str) -> None:
        warnings.append(text)
        if warn is not None:
            warn(text)

    for entry in events:
        if entry.type is not None and not listens(playbook, entry.type):
            note(f"{events_file}: no part of {playbook.playbook} listens to `{entry.type}`: it would be quiet and reach no run")
    records: list[StepRecord] = []
    at = start or datetime.now(UTC)
    effects = _local_effects(project.root / "templates")
    try:
        result = run_local(
            Program(playbook, project.workspace, version),
            account,
            templates=project.root / "templates",
            start=at,
            horizon=timedelta(days=days),
            trigger=EventIn(type=_trigger_type(playbook), at=at, data=dict(trigger_data or {})),
            events=events,
            run_id=f"sim-{uuid.uuid4().hex[:12]}",
            sink=sink or records.append,
            warn=note,
            effects=effects,
            holdout=holdout,
        )
    finally:
        if effects.ai is not None:
            effects.ai.close()
    held = result.state.held_out if playbook.holdout is not None else None
    return Simulated(outcome=result.outcome, because=result.because, at=result.at, day=result.day, records=records, account=result.account, warnings=warnings, scorecard=result.state.scorecard, vars=result.state.vars, held_out=held)


def _local_effects(templates: Path) -> LocalEffects:
    """Effects in memory; `draft` steps ask the backend `TOUCHPOINT_AI_BACKEND` names (default `none`).

    A backend that cannot be made (a missing key) is made again by every draft, which then pauses
    the simulated run with the reason, as a worker would.
    """
    import os

    from touchpoint.config import ConfigError, settings

    try:
        config = settings()
    except ConfigError:
        if os.environ.get("TOUCHPOINT_AI_BACKEND", "none") == "none":
            return LocalEffects(templates)  # a setting simulations do not use is bad: not theirs to report
        raise
    if config.ai_backend == "none":
        return LocalEffects(templates)
    return LocalEffects(templates, ai=_LazyBackend(config), ai_name=config.ai_backend)


class _LazyBackend:
    """The settings' AI backend, made at the first draft (its errors belong to that draft)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.backend: Any = None

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def ask(self, question: Any) -> Any:
        if self.backend is None:
            from touchpoint.ai.base import backend_from_settings

            self.backend = backend_from_settings(self.config)
        return self.backend.ask(question)


def _inputs(playbook_file: Path, account_file: Path, events_file: Path | None) -> tuple[Project, Playbook, str, AccountDoc, list[Scripted]]:
    project = load_project(playbook_file)
    project.raise_for_problems()
    (loaded,) = project.playbooks.values()
    account = load_account(account_file, project.workspace)
    events = load_events(events_file) if events_file else []
    return project, loaded.playbook, loaded.version, account, events


def _trigger_type(playbook: Playbook) -> str:
    event = getattr(playbook.trigger, "event", None)
    if isinstance(event, list):
        return str(event[0])
    return str(event or "manual")


async def simulate_on_server(
    playbook_file: Path,
    account_file: Path,
    *,
    events_file: Path | None = None,
    start: datetime | None = None,
    days: int = 730,
    trigger_data: dict[str, Any] | None = None,
) -> Simulated:
    """The same simulation on the time-skipping server, with the real workflows and activities.

    A run that Temporal failed or terminated says so (outcome ``failed`` or ``terminated`` with
    the reason), never ``running``.
    """
    import asyncio

    from touchpoint.observability.metrics import logging_runtime
    from touchpoint.temporal_server import start_time_skipping

    project, playbook, version, account, events = _inputs(playbook_file, account_file, events_file)
    # The SDK core's warnings go to Python logging (stderr), not between the timeline's lines.
    server = asyncio.create_task(start_time_skipping(runtime=logging_runtime()))
    await asyncio.sleep(0)
    try:
        env = await server
        return await _on_server(env, project, playbook, version, account, events, start=start, days=days, trigger_data=trigger_data)
    finally:
        try:
            env = await server
        except Exception:
            pass
        else:
            await env.shutdown()


async def _on_server(
    env: WorkflowEnvironment,
    project: Project,
    playbook: Playbook,
    version: str,
    account: AccountDoc,
    events: list[Scripted],
    *,
    start: datetime | None,
    days: int,
    trigger_data: dict[str, Any] | None,
) -> Simulated:
    import tempfile

    from temporalio.client import WorkflowFailureError

    from activities.deps import Deps
    from touchpoint.config import load_settings
    from touchpoint.deploy import deploy_project
    from touchpoint.dsl.runtime import RunResult
    from worker import build_worker
    from workflows.simulation import SimEvent, SimInput, simulated_account

    with tempfile.TemporaryDirectory(prefix="touchpoint-sim-") as tmp:
        settings = load_settings(home=Path(tmp), database_url=f"sqlite:///{tmp}/sim.db", email_backend="outbox", crm_backend="local")
        deps = Deps.from_settings(settings)
        try:
            with deps.sessions.begin() as s:
                deploy_project(s, project)
            queue = f"sim-{uuid.uuid4().hex[:8]}"
            offset = ((start or datetime.now(UTC)) - datetime.now(UTC)).total_seconds()
            scripted = [SimEvent(after=e.after.total_seconds(), type=e.type, data=e.data, account=e.account) for e in events]
            sim = SimInput(
                account=account,
                playbook=playbook.playbook,
                event=EventIn(type=_trigger_type(playbook), data=dict(trigger_data or {})),
                clock_offset=offset,
                events=scripted,
                horizon=days * 86400.0,
            )
            async with build_worker(env.client, deps, task_queue=queue, build_id="touchpoint-simulation"):
                try:
                    result: RunResult = await env.client.execute_workflow(
                        "Account", simulated_account(sim), id=f"simulation/{uuid.uuid4().hex[:12]}", task_queue=queue, result_type=RunResult
                    )
                except WorkflowFailureError as exc:
                    cause = exc.cause
                    outcome = "terminated" if type(cause).__name__ == "TerminatedError" else "failed"
                    now = datetime.now(UTC) + timedelta(seconds=offset)
                    return Simulated(outcome=outcome, because=str(getattr(cause, "message", cause)), at=now, day=-1, records=[], account=account)
        finally:
            await deps.close()
    at = result.ended_at or datetime.now(UTC)
    started = result.started_at or start or at
    return Simulated(outcome=result.outcome, because=result.because or "", at=at, day=run_day(started, at), records=list(result.history), account=account, scorecard=result.scorecard, vars=result.vars)


def record_line(record: StepRecord, tz: str) -> str | None:
    """One `--json` line for a timeline record (None for lines that are not steps)."""
    if record.action in HIDDEN_ACTIONS:
        return None
    item: dict[str, Any] = {
        "at": record.at.astimezone(zone(tz)).isoformat(timespec="seconds"),
        "day": record.day,
        "step": record.step,
        "action": record.action,
    }
    item.update({k: v for k, v in record.detail.items() if k not in item})
    return json.dumps(item, ensure_ascii=False, default=str)


def outcome_line(sim: Simulated, tz: str) -> str:
    """The last `--json` line: ``{"outcome", "at", "day", "because"}``, and ``held_out`` for a
    playbook with a `holdout` (extension)."""
    line: dict[str, Any] = {"outcome": sim.outcome, "at": sim.at.astimezone(zone(tz)).isoformat(timespec="seconds"), "day": sim.day, "because": sim.because}
    if sim.held_out is not None:
        line["held_out"] = sim.held_out
    return json.dumps(line, ensure_ascii=False)


def timeline_json(sim: Simulated, tz: str) -> list[str]:
    """The `--json` lines: one object per step that ran, then the outcome."""
    lines = [line for record in sim.records if (line := record_line(record, tz)) is not None]
    lines.append(outcome_line(sim, tz))
    return lines


def parse_start(value: str | None) -> datetime | None:
    """`--start` as an aware datetime (a date means 00:00 UTC; a naive time means UTC)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
