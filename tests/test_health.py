"""Health scores (contract section 8): scoring, the batched recompute, health.changed, the CLI.

Real parts only: the time-skipping Temporal server from the fixtures (it has no Schedules, so the
`HealthRecompute` workflow is started directly, as a Schedule tick would), a SQLite store, and
the account workflows that turn `health.changed` into playbook runs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tests.conftest import Stack, eventually, write_folder
from tests.test_store import engine, factory, postgres_reachable, url  # noqa: F401  (fixtures: SQLite and PostgreSQL stores)
from touchpoint.config import settings
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.health_models import HealthRecomputeInput, HealthRecomputeResult
from touchpoint.dsl.runtime import EventIn
from touchpoint.dsl.workspace import HealthModel
from touchpoint.health import score_account
from touchpoint.ingest import put_account, send_event
from touchpoint.store import Account, Event, HealthScore, repo
from touchpoint.store.health import accounts_page_for_health, add_health_scores
from workflows import names
from workflows.messages import AccountState

NOW = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
"""
REENGAGE = """\
playbook: reengage
trigger:
  event: health.changed
  when: "event.data.score < 50 and event.data.previous_score >= 50"
reenroll: always          # the trigger's condition, not reenroll, keeps this to one run per drop
steps:
  - task: {title: "Re-engage {{ account.name }}: {{ event.data.previous_score }} -> {{ event.data.score }}", owner: csm}
    id: reengage
"""
USAGE_HEALTH = """\
schedule: "0 6 * * *"
metrics:
  - {id: weekly_active, value: "account.metrics.weekly_active_users / account.seats.licensed", weight: 60, good: 0.8, bad: 0.2}
  - {id: integrations, value: "account.metrics.integrations", weight: 40, good: 4, bad: 0}
tiers: {green: 70, yellow: 40}
"""


def model(metrics: list[dict[str, Any]], green: float = 70, yellow: float = 40) -> HealthModel:
    return HealthModel.model_validate({"metrics": metrics, "tiers": {"green": green, "yellow": yellow}})


def account(account_id: str = "acme", **extra: Any) -> dict[str, Any]:
    return {
        "id": account_id,
        "name": f"Account {account_id}",
        "timezone": "UTC",
        "seats": {"licensed": 100, "active": 50},
        "csm": {"name": "Dana", "email": "dana@example.com"},
        "contacts": [{"email": f"kim@{account_id}.example", "name": "Kim", "role": "champion"}],
        **extra,
    }


def uid() -> str:
    return f"a{uuid.uuid4().hex[:10]}"



async def recompute(stack: Stack, **fields: Any) -> HealthRecomputeResult:
    """One recompute, started as a Schedule tick would start it."""
    result: HealthRecomputeResult = await stack.client.execute_workflow(
        names.HEALTH_RECOMPUTE,
        HealthRecomputeInput(**fields),
        id=f"health-recompute-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=HealthRecomputeResult,
    )
    return result


def health_events(stack: Stack, account_id: str) -> list[dict[str, Any]]:
    with stack.deps.sessions() as s:
        return [e.data for e in repo.list_events(s, account_id=account_id, type="health.changed")]


# ---------------------------------------------------------------------------- pure scoring


def test_health_scoring_scales_linearly_clamps_and_rounds() -> None:
    m = model([{"id": "usage", "value": "account.metrics.usage", "weight": 30, "good": 0.6, "bad": 0.2}])
    scores = {u: score_account(account(metrics={"usage": u}), m, NOW).score for u in (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9)}
    assert scores == {0.0: 0, 0.2: 0, 0.3: 25, 0.4: 50, 0.5: 75, 0.6: 100, 0.9: 100}
    result = score_account(account(metrics={"usage": 0.4}), m, NOW)
    assert result.breakdown == {"usage": {"value": 0.4, "points": 15, "weight": 30, "missing": False}}

    # Rounding is half up (62.5 -> 63, where Python's round() would give 62), on the total only.
    halves = model([
        {"id": "a", "value": "account.metrics.a", "weight": 1, "good": 1, "bad": 0},
        {"id": "b", "value": "account.metrics.b", "weight": 1, "good": 1, "bad": 0},
    ])
    assert score_account(account(metrics={"a": 1, "b": 0.25}), halves, NOW).score == 63
    assert score_account(account(metrics={"a": 0.3333, "b": 0}), halves, NOW).score == 17


