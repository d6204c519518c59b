"""The interpreter as data: state that survives serialization, stays small, and never crashes.

These run the server-less host directly (the workflow host is compared with it scenario by
scenario in tests/test_interpreter.py and tests/test_email_timing.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import write_folder
from touchpoint.dsl.runtime import EventIn, StepRecord
from touchpoint.dsl.validate import load_project
from touchpoint.engine import machine
from touchpoint.engine.effects import LocalEffects
from touchpoint.engine.local import Scripted, run_local
from touchpoint.engine.program import Program
from touchpoint.engine.state import RunState
from touchpoint.simulate import load_account, load_events, simulate

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"
SAMPLES = PLAYBOOKS / "samples"
START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # a Monday, 10:00 in New York

WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri], hours: "09:00-17:00"}
frequency_cap: {emails: 2, per: 7d}
"""
TEMPLATES = {
    "templates/hello.subject.j2": "Hello {{ account.name }} (round {{ run.round }})",
    "templates/hello.html.j2": "<p>Hi {{ contact.name }}</p>",
}
EVERYTHING = """\
playbook: p
trigger: manual
audience: [champion]
goal: "run.scorecard.score >= 100"
scorecard:
  target: {score: 80, by_day: 40}
  milestones:
    - {id: sso, weight: 1, event: setup.sso_configured}
    - {id: usage, weight: 1, when: "account.metrics.docs >= 3"}
  checkpoints: [{day: 10, below: 50, steps: [{task: {title: "Behind ({{ run.scorecard.score }}%)", owner: csm}, id: behind}]}]
  on_miss: [{note: {text: "missed at {{ run.scorecard.score }}%"}, id: missed}]
steps:
  - email: {template: hello}
    id: welcome
  - split: {a: {weight: 1, steps: [{set: {arm: "'a'"}}]}, b: {weight: 1, steps: [{set: {arm: "'b'"}}]}}
    id: ab
  - wait_for: {event: training.done, timeout: 5d, seen: true, on_timeout: [{note: {text: chase}, id: chase}]}
    id: training
  - task: {title: "Kickoff with {{ account.name }}", owner: csm, due: 3d, await: true, on_overdue: [{note: {text: overdue}, id: late}]}
    id: kickoff
  - repeat:
      every: 2d
      times: 3
      steps:
        - email: {template: hello}
          id: nudge
        - if: "run.round == 2"
          then: [{wait_until: {day: 20}, id: day20}]
    id: nudges
  - update: {fields: {stage: "adoption", ratio: {expr: "account.seats.active / account.seats.licensed"}}}
    id: stage
  - webhook: {url: "https://hooks.example/{{ account.id }}", json: {text: "done {{ run.vars.arm }}"}}
    id: hook
"""
ACCOUNT = """\
id: acme
name: Acme
timezone: America/New_York
country: US
seats: {licensed: 100, active: 40}
csm: {name: Dana, email: dana@example.com}
contacts:
  - {email: kim@acme.example, name: Kim, role: champion}
  - {email: lee@acme.example, name: Lee, role: champion, timezone: Europe/Berlin}
metrics: {docs: 1}
"""
EVENTS = """\
- {after: 1d, type: training.done}
- {after: 3d, type: setup.sso_configured}
- {after: 2d, type: task.completed, data: {step: kickoff}}
- {after: 30d, type: usage.reported, data: {metrics: {docs: 5}}}
"""


def project_files(tmp_path: Path, playbook: str = EVERYTHING) -> Path:
    folder = write_folder(tmp_path / "playbooks", {"workspace.yaml": WORKSPACE, "p.yaml": playbook, **TEMPLATES})
    write_folder(tmp_path, {"acme.yaml": ACCOUNT, "events.yaml": EVENTS})
    return folder


def run(folder: Path, account_file: Path, events: list[Scripted], **options: Any) -> tuple[Any, list[StepRecord]]:
    project = load_project(folder / "p.yaml")
    project.raise_for_problems()
    loaded = project.playbooks["p"]
    account = load_account(account_file, project.workspace)
    records: list[StepRecord] = []
    result = run_local(
        Program(loaded.playbook, project.workspace, loaded.version),
        account,
        templates=folder / "templates",
        start=options.pop("start", START),
        horizon=options.pop("horizon", timedelta(days=60)),
        trigger=EventIn(type="manual"),
        events=events,
        run_id="run-1",
        sink=records.append,
        **options,
    )
    return result, records


