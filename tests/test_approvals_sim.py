"""Approvals in simulations: decisions from the events file, through both hosts of the interpreter.

Each scenario runs as a simulated account on the time-skipping server (the real workflow,
activities and store) and again on the server-less host `touchpoint simulate` uses; the
timelines must match line for line. The last tests run `touchpoint simulate` itself.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tests.conftest import Stack, write_folder
from tests.hosts import assert_same_timeline, run_without_server
from touchpoint.cli.main import app
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import RunResult, StepRecord
from touchpoint.store import repo
from workflows.simulation import SimEvent, SimInput, simulated_account

BUSINESS_HOURS = """\
timezone: UTC
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri], hours: "09:00-17:00"}
"""
TEMPLATES = {
    "templates/welcome.subject.j2": "Welcome {{ account.name }}",
    "templates/welcome.html.j2": "<p>Hi {{ contact.name }}, round {{ run.round }}</p>",
}
ACCOUNT = AccountDoc.model_validate(
    {
        "id": "acme",
        "name": "Acme",
        "timezone": "UTC",
        "csm": {"name": "Dana", "email": "dana@example.com"},
        "contacts": [{"email": "kim@acme.example", "name": "Kim", "role": "champion"}, {"email": "lee@acme.example", "name": "Lee", "role": "admin"}],
    }
)


async def both_hosts(stack: Stack, folder: Path, body: str, events: list[tuple[float, str, dict[str, Any]]], start: datetime, days: float = 60) -> RunResult:
    """The run on the server (clock shifted to ``start``) and without one: the same timeline."""
    write_folder(folder, {"workspace.yaml": BUSINESS_HOURS, "p.yaml": body, **TEMPLATES})
    project = stack.deploy(folder)
    offset = (start - await stack.env.get_current_time()).total_seconds()
    scripted = [SimEvent(after=after * 86400, type=kind, data=data) for after, kind, data in events]
    sim = SimInput(account=ACCOUNT, playbook="p", clock_offset=offset, events=scripted, horizon=days * 86400)
    result: RunResult = await stack.client.execute_workflow("Account", simulated_account(sim), id=f"sim-{uuid.uuid4().hex[:8]}", task_queue=stack.task_queue, result_type=RunResult)
    assert result.started_at is not None
    loaded = project.playbooks["p"]
    local, records = run_without_server(
        loaded.playbook, project.workspace, loaded.version, ACCOUNT, folder / "templates", start=result.started_at, events=events, days=days, run_id=result.run_id
    )
    assert_same_timeline(result.history, records)
    assert local.outcome == result.outcome
    return result


def shown(result: RunResult) -> list[tuple[int, str, str, Any]]:
    return [(r.day, r.step, r.action, r.detail.get("status") or r.detail.get("to")) for r in result.history if r.action in ("approval", "email")]


def approvals(result: RunResult) -> list[StepRecord]:
    return [r for r in result.history if r.action == "approval"]


async def test_approvals_sim_approved_after_the_window_closed_waits_for_it_to_open(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
audience: [champion]
steps:
  - email: {template: welcome, approval: {by: csm, timeout: 3d}}
    id: welcome
"""
    friday_four = datetime(2027, 3, 5, 16, tzinfo=UTC)
    # Approved at 18:00, after the window closed: the email waits for Monday 09:00.
    result = await both_hosts(stack, folder, body, [(2 / 24, "approval.decided", {"step": "welcome", "decision": "approved"})], friday_four)
    assert shown(result) == [(0, "welcome", "approval", "requested"), (0, "welcome", "approval", "approved"), (2, "welcome", "email", "kim@acme.example")]
    requested, approved = approvals(result)
    assert approved.at - friday_four < timedelta(hours=2, minutes=1)
    email = result.history[-1]
    monday_nine = datetime(2027, 3, 8, 9, tzinfo=UTC)
    assert monday_nine <= email.at < monday_nine + timedelta(minutes=1)
    assert email.detail["held"]["reason"] == "approval"
    assert abs(datetime.fromisoformat(email.detail["held"]["since"]) - requested.at) < timedelta(minutes=1)


