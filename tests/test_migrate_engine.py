"""Moving a run to another version (contract section 13), on the interpreter without a server.

Each test runs version 1 of a playbook with `touchpoint.engine.machine` to some point, moves the
run with `touchpoint.engine.migrate`, and drives it on with version 2: the position, vars,
milestones and time spent waiting carry over as the contract says.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import write_folder
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn
from touchpoint.dsl.validate import load_project
from touchpoint.engine import machine, migrate
from touchpoint.engine.program import Program
from touchpoint.engine.state import RunState

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WORKSPACE = "timezone: UTC\nsender: {email: cs@example.com}\n"
ACCOUNT = AccountDoc.model_validate({"id": "acme", "name": "Acme", "renewal_date": "2026-09-01", "contacts": [{"email": "kim@acme.example", "role": "champion"}]})
_folders = itertools.count()


def program(tmp_path: Path, text: str, version: str) -> Program:
    folder = write_folder(tmp_path / f"v{next(_folders)}", {"workspace.yaml": WORKSPACE, "p.yaml": text})
    project = load_project(folder)
    project.raise_for_problems()
    return Program(project.playbooks["p"].playbook, project.workspace, version)


def started(old: Program, now: datetime = T0) -> RunState:
    state, _ = machine.start(old, ACCOUNT, run_id="r1", event=EventIn(type="manual"), now=now)
    return state


def at(state: RunState, old: Program, when: datetime, message: machine.Input | None = None) -> None:
    machine.step(old, state, ACCOUNT, when, message or machine.Tick())


def moved(old: Program, new: Program, state: RunState, now: datetime) -> tuple[migrate.Move, RunState]:
    move, after, out = migrate.apply(old, new, state, ACCOUNT, now)
    assert after is not None, move.reason
    assert [r.action for r in out.records] == ["migrated"]
    assert out.records[0].detail == {
        "event": "run.migrated", "from_version": old.version, "to_version": new.version, "from_step": move.from_step, "to_step": move.to_step,
    }
    return move, after


WAIT = """\
playbook: p
trigger: manual
steps:
  - set: {greeted: "true"}
  - wait: {wait}
    id: pause
  - set: {done: "true"}
    id: after
"""


def test_migrate_engine_mid_wait_keeps_the_time_spent_and_follows_the_new_duration(tmp_path: Path) -> None:
    v1 = program(tmp_path, WAIT.replace("{wait}", "10d"), "v1")
    now = T0 + timedelta(days=3)
    for duration, wakes in [("10d", T0 + timedelta(days=10)), ("5d", T0 + timedelta(days=5)), ("2d", T0 + timedelta(days=2))]:
        v2 = program(tmp_path, WAIT.replace("{wait}", duration), f"v2-{duration}")
        state = started(v1)
        at(state, v1, now)
        move, after = moved(v1, v2, state, now)
        assert (move.from_step, move.to_step, move.moved) == ("pause", "pause", True)
        assert after.version == f"v2-{duration}" and after.vars == {"greeted": True}
        assert machine.next_wake(after) == wakes
        assert state.version == "v1"  # the old state is untouched: a dry run changes nothing
    # A wait whose new duration has passed wakes at once.
    at(after, v2, now)
    assert after.vars.get("done") is True and after.ended


def test_migrate_engine_a_removed_step_stays_with_the_reason_and_a_kind_change_too(tmp_path: Path) -> None:
    v1 = program(tmp_path, WAIT.replace("{wait}", "10d"), "v1")
    gone = program(tmp_path, "playbook: p\ntrigger: manual\nsteps:\n  - set: {done: 'true'}\n    id: after\n", "v2")
    other = program(tmp_path, "playbook: p\ntrigger: manual\nsteps:\n  - wait_for: {event: x, timeout: 3d}\n    id: pause\n", "v3")
    state = started(v1)
    move, after = migrate.plan(v1, gone, state, T0)
    assert after is None and not move.moved and move.reason == "step `pause` is not in version v2"
    move, after = migrate.plan(v1, other, state, T0)
    assert after is None and move.reason == "step `pause` is a `wait_for` step in version v3, not a `wait`"
    assert migrate.plan(v1, v1, state, T0)[0].reason == "already on this version"


def test_migrate_engine_a_step_moved_into_a_branch_continues_there_then_after_the_branch(tmp_path: Path) -> None:
    v1 = program(tmp_path, WAIT.replace("{wait}", "10d"), "v1")
    v2 = program(
        tmp_path,
        "playbook: p\ntrigger: manual\nsteps:\n  - if: 'true'\n    then:\n      - set: {skipped: 'true'}\n      - wait: 4d\n        id: pause\n"
        "      - set: {inside: 'true'}\n  - set: {done: 'true'}\n    id: after\n",
        "v2",
    )
    state = started(v1)
    _, after = moved(v1, v2, state, T0 + timedelta(days=1))
    main = after.threads[0]
    assert [(f.path, f.index, f.phase) for f in main.frames] == [(["steps"], 0, "inside"), (["steps", 0, "then"], 1, "wait")]
    at(after, v2, T0 + timedelta(days=4))
    assert after.ended and after.vars == {"greeted": True, "inside": True, "done": True}  # the step before it in the branch did not run


REPEAT = """\
playbook: p
trigger: manual
steps:
  - repeat:
      every: {every}
      times: {times}
      steps: [{set: {n: "(run.vars.n or 0) + 1"}, id: count}]
    id: rounds
