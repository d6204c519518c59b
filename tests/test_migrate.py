"""`touchpoint migrate` and `POST /playbooks/{id}/migrate` on a real server (contract section 13).

Runs wait in their account workflows on the time-skipping server; a second version is deployed;
the migration asks each account workflow to move its runs, and the store, the run's timeline,
the account's event log and what the run does next show where it went.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import Stack, eventually, invoke_cli, write_folder
from tests.test_events import api_client
from touchpoint.deploy import deploy_project
from touchpoint.deployed import REFRESH_SECONDS
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn
from touchpoint.dsl.validate import load_project
from touchpoint.ingest import put_account, start_run
from touchpoint.migration import migrate
from touchpoint.store import repo

WORKSPACE = "timezone: UTC\nsender: {email: cs@example.com}\n"
V1 = """\
playbook: onboard
trigger: manual
steps:
  - note: {text: welcome}
    id: welcome
  - wait: 10d
    id: settle
  - note: {text: "check in"}
    id: check_in
"""
V2 = V1.replace("wait: 10d", "wait: 3d").replace('  - note: {text: "check in"}', '  - note: {text: "new tip"}\n    id: tip\n  - note: {text: "check in"}')
V3 = "playbook: onboard\ntrigger: manual\nsteps:\n  - note: {text: welcome}\n    id: welcome\n  - note: {text: bye}\n    id: bye\n"


@pytest.fixture
async def stack(own_stack: Stack) -> Stack:
    """A time-skipping server of the test's own (the migrated run's wait is skipped)."""
    return own_stack


def deploy(stack: Stack, text: str) -> str:
    folder = write_folder(stack.root / f"playbooks-{abs(hash(text))}", {"workspace.yaml": WORKSPACE, "onboard.yaml": text})
    project = load_project(folder)
    project.raise_for_problems()
    with stack.deps.sessions.begin() as s:
        report = deploy_project(s, project)
    return report.versions["onboard"]


async def enrolled(stack: Stack, *accounts: str) -> None:
    for account_id in accounts:
        doc = AccountDoc.model_validate({"id": account_id, "name": account_id.title(), "contacts": [{"email": f"kim@{account_id}.example"}]})
        await put_account(stack.client, stack.task_queue, stack.deps.sessions, doc)
        await start_run(stack.client, stack.task_queue, account_id, "onboard")

    def waiting(s: Any) -> bool:
        runs = repo.list_runs(s, playbook_id="onboard")
        return len(runs) == len(accounts) and all(r.step == "settle" for r in runs)

    await eventually(stack, waiting)


def runs(stack: Stack) -> dict[str, Any]:
    with stack.deps.sessions() as s:
        return {r.account_id: (r.version, r.step, r.status) for r in repo.list_runs(s, playbook_id="onboard")}


async def test_migrate_moves_waiting_runs_and_a_dry_run_says_exactly_that(stack: Stack) -> None:
    v1 = deploy(stack, V1)
    await enrolled(stack, "acme", "globex")
    v2 = deploy(stack, V2)
    dry = await migrate(stack.client, stack.deps.sessions, "onboard", dry_run=True)
    assert [(m.account_id, m.from_version, m.from_step, m.to_step, m.moved) for m in dry.moves] == [
        ("acme", v1, "settle", "settle", True), ("globex", v1, "settle", "settle", True),
    ]
    assert runs(stack) == {"acme": (v1, "settle", "running"), "globex": (v1, "settle", "running")}  # nothing changed
    report = await migrate(stack.client, stack.deps.sessions, "onboard", account_id="acme")
    assert [m.model_dump() for m in report.moves] == [m.model_dump() for m in dry.moves if m.account_id == "acme"]
    await eventually(stack, lambda s: repo.get_run(s, report.moves[0].run_id).version == v2)
    assert runs(stack)["globex"] == (v1, "settle", "running")  # --account: only acme moved
    with stack.deps.sessions() as s:
        run_id = report.moves[0].run_id
        timeline = [(x.step, x.action, x.detail.get("to_version")) for x in repo.run_steps(s, run_id)]
        assert ("settle", "migrated", v2) in timeline
        events = [e for e in repo.list_events(s, account_id="acme", type="run.migrated")]
        assert [e.data for e in events] == [{"playbook": "onboard", "from_version": v1, "to_version": v2, "step": "settle"}]
    # A second migrate finds nothing to move; the run waits 3 days now, not 10, then takes the new step.
    assert (await migrate(stack.client, stack.deps.sessions, "onboard", account_id="acme")).moves == []
    await stack.env.sleep(timedelta(days=3, hours=1))

    def notes(s: Any) -> list[str]:
        return [x.detail.get("text") for x in repo.run_steps(s, run_id) if x.action == "note"]

    await eventually(stack, lambda s: notes(s) == ["welcome", "new tip", "check in"])
    assert runs(stack)["globex"] == (v1, "settle", "running")


async def test_migrate_to_an_older_version_and_a_removed_step_stays_listed(stack: Stack) -> None:
    v1 = deploy(stack, V1)
    await enrolled(stack, "acme")
    v2 = deploy(stack, V2)
    moved = await migrate(stack.client, stack.deps.sessions, "onboard")
    assert [m.to_version for m in moved.moves if m.moved] == [v2]
    await eventually(stack, lambda s: repo.list_runs(s, playbook_id="onboard")[0].version == v2)
    back = await migrate(stack.client, stack.deps.sessions, "onboard", to=v1)
    assert [(m.from_version, m.to_version, m.moved) for m in back.moves] == [(v2, v1, True)]
    await eventually(stack, lambda s: repo.list_runs(s, playbook_id="onboard")[0].version == v1)
    v3 = deploy(stack, V3)
    stays = await migrate(stack.client, stack.deps.sessions, "onboard")
    assert [(m.moved, m.reason) for m in stays.moves] == [(False, f"step `settle` is not in version {v3}")]
    assert runs(stack) == {"acme": (v1, "settle", "running")}


async def test_migrate_api_and_cli(stack: Stack) -> None:
    v1 = deploy(stack, V1)
    await enrolled(stack, "acme")
    v2 = deploy(stack, V2)
    async with api_client(stack) as api:
        missing = await api.post("/playbooks/nope/migrate", json={})
        assert missing.status_code == 404 and "not deployed" in missing.json()["detail"]
        unknown = await api.post("/playbooks/onboard/migrate", json={"to": "v999"})
        assert unknown.status_code == 404 and v1 in unknown.json()["detail"] and v2 in unknown.json()["detail"]
        bad = await api.post("/playbooks/onboard/migrate", json={"dry_run": "maybe"})
        assert bad.status_code == 422
        dry = await api.post("/playbooks/onboard/migrate", json={"dry_run": True})
        assert dry.status_code == 200
        body = dry.json()
        assert (body["to_version"], body["moved"], body["stayed"], body["dry_run"]) == (v2, 1, 0, True)
        assert body["runs"][0]["from_step"] == "settle" and body["runs"][0]["account_id"] == "acme"
    assert runs(stack) == {"acme": (v1, "settle", "running")}
    # The CLI, against the same server and store.
    target = stack.client.service_client.config.target_host
    env = {"TOUCHPOINT_TEMPORAL_ADDRESS": target, "TOUCHPOINT_DATABASE_URL": stack.settings.db_url, "TOUCHPOINT_TASK_QUEUE": stack.task_queue}
    result = await asyncio.to_thread(invoke_cli, ["migrate", "onboard", "--json"], env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["moved"], report["runs"][0]["to_version"]) == (1, v2)
    await eventually(stack, lambda s: repo.list_runs(s, playbook_id="onboard")[0].version == v2)
    result = await asyncio.to_thread(invoke_cli, ["migrate", "onboard", "--to", "nope"], env)
    assert result.exit_code == 2 and "has no version 'nope'" in result.output


CARD = """\
playbook: card
trigger: manual
scorecard:
  target: {score: 80, by_day: 60}
  milestones: [MILESTONES]
