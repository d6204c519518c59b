"""The interpreter through both of its hosts: every step, waits, errors, outcomes.

Each scenario runs as a `PlaybookRun` on a real time-skipping Temporal server (with the real
activities, store and outbox) and again on the server-less host `simulate` uses; the two
timelines must match line for line (`tests.hosts.assert_same_timeline`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.conftest import Stack, write_folder
from tests.hosts import assert_same_timeline, run_without_server
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import RunResult
from touchpoint.store import repo
from workflows.simulation import SimEvent, SimInput, simulated_account

WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
"""
TEMPLATES = {
    "templates/welcome.subject.j2": "Welcome {{ account.name }}",
    "templates/welcome.html.j2": "<p>Hi {{ contact.name }}, day {{ run.day }}</p>",
    "templates/welcome.de.subject.j2": "Willkommen {{ account.name }}",
}
ACCOUNT = AccountDoc.model_validate(
    {
        "id": "acme",
        "name": "Acme",
        "timezone": "UTC",
        "seats": {"licensed": 400, "active": 100},
        "csm": {"name": "Dana", "email": "dana@example.com"},
        "contacts": [
            {"email": "kim@acme.example", "name": "Kim", "role": "champion"},
            {"email": "lee@acme.example", "name": "Lee", "role": "admin", "locale": "de"},
        ],
        "metrics": {"integrations": 0},
    }
)


async def run_playbook(stack: Stack, folder: Path, body: str, events: list[tuple[float, str, dict[str, Any]]] | None = None, account: AccountDoc = ACCOUNT, days: float = 400) -> RunResult:
    write_folder(folder, {"workspace.yaml": WORKSPACE, "p.yaml": body, **TEMPLATES})
    project = stack.deploy(folder)
    loaded = project.playbooks["p"]
    sim = SimInput(account=account, playbook="p", events=[SimEvent(after=a * 86400, type=t, data=d) for a, t, d in events or []], horizon=days * 86400)
    result: RunResult = await stack.client.execute_workflow("Account", simulated_account(sim), id=f"sim-{uuid.uuid4().hex[:8]}", task_queue=stack.task_queue, result_type=RunResult)
    assert result.started_at is not None
    local, records = run_without_server(
        loaded.playbook, project.workspace, loaded.version, account, folder / "templates",
        start=result.started_at, events=events or [], days=days, run_id=result.run_id,
    )
    assert_same_timeline(result.history, records)
    assert (local.outcome, local.state.vars, local.state.scorecard) == (result.outcome, result.vars, result.scorecard)
    return result


def steps(result: RunResult) -> list[tuple[int, str, str]]:
    return [(r.day, r.step, r.action) for r in result.history if r.action not in ("milestone", "repeat", "skipped")]


async def test_interpreter_runs_every_side_effect_step(stack: Stack, folder: Path) -> None:
    result = await run_playbook(
        stack,
        folder,
        """\
playbook: p
trigger: manual
audience: [champion, admin]
steps:
  - email: {template: welcome}
    id: welcome
  - wait: 3d
  - task: {title: "Call {{ account.name }}", owner: csm, due: 2d, priority: high}
    id: call
  - note: {text: "Welcome sent to {{ contacts | length }} contacts"}
  - update: {fields: {onboarding_stage: "kickoff", seats_ratio: {expr: "account.seats.active / account.seats.licensed"}}}
  - set: {ratio: "account.seats.active / account.seats.licensed"}
  - if: "run.vars.ratio < 0.5"
    then: [{note: {text: "Low activation ({{ run.vars.ratio }})"}, id: low}]
    else: [{note: {text: "fine"}}]
""",
    )
    assert result.outcome == "completed"
    assert steps(result) == [
        (0, "welcome", "email"),
        (0, "welcome", "email"),
        (0, "steps[1]", "wait"),
        (3, "call", "task"),
        (3, "steps[3]", "note"),
        (3, "steps[4]", "update"),
        (3, "steps[5]", "set"),
        (3, "steps[6]", "if"),
        (3, "low", "note"),
    ]
    emails = {r.detail["to"]: r.detail for r in result.history if r.action == "email"}
    assert emails["kim@acme.example"]["subject"] == "Welcome Acme"
    assert emails["lee@acme.example"]["subject"] == "Willkommen Acme"
    task = next(r for r in result.history if r.action == "task")
    assert task.detail["title"] == "Call Acme" and task.detail["owner"] == "dana@example.com"
    assert result.history[5].detail["fields"] == {"onboarding_stage": "kickoff", "seats_ratio": 0.25}
    assert result.vars == {"ratio": 0.25}
    with stack.deps.sessions() as s:
        assert len(repo.list_messages(s, run_id=result.run_id)) == 2
        assert [t.title for t in repo.list_tasks(s, account_id="acme")] == ["Call Acme"]
    outbox = list((stack.settings.outbox_dir).glob("*.eml"))
    assert len(outbox) == 2