def test_engine_state_restored_from_json_at_every_input_goes_on_identically(tmp_path: Path) -> None:
    folder = project_files(tmp_path)
    events = load_events(tmp_path / "events.yaml")
    straight, expected = run(folder, tmp_path / "acme.yaml", events)
    sizes: list[int] = []

    def round_trip(state: RunState) -> RunState:
        text = state.model_dump_json()
        sizes.append(len(text))
        return RunState.model_validate_json(text)

    restored, records = run(folder, tmp_path / "acme.yaml", events, reload=round_trip)
    assert [r.model_dump() for r in records] == [r.model_dump() for r in expected]
    assert (restored.outcome, restored.because) == (straight.outcome, straight.because)
    assert restored.state.model_dump() == straight.state.model_dump()
    # The scenario passed through every kind of wait: an email held by the window and the cap,
    # a wait_for that had seen its event, an awaited task, repeat rounds, a report card.
    actions = {r.action for r in expected}
    assert {"email", "split", "set", "wait_for", "task", "repeat", "wait_until", "update", "webhook", "milestone"} <= actions
    assert any("held" in r.detail for r in expected if r.action == "email")
    assert len(sizes) > 20 and max(sizes) < 12_000


def test_engine_the_enterprise_onboarding_mid_run_serializes_to_a_few_kb() -> None:
    project = load_project(PLAYBOOKS / "onboarding-enterprise.yaml")
    loaded = project.playbooks["onboarding-enterprise"]
    account = load_account(SAMPLES / "enterprise.yaml", project.workspace)
    sizes: list[int] = []

    def measure(state: RunState) -> RunState:
        sizes.append(len(state.model_dump_json()))
        return state

    events = load_events(SAMPLES / "enterprise-onboarding-events.yaml")
    result = run_local(
        Program(loaded.playbook, project.workspace, loaded.version),
        account,
        templates=PLAYBOOKS / "templates",
        start=START,
        horizon=timedelta(days=120),
        trigger=EventIn(type="account.created"),
        events=events,
        reload=measure,
    )
    assert result.outcome == "converted"
    assert len(sizes) > 50
    assert max(sizes) < 5_000, f"the largest mid-run state was {max(sizes)} bytes"


def test_engine_an_endless_repeat_simulated_for_years_streams_every_round_in_bounded_memory(tmp_path: Path) -> None:
    playbook = """\
playbook: p
trigger: manual
steps:
  - repeat:
      every: 30m
      steps: [{set: {n: "(run.vars.n or 0) + 1"}, id: count}]
    id: forever
"""
    folder = project_files(tmp_path, playbook)
    counted = 0

    def sink(record: StepRecord) -> None:
        nonlocal counted
        counted += record.action == "set"

    project = load_project(folder / "p.yaml")
    loaded = project.playbooks["p"]
    account = load_account(tmp_path / "acme.yaml", project.workspace)
    program = Program(loaded.playbook, project.workspace, loaded.version)
    tracemalloc.start()
    try:
        run_local(program, account, templates=folder / "templates", start=START, horizon=timedelta(days=20), trigger=EventIn(type="manual"), sink=sink)
        _, short_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        counted = 0
        result = run_local(program, account, templates=folder / "templates", start=START, horizon=timedelta(days=400), trigger=EventIn(type="manual"), sink=sink)
        _, long_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 400 days of half-hourly rounds: past the round (~18,700) where a workflow without
    # continue-as-new stopped at Temporal's history limit.
    assert counted == 400 * 48 + 1
    assert result.outcome == "running" and result.because == "horizon"
    assert result.state.vars["n"] == counted
    assert len(result.state.recent) <= 10 and result.state.recent_dropped > 19_000
    assert long_peak < short_peak + 2_000_000, (short_peak, long_peak)


