"""Holdouts (contract sections 3 and 13): who is held out, what a held-out run does, how long runs stay.

The choice is checked on the interpreter directly (10,000 accounts); the behaviour of both arms
on both hosts (the account workflow on the time-skipping server, and the server-less host, line
for line, through `tests.test_interpreter.run_playbook`); and a held-out run in production
leaves nothing behind but its own row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from tests.conftest import Stack, eventually, write_folder
from tests.hosts import start_one_run
from tests.test_interpreter import ACCOUNT, TEMPLATES, WORKSPACE, run_playbook, steps
from touchpoint.dsl.runtime import EventIn
from touchpoint.dsl.validate import load_project
from touchpoint.engine import machine
from touchpoint.engine.people import variant_of
from touchpoint.engine.program import Program
from touchpoint.store import models, repo

START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)

CHOICE = """\
playbook: p
trigger: manual
goal: "account.plan == 'business'"
holdout: {percent: 10, for: 90d}
steps:
  - wait: 1d
  - split: {a: {weight: 1, steps: [{wait: 1d}]}, b: {weight: 1, steps: [{wait: 2d}]}}
    id: tone
"""

ARMS = """\
playbook: p
trigger: manual
audience: [champion]
goal: "event.type == 'plan.upgraded'"
holdout: {percent: 50, for: 30d}
scorecard:
  target: {score: 50, by_day: 60}
  milestones: [{id: sso, weight: 1, event: setup.sso_configured}]
  checkpoints: [{day: 5, below: 100, steps: [{task: {title: "Behind", owner: csm}, id: behind}]}]
steps:
  - email: {template: welcome}
    id: welcome
  - task: {title: "Call {{ account.name }}", owner: csm}
    id: call
