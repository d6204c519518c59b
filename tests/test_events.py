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
    assert any(field in [str(p) for p in error["loc"]] for error in response.json()["detail"]), response.json()
    if "account_id" in body:
        with pytest.raises(RPCError):
            await stack.client.get_workflow_handle(f"account/{body['account_id']}").describe()


async def test_events_account_upsert_rejects_bad_documents(stack: Stack, api: httpx.AsyncClient) -> None:
    acct = uid()
    response = await api.put(f"/accounts/{acct}", json={**account(acct), "id": "other"})
    assert response.status_code == 422 and "differs" in str(response.json()["detail"])
    response = await api.put(f"/accounts/{acct}", json={**account(acct), "contacts": [{"email": "not-an-address"}]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["contacts", 0, "email"]
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


async def test_events_manual_start_and_deploy_while_runs_are_in_flight(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    deploy(stack, folder, {"m.yaml": "playbook: m\ntrigger: manual\nsteps:\n  - wait: 1d\n  - note: {text: v1}\n"})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    assert (await api.post("/runs", json={"playbook": "nope", "account_id": acct})).status_code == 422
    assert (await api.post("/runs", json={"playbook": "m", "account_id": acct})).status_code == 202
    first = (await eventually(stack, lambda s: repo.list_runs(s, account_id=acct)))[0]
    write_folder(folder, {"m.yaml": "playbook: m\ntrigger: manual\nsteps:\n  - note: {text: v2}\n"})
    project = load_project(folder)
    with stack.deps.sessions.begin() as s:
        report = deploy_project(s, project)
    assert report.changed == ["m"] and report.in_flight_on_older == {"m": 1}
    assert any("1 run in flight" in line for line in report.lines())
    row = await ended(stack, first.id, timedelta(days=2))
    assert row.outcome == "completed" and notes(stack, first.id) == ["v1"]
    await asyncio.sleep(0.3)
    await api.post("/runs", json={"playbook": "m", "account_id": acct})
    runs = await eventually(stack, lambda s: [r for r in repo.list_runs(s, account_id=acct) if r.id != first.id])
    assert runs[0].version == project.playbooks["m"].version


async def test_events_a_retried_task_after_its_store_write_still_enrolls(own_time_env: Any, store_settings: Any, folder: Path) -> None:
    """A workflow task can time out after its local activity committed (seen under load in the
    enrollment bench: one account of 2,000 never started its run). The retried task then finds
    the event and the account already in the store, written by its own first attempt. Here the
    store is put in exactly that state before any worker runs the task."""
    from activities.deps import Deps
    from touchpoint.dsl.runtime import AccountState, Envelope, EventIn
    from touchpoint.dsl.schema import AccountDoc
    from worker import build_worker
    from workflows import names

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
        # What the first attempt's `apply_event_v2` committed before its task timed out.
        token = f"{handle.result_run_id}:1"
        with deps.sessions.begin() as s:
            stored = doc.model_dump(mode="json")
            repo.upsert_account(s, stored, stored.pop("contacts"))
            repo.record_event(s, event.id or "", acct, event.type, event.at or datetime.now(UTC), {}, applied_by=token)
            repo.record_event(s, f"{event.id}:account.created", acct, "account.created", event.at or datetime.now(UTC), {"changed": ["name"]})
        async with build_worker(client, deps, task_queue=queue, strict_imports=True, fail_fast=True):
            tasks = await eventually(project_stack, lambda s: repo.list_tasks(s, account_id=acct))
            assert [t.title for t in tasks] == [f"Hi Account {acct}"]
            # The retry planned the run again and projected it once, under the run's own id.
            with deps.sessions() as s:
                assert [(r.playbook_id, r.workflow_id) for r in repo.list_runs(s, account_id=acct)] == [("hello", f"run/hello/{acct}")]
            await handle.terminate("test finished")
            with contextlib.suppress(RPCError):
                await client.get_workflow_handle(f"run/hello/{acct}").terminate("test finished")
    finally:
        await deps.close()


async def test_events_apply_event_tells_its_own_retry_from_a_duplicate(store_settings: Any) -> None:
    from activities.deps import Deps
    from activities.store import AccountActivities
    from touchpoint.dsl.runtime import ApplyEventInput, EventIn
    from touchpoint.dsl.schema import AccountDoc

    deps = Deps.from_settings(store_settings)
    try:
        apply = AccountActivities(deps).apply_event_v2
        doc = AccountDoc.model_validate(account("acme"))
        event = EventIn(id="e1", type="account.upserted", at=datetime.now(UTC), account_id="acme")
        derived = [EventIn(id="e1:account.created", type="account.created", at=event.at, account_id="acme", data={"changed": ["name"]})]
        first = await apply(ApplyEventInput(account=doc, event=event, derived=derived, token="run-a:1"))
        assert first.accepted and first.earlier is None
        retry = await apply(ApplyEventInput(account=doc, event=event, derived=[], token="run-a:1"))
        assert retry.accepted and [e.type for e in retry.earlier or []] == ["account.created"]
        duplicate = await apply(ApplyEventInput(account=doc, event=event, derived=[], token="run-a:7"))
        assert not duplicate.accepted
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


async def _run_markers(stack: Stack, workflow_id: str) -> list[str]:
    """The local activities a workflow recorded (by type) and its timers ("timer"), once a timer
    started (a run) or three were recorded (an account workflow)."""
    import json

    for _ in range(100):
        history = await stack.client.get_workflow_handle(workflow_id).fetch_history()
        found = []
        for event in history.events:
            if event.HasField("marker_recorded_event_attributes") and "data" in event.marker_recorded_event_attributes.details:
                data = json.loads(event.marker_recorded_event_attributes.details["data"].payloads[0].data)
                found.append(data["activity_type"])
            elif event.HasField("timer_started_event_attributes"):
                found.append("timer")
        if "timer" in found or workflow_id.startswith("account/") and len(found) >= 3:
            return found
        await asyncio.sleep(0.1)
    return found


async def test_events_a_started_run_is_in_the_store_before_its_first_step(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    """The account workflow writes the run's row in the same store step as the event (or, for a
    manual start, just before starting it): a run parked in its first 30-day wait is listed as
    running with its scorecard, and the run itself spent no local activity on it."""
    deploy(stack, folder, {"e.yaml": SCORED.format(name="e", trigger="{event: account.created}"), "m.yaml": SCORED.format(name="m", trigger="manual")})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    assert (await api.post("/runs", json={"playbook": "m", "account_id": acct})).status_code == 202
    runs = await eventually(stack, lambda s: len(rows := repo.list_runs(s, account_id=acct)) == 2 and rows)
    project = load_project(folder)
    for run in runs:
        assert (run.status, run.workflow_id, run.version) == ("running", f"run/{run.playbook_id}/{acct}", project.playbooks[run.playbook_id].version)
        assert run.scorecard == {"score": 0, "target": 80, "by_day": 90, "met": False, "milestones": {"sso": {"done": False, "day": None}}}
        assert set(await _run_markers(stack, run.workflow_id)) == {"timer"}  # the wait and the scorecard's day
    # The account workflow: one read of what it needs, then one store step per event or start.
    markers = await _run_markers(stack, f"account/{acct}")
    assert markers == ["load_context", "apply_event_v3", "prepare_starts_v2"]


async def test_events_apply_event_v3_projects_and_starts_the_runs_once(stack: Stack, folder: Path) -> None:
    """The store step of an event writes the rows of the runs it starts, then starts them; its
    own retry and an old duplicate start nothing; a playbook not deployed starts nothing."""
    import dataclasses

    from temporalio.testing import ActivityEnvironment

    from activities.store import AccountActivities
    from touchpoint.dsl.runtime import ApplyEventInput, EventIn, PlannedStart
    from touchpoint.dsl.schema import AccountDoc

    deploy(stack, folder, {"e.yaml": SCORED.format(name="e", trigger="{event: x.happened}")})
    project = load_project(folder)
    activities = AccountActivities(stack.deps)
    env = ActivityEnvironment()
    queue = f"nobody-{uid()}"  # no worker polls it: the started runs wait for one
    env.info = dataclasses.replace(env.info, task_queue=queue, is_local=True)
    acct = uid()
    doc = AccountDoc.model_validate(account(acct))
    at = datetime.now(UTC)
    event = EventIn(id=f"e-{acct}", type="x.happened", at=at, account_id=acct)

    def planned(name: str, run_id: str) -> PlannedStart:
        return PlannedStart(playbook=name, run_id=run_id, workflow_id=f"run/{name}/{acct}", started_at=at, event=event, account_workflow_id=f"account/{acct}")

    try:
        first = await env.run(activities.apply_event_v3, ApplyEventInput(account=doc, event=event, token="run-a:1", starts=[planned("e", "r-e"), planned("gone", "r-gone")]))
        assert first.accepted and first.started == {"e": project.playbooks["e"].version}
        with stack.deps.sessions() as s:
            assert [(r.id, r.status) for r in repo.list_runs(s, account_id=acct)] == [("r-e", "running")]
        described = await stack.client.get_workflow_handle(f"run/e/{acct}").describe()
        assert described.status is not None and described.status.name == "RUNNING" and await described.memo_value("run_id") == "r-e"
        # Its own retry: the earlier events come back, nothing is projected or started (the workflow plans again).
        retry = await env.run(activities.apply_event_v3, ApplyEventInput(account=doc, event=event, token="run-a:1", starts=[planned("e", "r-other")]))
        assert retry.accepted and retry.earlier == [] and retry.started == {}
        duplicate = await env.run(activities.apply_event_v3, ApplyEventInput(account=doc, event=event, token="run-b:1", starts=[planned("e", "r-dup")]))
        assert not duplicate.accepted and duplicate.started == {}
        # A manual start while run r-e still runs: its row says it never started.
        from touchpoint.dsl.runtime import PrepareStartsInput

        again = await env.run(activities.prepare_starts, PrepareStartsInput(account_id=acct, account=doc, starts=[planned("e", "r-late")]))
        assert again == {}
        # The same start retried is its own earlier start, not a conflict.
        assert await env.run(activities.prepare_starts, PrepareStartsInput(account_id=acct, account=doc, starts=[planned("e", "r-e")])) == {"e": project.playbooks["e"].version}
        with stack.deps.sessions() as s:
            assert sorted((r.id, r.status, r.outcome) for r in repo.list_runs(s, account_id=acct)) == [("r-e", "running", None), ("r-late", "ended", "not_started")]
        # Retried after the run has ended: its row stays ended and nothing starts again.
        await stack.client.get_workflow_handle(f"run/e/{acct}").terminate("ended for the test")
        with stack.deps.sessions.begin() as s:
            repo.upsert_run(s, id="r-e", status="ended", outcome="completed", ended_at=datetime.now(UTC))
        assert await env.run(activities.prepare_starts, PrepareStartsInput(account_id=acct, account=doc, starts=[planned("e", "r-e")])) == {"e": project.playbooks["e"].version}
        described = await stack.client.get_workflow_handle(f"run/e/{acct}").describe()
        assert described.status is not None and described.status.name == "TERMINATED"
        with stack.deps.sessions() as s:
            assert (repo.get_run(s, "r-e") or described).status == "ended"
    finally:
        with contextlib.suppress(RPCError):
            await stack.client.get_workflow_handle(f"run/e/{acct}").terminate("test finished")


async def test_events_new_accounts_run_the_second_account_type_without_markers_or_end_signals(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    """A new account's workflow is `AccountV2`: no `workflow.patched` markers or search-attribute
    updates in its history, and its runs do not signal their end. It learns that a run ended
    from its next store step, which then starts the playbook again (reenroll: always)."""
    from temporalio.api.enums.v1 import EventType

    from touchpoint.dsl.runtime import AccountState
    from workflows import names

    deploy(stack, folder, {"p.yaml": NOTE_ON_EVENT.format(name="p", event="webinar.attended", reenroll="always", wait="1d")})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    await api.post("/events", json={"type": "webinar.attended", "account_id": acct, "id": "w1"})
    first = await eventually(stack, lambda s: (rows := repo.list_runs(s, account_id=acct)) and rows[0])
    # While the first run waits, the same trigger starts nothing (one run at a time).
    await api.post("/events", json={"type": "webinar.attended", "account_id": acct, "id": "w2"})
    await eventually(stack, lambda s: len(repo.list_events(s, account_id=acct, type="webinar.attended")) == 2)
    await ended(stack, first.id, skip=timedelta(days=2))
    await api.post("/events", json={"type": "webinar.attended", "account_id": acct, "id": "w3"})
    runs = await eventually(stack, lambda s: len(rows := repo.list_runs(s, account_id=acct)) == 2 and rows)
    assert sorted(r.outcome or r.status for r in runs) == ["completed", "running"]  # no "not_started" row
    handle = stack.client.get_workflow_handle(f"account/{acct}")
    assert (await handle.describe()).workflow_type == names.ACCOUNT_V2
    history = await handle.fetch_history()
    kinds = [event.event_type for event in history.events]
    signals = [e.workflow_execution_signaled_event_attributes.signal_name for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")]
    assert signals == ["ingest"] * 4  # the upsert and three events; no run_ended
    assert EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES not in kinds
    markers = [e.marker_recorded_event_attributes.marker_name for e in history.events if e.HasField("marker_recorded_event_attributes")]
    assert markers and set(markers) == {"core_local_activity"}, markers
    state = await handle.query("state", result_type=AccountState)
    assert [active.run_id for active in state.active.values()] == [next(r.id for r in runs if r.status == "running")]


async def test_events_a_start_after_an_earlier_run_waits_for_the_store_and_for_its_close(stack: Stack, folder: Path) -> None:
    """`after_run`: blocked while the earlier run's row runs (no row written, nothing started);
    once the row has ended, a start that finds the earlier workflow still closing waits for it."""
    import dataclasses
    import time

    from temporalio.testing import ActivityEnvironment

    from activities.store import AccountActivities
    from touchpoint.dsl.runtime import ApplyEventInput, EventIn, PlannedStart, PrepareStartsInput
    from touchpoint.dsl.schema import AccountDoc

    deploy(stack, folder, {"e.yaml": SCORED.format(name="e", trigger="{event: x.happened}")})
    activities = AccountActivities(stack.deps)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, task_queue=f"nobody-{uid()}", is_local=True)
    acct = uid()
    doc = AccountDoc.model_validate(account(acct))
    at = datetime.now(UTC)

    def planned(run_id: str, after: str | None = None) -> PlannedStart:
        event = EventIn(id=f"{run_id}-evt", type="x.happened", at=at, account_id=acct)
        return PlannedStart(playbook="e", run_id=run_id, workflow_id=f"run/e/{acct}", started_at=at, event=event, account_workflow_id=f"account/{acct}", after_run=after, report_end=False)

    def apply(run_id: str, after: str | None, active: list[str]) -> ApplyEventInput:
        start = planned(run_id, after)
        return ApplyEventInput(account=doc, event=start.event, token=f"t:{run_id}", starts=[start], active=active)

    try:
        first = await env.run(activities.apply_event_v3, apply("r1", None, []))
        assert first.started and first.ended == [] == first.blocked
        held = await env.run(activities.apply_event_v3, apply("r2", "r1", ["r1"]))
        assert (held.started, held.ended, held.blocked) == ({}, [], ["r2"])
        with stack.deps.sessions() as s:
            assert [r.id for r in repo.list_runs(s, account_id=acct)] == ["r1"]
        # r1's end is projected, but its workflow has not closed yet: it closes 0.5 s later.
        with stack.deps.sessions.begin() as s:
            repo.upsert_run(s, id="r1", status="ended", outcome="completed", ended_at=datetime.now(UTC))

        async def close_later() -> None:
            await asyncio.sleep(0.5)
            await stack.client.get_workflow_handle(f"run/e/{acct}").terminate("r1 closes")

        closing = asyncio.create_task(close_later())
        began = time.monotonic()
        result = await env.run(activities.prepare_starts_v2, PrepareStartsInput(account_id=acct, account=doc, starts=[planned("r3", "r1")]))
        await closing
        assert time.monotonic() - began >= 0.4
        assert (set(result.started), result.ended, result.blocked) == ({"e"}, ["r1"], [])
        described = await stack.client.get_workflow_handle(f"run/e/{acct}").describe()
        assert await described.memo_value("run_id") == "r3"
        with stack.deps.sessions() as s:
            assert sorted((r.id, r.status) for r in repo.list_runs(s, account_id=acct)) == [("r1", "ended"), ("r3", "running")]
    finally:
        with contextlib.suppress(RPCError):
            await stack.client.get_workflow_handle(f"run/e/{acct}").terminate("test finished")


async def test_events_a_run_terminated_outside_touchpoint_does_not_hold_its_playbook(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    """A run terminated in the Temporal UI never projects its end: the next trigger finds its
    workflow closed, ends its row as ``terminated`` and starts the playbook again."""
    from touchpoint.dsl.runtime import AccountState

    deploy(stack, folder, {"p.yaml": NOTE_ON_EVENT.format(name="p", event="webinar.attended", reenroll="always", wait="30d")})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    await api.post("/events", json={"type": "webinar.attended", "account_id": acct, "id": "w1"})
    first = await eventually(stack, lambda s: (rows := repo.list_runs(s, account_id=acct)) and rows[0])
    await eventually(stack, lambda s: len(notes(stack, first.id)) == 1)  # it waits in its 30 days
    await stack.client.get_workflow_handle(first.workflow_id).terminate("by hand")
    await api.post("/events", json={"type": "webinar.attended", "account_id": acct, "id": "w2"})
    runs = await eventually(stack, lambda s: len(rows := repo.list_runs(s, account_id=acct)) == 2 and rows)
    by_id = {r.id: r for r in runs}
    assert (by_id[first.id].status, by_id[first.id].outcome) == ("ended", "terminated")
    second = next(r for r in runs if r.id != first.id)
    assert second.status == "running"
    await eventually(stack, lambda s: len(notes(stack, second.id)) == 1)
    state = await stack.client.get_workflow_handle(f"account/{acct}").query("state", result_type=AccountState)
    assert [active.run_id for active in state.active.values()] == [second.id]