async def test_interpreter_wait_for_event_and_timeout(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - wait_for: {event: setup.sso_configured, timeout: 10d, on_timeout: [{note: {text: chase}, id: chase}]}
    id: sso
  - wait_for: {event: [training.completed], when: "event.data.audience == 'admins'", timeout: 20d}
    id: training
  - note: {text: "trained {{ event.data.audience }}"}
    id: done
"""
    result = await run_playbook(stack, folder, body, [(4, "setup.sso_configured", {}), (6, "training.completed", {"audience": "users"}), (9, "training.completed", {"audience": "admins"})])
    assert steps(result) == [(4, "sso", "wait_for"), (9, "training", "wait_for"), (9, "done", "note")]
    assert result.history[-1].detail["text"] == "trained admins"
    result = await run_playbook(stack, folder, body, [])
    assert steps(result) == [(10, "sso", "wait_for"), (10, "chase", "note"), (30, "training", "wait_for"), (30, "done", "note")]
    assert result.history[0].detail["timeout"] is True


async def test_interpreter_wait_for_seen_counts_earlier_events(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - wait: 5d
  - wait_for: {event: webinar.attended, timeout: 3d, seen: true}
    id: seen
  - wait_for: {event: webinar.attended, timeout: 3d}
    id: unseen
"""
    result = await run_playbook(stack, folder, body, [(1, "webinar.attended", {})])
    assert steps(result) == [(0, "steps[0]", "wait"), (5, "seen", "wait_for"), (8, "unseen", "wait_for")]
    assert result.history[1].detail["timeout"] is False and result.history[2].detail["timeout"] is True


async def test_interpreter_exit_when_and_goal_fire_mid_wait(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
exit_when: "event.type == 'account.churned'"
goal: "event.type == 'deal.won' and event.data.amount > 100"
steps:
  - wait: 60d
  - note: {text: never}
"""
    result = await run_playbook(stack, folder, body, [(5, "deal.won", {"amount": 50}), (7, "account.churned", {})])
    assert result.outcome == "exited"
    assert steps(result) == [(0, "steps[0]", "wait")]
    result = await run_playbook(stack, folder, body, [(5, "deal.won", {"amount": 500})])
    assert result.outcome == "converted"


async def test_interpreter_exit_step_and_step_when(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - note: {text: skipped}
    when: "account.seats.licensed < 10"
  - exit: {outcome: converted}
  - note: {text: never}
"""
    result = await run_playbook(stack, folder, body)
    assert result.outcome == "converted"
    assert steps(result) == [(0, "steps[1]", "exit")]


async def test_interpreter_scorecard_checkpoints_goal_and_on_miss(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
goal: "run.scorecard.score >= 80"
scorecard:
  target: {score: 80, by_day: 90}
  milestones:
    - {id: sso, weight: 40, event: setup.sso_configured}
    - {id: integrations, weight: 40, when: "account.metrics.integrations >= 2"}
    - {id: trained, weight: 20, event: training.completed, when: "event.data.audience == 'admins'"}
  checkpoints:
    - {day: 30, below: 50, steps: [{task: {title: "Behind plan ({{ run.scorecard.score }}%)"}, id: behind}]}
  on_miss: [{note: {text: "missed with {{ run.scorecard.score }}"}, id: missed}]
steps:
  - wait: 10d
"""
    result = await run_playbook(stack, folder, body, [(3, "setup.sso_configured", {}), (40, "training.completed", {"audience": "admins"})])
    assert result.outcome == "completed"
    assert steps(result) == [(0, "steps[0]", "wait"), (30, "behind", "task"), (90, "missed", "note")]
    assert result.history[-1].detail["text"] == "missed with 60"
    assert result.scorecard is not None
    assert result.scorecard["milestones"]["sso"] == {"done": True, "day": 3}
    assert result.scorecard["score"] == 60 and result.scorecard["met"] is False
    result = await run_playbook(stack, folder, body, [(3, "setup.sso_configured", {}), (35, "training.completed", {"audience": "admins"}), (50, "setup.other", {})], account=ACCOUNT.model_copy(update={"metrics": {"integrations": 3}}))
    assert result.outcome == "converted"
    assert [s for s in steps(result) if s[2] != "wait"] == []


async def test_interpreter_repeat_rounds_with_times_and_until(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - repeat:
      every: 30d
      times: 3
      steps: [{note: {text: "round {{ run.round }}"}, id: qbr}]
  - repeat:
      every: 7d
      until: "run.round >= 2"
      steps: [{note: {text: "weekly {{ run.round }}"}, id: weekly}]
"""
    result = await run_playbook(stack, folder, body)
    notes = [(r.day, r.detail["text"]) for r in result.history if r.action == "note"]
    assert notes == [(0, "round 1"), (30, "round 2"), (60, "round 3"), (60, "weekly 1"), (67, "weekly 2")]
    with stack.deps.sessions() as s:
        assert len(repo.list_notes(s, run_id=result.run_id)) == 5


async def test_interpreter_split_is_stable_per_account(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - split: {a: {weight: 1, steps: [{note: {text: A}}]}, b: {weight: 1, steps: [{note: {text: B}}]}}
    id: subject_test
"""
    variants = set()
    for _ in range(3):
        result = await run_playbook(stack, folder, body)
        variants.add(result.vars["subject_test"])
    assert len(variants) == 1
    others = set()
    for i in range(12):
        result = await run_playbook(stack, folder, body, account=ACCOUNT.model_copy(update={"id": f"acct-{i}"}))
        others.add(result.vars["subject_test"])
    assert others == {"a", "b"}


async def test_interpreter_on_error_continue_and_stop(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - webhook: {url: "http://127.0.0.1:9/hook", json: {a: 1}}
    on_error: {on_error}
  - note: {text: after}
"""
    # An expression failing at run time is a permanent step failure (no retries).
    failing = body.replace('webhook: {url: "http://127.0.0.1:9/hook", json: {a: 1}}', 'update: {fields: {x: "{{ 1 / 0 }}"}}')
    result = await run_playbook(stack, folder, failing.replace("{on_error}", "continue"))
    assert result.outcome == "completed"
    assert [r.action for r in result.history] == ["update", "note"]
    assert result.history[0].detail["status"] == "failed"
    result = await run_playbook(stack, folder, failing.replace("{on_error}", "stop"))
    assert result.outcome == "failed"
    assert [r.action for r in result.history] == ["update"]


async def test_interpreter_task_await_and_overdue(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - task: {title: "Book the workshop", due: 5d, await: true, on_overdue: [{note: {text: escalate}, id: escalate}]}
    id: book
  - note: {text: next}
    id: next
"""
    result = await run_playbook(stack, folder, body)
    assert steps(result) == [(0, "book", "task"), (5, "book", "task_overdue"), (5, "escalate", "note"), (5, "next", "note")]
    task_id = result.history[0].detail["task_id"]
    result = await run_playbook(stack, folder, body, [(2, "task.completed", {"task_id": task_id})])
    # Same account, same playbook path: a new run id, so a new task id.
    assert result.history[0].detail["task_id"] != task_id


async def test_interpreter_wait_until_day_and_date(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - wait_until: {day: 10}
  - note: {text: ten}
    id: ten
  - wait_until: {date: "account.renewal_date", offset: -30d}
  - note: {text: renewal}
    id: renewal
"""
    # The time-skipping clock is shared and only moves forward: dates come from it.
    renewal = (await stack.env.get_current_time() + timedelta(days=100)).date()
    result = await run_playbook(stack, folder, body, account=ACCOUNT.model_copy(update={"renewal_date": renewal}))
    days = [(r.day, r.step) for r in result.history if r.action == "note"]
    assert days[0] == (10, "ten")
    assert days[1][1] == "renewal" and days[1][0] in (69, 70)


async def test_interpreter_expression_failure_follows_on_error(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - if: "account.seats.active / account.seats.licensed < 0.4"
    then: [{note: {text: low}}]
  - note: {text: after}
"""
    zero = ACCOUNT.model_copy(update={"seats": ACCOUNT.seats.model_copy(update={"licensed": 0})})
    result = await run_playbook(stack, folder, body, account=zero)
    assert result.outcome == "completed"
    assert [(r.action, r.detail.get("status")) for r in result.history] == [("if", "failed"), ("note", None)]


async def test_interpreter_usage_reported_updates_metrics(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - wait: 5d
  - note: {text: "integrations={{ account.metrics.integrations }}"}
"""
    result = await run_playbook(stack, folder, body, [(1, "usage.reported", {"metrics": {"integrations": 3}})])
    assert result.history[-1].detail["text"] == "integrations=3.0"


async def test_interpreter_draft_keeps_the_fallback_or_the_prompt_on_both_hosts(stack: Stack, folder: Path) -> None:
    write_folder(folder, {
        "templates/idea.txt.j2": "One AI workflow for {{ account.name }} ({{ account.seats.active }} active seats)",
        "templates/idea_fallback.txt.j2": "Automate the weekly report of {{ account.name }}.",
    })
    result = await run_playbook(
        stack,
        folder,
        """\
playbook: p
trigger: manual
steps:
  - draft: {prompt: idea, into: idea, fallback: idea_fallback, max_words: 50}
    id: idea
  - draft: {prompt: idea, into: bare}
    id: bare
  - note: {text: "{{ run.vars.idea }} / {{ run.vars.bare }}"}
    id: both
""",
    )
    assert result.outcome == "completed"
    assert steps(result) == [(0, "idea", "draft"), (0, "bare", "draft"), (0, "both", "note")]
    idea, bare = (r.detail for r in result.history if r.action == "draft")
    assert idea == {
        "into": "idea", "backend": "none", "words": 6, "source": "fallback",
        "prompt": f"One AI workflow for {ACCOUNT.name} ({ACCOUNT.seats.active} active seats)", "text": f"Automate the weekly report of {ACCOUNT.name}.",
    }
    assert (bare["source"], bare["text"]) == ("prompt", idea["prompt"])
    assert result.vars == {"idea": idea["text"], "bare": idea["prompt"]}


async def test_interpreter_draft_whose_prompt_fails_to_render_fails_the_step(stack: Stack, folder: Path) -> None:
    write_folder(folder, {"templates/broken.txt.j2": "Seats per admin: {{ account.seats.active / 0 }}"})
    result = await run_playbook(
        stack,
        folder,
        """\
playbook: p
trigger: manual
steps:
  - draft: {prompt: broken, into: idea}
    id: idea
  - note: {text: "after: {{ run.vars.idea }}"}
    id: after
""",
    )
    failed = next(r.detail for r in result.history if r.step == "idea")
    assert failed["status"] == "failed" and "division by zero" in failed["error"] and "broken.txt.j2:1" in failed["error"]
    assert next(r.detail for r in result.history if r.step == "after")["text"] == "after: "  # a missing var renders empty
    assert "idea" not in result.vars