def test_health_scoring_inverted_metrics_and_account_fields() -> None:
    # Fewer open tickets is better: good < bad.
    m = model([
        {"id": "tickets", "value": "account.metrics.open_tickets", "weight": 50, "good": 2, "bad": 10},
        {"id": "seats", "value": "account.seats.active / account.seats.licensed", "weight": 50, "good": 0.8, "bad": 0.3},
    ])
    assert score_account(account(metrics={"open_tickets": 0}), m, NOW).breakdown["tickets"]["points"] == 50
    assert score_account(account(metrics={"open_tickets": 6}), m, NOW).breakdown["tickets"]["points"] == 25
    assert score_account(account(metrics={"open_tickets": 30}), m, NOW).breakdown["tickets"]["points"] == 0
    result = score_account(AccountDoc.model_validate(account(metrics={"open_tickets": 6})), m, NOW)
    assert result.breakdown["seats"] == {"value": 0.5, "points": 20, "weight": 50, "missing": False}
    assert (result.score, result.tier) == (45, "yellow")


def test_health_scoring_tiers() -> None:
    m = model([{"id": "x", "value": "account.metrics.x", "weight": 1, "good": 100, "bad": 0}], green=70, yellow=40)
    tiers = {x: score_account(account(metrics={"x": x}), m, NOW).tier for x in (100, 70, 69.6, 69.4, 40, 39.4, 0)}
    # 69.6 rounds to 70: tiers are judged on the rounded score the user sees.
    assert tiers == {100: "green", 70: "green", 69.6: "green", 69.4: "yellow", 40: "yellow", 39.4: "red", 0: "red"}


def test_health_scoring_missing_metrics_count_as_zero_and_show_in_the_breakdown() -> None:
    m = model([
        {"id": "weekly_active", "value": "account.metrics.weekly_active_users / account.seats.licensed", "weight": 30, "good": 0.6, "bad": 0.2},
        {"id": "integrations", "value": "account.metrics.integrations", "weight": 20, "good": 3, "bad": 0},
        {"id": "nps", "value": "account.properties.nps", "weight": 50, "good": 50, "bad": -20},
    ])
    # No usage reported yet, and a string where a number is expected: missing, not an error.
    result = score_account(account(metrics={"integrations": 3}, properties={"nps": "n/a"}), m, NOW)
    assert result.breakdown["weekly_active"] == {"value": None, "points": 0, "weight": 30, "missing": True}
    assert result.breakdown["nps"] == {"value": None, "points": 0, "weight": 50, "missing": True}
    assert result.breakdown["integrations"]["missing"] is False
    assert (result.score, result.tier, result.missing) == (20, "red", ["weekly_active", "nps"])
    # Zero licensed seats: a division by zero is a missing metric too.
    zero = score_account(account(seats={"licensed": 0, "active": 0}, metrics={"weekly_active_users": 5}), m, NOW)
    assert zero.breakdown["weekly_active"]["missing"] is True


def test_health_scoring_sees_now_and_today() -> None:
    m = model([{"id": "runway", "value": "account.renewal_date - today", "weight": 10, "good": 365, "bad": 0}])
    result = score_account(account(renewal_date="2026-09-01"), m, NOW)
    assert result.breakdown["runway"]["value"] == 183  # 2026-03-02 to 2026-09-01
    assert score_account(account(), m, NOW).breakdown["runway"]["missing"] is True


# ---------------------------------------------------------------------------- store queries


def test_health_store_pages_accounts_with_their_previous_score(factory: sessionmaker[Session]) -> None:  # noqa: F811
    day = timedelta(days=1)
    with factory.begin() as s:
        for name in ("c", "a", "b"):
            repo.upsert_account(s, {"id": name, "name": name.upper()}, [{"email": f"kim@{name}.example", "role": "champion"}])
        add_health_scores(s, NOW - 2 * day, [("a", 40, "yellow", {}), ("b", 90, "green", {})])
        add_health_scores(s, NOW - day, [("a", 55, "yellow", {"x": {"points": 1}})])
        add_health_scores(s, NOW + day, [("a", 10, "red", {})])  # a later recompute is not "previous"
    with factory() as s:
        page = accounts_page_for_health(s, NOW, limit=2)
        assert [(p.id, p.previous_score, p.previous_tier, p.already_scored) for p in page] == [("a", 55, "yellow", False), ("b", 90, "green", False)]
        assert page[0].contacts == [{"email": "kim@a.example", "name": None, "role": "champion", "locale": None, "timezone": None, "country": None}]
        assert page[0].doc["name"] == "A"
        rest = accounts_page_for_health(s, NOW, after="b", limit=2)
        assert [(p.id, p.previous_score) for p in rest] == [("c", None)]
        assert [p.id for p in accounts_page_for_health(s, NOW, account_id="c")] == ["c"]
    with factory.begin() as s:
        assert add_health_scores(s, NOW, [("a", 60, "yellow", {})]) == 1
    with factory() as s:
        # A retried batch sees its own row, and still compares with the score before it.
        (again,) = accounts_page_for_health(s, NOW, account_id="a")
        assert (again.previous_score, again.already_scored) == (55, True)


