"""Quiet events (contract section 9), batches and the event log, through the API on a real server.

A quiet event is recorded in the store before the 202 and reaches no workflow: its row has no
`applied_by` (the account workflow's store step sets it) and the account workflow never saw its
id (`state` query). A listened event is applied by the account workflow.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import Stack, eventually, on_both_stores
from tests.test_events import account, api_client, deploy, uid
from touchpoint.deployed import REFRESH_SECONDS
from touchpoint.dsl.listening import Listening, combined, of_playbook
from touchpoint.dsl.schema import Playbook
from touchpoint.store import Event, repo
from workflows.messages import AccountState

TRIAL = """\
playbook: trial
trigger: {event: trial.started}
scorecard:
  milestones:
    - {id: setup, weight: 10, event: setup.done}
steps:
  - wait_for: {event: webinar.attended, timeout: 30d}
  - note: {text: "webinar seen"}
    id: seen
"""
ENGINE = ["account.renamed", "seats.changed", "usage.reported", "health.changed", "task.completed", "approval.decided", "email.opened", "run.started"]


def playbook(text: str) -> Playbook:
    return Playbook.model_validate(yaml.safe_load(text))


def heard(text: str) -> Listening:
    return of_playbook(playbook(text))


# --- the rule, from the playbooks alone ------------------------------------------------------


def test_quiet_rule_named_types_and_engine_types_are_heard() -> None:
    listening = heard(TRIAL)
    assert listening.hears("trial.started")  # a trigger
    assert listening.hears("webinar.attended")  # a wait_for
    assert listening.hears("setup.done")  # a milestone event
    assert all(listening.hears(t) for t in ENGINE)
    assert listening.quiet("feature.used") and listening.quiet("trial") and listening.quiet("accounts.x")
    assert not listening.every


def test_quiet_rule_nested_wait_for_and_trigger_lists() -> None:
    listening = heard(
        "playbook: p\ntrigger: {event: [a.one, a.two]}\nsteps:\n"
        "  - if: \"account.arr > 0\"\n    then:\n      - wait_for: {event: [b.one], timeout: 1d, on_timeout: [{wait_for: {event: c.one, timeout: 1d}}]}\n"
    )
    assert listening.types == {"a.one", "a.two", "b.one", "c.one"}


@pytest.mark.parametrize(
    "extra",
    [
        'exit_when: "event.data.churned"',
        "goal: \"event.type != 'won.deal' and event.data.x\"",
        "goal: \"event.type == 'won.deal' or event.data.x\"",
        "scorecard:\n  milestones:\n    - {id: m, weight: 1, when: \"event.data.x == 1\"}",
    ],
)
def test_quiet_rule_a_condition_reading_event_hears_everything(extra: str) -> None:
    listening = heard(f"playbook: p\ntrigger: manual\n{extra}\nsteps:\n  - wait: 1d\n")
    assert listening.every and listening.hears("feature.used")
    assert listening.because == ("p",)


@pytest.mark.parametrize(
    ("extra", "types"),
    [
        ("goal: \"event.type == 'won.deal'\"", {"won.deal"}),
        ("goal: \"event.type == 'health.changed' and event.data.tier == 'green'\"", {"health.changed"}),
        ("exit_when: \"event.data.x > 1 and event.type in ['a.b', 'c.d']\"", {"a.b", "c.d"}),
        ("exit_when: \"(event.type == 'a.b' and event.data.x) or event.type == 'c.d'\"", {"a.b", "c.d"}),
        ("scorecard:\n  milestones:\n    - {id: m, weight: 1, event: m.done, when: \"event.data.x == 1\"}", {"m.done"}),
    ],
)
def test_quiet_rule_a_condition_guarded_by_its_event_type_hears_only_that_type(extra: str, types: set[str]) -> None:
    """A condition that can be true only for some types (it says `event.type == 'x' and ...`, or
    it is a milestone's `when`, checked on its own `event` only) listens to those types alone:
    an event of any other type cannot change what it decides, arriving or not."""
    listening = heard(f"playbook: p\ntrigger: manual\n{extra}\nsteps:\n  - wait: 1d\n")
    assert not listening.every and listening.types == types
    assert listening.quiet("feature.used")


def test_quiet_rule_the_shipped_playbooks_leave_product_events_quiet() -> None:
    from touchpoint.dsl.validate import load_project

    project = load_project(Path(__file__).resolve().parent.parent / "playbooks")
    together = combined(of_playbook(loaded.playbook, name) for name, loaded in project.playbooks.items())
    assert not together.every
    assert together.quiet("page.viewed") and together.quiet("webinar.attended")
    assert together.hears("setup.sso_configured") and together.hears("meeting.booked")


def test_quiet_rule_conditions_that_do_not_read_event_change_nothing() -> None:
    listening = heard('playbook: p\ntrigger: manual\nexit_when: "account.arr > 5"\ngoal: "run.day > 3"\nsteps:\n  - wait: 1d\n')
    assert not listening.every and listening.quiet("feature.used")


def test_quiet_rule_combines_versions() -> None:
    together = combined([heard(TRIAL), heard('playbook: q\ntrigger: manual\nexit_when: "event.data.x"\nsteps: [{wait: 1d}]\n')])
    assert together.every and together.because == ("q",) and together.hears("anything.else")
    assert combined([]).quiet("feature.used") and combined([]).hears("usage.reported")


# --- through the API ---------------------------------------------------------------------------


@pytest.fixture
async def stack(own_stack: Stack) -> Stack:
    """A server of its own per test: account workflows run local activities (see test_events)."""
    return own_stack


@pytest.fixture
async def api(stack: Stack) -> Any:
    async with api_client(stack) as client:
        yield client


def stored(stack: Stack, event_id: str) -> Event | None:
    with stack.deps.sessions() as s:
        return repo.get_event(s, event_id)


async def seen_by_workflow(stack: Stack, account_id: str) -> list[str]:
    state = await stack.client.get_workflow_handle(f"account/{account_id}").query("state", result_type=AccountState)
    return list(state.seen_ids)


async def existing_account(stack: Stack, api: httpx.AsyncClient) -> str:
    acct = uid()
    assert (await api.put(f"/accounts/{acct}", json=account(acct))).status_code == 202
    await eventually(stack, lambda s: repo.get_account(s, acct))
    return acct


async def test_quiet_events_skip_the_workflow_and_listened_ones_reach_it(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    deploy(stack, folder, {"trial.yaml": TRIAL})
    acct = await existing_account(stack, api)
    quiet = await api.post("/events", json={"type": "feature.used", "account_id": acct, "id": "q-1", "data": {"feature": "ai"}})
    assert quiet.status_code == 202 and quiet.json() == {"id": "q-1", "status": "accepted"}
    row = stored(stack, "q-1")  # durable in the store before the answer
    assert row is not None and row.type == "feature.used" and row.data == {"feature": "ai"} and row.applied_by is None

    listened = {"trial.started": "l-trigger", "setup.done": "l-milestone", "webinar.attended": "l-wait-for"}
    listened.update({t: f"l-{t}" for t in ENGINE})
    for event_type, event_id in listened.items():
        response = await api.post("/events", json={"type": event_type, "account_id": acct, "id": event_id})
        assert response.status_code == 202, response.text
    for event_id in listened.values():
        row = await eventually(stack, lambda s, i=event_id: (e := repo.get_event(s, i)) is not None and e.applied_by is not None and e)
        assert row.applied_by
    seen = await seen_by_workflow(stack, acct)
    assert set(listened.values()) <= set(seen) and "q-1" not in seen
    # The trigger started the run, the milestone counted, the wait_for let it go on.
    run = await eventually(stack, lambda s: (r := repo.list_runs(s, account_id=acct)) and r[0].scorecard["milestones"]["setup"]["done"] and r[0])
    await eventually(stack, lambda s: [n.text for n in repo.list_notes(s, run_id=run.id)] == ["webinar seen"])
    # Another quiet type, the account workflow still never sees it.
    assert (await api.post("/events", json={"type": "invoice.paid", "account_id": acct, "id": "q-2"})).status_code == 202
    assert stored(stack, "q-2") is not None and "q-2" not in await seen_by_workflow(stack, acct)


async def test_quiet_events_a_deploy_reading_event_makes_every_type_listened(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    deploy(stack, folder, {"trial.yaml": TRIAL})
    acct = await existing_account(stack, api)
    await api.post("/events", json={"type": "feature.used", "account_id": acct, "id": "before"})
    assert stored(stack, "before") is not None and "before" not in await seen_by_workflow(stack, acct)
    deploy(stack, folder, {"churn.yaml": 'playbook: churn\ntrigger: manual\nexit_when: "event.data.churned"\nsteps: [{wait: 30d}]\n'})
    await asyncio.sleep(REFRESH_SECONDS + 0.2)
    await api.post("/events", json={"type": "feature.used", "account_id": acct, "id": "after"})
    await eventually(stack, lambda s: (e := repo.get_event(s, "after")) is not None and e.applied_by is not None)
    assert "after" in await seen_by_workflow(stack, acct)


@on_both_stores()
async def test_quiet_events_an_id_is_unique_across_both_paths(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    deploy(stack, folder, {"trial.yaml": TRIAL})
    acct = await existing_account(stack, api)
    # Quiet first: the same id with a listened type is a no-op (the workflow drops it).
    assert (await api.post("/events", json={"type": "feature.used", "account_id": acct, "id": "dup-1"})).status_code == 202
    assert (await api.post("/events", json={"type": "trial.started", "account_id": acct, "id": "dup-1"})).status_code == 202
    # Listened first (applied), then the same id with a quiet type: a no-op too.
    assert (await api.post("/events", json={"type": "webinar.attended", "account_id": acct, "id": "dup-2"})).status_code == 202
    await eventually(stack, lambda s: (e := repo.get_event(s, "dup-2")) is not None and e.applied_by is not None)
    assert (await api.post("/events", json={"type": "feature.used", "account_id": acct, "id": "dup-2", "data": {"x": 1}})).status_code == 202
    # In one batch, each path first: the later repeats are accepted and are no-ops.
    batch = [
        {"type": "invoice.paid", "account_id": acct, "id": "dup-3"},
        {"type": "trial.started", "account_id": acct, "id": "dup-3"},
        {"type": "setup.done", "account_id": acct, "id": "dup-4"},
        {"type": "invoice.paid", "account_id": acct, "id": "dup-4"},
    ]
    response = await api.post("/events", json=batch)
    assert response.status_code == 200
    assert response.json() == [{"id": i, "status": "accepted", "reason": None} for i in ("dup-3", "dup-3", "dup-4", "dup-4")]
    await eventually(stack, lambda s: (e := repo.get_event(s, "dup-4")) is not None and e.applied_by is not None)
    # A marker after everything: once the workflow applied it, it had every earlier signal.
    await api.post("/events", json={"type": "webinar.attended", "account_id": acct, "id": "marker"})
    await eventually(stack, lambda s: (e := repo.get_event(s, "marker")) is not None and e.applied_by is not None)
    with stack.deps.sessions() as s:
        kept = {e.id: e.type for e in repo.list_events(s, account_id=acct) if e.id.startswith("dup-")}
        assert kept == {"dup-1": "feature.used", "dup-2": "webinar.attended", "dup-3": "invoice.paid", "dup-4": "setup.done"}
        assert repo.get_event(s, "dup-2").data == {}  # type: ignore[union-attr]
        assert repo.list_runs(s, account_id=acct) == []  # neither trial.started with a taken id started a run


@on_both_stores()
async def test_quiet_events_a_batch_of_1000_with_bad_events(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    deploy(stack, folder, {"trial.yaml": TRIAL})
    accounts = [await existing_account(stack, api) for _ in range(3)]
    bad: list[tuple[Any, str]] = [
        ({"account_id": accounts[0]}, "type"),
        ({"type": "Not A Type", "account_id": accounts[0]}, "type"),
        ({"type": "a.b", "account_id": accounts[0], "at": 0}, "at"),
        ({"type": "a.b", "account_id": accounts[0], "colour": "red", "id": "bad-extra"}, "colour"),
        ({"type": "a.b", "account_id": "has space"}, "account_id"),
        ("just text", "event object"),
        (None, "event object"),
        ([1, 2], "event object"),
    ]
    items: list[Any] = []
    expected: list[str] = []
    for index in range(1000):
        if index % 10 == 3:
            body, field = bad[(index // 10) % len(bad)]
            items.append(body)
            expected.append(f"rejected:{field}")
        elif index % 10 == 7:
            items.append({"type": "webinar.attended", "account_id": accounts[index % 3], "id": f"w-{index}"})
            expected.append("workflow")
        else:
            items.append({"type": "feature.used", "account_id": accounts[index % 3], "id": f"q-{index}", "data": {"n": index}})
            expected.append("quiet")
    response = await api.post("/events", json=items)
    assert response.status_code == 200
    results = response.json()
    assert len(results) == 1000
    for index, (result, want) in enumerate(zip(results, expected, strict=True)):
        if want.startswith("rejected:"):
            assert result["status"] == "rejected" and want.split(":")[1] in result["reason"], (index, result)
        else:
            assert result == {"id": items[index]["id"], "status": "accepted", "reason": None}, (index, result)
    assert results[33]["id"] == "bad-extra"
    with stack.deps.sessions() as s:  # the quiet ones are in the store before the answer
        assert sum(1 for a in accounts for e in repo.list_events(s, account_id=a) if e.type == "feature.used") == 800
        assert all(e.applied_by is None for a in accounts for e in repo.list_events(s, account_id=a, type="feature.used"))
        assert s.query(Event).filter(Event.type == "a.b").count() == 0
    listened = [item["id"] for item, want in zip(items, expected, strict=True) if want == "workflow"]
    await eventually(stack, lambda s: all((e := repo.get_event(s, i)) is not None and e.applied_by is not None for i in listened), timeout=120)
    too_many = await api.post("/events", json=[{"type": "a.b", "account_id": "x"}] * 1001)
    assert too_many.status_code == 422 and "at most 1000" in too_many.json()["detail"]
    assert (await api.post("/events", json=[])).json() == []


@on_both_stores()
async def test_quiet_events_log_order_limits_and_pages(stack: Stack, api: httpx.AsyncClient) -> None:
    acct, other = uid(), uid()
    base = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    batch = [
        {"type": "feature.used" if i % 2 else "page.viewed", "account_id": acct, "id": f"e{i:02d}", "at": (base + timedelta(minutes=i // 2)).isoformat()}
        for i in range(30)
    ]
    batch.append({"type": "feature.used", "account_id": other, "id": "elsewhere", "at": base.isoformat()})
    assert all(r["status"] == "accepted" for r in (await api.post("/events", json=batch)).json())

    everything = (await api.get("/events", params={"account": acct, "limit": 1000})).json()
    assert len(everything) == 30 and "elsewhere" not in [e["id"] for e in everything]
    ats = [datetime.fromisoformat(e["at"]) for e in everything]
    assert ats == sorted(ats, reverse=True)  # newest first
    assert everything[0]["id"] in ("e28", "e29") and everything[-1]["id"] in ("e00", "e01")
    assert set(everything[0]) == {"id", "account_id", "type", "at", "data", "received_at"}
    assert len((await api.get("/events", params={"account": acct})).json()) == 30  # default 100
    # Pages of 7 with `before`: the whole log once, in the same order.
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"account": acct, "limit": 7, **({"before": cursor} if cursor else {})}
        page = (await api.get("/events", params=params)).json()
        pages.extend(page)
        if len(page) < 7:
            break
        cursor = page[-1]["id"]
    assert [e["id"] for e in pages] == [e["id"] for e in everything]
    typed = (await api.get("/events", params={"account": acct, "type": "page.viewed", "limit": 5})).json()
    assert [e["id"] for e in typed] == [e["id"] for e in everything if e["type"] == "page.viewed"][:5]
    assert (await api.get("/events", params={"account": uid()})).json() == []
    for params, status in (
        ({"account": acct, "limit": 0}, 422),
        ({"account": acct, "limit": 1001}, 422),
        ({}, 422),
        ({"account": acct, "type": "Bad Type"}, 422),
        ({"account": acct, "before": "nope"}, 404),
        ({"account": acct, "before": "elsewhere"}, 404),
    ):
        response = await api.get("/events", params=params)
        assert response.status_code == status, (params, response.text)
        assert sorted(response.json()) == ["detail", "errors"]


def test_quiet_deploy_report_names_the_types_it_makes_listened(tmp_path: Path) -> None:
    from tests.conftest import write_folder
    from touchpoint.deploy import deploy_project
    from touchpoint.dsl.validate import load_project
    from touchpoint.store import make_engine, migrate, session_factory

    engine = make_engine(f"sqlite:///{tmp_path}/store.db")
    migrate(engine)
    sessions = session_factory(engine)
    folder = tmp_path / "playbooks"
    files = {"templates/.keep": "", "trial.yaml": TRIAL}

    def deploy_now() -> Any:
        write_folder(folder, files)
        with sessions.begin() as s:
            return deploy_project(s, load_project(folder))

    try:
        first = deploy_now()
        assert first.newly_listened == ["setup.done", "trial.started", "webinar.attended"]
        assert first.listening_lines() == ["listening setup.done, trial.started, webinar.attended: no longer quiet, sent to account workflows in every API process within 1 s"]
        assert deploy_now().listening_lines() == []
        files["invoices.yaml"] = "playbook: invoices\ntrigger: manual\nsteps:\n  - wait_for: {event: [invoice.paid, usage.reported], timeout: 3d}\n"
        report = deploy_now()
        assert report.newly_listened == ["invoice.paid"] and report.as_dict()["listening"] == {"newly_listened": ["invoice.paid"], "every_type_listened": []}
        assert any(line.startswith("listening invoice.paid:") for line in report.lines())
        files["churn.yaml"] = 'playbook: churn\ntrigger: manual\nexit_when: "event.data.churned"\nsteps: [{wait: 1d}]\n'
        report = deploy_now()
        assert len(report.every_type_listened) == 1 and report.every_type_listened[0].startswith("churn@")
        assert "no event is quiet in every API process within 1 s" in report.listening_lines()[0]
        del files["churn.yaml"]
        (folder / "churn.yaml").unlink()
        assert deploy_now().listening_lines() == []  # its stored version still counts: nothing changed
    finally:
        engine.dispose()