def test_engine_simulate_tells_the_truth_at_its_horizon_and_on_a_failure(tmp_path: Path) -> None:
    folder = project_files(tmp_path, "playbook: p\ntrigger: manual\nsteps:\n  - wait: 400d\n  - note: {text: late}\n")
    sim = simulate(folder / "p.yaml", tmp_path / "acme.yaml", start=START, days=30)
    assert (sim.outcome, sim.because, sim.day) == ("running", "horizon", 30)
    folder = project_files(tmp_path, "playbook: p\ntrigger: manual\nsteps:\n  - set: {x: '1 / 0'}\n    on_error: stop\n    id: boom\n")
    sim = simulate(folder / "p.yaml", tmp_path / "acme.yaml", start=START)
    assert sim.outcome == "failed" and sim.because.startswith("step boom failed:")


def test_engine_an_unexpected_exception_fails_only_that_run(tmp_path: Path) -> None:
    folder = project_files(tmp_path)
    project = load_project(folder / "p.yaml")
    loaded = project.playbooks["p"]
    account = load_account(tmp_path / "acme.yaml", project.workspace)
    program = Program(loaded.playbook, project.workspace, loaded.version)
    state, _ = machine.start(program, account, run_id="r", event=EventIn(type="manual"), now=START)
    state.threads[0].frames[0].path = ["steps", 99, "then"]  # a position no step has
    out = machine.step(program, state, account, START + timedelta(days=1), EventIn(type="training.done"))
    assert out.ended and state.outcome == "failed"
    assert state.because is not None and state.because.startswith("internal error")


EVENT_TYPES = ["training.done", "setup.sso_configured", "task.completed", "usage.reported", "account.updated", "webinar.attended"]
values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=5))
events_st = st.builds(
    lambda t, data: EventIn(type=t, data=data),
    st.sampled_from(EVENT_TYPES),
    st.dictionaries(st.sampled_from(["step", "task_id", "metrics", "audience", "playbook"]), st.one_of(values, st.dictionaries(st.sampled_from(["docs", "x"]), values, max_size=2)), max_size=3),
)
inputs_st = st.lists(
    st.one_of(
        st.tuples(st.just("event"), events_st),
        st.tuples(st.just("wait"), st.integers(0, 20 * 86400)),
        st.tuples(st.just("control"), st.sampled_from(["pause", "resume", "account"])),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(inputs=inputs_st)
def test_engine_random_events_and_clock_advances_never_break_the_step_function(tmp_path: Path, inputs: list[tuple[str, Any]]) -> None:
    folder = tmp_path / "playbooks"
    if not folder.exists():
        project_files(tmp_path)
    project = load_project(folder / "p.yaml")
    loaded = project.playbooks["p"]
    account = load_account(tmp_path / "acme.yaml", project.workspace)
    program = Program(loaded.playbook, project.workspace, loaded.version)
    effects = LocalEffects(folder / "templates")
    now = START
    state, out = machine.start(program, account, run_id="r", event=EventIn(type="manual"), now=now)
    pending = list(out.effects)
    for kind, value in inputs:
        if kind == "event":
            message: machine.Input = value
        elif kind == "wait":
            now += timedelta(seconds=value)
            message = machine.Tick()
        else:
            message = {"pause": machine.Pause(), "resume": machine.Resume(), "account": machine.AccountChanged()}[value]
        out = machine.step(program, state, account, now, message)
        pending.extend(out.effects)
        while pending:
            answer = effects.perform(pending.pop(0))
            if answer is not None:
                pending.extend(machine.step(program, state, account, now, answer).effects)
        RunState.model_validate_json(state.model_dump_json())
        assert not (state.because or "").startswith("internal error"), state.because
        wake = machine.next_wake(state)
        assert state.ended or wake is None or wake >= START


def test_engine_simulate_json_prints_nothing_but_json_lines(tmp_path: Path) -> None:
    folder = project_files(tmp_path)
    (tmp_path / "events.yaml").write_text(EVENTS + "- {after: 2d, type: nobody.listens}\n- {after: 5d, account: {plan: business, seats: {licensed: 120, active: 60}}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "touchpoint.cli.main", "simulate", str(folder / "p.yaml"), "--account", str(tmp_path / "acme.yaml"), "--events", str(tmp_path / "events.yaml"), "--start", START.isoformat(), "--json"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all({"at", "day", "step", "action"} <= set(line) for line in lines[:-1])
    assert set(lines[-1]) == {"outcome", "at", "day", "because"}
    assert "`nobody.listens`" in proc.stderr and "quiet" in proc.stderr