# ---------------------------------------------------------------------------- a month of usage


async def test_health_a_month_of_usage_with_a_drop_starts_one_reengagement_run(own_stack: Stack, folder: Path) -> None:
    stack = own_stack
    write_folder(folder, {"workspace.yaml": WORKSPACE, "health.yaml": USAGE_HEALTH, "reengage.yaml": REENGAGE})
    stack.deploy(folder)
    acct = uid()
    await put_account(stack.client, stack.task_queue, stack.deps.sessions, AccountDoc.model_validate(account(acct)))

    expected: list[int] = []
    for day in range(30):
        # Healthy for two weeks (70..85: 60..75% weekly active, 3 integrations), then usage drops
        # on day 15 and stays low (20 or 22).
        if day < 15:
            usage = {"weekly_active_users": 60 + (day % 4) * 5, "integrations": 3}
            expected.append(70 + (day % 4) * 5)
        else:
            usage = {"weekly_active_users": 20 + (day % 2) * 2, "integrations": 2}
            expected.append(20 + (day % 2) * 2)
        await send_event(stack.client, stack.task_queue, stack.deps.sessions, acct, EventIn(type="usage.reported", data={"metrics": usage}))
        await eventually(stack, lambda s, u=usage: (found := repo.get_account(s, acct)) and found[0]["metrics"] == u)
        result = await recompute(stack)
        assert (result.counts.scored, result.counts.changed, result.counts.emitted) == (1, 1, 1), (day, result)
        await stack.env.sleep(timedelta(days=1))

    events = await eventually(stack, lambda s: len(found := health_events(stack, acct)) == 30 and found)
    assert [e["score"] for e in events] == expected
    assert events[0]["previous_score"] is None and events[0]["previous_tier"] is None  # the first score
    assert [(e["previous_score"], e["previous_tier"]) for e in events[15:17]] == [(80, "green"), (22, "red")]
    with stack.deps.sessions() as s:
        history = repo.health_history(s, acct)
        assert [h.score for h in history] == expected
        assert len({h.at.date() for h in history}) == 30  # one score a day, on the workflow's clock

    # Exactly one run and one task, for the day-15 drop.
    await eventually(stack, lambda s: repo.list_tasks(s, account_id=acct))
    await asyncio.sleep(0.5)
    with stack.deps.sessions() as s:
        runs = repo.list_runs(s, account_id=acct)
        tasks = repo.list_tasks(s, account_id=acct)
    assert [r.playbook_id for r in runs] == ["reengage"]
    assert [t.title for t in tasks] == [f"Re-engage Account {acct}: 80 -> 22"]

    # account.health is the last score, in the store and in the account's workflow.
    last = {"score": 22.0, "tier": "red", "previous_score": 20.0, "previous_tier": "red"}
    doc = await eventually(stack, lambda s: (found := repo.get_account(s, acct)) and found[0]["health"]["score"] == 22 and found[0])
    assert {k: doc["health"][k] for k in last} == last
    state = await stack.client.get_workflow_handle(f"account/{acct}").query("state", result_type=AccountState)
    assert state.account is not None
    assert state.account.health.model_dump(include=set(last)) == last


# ---------------------------------------------------------------------------- tiers, retries, CLI

STEADY_HEALTH = """\
schedule: "0 6 * * *"
metrics:
  - {{id: adoption, value: "account.metrics.adoption", weight: 100, good: 1, bad: 0}}
tiers: {{green: {green}, yellow: 40}}
"""


