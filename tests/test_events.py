"""Events in: the API, the account workflow, triggers, reenroll and deploys, on a real server."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.service import RPCError

from tests.conftest import Stack, eventually, write_folder
from touchpoint.api.app import create_app
from touchpoint.config import load_settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.runtime import RunStatus
from touchpoint.dsl.validate import load_project
from touchpoint.store import repo

WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
segments:
  enterprise: "account.seats.licensed >= 1000"
  scale: "true"
"""
TOKEN = "test-token"


def account(account_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": account_id,
        "name": f"Account {account_id}",
        "timezone": "UTC",
        "seats": {"licensed": 300, "active": 120},
        "csm": {"name": "Dana", "email": "dana@example.com"},
        "contacts": [{"email": f"kim@{account_id}.example", "name": "Kim", "role": "champion"}],
        **extra,
    }


@pytest.fixture
async def stack(own_stack: Stack) -> Stack:
    """Each test here gets a time-skipping server of its own: account workflows run local
    activities, and one still in flight when a test ends would block time skipping for the
    tests after it on a shared server."""
    return own_stack


@contextlib.asynccontextmanager
async def api_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """Our FastAPI app, called in-process over ASGI, bound to the test's server and store."""
    settings = load_settings(
        home=stack.settings.home, database_url=stack.settings.db_url, task_queue=stack.task_queue, api_token=TOKEN
    )
    app = create_app(settings, stack.client, stack.deps.sessions)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://touchpoint", headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(stack) as client:
        yield client


def deploy(stack: Stack, folder: Path, playbooks: dict[str, str]) -> None:
    write_folder(folder, {"workspace.yaml": WORKSPACE, **playbooks, "templates/hi.subject.j2": "Hi {{ account.name }}", "templates/hi.html.j2": "<p>Hi</p>"})
    project = load_project(folder)
    project.raise_for_problems()
    with stack.deps.sessions.begin() as s:
        deploy_project(s, project)



async def ended(stack: Stack, run_id: str, skip: timedelta = timedelta(0)) -> Any:
    """The run's projection once it has ended (skipping ``skip`` of server time first)."""
    if skip:
        await stack.env.sleep(skip)
    return await eventually(stack, lambda s: (r := repo.get_run(s, run_id)) is not None and r.status == "ended" and r)


def notes(stack: Stack, run_id: str) -> list[str]:
    with stack.deps.sessions() as s:
        return [n.text for n in repo.list_notes(s, run_id=run_id)]


def uid() -> str:
    return f"a{uuid.uuid4().hex[:10]}"


NOTE_ON_EVENT = """\
playbook: {name}
trigger: {{event: {event}}}
reenroll: {reenroll}
steps:
  - note: {{text: "hello {{{{ account.name }}}}"}}
  - wait: {wait}
"""


async def test_events_api_requires_the_bearer_token(stack: Stack, api: httpx.AsyncClient) -> None:
    response = await api.post("/events", json={"type": "x.y", "account_id": uid()}, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert "TOUCHPOINT_API_TOKEN" in response.json()["detail"]
    response = await api.get("/openapi.json")
    assert response.status_code == 200 and "/events" in response.json()["paths"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "Not A Type", "account_id": "x"}, "type"),
        ({"type": "a.b"}, "account_id"),
        ({"type": "a.b", "account_id": "x", "colour": "red"}, "colour"),
        ({"type": "a.b", "account_id": "x", "at": "yesterday"}, "at"),
        ({"type": "a.b", "account_id": "x", "data": [1, 2]}, "data"),
    ],
)
async def test_events_api_rejects_malformed_events_and_applies_nothing(stack: Stack, api: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    body = {**body, "account_id": uid()} if "account_id" in body else body
    response = await api.post("/events", json=body)
    assert response.status_code == 422
    assert any(field in [str(p) for p in error["loc"]] for error in response.json()["errors"]), response.json()
    if "account_id" in body:
        with pytest.raises(RPCError):
            await stack.client.get_workflow_handle(f"account/{body['account_id']}").describe()


async def test_events_account_upsert_rejects_bad_documents(stack: Stack, api: httpx.AsyncClient) -> None:
    acct = uid()
    response = await api.put(f"/accounts/{acct}", json={**account(acct), "id": "other"})
    assert response.status_code == 409 and "differs" in str(response.json()["detail"])
    response = await api.put(f"/accounts/{acct}", json={**account(acct), "contacts": [{"email": "not-an-address"}]})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "contacts", 0, "email"]
    assert (await api.get(f"/accounts/{acct}")).status_code == 404