steps:
  - wait: 90d
    id: long
"""
ROUNDS = "playbook: rounds\ntrigger: manual\nsteps:\n  - repeat: {every: EVERY, times: 5, steps: [{set: {n: \"(run.vars.n or 0) + 1\"}, id: count}]}\n    id: rounds\n"
HELD = "playbook: held\ntrigger: manual\nsteps:\n  - wait: WAIT\n    id: nap\n  - set: {woke: 'true'}\n"
LISTEN = "playbook: listen\ntrigger: manual\nsteps:\n  - wait_for: {event: [TYPES], timeout: 30d, seen: true}\n    id: listen\n  - set: {heard: event.type}\n"


async def test_migrate_in_the_account_workflow_keeps_milestones_rounds_pauses_and_seen_events(stack: Stack) -> None:
    """Four runs of one account, each mid-something, moved to their second versions at once."""
    def folder(v2: bool) -> dict[str, str]:
        return {
            "workspace.yaml": WORKSPACE,
            "card.yaml": CARD.replace("MILESTONES", "{id: sso, weight: 1, event: sso.done}, " + ("{id: api, weight: 3, event: api.done}" if v2 else "{id: docs, weight: 1, event: docs.done}")),
            "rounds.yaml": ROUNDS.replace("EVERY", "2d" if v2 else "7d"),
            "held.yaml": HELD.replace("WAIT", "1d" if v2 else "20d"),
            "listen.yaml": LISTEN.replace("TYPES", "training.done, webinar.attended" if v2 else "training.done"),
        }

    def publish(v2: bool) -> dict[str, str]:
        project = load_project(write_folder(stack.root / f"multi-{v2}", folder(v2)))
        project.raise_for_problems()
        with stack.deps.sessions.begin() as s:
            return deploy_project(s, project).versions

    publish(False)
    doc = AccountDoc.model_validate({"id": "acme", "name": "Acme", "contacts": [{"email": "kim@acme.example"}]})
    await put_account(stack.client, stack.task_queue, stack.deps.sessions, doc)
    for playbook in ("card", "rounds", "held", "listen"):
        await start_run(stack.client, stack.task_queue, "acme", playbook)
    await eventually(stack, lambda s: len([r for r in repo.list_runs(s, account_id="acme") if r.step]) == 4)
    from touchpoint.ingest import control_run, send_event
    from workflows.messages import RunControl

    for kind in ("sso.done", "webinar.attended"):
        await send_event(stack.client, stack.task_queue, stack.deps.sessions, "acme", EventIn(type=kind))
    await eventually(stack, lambda s: (r := repo.list_runs(s, playbook_id="card")[0]).scorecard and r.scorecard["milestones"]["sso"]["done"])
    held = await eventually(stack, lambda s: repo.list_runs(s, playbook_id="held"))
    await control_run(stack.client, "acme", RunControl(action="pause", run_id=held[0].id))
    await eventually(stack, lambda s: repo.list_runs(s, playbook_id="held")[0].status == "paused")
    versions = publish(True)
    for playbook in ("card", "rounds", "held", "listen"):
        report = await migrate(stack.client, stack.deps.sessions, playbook)
        assert [m.moved for m in report.moves] == [True], report.moves
    await eventually(stack, lambda s: all(r.version == versions[r.playbook_id] for r in repo.list_runs(s, account_id="acme")))
    with stack.deps.sessions() as s:
        card = repo.list_runs(s, playbook_id="card")[0]
        assert card.scorecard["milestones"] == {"sso": {"done": True, "day": 0}, "api": {"done": False, "day": None}}
        assert card.scorecard["score"] == 25
        assert repo.list_runs(s, playbook_id="held")[0].status == "paused"
    # The new versions take over: rounds every 2 days, the paused run holds past its new 1-day
    # wait, and the wait_for hears the type only version 2 listens to (an event accepted after
    # this process has learned of the deploy: webinar.attended was quiet under version 1).
    await asyncio.sleep(REFRESH_SECONDS + 0.2)
    await send_event(stack.client, stack.task_queue, stack.deps.sessions, "acme", EventIn(type="webinar.attended"))
    listen = await eventually(stack, lambda s: (r := repo.list_runs(s, playbook_id="listen")[0]).status == "ended" and r)
    assert listen.vars == {"heard": "webinar.attended"}
    await stack.env.sleep(timedelta(days=3))
    rounds = await eventually(stack, lambda s: (r := repo.list_runs(s, playbook_id="rounds")[0]).vars.get("n", 0) >= 2 and r)
    assert rounds.vars["n"] == 2  # round 2 came 2 days after round 1, not 7
    with stack.deps.sessions() as s:
        assert repo.list_runs(s, playbook_id="held")[0].status == "paused"