async def test_health_tier_change_without_score_change_emits_once_and_retries_emit_nothing(own_stack: Stack, folder: Path) -> None:
    stack = own_stack
    write_folder(folder, {"workspace.yaml": WORKSPACE, "health.yaml": STEADY_HEALTH.format(green=70)})
    stack.deploy(folder)
    acct = uid()
    await put_account(stack.client, stack.task_queue, stack.deps.sessions, AccountDoc.model_validate(account(acct, metrics={"adoption": 0.6})))
    await eventually(stack, lambda s: repo.get_account(s, acct))

    first = await recompute(stack)
    assert (first.counts.scored, first.counts.changed, first.counts.emitted) == (1, 1, 1)
    await stack.env.sleep(timedelta(hours=1))

    # Same usage, new tiers: 60 is now green.
    write_folder(folder, {"health.yaml": STEADY_HEALTH.format(green=55)})
    stack.deploy(folder)
    second = await recompute(stack)
    assert (second.counts.changed, second.counts.emitted) == (1, 1)
    assert second.model_version != first.model_version
    await stack.env.sleep(timedelta(hours=1))
    third = await recompute(stack)
    assert (third.counts.scored, third.counts.changed, third.counts.emitted) == (1, 0, 0)

    events = await eventually(stack, lambda s: len(found := health_events(stack, acct)) == 2 and found)
    assert [(e["score"], e["previous_score"], e["tier"], e["previous_tier"]) for e in events] == [
        (60, None, "yellow", None),
        (60, 60, "green", "yellow"),
    ]
    assert events[1]["breakdown"] == {"adoption": {"value": 0.6, "points": 60, "weight": 100, "missing": False}}

    # A retried recompute (same recompute id, clock and model) writes no second score and emits
    # nothing twice: its event id is the same, and the account workflow drops it.
    again = await recompute(stack, recompute_id=second.recompute_id, now=second.now, model_version=second.model_version)
    assert again.counts.scored == 1
    await asyncio.sleep(0.5)
    with stack.deps.sessions() as s:
        assert len(repo.health_history(s, acct)) == 3
        assert s.scalar(select(func.count()).select_from(Event).where(Event.type == "health.changed")) == 2
    doc = await eventually(stack, lambda s: (found := repo.get_account(s, acct)) and found[0]["health"]["tier"] == "green" and found[0])
    assert (doc["health"]["score"], doc["health"]["previous_tier"]) == (60, "yellow")

    # The CLI: recompute one account (nothing changes), then its history.
    output = await cli(stack, ["health", "recompute", acct])
    assert "scored 1 account, 0 changed, 0 health.changed emitted" in output
    lines = [json.loads(line) for line in (await cli(stack, ["health", "show", acct, "--json"])).splitlines()]
    assert [(line["score"], line["tier"]) for line in lines] == [(60, "yellow"), (60, "green"), (60, "green"), (60, "green")]
    assert lines[0]["previous_score"] is None and lines[1]["moved"] == {}
    table = await cli(stack, ["health", "show", acct])
    assert "Health of" in table and "green" in table
    missing = await cli(stack, ["health", "recompute", "nobody"], code=1)
    assert "no account 'nobody'" in missing


async def test_health_first_score_compares_with_the_health_an_import_brought(own_stack: Stack, folder: Path) -> None:
    stack = own_stack
    write_folder(folder, {"workspace.yaml": WORKSPACE, "health.yaml": STEADY_HEALTH.format(green=70)})
    stack.deploy(folder)
    same, dropped = uid(), uid()
    for acct, health in ((same, {"score": 60, "tier": "yellow"}), (dropped, {"score": 80, "tier": "green"})):
        doc = AccountDoc.model_validate(account(acct, metrics={"adoption": 0.6}, health=health))
        await put_account(stack.client, stack.task_queue, stack.deps.sessions, doc)
        await eventually(stack, lambda s, a=acct: repo.get_account(s, a))
    result = await recompute(stack)
    assert (result.counts.scored, result.counts.changed, result.counts.emitted) == (2, 1, 1)
    (event,) = await eventually(stack, lambda s: health_events(stack, dropped))
    assert (event["score"], event["previous_score"], event["tier"], event["previous_tier"]) == (60, 80, "yellow", "green")
    assert health_events(stack, same) == []


async def cli(stack: Stack, args: list[str], code: int = 0) -> str:
    """`touchpoint ...` in-process, with settings pointing at this test's server, queue and store."""
    from touchpoint.cli.main import app

    env = {
        "TOUCHPOINT_DATABASE_URL": stack.settings.db_url,
        "TOUCHPOINT_HOME": str(stack.settings.home),
        "TOUCHPOINT_TEMPORAL_ADDRESS": stack.client.service_client.config.target_host,
        "TOUCHPOINT_TASK_QUEUE": stack.task_queue,
        "COLUMNS": "200",
    }
    settings.cache_clear()
    try:
        # In a thread: the command runs its own event loop (asyncio.run) while this test's loop
        # keeps the worker going.
        result = await asyncio.to_thread(CliRunner().invoke, app, args, env=env)
    finally:
        settings.cache_clear()
    assert result.exit_code == code, result.output
    return str(result.output)