"""


def test_migrate_engine_a_repeat_finishes_its_round_and_follows_the_new_every_and_times(tmp_path: Path) -> None:
    v1 = program(tmp_path, REPEAT.replace("{every}", "7d").replace("{times}", "5"), "v1")
    v2 = program(tmp_path, REPEAT.replace("{every}", "2d").replace("{times}", "3"), "v2")
    state = started(v1)
    at(state, v1, T0 + timedelta(days=7))  # round 2 ran
    assert state.vars["n"] == 2
    _, after = moved(v1, v2, state, T0 + timedelta(days=8))
    assert machine.next_wake(after) == T0 + timedelta(days=9)  # round 2 started on day 7, every 2d now
    at(after, v2, T0 + timedelta(days=9))
    assert after.vars["n"] == 3 and after.ended  # times: 3


WAIT_FOR = """\
playbook: p
trigger: manual
steps:
  - wait_for: {event: [{types}], timeout: {timeout}, on_timeout: [{set: {late: "true"}}]}
    id: training
  - set: {trained: "event.type"}
"""


def test_migrate_engine_mid_wait_for_keeps_the_events_seen_and_the_time_spent(tmp_path: Path) -> None:
    v1 = program(tmp_path, WAIT_FOR.replace("{types}", "training.done").replace("{timeout}", "10d"), "v1")
    v2 = program(tmp_path, WAIT_FOR.replace("{types}", "training.done, webinar.attended").replace("{timeout}", "4d"), "v2")
    state = started(v1)
    at(state, v1, T0 + timedelta(days=1), EventIn(type="webinar.attended", at=T0 + timedelta(days=1)))
    _, after = moved(v1, v2, state, T0 + timedelta(days=2))
    assert [e.type for e in after.seen] == ["webinar.attended"]
    assert machine.next_wake(after) == T0 + timedelta(days=4)
    at(after, v2, T0 + timedelta(days=3), EventIn(type="webinar.attended", at=T0 + timedelta(days=3)))
    assert after.ended and after.vars == {"trained": "webinar.attended"}  # the new version listens to it


def test_migrate_engine_wait_until_is_evaluated_again(tmp_path: Path) -> None:
    text = "playbook: p\ntrigger: manual\nsteps:\n  - wait_until: {date: account.renewal_date, offset: {offset}}\n    id: renewal\n  - set: {x: '1'}\n"
    v1 = program(tmp_path, text.replace("{offset}", "-30d"), "v1")
    v2 = program(tmp_path, text.replace("{offset}", "-60d"), "v2")
    state = started(v1)
    assert machine.next_wake(state) == datetime(2026, 8, 2, tzinfo=UTC)
    _, after = moved(v1, v2, state, T0 + timedelta(days=1))
    at(after, v2, T0 + timedelta(days=1))
    assert machine.next_wake(after) == datetime(2026, 7, 3, tzinfo=UTC)


CARD = """\
playbook: p
trigger: manual
scorecard:
  target: {score: 80, by_day: 60}
  milestones: [{milestones}]
  checkpoints: [{day: 20, below: 50, steps: [{set: {behind: "true"}, id: behind}]}]
steps:
  - wait: 90d
    id: long
"""


def test_migrate_engine_mid_report_card_keeps_the_milestones_the_new_version_has(tmp_path: Path) -> None:
    v1 = program(tmp_path, CARD.replace("{milestones}", "{id: sso, weight: 1, event: sso.done}, {id: docs, weight: 1, event: docs.done}"), "v1")
    v2 = program(tmp_path, CARD.replace("{milestones}", "{id: sso, weight: 1, event: sso.done}, {id: api, weight: 3, event: api.done}"), "v2")
    state = started(v1)
    at(state, v1, T0 + timedelta(days=2), EventIn(type="sso.done", at=T0 + timedelta(days=2)))
    at(state, v1, T0 + timedelta(days=3), EventIn(type="docs.done", at=T0 + timedelta(days=3)))
    assert state.scorecard is not None and state.scorecard["score"] == 100
    _, after = moved(v1, v2, state, T0 + timedelta(days=5))
    card = after.scorecard
    assert card is not None
    assert card["milestones"] == {"sso": {"done": True, "day": 2}, "api": {"done": False, "day": None}}
    assert card["score"] == 25  # weights of the new version
    at(after, v2, T0 + timedelta(days=20))
    assert after.vars == {"behind": True}  # the day-20 checkpoint of the new version still runs


def test_migrate_engine_a_paused_run_moves_and_stays_paused(tmp_path: Path) -> None:
    v1 = program(tmp_path, WAIT.replace("{wait}", "10d"), "v1")
    v2 = program(tmp_path, WAIT.replace("{wait}", "3d"), "v2")
    state = started(v1)
    at(state, v1, T0 + timedelta(days=1), machine.Pause(reason="by Dana"))
    move, after = moved(v1, v2, state, T0 + timedelta(days=1))
    assert move.status == "paused" and after.status == "paused" and after.paused_reason == "by Dana"
    at(after, v2, T0 + timedelta(days=4))
    assert after.status == "paused" and "done" not in after.vars  # held before the next step
    at(after, v2, T0 + timedelta(days=4), machine.Resume())
    assert after.ended and after.vars.get("done") is True