async def test_approvals_sim_each_repeat_round_has_its_own_request(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
audience: [champion]
steps:
  - repeat:
      every: 7d
      times: 3
      steps:
        - email: {template: welcome, approval: {by: owner, timeout: 2d, on_timeout: send}}
          id: weekly
"""
    monday = datetime(2027, 3, 1, 10, tzinfo=UTC)
    events = [
        (0.5, "approval.decided", {"step": "weekly", "decision": "approved", "subject": "Round {{ run.round }} for {{ contact.name }}"}),
        (7.5, "approval.decided", {"step": "weekly", "decision": "rejected", "reason": "not this week"}),
    ]
    result = await both_hosts(stack, folder, body, events, monday)
    assert shown(result) == [
        (0, "weekly", "approval", "requested"), (0, "weekly", "approval", "approved"), (0, "weekly", "email", "kim@acme.example"),
        (7, "weekly", "approval", "requested"), (7, "weekly", "approval", "rejected"),
        (14, "weekly", "approval", "requested"), (16, "weekly", "approval", "timed_out"), (16, "weekly", "email", "kim@acme.example"),
    ]
    ids = [r.detail["approval_id"] for r in approvals(result) if r.detail["status"] == "requested"]
    assert len(set(ids)) == 3
    emails = [r for r in result.history if r.action == "email"]
    assert [e.detail["subject"] for e in emails] == ["Round 1 for Kim", "Welcome Acme"]
    # No owner on the account and no fallback owner: the request waits for `unassigned`.
    assert {r.detail["by"] for r in approvals(result) if r.detail["status"] == "requested"} == {"unassigned"}
    with stack.deps.sessions() as s:
        assert sorted(a.id for a in repo.list_approvals(s, run_id=result.run_id)) == sorted(ids)


async def test_approvals_sim_decisions_given_early_and_late(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
audience: [champion]
steps:
  - wait: 3d
  - email: {template: welcome, approval: {by: dana@example.com, timeout: 1d}}
    id: first
  - email: {template: welcome, approval: {timeout: 1d}}
    id: second
"""
    monday = datetime(2027, 3, 1, 10, tzinfo=UTC)
    events = [
        (1, "approval.decided", {"step": "first", "decision": "approved", "by": "lead@example.com"}),  # before its request
        (6, "approval.decided", {"step": "second", "decision": "approved"}),  # after its request timed out
    ]
    result = await both_hosts(stack, folder, body, events, monday)
    assert shown(result) == [
        (3, "first", "approval", "requested"), (3, "first", "approval", "approved"), (3, "first", "email", "kim@acme.example"),
        (3, "second", "approval", "requested"), (4, "second", "approval", "timed_out"),
    ]
    first = [r for r in approvals(result) if r.step == "first"]
    assert [r.detail["by"] for r in first] == ["dana@example.com", "lead@example.com"]


def test_approvals_simulate_cli_prints_requests_and_decisions(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path / "playbooks",
        {
            "workspace.yaml": BUSINESS_HOURS.replace("[mon, tue, wed, thu, fri]", "[mon, tue, wed, thu, fri, sat, sun]").replace("09:00-17:00", "00:00-24:00"),
            "p.yaml": "playbook: p\ntrigger: manual\naudience: [champion]\nsteps:\n  - email: {template: welcome, approval: {by: csm, timeout: 2d}}\n    id: welcome\n",
            **TEMPLATES,
        },
    )
    (tmp_path / "acme.yaml").write_text(json.dumps(ACCOUNT.model_dump(mode="json")))
    (tmp_path / "events.yaml").write_text(
        "- {after: 1d, type: approval.decided, data: {step: welcome, decision: approved, html: '<p>Dear {{ contact.name }}</p>'}}\n"
        "- {after: 12h, type: approval.decided, data: {step: welcom, decision: rejected}}\n"
    )
    result = CliRunner().invoke(
        app, ["simulate", str(folder / "p.yaml"), "--account", str(tmp_path / "acme.yaml"), "--events", str(tmp_path / "events.yaml"), "--start", "2027-03-01T10:00:00Z", "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x.get("action"), x.get("status")) for x in lines] == [("approval", "requested"), ("approval", "approved"), ("email", None), (None, None)]
    assert lines[0]["by"] == "dana@example.com" and lines[0]["to"] == ["kim@acme.example"]
    assert lines[1]["html"] == "<p>Dear {{ contact.name }}</p>" and lines[1]["day"] == 1
    assert lines[2]["held"] == {"since": "2027-03-01T10:00:00+00:00", "reason": "approval"}
    assert lines[-1]["outcome"] == "completed"
    # A decision for a step without approval (a typo) is ignored with a warning (stderr).
    from touchpoint.simulate import simulate

    warnings: list[str] = []
    simulate(folder / "p.yaml", tmp_path / "acme.yaml", events_file=tmp_path / "events.yaml", start=datetime(2027, 3, 1, 10, tzinfo=UTC), warn=warnings.append)
    assert warnings == ["approval.decided names step welcom, which is not an email step with approval in p (those: welcome): ignored"]