# ---------------------------------------------------------------------------- 10,000 accounts


def insert_accounts(stack: Stack, first: int, count: int) -> None:
    """Accounts straight into the store (fast): what a CRM import leaves there."""
    rows = [
        {
            "id": f"m{i:05d}",
            "name": f"Bulk {i}",
            "doc": {"id": f"m{i:05d}", "name": f"Bulk {i}", "seats": {"licensed": 100, "active": 50}, "metrics": {"weekly_active_users": i % 100, "integrations": i % 5}},
        }
        for i in range(first, first + count)
    ]
    with stack.deps.sessions.begin() as s:
        s.execute(insert(Account), rows)


async def measured(stack: Stack, **fields: Any) -> tuple[HealthRecomputeResult, int]:
    gc.collect()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = await recompute(stack, **fields)
    return result, tracemalloc.get_traced_memory()[1] - base


@pytest.fixture
def heap_tracing() -> Iterator[None]:
    """Stops tracemalloc after the test, and after its worker (a fixture set up later, so torn
    down earlier) has shut down: on Python < 3.12, `tracemalloc.stop()` while a native thread
    takes the GIL can crash the process (CPython gh-128679; seen here once, as a segfault in a
    thread of Temporal's core right after the stop)."""
    yield
    if tracemalloc.is_tracing():
        tracemalloc.stop()


async def test_health_recomputes_10000_accounts_in_batches_within_bounded_memory(heap_tracing: None, stack: Stack, folder: Path) -> None:
    write_folder(folder, {"workspace.yaml": WORKSPACE, "health.yaml": USAGE_HEALTH})
    stack.deploy(folder)
    insert_accounts(stack, 0, 2_000)
    # Nothing to emit: first scores are recorded quietly (emit_first=False), and the 2,000
    # accounts scored again on the second pass have not changed. Batches of 500, and a
    # continue-as-new every 8 batches.
    options = {"batch_size": 500, "batches_per_run": 8, "emit_first": False}
    try:
        await recompute(stack, account_id="m00000", **options)  # warm-up: imports, caches, the worker
        tracemalloc.start()  # stopped by `heap_tracing`
        small, small_peak = await measured(stack, **options)
        insert_accounts(stack, 2_000, 8_000)
        large, large_peak = await measured(stack, **options)
        assert (small.counts.scored, small.counts.emitted, small.batches) == (2_000, 0, 4)
        assert (large.counts.scored, large.counts.changed, large.counts.emitted, large.batches) == (10_000, 8_000, 0, 20)
        with stack.deps.sessions() as s:
            assert s.scalar(select(func.count(func.distinct(HealthScore.account_id)))) == 10_000
            assert s.scalar(select(func.count()).select_from(HealthScore)) == 1 + 2_000 + 10_000
        # Five times the accounts, about the same peak: memory follows the batch, not the book.
        assert large_peak < small_peak * 1.5 + 2_000_000, (small_peak, large_peak)
        assert large_peak < 16_000_000, large_peak
    finally:
        # The fixture's clean-up terminates every stored account's workflow: none was started.
        with stack.deps.sessions.begin() as s:
            s.execute(delete(Account).where(Account.id.like("m%")))


@pytest.mark.parametrize("batch_size", [1, 3])
async def test_health_batches_cover_every_account_once(stack: Stack, folder: Path, batch_size: int) -> None:
    write_folder(folder, {"workspace.yaml": WORKSPACE, "health.yaml": USAGE_HEALTH})
    stack.deploy(folder)
    insert_accounts(stack, 0, 7)
    try:
        result = await recompute(stack, batch_size=batch_size, batches_per_run=2, emit_first=False)
        assert result.counts.scored == 7
        with stack.deps.sessions() as s:
            assert sorted(s.scalars(select(HealthScore.account_id))) == [f"m{i:05d}" for i in range(7)]
    finally:
        with stack.deps.sessions.begin() as s:
            s.execute(delete(Account).where(Account.id.like("m%")))


async def test_health_recompute_without_a_deployed_model_fails_with_a_hint(stack: Stack) -> None:
    from temporalio.client import WorkflowFailureError

    with pytest.raises(WorkflowFailureError) as raised:
        await recompute(stack)
    assert "touchpoint deploy" in str(raised.value.cause.__cause__ or raised.value.cause)