"""


def _program(folder: Path, body: str) -> Program:
    write_folder(folder, {"workspace.yaml": WORKSPACE, "p.yaml": body, **TEMPLATES})
    project = load_project(folder)
    project.raise_for_problems()
    loaded = project.playbooks["p"]
    return Program(loaded.playbook, project.workspace, loaded.version)


def _account(account_id: str) -> object:
    return ACCOUNT.model_copy(update={"id": account_id})


def _held(program: Program, account_id: str, run_id: str) -> bool:
    state, _ = machine.start(program, _account(account_id), run_id=run_id, event=EventIn(type="manual"), now=START)  # type: ignore[arg-type]
    return state.held_out


def _account_with(program: Program, held: bool) -> str:
    """An account id whose stable choice for ``program`` is ``held``."""
    return next(f"acct-{i}" for i in range(1000) if _held(program, f"acct-{i}", "probe") == held)


def test_about_percent_of_accounts_are_held_out_and_stay_so_across_reenrollment(tmp_path: Path) -> None:
    program = _program(tmp_path, CHOICE)
    ids = [f"acct-{i}" for i in range(10_000)]
    held = {a for a in ids if _held(program, a, f"{a}-run-1")}
    # Binomial(10,000, 0.1): standard deviation 30, so 4 of them either side is never hit by chance.
    assert 880 <= len(held) <= 1120, len(held)
    # Re-enrollment is a new run of the same account: the same choice, for every account.
    assert all(_held(program, a, f"{a}-run-2") == (a in held) for a in ids[:2000])
    # Independent of `split`: the held-out accounts fall into the split's variants as everyone does.
    share_a = sum(variant_of({"a": 1, "b": 1}, a, "p", "tone") == "a" for a in held) / len(held)
    assert 0.43 <= share_a <= 0.57, share_a


def test_a_forced_choice_overrides_the_stable_one(tmp_path: Path) -> None:
    program = _program(tmp_path, CHOICE)
    account = _account_with(program, held=False)
    state, _ = machine.start(program, _account(account), run_id="r", event=EventIn(type="manual"), now=START, holdout="in")  # type: ignore[arg-type]
    assert state.held_out and state.enrolled_until == START + timedelta(days=90)
    state, _ = machine.start(program, _account(account), run_id="r", event=EventIn(type="manual"), now=START, holdout="out")  # type: ignore[arg-type]
    assert not state.held_out


async def test_a_held_out_run_takes_no_step_but_keeps_its_milestones_and_goal(stack: Stack, folder: Path, tmp_path: Path) -> None:
    account = ACCOUNT.model_copy(update={"id": _account_with(_program(tmp_path / "probe", ARMS), held=True)})
    # Past the checkpoint's day 5 with the milestone on day 3 and the goal on day 12.
    result = await run_playbook(stack, folder, ARMS, [(3, "setup.sso_configured", {}), (12, "plan.upgraded", {})], account=account)
    assert steps(result) == [(0, "holdout", "held_out")]
    assert [(r.day, r.action, r.detail.get("milestone")) for r in result.history if r.action == "milestone"] == [(3, "milestone", "sso")]
    assert (result.outcome, result.scorecard and result.scorecard["score"]) == ("converted", 100)
    assert result.ended_at is not None and result.started_at is not None
    assert round((result.ended_at - result.started_at) / timedelta(days=1)) == 12


async def test_a_held_out_run_ends_after_for_without_its_goal(stack: Stack, folder: Path, tmp_path: Path) -> None:
    account = ACCOUNT.model_copy(update={"id": _account_with(_program(tmp_path / "probe", ARMS), held=True)})
    result = await run_playbook(stack, folder, ARMS, account=account)
    assert steps(result) == [(0, "holdout", "held_out")]
    assert result.outcome == "completed" and result.because == "held out for the holdout window"
    assert result.ended_at is not None and result.started_at is not None
    # `for` (30 days) ends it, not the scorecard's by_day (60).
    assert round((result.ended_at - result.started_at) / timedelta(days=1)) == 30


async def test_a_treated_run_that_finishes_early_stays_enrolled_until_for(stack: Stack, folder: Path, tmp_path: Path) -> None:
    account = ACCOUNT.model_copy(update={"id": _account_with(_program(tmp_path / "probe", ARMS), held=False)})
    # A treated run's own scorecard keeps it past `for` (day 60 here): its checkpoints are its steps.
    longer = await run_playbook(stack, folder, ARMS, account=account, days=100)
    assert [s for s in steps(longer) if s[1] != "scorecard"] == [(0, "welcome", "email"), (0, "call", "task"), (5, "behind", "task")]
    assert (longer.outcome, longer.because) == ("completed", "the last step ran")
    assert longer.ended_at is not None and longer.started_at is not None
    assert round((longer.ended_at - longer.started_at) / timedelta(days=1)) == 60
    # Its steps and its scorecard done by day 20, it stays enrolled, taking no step, until day 30.
    shorter = ARMS.replace("by_day: 60", "by_day: 20")
    result = await run_playbook(stack, folder, shorter, account=account, days=100)
    assert [s for s in steps(result) if s[1] != "scorecard"] == [(0, "welcome", "email"), (0, "call", "task"), (5, "behind", "task"), (20, "holdout", "enrolled")]
    assert (result.outcome, result.because) == ("completed", "the holdout window ended")
    assert result.ended_at is not None and result.started_at is not None
    assert round((result.ended_at - result.started_at) / timedelta(days=1)) == 30
    # Its goal still ends it while it waits out the window.
    converted = await run_playbook(stack, folder, shorter, [(25, "plan.upgraded", {})], account=account)
    assert converted.outcome == "converted"
    assert converted.ended_at is not None and converted.started_at is not None
    assert round((converted.ended_at - converted.started_at) / timedelta(days=1)) == 25


async def test_a_held_out_run_in_production_sends_nothing_and_is_marked(stack: Stack, folder: Path, tmp_path: Path) -> None:
    write_folder(folder, {"workspace.yaml": WORKSPACE, "p.yaml": ARMS, **TEMPLATES})
    stack.deploy(folder)
    account = ACCOUNT.model_copy(update={"id": _account_with(_program(tmp_path / "probe", ARMS), held=True)})
    run = await start_one_run(stack.client, stack.task_queue, account, "p")
    status = await run.status()
    assert status.held_out and status.step == "holdout"
    assert [w["kind"] for w in status.waiting] == ["time"]
    result = await run.result()
    assert result.outcome == "completed"

    def ended(s: object) -> object:
        row = repo.get_run(s, run.run_id)  # type: ignore[arg-type]
        return row if row is not None and row.status == "ended" else None

    row = await eventually(stack, ended)
    assert row.held_out and row.enrolled_until is not None and row.variant is None
    with stack.deps.sessions() as s:
        for table in (models.Message, models.Task, models.Note, models.FieldUpdate, models.Ledger):
            assert s.scalar(select(func.count()).select_from(table)) == 0, table.__tablename__