async def test_events_upserts_emit_created_updated_and_seats_changed(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    deploy(stack, folder, {})
    acct = uid()
    assert (await api.put(f"/accounts/{acct}", json=account(acct))).status_code == 202
    assert (await api.put(f"/accounts/{acct}", json=account(acct, seats={"licensed": 250, "active": 120}))).status_code == 202

    def types(s: Any) -> list[str] | None:
        found = [e.type for e in repo.list_events(s, account_id=acct)]
        return found if "seats.changed" in found else None

    found = await eventually(stack, types)
    assert [t for t in found if t != "account.upserted"] == ["account.created", "account.updated", "seats.changed"]
    with stack.deps.sessions() as s:
        (seats,) = repo.list_events(s, account_id=acct, type="seats.changed")
        assert seats.data == {"licensed": 250, "previous_licensed": 300, "active": 120, "previous_active": 120, "delta": -50, "delta_pct": -16.7}
    stored = (await api.get(f"/accounts/{acct}")).json()
    assert stored["segment"] == "scale" and stored["seats"]["licensed"] == 250


async def test_events_duplicate_ids_and_concurrent_events_start_one_run(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    deploy(stack, folder, {"p.yaml": NOTE_ON_EVENT.format(name="p", event="webinar.attended", reenroll="always", wait="30d")})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    twice = [await api.post("/events", json={"type": "webinar.attended", "account_id": acct, "id": "evt-1"}) for _ in range(2)]
    assert [r.status_code for r in twice] == [202, 202]
    responses = await asyncio.gather(*(api.post("/events", json={"type": "webinar.attended", "account_id": acct}) for _ in range(20)))
    assert {r.status_code for r in responses} == {202}
    await eventually(stack, lambda s: len(repo.list_events(s, account_id=acct, type="webinar.attended")) == 21)
    runs = await eventually(stack, lambda s: repo.list_runs(s, account_id=acct))
    await asyncio.sleep(0.5)
    with stack.deps.sessions() as s:
        assert len(repo.list_runs(s, account_id=acct)) == 1 == len(runs)
        assert len(repo.list_notes(s, account_id=acct)) == 1


@pytest.mark.parametrize(("reenroll", "expected"), [("never", 1), ("always", 3), ("after 3d", 2)])
async def test_events_reenroll(stack: Stack, folder: Path, api: httpx.AsyncClient, reenroll: str, expected: int) -> None:
    deploy(stack, folder, {"p.yaml": NOTE_ON_EVENT.format(name="p", event="health.changed", reenroll=reenroll, wait="1d")})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    # Three triggering events, 2 days apart; each run lasts one day.
    for index in range(3):
        await api.post("/events", json={"type": "health.changed", "account_id": acct, "id": f"h{index}"})
        await eventually(stack, lambda s, n=index: len(repo.list_events(s, account_id=acct, type="health.changed")) == n + 1)
        await asyncio.sleep(0.3)
        await stack.env.sleep(timedelta(days=2))
        # Every run started so far has ended (each lasts one day) before the next event.
        await eventually(stack, lambda s: all(r.status == "ended" for r in repo.list_runs(s, account_id=acct)))
    await asyncio.sleep(0.5)
    with stack.deps.sessions() as s:
        assert len(repo.list_runs(s, account_id=acct)) == expected


async def test_events_reach_a_run_parked_in_wait_for(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    deploy(stack, folder, {"p.yaml": "playbook: p\ntrigger: {event: account.created}\nsteps:\n  - wait_for: {event: setup.sso_configured, timeout: 30d}\n    id: sso\n  - note: {text: done}\n"})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    run = (await eventually(stack, lambda s: repo.list_runs(s, account_id=acct)))[0]
    await api.post("/events", json={"type": "setup.sso_configured", "account_id": acct})
    row = await ended(stack, run.id)
    assert row.outcome == "completed" and notes(stack, run.id) == ["done"]
    assert (row.ended_at - row.started_at) < timedelta(days=1)  # the event ended the wait, not the timeout


async def test_events_exit_when_fires_on_an_account_update(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    deploy(stack, folder, {"p.yaml": "playbook: p\ntrigger: {event: account.created}\nexit_when: \"account.properties.churned\"\nsteps:\n  - wait: 60d\n  - note: {text: never}\n"})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    run = (await eventually(stack, lambda s: repo.list_runs(s, account_id=acct)))[0]
    await api.put(f"/accounts/{acct}", json=account(acct, properties={"churned": True}))
    row = await ended(stack, run.id)
    assert row.outcome == "exited" and notes(stack, run.id) == []
    listed = (await api.get("/runs", params={"account": acct})).json()
    assert [(r["playbook"], r["status"], r["outcome"]) for r in listed] == [("p", "ended", "exited")]
    # An ended run keeps its timeline.
    detail = (await api.get(f"/runs/{run.id}")).json()
    assert (detail["status"], detail["outcome"], detail["waiting"], detail["waiting_text"]) == ("ended", "exited", [], None)
    assert [line["action"] for line in detail["history"]][:1] == ["wait"]
    missing = await api.get("/runs/no-such-run")
    assert missing.status_code == 404 and "no run" in missing.json()["detail"]


async def test_events_manual_start_and_deploy_while_runs_are_in_flight(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    weekly = 'playbook: weekly\ntrigger: {schedule: "0 8 * * mon"}\nsteps:\n  - set: {x: "1"}\n'
    deploy(stack, folder, {"m.yaml": "playbook: m\ntrigger: manual\nsteps:\n  - wait: 1d\n  - note: {text: v1}\n", "weekly.yaml": weekly})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    assert (await api.post("/runs", json={"playbook": "nope", "account_id": acct})).status_code == 404
    scheduled = await api.post("/runs", json={"playbook": "weekly", "account_id": acct})
    assert scheduled.status_code == 409 and "schedule playbook" in scheduled.json()["detail"]
    started = await api.post("/runs", json={"playbook": "m", "account_id": acct})
    assert started.status_code == 201
    run_id = started.json()["run_id"]
    # The answer comes from the account's workflow: the run is in flight, so a second start is a 409 naming it.
    again = await api.post("/runs", json={"playbook": "m", "account_id": acct})
    assert again.status_code == 409 and (again.json()["run_id"], again.json()["status"]) == (run_id, "running")
    assert "in flight" in again.json()["detail"]
    unknown = await api.post("/runs", json={"playbook": "m", "account_id": uid()})
    assert unknown.status_code == 404 and "no account" in unknown.json()["detail"]
    first = (await eventually(stack, lambda s: (rows := repo.list_runs(s, account_id=acct)) and rows[0].step and rows))[0]
    assert first.id == run_id
    (listed,) = (await api.get("/runs", params={"account": acct, "step": first.step})).json()
    assert listed["id"] == run_id and listed["waiting_text"].startswith("waiting until ") and listed["waiting_text"].endswith(" UTC")
    write_folder(folder, {"m.yaml": "playbook: m\ntrigger: manual\nsteps:\n  - note: {text: v2}\n"})
    project = load_project(folder)
    with stack.deps.sessions.begin() as s:
        report = deploy_project(s, project)
    assert report.changed == ["m"] and report.in_flight_on_older == {"m": 1}
    assert any("1 run in flight" in line for line in report.lines())
    row = await ended(stack, first.id, timedelta(days=2))
    assert row.outcome == "completed" and notes(stack, first.id) == ["v1"]
    await asyncio.sleep(0.3)
    second = await api.post("/runs", json={"playbook": "m", "account_id": acct})
    assert second.status_code == 201
    runs = await eventually(stack, lambda s: [r for r in repo.list_runs(s, account_id=acct) if r.id != first.id])
    assert runs[0].version == project.playbooks["m"].version and runs[0].id == second.json()["run_id"]


async def test_events_a_retried_task_after_its_store_write_still_enrolls(own_time_env: Any, store_settings: Any, folder: Path) -> None:
    """A workflow task can time out after its local activity committed (seen under load in the
    enrollment bench: one account of 2,000 never started its run). The retried task then finds
    the event and the account already in the store, written by its own first attempt. Here the
    store is put in exactly that state before any worker runs the task."""
    from activities.deps import Deps
    from touchpoint.dsl.accounts import AccountDoc
    from touchpoint.dsl.runtime import EventIn
    from worker import build_worker
    from workflows import names
    from workflows.messages import AccountState, Envelope

    deps = Deps.from_settings(store_settings)
    client = own_time_env.client
    queue = f"retry-{uid()}"
    acct = uid()
    doc = AccountDoc.model_validate(account(acct, segment="scale"))
    try:
        project_stack = Stack(client, own_time_env, deps, store_settings, queue, folder.parent)
        deploy(project_stack, folder, {"hello.yaml": "playbook: hello\ntrigger: {event: account.created}\nsteps:\n  - task: {title: 'Hi {{ account.name }}'}\n"})
        event = EventIn(id=f"evt-{acct}", type="account.upserted", at=datetime.now(UTC), account_id=acct)
        handle = await client.start_workflow(
            names.ACCOUNT, AccountState(account_id=acct), id=f"account/{acct}", task_queue=queue,
            start_signal="ingest", start_signal_args=[Envelope(event=event, account=doc)],
        )
        # What the first attempt's store step committed before its task timed out.
        token = f"{handle.result_run_id}:1"
        with deps.sessions.begin() as s:
            stored = doc.model_dump(mode="json")
            repo.upsert_account(s, stored, stored.pop("contacts"))
            repo.record_event(s, event.id or "", acct, event.type, event.at or datetime.now(UTC), {}, applied_by=token)
            repo.record_event(s, f"{event.id}:account.created", acct, "account.created", event.at or datetime.now(UTC), {"changed": ["name"]})
        async with build_worker(client, deps, task_queue=queue, strict_imports=True, fail_fast=True):
            tasks = await eventually(project_stack, lambda s: repo.list_tasks(s, account_id=acct))
            assert [t.title for t in tasks] == [f"Hi Account {acct}"]
            # The retry planned the run again from the events its first attempt derived.
            with deps.sessions() as s:
                assert [(r.playbook_id, r.workflow_id) for r in repo.list_runs(s, account_id=acct)] == [("hello", f"account/{acct}")]
            await handle.terminate("test finished")
    finally:
        await deps.close()


async def test_events_apply_event_tells_its_own_retry_from_a_duplicate(store_settings: Any) -> None:
    from activities.deps import Deps
    from activities.store import AccountActivities
    from touchpoint.dsl.accounts import AccountDoc
    from touchpoint.dsl.runtime import EventIn
    from workflows.messages import StoreStep

    deps = Deps.from_settings(store_settings)
    try:
        apply = AccountActivities(deps).apply_event
        doc = AccountDoc.model_validate(account("acme"))
        event = EventIn(id="e1", type="account.upserted", at=datetime.now(UTC), account_id="acme")
        derived = [EventIn(id="e1:account.created", type="account.created", at=event.at, account_id="acme", data={"changed": ["name"]})]
        first = await apply(StoreStep(account=doc, event=event, derived=derived, token="run-a:1"))
        assert first.accepted and first.earlier is None
        retry = await apply(StoreStep(account=doc, event=event, derived=[], token="run-a:1"))
        assert retry.accepted and [e.type for e in retry.earlier or []] == ["account.created"]
        duplicate = await apply(StoreStep(account=doc, event=event, derived=[], token="run-a:7"))
        assert not duplicate.accepted
    finally:
        await deps.close()


async def test_events_apply_first_plans_the_same_runs_when_retried(store_settings: Any, folder: Path) -> None:
    """A fresh workflow's first store step, run twice with the same token (a retried task),
    starts the same run (its id comes from the token) and writes one row; with another token the
    event is an old duplicate and nothing is applied."""
    from activities.deps import Deps
    from activities.store import AccountActivities
    from touchpoint.deploy import deploy_project
    from touchpoint.dsl.accounts import AccountDoc
    from touchpoint.dsl.runtime import EventIn
    from workflows.messages import Envelope, FirstStep

    write_folder(folder, {"hello.yaml": "playbook: hello\ntrigger: {event: account.created}\nsteps:\n  - wait: 1d\n"})
    deps = Deps.from_settings(store_settings)
    try:
        with deps.sessions.begin() as s:
            deploy_project(s, load_project(folder))
        apply = AccountActivities(deps).apply_first
        now = datetime.now(UTC)
        event = EventIn(id="e1", type="account.upserted", at=now, account_id="acme")
        envelope = Envelope(event=event, account=AccountDoc.model_validate(account("acme")))

        def step(token: str) -> FirstStep:
            return FirstStep(envelope=envelope.model_copy(deep=True), account_id="acme", workflow_id="account/acme", now=now, token=token)

        first = await apply(step("run-a:1"))
        assert first.previous is None and [[s.event.type for s in starts] for starts in first.plan] == [["account.created"]]
        ((start,),) = first.plan
        assert start.playbook == "hello" and first.store.started == {start.run_id: load_project(folder).playbooks["hello"].version}
        retry = await apply(step("run-a:1"))
        assert retry.store.accepted and [[s.event.type for s in starts] for starts in retry.plan] == [["account.created"]]
        assert [[s.run_id for s in starts] for starts in retry.plan] == [[start.run_id]] and retry.store.started == first.store.started
        duplicate = await apply(step("run-b:1"))
        assert not duplicate.store.accepted and duplicate.previous is not None and duplicate.previous.id == "acme"
        with deps.sessions() as s:
            assert [r.id for r in repo.list_runs(s, account_id="acme")] == [start.run_id]
    finally:
        await deps.close()


SCORED = """\
playbook: {name}
trigger: {trigger}
scorecard:
  target: {{score: 80, by_day: 90}}
  milestones: [{{id: sso, weight: 1, event: setup.sso_configured}}]
steps:
  - wait: 30d
  - note: {{text: later}}
"""


async def _history_kinds(stack: Stack, workflow_id: str) -> tuple[list[str], set[str]]:
    """The local activities a workflow recorded, and the kinds of the other commands in its history."""
    import json

    history = await stack.client.get_workflow_handle(workflow_id).fetch_history()
    markers, kinds = [], set()
    for event in history.events:
        if event.HasField("marker_recorded_event_attributes") and "data" in event.marker_recorded_event_attributes.details:
            markers.append(json.loads(event.marker_recorded_event_attributes.details["data"].payloads[0].data)["activity_type"])
        kinds.add(event.WhichOneof("attributes") or "")
    return markers, kinds


async def test_events_runs_live_in_the_account_workflow_and_in_the_store(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    """Starting a run starts no workflow: the account's workflow hosts it, and its store steps
    write the run's row before anything else; a run parked in its 30-day wait is listed as
    running at that step, with its scorecard and what it waits for."""
    deploy(stack, folder, {"e.yaml": SCORED.format(name="e", trigger="{event: account.created}"), "m.yaml": SCORED.format(name="m", trigger="manual")})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    assert (await api.post("/runs", json={"playbook": "m", "account_id": acct})).status_code == 201
    runs = await eventually(stack, lambda s: len(rows := repo.list_runs(s, account_id=acct)) == 2 and all(r.step for r in rows) and rows)
    project = load_project(folder)
    for run in runs:
        assert (run.status, run.workflow_id, run.version, run.step) == ("running", f"account/{acct}", project.playbooks[run.playbook_id].version, "steps[0]")
        assert run.scorecard == {"score": 0, "target": 80, "by_day": 90, "met": False, "milestones": {"sso": {"done": False, "day": None}}}
        assert [w["kind"] for w in run.waiting or []] == ["time", "time"]  # the wait, and the card's by_day
    live = await stack.client.get_workflow_handle(f"account/{acct}").query("runs", result_type=list[RunStatus])
    assert sorted(r.playbook for r in live) == ["e", "m"] and all(r.waiting for r in live)
    # Local activities reach the history as markers when their workflow task completes, a
    # moment after they wrote the store: read the history once the manual start's task is in.
    deadline = asyncio.get_running_loop().time() + 20
    while "prepare_starts" not in (history := await _history_kinds(stack, f"account/{acct}"))[0]:
        assert asyncio.get_running_loop().time() < deadline, f"no prepare_starts marker: {history[0]}"
        await asyncio.sleep(0.05)
    markers, kinds = history
    assert set(markers) <= {"apply_first", "load_context", "apply_event", "prepare_starts", "project_runs"}
    assert markers[:1] == ["apply_first"]  # a new account's first upsert: one store step, context read included
    assert not kinds & {"start_child_workflow_execution_initiated_event_attributes", "signal_external_workflow_execution_initiated_event_attributes"}


CARRIED = """\
playbook: carried
trigger: {event: x.happened}
steps:
  - note: {text: "hello {{ account.name }}"}
    id: hello
  - wait: 3d
    id: later
"""


async def test_events_projections_ride_on_the_effect_an_activation_starts(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    """The activation that starts a side effect writes no store step of its own: the effect's
    activity writes where the runs stand first. A run parked in a wait (no effect) takes one."""
    import json

    deploy(stack, folder, {"carried.yaml": CARRIED})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    assert (await api.post("/events", json={"type": "x.happened", "account_id": acct})).status_code == 202
    run = await eventually(stack, lambda s: (rows := repo.list_runs(s, account_id=acct)) and rows[0].step == "later" and rows[0])
    with stack.deps.sessions() as s:
        assert [step.action for step in repo.run_steps(s, run.id)][:1] == ["note"]
    deadline = asyncio.get_running_loop().time() + 20
    while "project_runs" not in (history := await _history_kinds(stack, f"account/{acct}"))[0]:
        assert asyncio.get_running_loop().time() < deadline, f"no project_runs marker: {history[0]}"
        await asyncio.sleep(0.05)
    assert history[0] == ["apply_first", "apply_event", "project_runs"]
    events = (await stack.client.get_workflow_handle(f"account/{acct}").fetch_history()).events
    (note,) = [e.activity_task_scheduled_event_attributes for e in events if e.HasField("activity_task_scheduled_event_attributes")]
    carried = json.loads(note.input.payloads[0].data)["projections"]
    assert [(p["run_id"], p["step"], p["status"]) for p in carried] == [(run.id, "hello", "running")]


SIDE = """\
playbook: {name}
trigger: {{event: {event}}}
steps:
  - note: {{text: "{name} began"}}
  - wait: {wait}
  - note: {{text: "{name} done"}}
"""


async def test_events_runs_side_by_side_are_controlled_and_fail_alone(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    """Two playbooks of one account wait side by side, a third starts while they wait; pausing,
    cancelling or a failure of one run leaves the others as they were."""
    from touchpoint.ingest import control_run
    from workflows.messages import RunControl

    deploy(stack, folder, {
        "a.yaml": SIDE.format(name="a", event="x.happened", wait="3d"),
        "b.yaml": SIDE.format(name="b", event="x.happened", wait="5d"),
        "c.yaml": SIDE.format(name="c", event="y.happened", wait="1d"),
        "f.yaml": "playbook: f\ntrigger: {event: y.happened}\nsteps:\n  - set: {ratio: '1 / 0'}\n    on_error: stop\n    id: broken\n",
    })
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    await api.post("/events", json={"type": "x.happened", "account_id": acct})
    both = await eventually(stack, lambda s: len(rows := [r for r in repo.list_runs(s, account_id=acct) if r.step == "steps[1]"]) == 2 and rows)
    run = {r.playbook_id: r for r in both}
    await control_run(stack.client, acct, RunControl(action="pause", run_id=run["a"].id, reason="on hold"))
    await eventually(stack, lambda s: (r := repo.get_run(s, run["a"].id)) is not None and r.status == "paused")
    await api.post("/events", json={"type": "y.happened", "account_id": acct})
    failed = await eventually(stack, lambda s: [r for r in repo.list_runs(s, account_id=acct, playbook_id="f") if r.status == "ended"])
    assert failed[0].outcome == "failed"
    await control_run(stack.client, acct, RunControl(action="cancel", playbook="b"))
    assert (await ended(stack, run["b"].id)).outcome == "cancelled"
    c = (await eventually(stack, lambda s: repo.list_runs(s, account_id=acct, playbook_id="c")))[0]
    assert (await ended(stack, c.id, timedelta(days=4))).outcome == "completed"
    # `a` sat out its wait paused: it holds before its next step until resumed.
    with stack.deps.sessions() as s:
        held = repo.get_run(s, run["a"].id)
        assert held is not None and (held.status, held.paused_reason) == ("paused", "on hold")
    await control_run(stack.client, acct, RunControl(action="resume", run_id=run["a"].id))
    assert (await ended(stack, run["a"].id)).outcome == "completed"
    assert notes(stack, run["a"].id) == ["a began", "a done"]
    assert notes(stack, run["b"].id) == ["b began"] and notes(stack, c.id) == ["c began", "c done"]
    with stack.deps.sessions() as s:
        assert [(x.step, x.action) for x in repo.run_steps(s, failed[0].id)] == [("broken", "set")]
