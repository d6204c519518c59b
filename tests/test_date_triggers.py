"""Date triggers: the hourly `DateSweep` on a real time-skipping server and a real SQLite store.

The Java time-skipping server has no Schedules, so each test starts `DateSweep` directly with an
explicit `now` (what the hourly Schedule passes as its scheduled time).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select, text
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.deps import Deps
from activities.sweep import SweepActivities
from tests.conftest import Stack, write_folder
from touchpoint.config import load_settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.sweep_models import DateSweepInput, DateSweepResult, SweepInput, SweepPageResult, trigger_moment
from touchpoint.dsl.validate import load_project
from touchpoint.ingest import put_account
from touchpoint.store import Account, DateTriggerFired, repo, triggers
from workflows import names

WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com}
"""
# The note proves which moment started the run: the `date.reached` event carries it.
PLAYBOOK = """\
playbook: {name}
trigger: {{date: account.renewal_date, offset: -120d{extra}}}
steps:
  - note: {{text: "{{{{ event.type }}}}|{{{{ event.data.date }}}}|{{{{ event.at.isoformat() }}}}"}}
"""


def playbook(name: str, extra: str = "") -> str:
    return PLAYBOOK.format(name=name, extra=extra)


def deploy(stack: Stack, playbooks: dict[str, str]) -> None:
    folder = write_folder(stack.root / "playbooks", {"workspace.yaml": WORKSPACE, **{f"{n}.yaml": t for n, t in playbooks.items()}})
    stack.deploy(folder)


def six_am(day: date, tz: str) -> datetime:
    """06:00 on the wall clock of ``tz`` (the expectation, computed independently of the sweep)."""
    return datetime.combine(day, clock(6), tzinfo=ZoneInfo(tz)).astimezone(UTC)


async def put(stack: Stack, account_id: str, renewal: date, tz: str, **extra: Any) -> None:
    """Upsert an account through its workflow and wait for the store's projection."""
    doc = AccountDoc.model_validate({"id": account_id, "name": account_id, "timezone": tz, "renewal_date": renewal, **extra})
    await put_account(stack.client, stack.task_queue, stack.deps.sessions, doc)
    await eventually(stack, lambda s: (a := repo.get_account(s, account_id)) is not None and a[0].get("renewal_date") == renewal.isoformat())


async def sweep(stack: Stack, now: datetime) -> DateSweepResult:
    return await stack.client.execute_workflow(
        names.DATE_SWEEP,
        DateSweepInput(now=now),
        id=f"date-sweep-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=DateSweepResult,
    )


async def eventually(stack: Stack, probe: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with stack.deps.sessions() as s:
            value = probe(s)
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def notes(stack: Stack, account_id: str) -> list[str]:
    with stack.deps.sessions() as s:
        return [n.text for n in repo.list_notes(s) if n.account_id == account_id]


async def started_notes(stack: Stack, account_id: str, count: int) -> list[tuple[str, str, datetime]]:
    """The account's run notes once there are ``count``: (event type, date value, event.at)."""
    await eventually(stack, lambda s: len(notes(stack, account_id)) >= count)
    found = []
    for note in notes(stack, account_id):
        kind, value, at = note.split("|")
        found.append((kind, value, datetime.fromisoformat(at)))
    return found


def fired_rows(stack: Stack, playbook: str) -> list[tuple[str, date]]:
    with stack.deps.sessions() as s:
        rows = s.execute(select(DateTriggerFired.account_id, DateTriggerFired.date_value).where(DateTriggerFired.playbook_id == playbook))
        return sorted((r.account_id, r.date_value) for r in rows)


def runs(stack: Stack, account_id: str, playbook: str) -> list[Any]:
    with stack.deps.sessions() as s:
        return repo.list_runs(s, account_id=account_id, playbook_id=playbook)


# ---------------------------------------------------------------------------- the moment


def test_date_triggers_moment_is_six_am_local_on_the_wall_clock() -> None:
    la = "America/Los_Angeles"
    # 120 days before a winter renewal is in summer time (UTC-7), before a summer one in winter (UTC-8).
    assert trigger_moment(date(2027, 1, 10), timedelta(days=-120), la) == datetime(2026, 9, 12, 13, tzinfo=UTC)
    assert trigger_moment(date(2027, 6, 1), timedelta(days=-120), la) == datetime(2027, 2, 1, 14, tzinfo=UTC)
    # Across the November change: 06:00 PDT, not "240 hours before 06:00 PST" (which is 07:00 PDT).
    assert trigger_moment(date(2026, 11, 10), timedelta(days=-10), la) == datetime(2026, 10, 31, 13, tzinfo=UTC)
    assert trigger_moment(date(2026, 11, 10), timedelta(hours=-12), "Asia/Tokyo") == datetime(2026, 11, 9, 9, tzinfo=UTC)


# ---------------------------------------------------------------------------- through DateSweep


async def test_date_triggers_renewal_fires_once_at_six_local_and_again_for_a_new_date(own_stack: Stack) -> None:
    stack, tz = own_stack, "America/New_York"
    deploy(stack, {"renewal": playbook("renewal")})
    renewal = datetime.now(UTC).date() + timedelta(days=200)
    await put(stack, "acme", renewal, tz)
    moment = six_am(renewal - timedelta(days=120), tz)

    early = await sweep(stack, moment - timedelta(hours=1))  # 05:00 local
    assert early.playbooks["renewal"].fired == 0 and fired_rows(stack, "renewal") == []
    on_time = await sweep(stack, moment + timedelta(hours=1))  # 07:00 local
    assert on_time.playbooks["renewal"].fired == 1
    assert await started_notes(stack, "acme", 1) == [("date.reached", renewal.isoformat(), moment)]
    again = await sweep(stack, moment + timedelta(hours=2))
    assert again.playbooks["renewal"].fired == 0

    # The renewal moves a year later: the new date value fires at its own moment.
    # The account workflow still holds that run as active; its next start asks the store.
    await eventually(stack, lambda s: [r.status for r in runs(stack, "acme", "renewal")] == ["ended"])
    later = renewal + timedelta(days=365)
    await put(stack, "acme", later, tz)
    next_moment = six_am(later - timedelta(days=120), tz)
    assert (await sweep(stack, next_moment - timedelta(minutes=1))).playbooks["renewal"].fired == 0
    assert (await sweep(stack, next_moment)).playbooks["renewal"].fired == 1  # the window is (cursor, now]
    found = await started_notes(stack, "acme", 2)
    assert sorted(found, key=lambda n: n[2])[1] == ("date.reached", later.isoformat(), next_moment)
    assert fired_rows(stack, "renewal") == [("acme", renewal), ("acme", later)]
    assert (await sweep(stack, next_moment + timedelta(days=1))).playbooks["renewal"].fired == 0
    assert len(runs(stack, "acme", "renewal")) == 2


async def test_date_triggers_each_account_fires_at_six_in_its_own_zone(own_stack: Stack) -> None:
    stack = own_stack
    deploy(stack, {"renewal": playbook("renewal")})
    renewal = datetime.now(UTC).date() + timedelta(days=200)
    await put(stack, "la", renewal, "America/Los_Angeles")
    await put(stack, "tokyo", renewal, "Asia/Tokyo")
    day = renewal - timedelta(days=120)
    tokyo, la = six_am(day, "Asia/Tokyo"), six_am(day, "America/Los_Angeles")
    assert la - tokyo >= timedelta(hours=15)

    assert (await sweep(stack, tokyo + timedelta(minutes=30))).playbooks["renewal"].fired == 1
    assert await started_notes(stack, "tokyo", 1) == [("date.reached", renewal.isoformat(), tokyo)]
    assert (await sweep(stack, la - timedelta(minutes=30))).playbooks["renewal"].fired == 0
    assert notes(stack, "la") == []
    assert (await sweep(stack, la + timedelta(minutes=30))).playbooks["renewal"].fired == 1
    assert await started_notes(stack, "la", 1) == [("date.reached", renewal.isoformat(), la)]


async def test_date_triggers_catch_up_starts_accounts_that_arrive_after_their_moment(own_stack: Stack) -> None:
    stack = own_stack
    deploy(stack, {"strict": playbook("strict"), "lenient": playbook("lenient", ", catch_up: true")})
    today = datetime.now(UTC).date()
    # Created now, its moment was 20 days ago: before the deploy, so in no sweep window.
    await put(stack, "late", today + timedelta(days=100), "UTC")
    # Its moment passed 122 days ago: beyond catch_up's reach (the renewal itself has passed).
    await put(stack, "lapsed", today - timedelta(days=2), "UTC")

    result = await sweep(stack, datetime.now(UTC) + timedelta(hours=1))
    assert result.playbooks["strict"].fired == 0
    assert result.playbooks["lenient"].fired == 1
    await started_notes(stack, "late", 1)
    assert fired_rows(stack, "lenient") == [("late", today + timedelta(days=100))]
    assert fired_rows(stack, "strict") == [] and runs(stack, "late", "strict") == []
    assert runs(stack, "lapsed", "lenient") == []
    again = await sweep(stack, datetime.now(UTC) + timedelta(hours=2))
    assert again.fired == 0


async def test_date_triggers_when_false_starts_nothing_and_records_nothing(own_stack: Stack) -> None:
    stack = own_stack
    deploy(
        stack,
        {
            "gated": playbook("gated", ", when: \"account.plan == 'enterprise' and today < account.renewal_date\""),
            "open": playbook("open", ', when: "event.data.date == account.renewal_date | string"'),
        },
    )
    renewal = datetime.now(UTC).date() + timedelta(days=200)
    await put(stack, "small", renewal, "UTC", plan="business")
    moment = six_am(renewal - timedelta(days=120), "UTC")

    result = await sweep(stack, moment + timedelta(hours=1))
    assert (result.playbooks["gated"].due, result.playbooks["gated"].fired, result.playbooks["gated"].skipped) == (1, 0, 1)
    assert result.playbooks["open"].fired == 1
    await started_notes(stack, "small", 1)
    assert runs(stack, "small", "gated") == [] and fired_rows(stack, "gated") == []
    # The moment has passed: without catch_up a later sweep does not look at it again.
    assert (await sweep(stack, moment + timedelta(hours=2))).playbooks["gated"].due == 0


# ---------------------------------------------------------------------------- at scale


@pytest.fixture
async def sweep_deps(own_time_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Deps]:
    """A store of its own and a client, on a task queue no worker polls: the signals are
    accepted by the server and the account workflows wait there (the test is about the store)."""
    settings = load_settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/sweep.db", task_queue=f"idle-{uuid.uuid4().hex[:8]}")
    deps = Deps.from_settings(settings)
    deps.client = own_time_env.client
    yield deps
    await deps.close()


ZONES = ("UTC", "America/Los_Angeles", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Asia/Tokyo", "Pacific/Auckland")


def seed(deps: Deps, count: int, today: date) -> dict[str, tuple[date, str]]:
    """``count`` accounts with renewal dates spread over a year (moments from 5 days ago on)."""
    rng = random.Random(9)
    accounts = {f"acct-{i:06d}": (today + timedelta(days=115 + rng.randrange(365)), rng.choice(ZONES)) for i in range(count)}
    rows = [
        {"id": key, "name": key, "timezone": tz, "renewal_date": day, "doc": {"id": key, "name": key, "timezone": tz, "renewal_date": day.isoformat()}}
        for key, (day, tz) in accounts.items()
    ]
    with deps.sessions.begin() as s:
        s.execute(insert(Account), rows)
    return accounts


async def sweep_pages(deps: Deps, now: datetime) -> SweepPageResult:
    """Every page of one sweep through the activity itself; the totals (its speed is `bench/sweep.py`'s)."""
    activities, env = SweepActivities(deps), ActivityEnvironment()
    total, page = SweepPageResult(), None
    while True:
        result = await env.run(activities.sweep_date_triggers, SweepInput(now=now, page=page, limit=500))
        total.scanned += result.scanned
        total.fired += result.fired
        if result.next is None:
            return total
        page = result.next


async def test_date_triggers_sweep_of_20000_accounts_reads_only_the_candidates(sweep_deps: Deps, tmp_path: Path) -> None:
    deps, count = sweep_deps, 20_000
    folder = write_folder(tmp_path / "playbooks", {"workspace.yaml": WORKSPACE, "renewal.yaml": playbook("renewal")})
    with deps.sessions.begin() as s:
        deploy_project(s, load_project(folder))
        deployed = triggers.first_deployed_at(s, "renewal")
    assert deployed is not None
    accounts = seed(deps, count, datetime.now(UTC).date())

    def expected(since: datetime, until: datetime) -> set[str]:
        return {k for k, (day, tz) in accounts.items() if since < trigger_moment(day, timedelta(days=-120), tz) <= until}

    # The first sweep covers two days from the deploy; then an hourly one; then the same hour again.
    hour = datetime.combine(datetime.now(UTC).date() + timedelta(days=2), clock(5), tzinfo=UTC)
    previous = deployed
    for now, label in ((hour, "first"), (hour + timedelta(hours=1), "hourly"), (hour + timedelta(hours=1), "repeat")):
        want = set() if label == "repeat" else expected(previous, now)
        total = await sweep_pages(deps, now)
        with deps.sessions() as s:
            fired = {a for a, _ in s.execute(select(DateTriggerFired.account_id, DateTriggerFired.date_value))}
        assert total.fired == len(want), label
        assert want <= fired, label
        # Only accounts renewing on the few dates the window can touch are read (~1/365 a day).
        assert total.scanned <= count * 0.03, (label, total.scanned)
        previous = now
    assert len(fired) == len(expected(deployed, hour + timedelta(hours=1))) > 0

    some = sorted(fired)[0]
    description = await deps.client.get_workflow_handle(f"account/{some}").describe()
    assert description.workflow_type == names.ACCOUNT

    # The plan reads the renewal_date index and the fired table's primary key, never the whole table.
    query = triggers.renewal_query("renewal", date(2030, 1, 1), date(2030, 1, 3))
    sql = str(query.compile(dialect=deps.sessions.kw["bind"].dialect, compile_kwargs={"literal_binds": True}))
    with deps.sessions() as s:
        plan = " ".join(str(row[-1]) for row in s.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
    assert "ix_accounts_renewal_date" in plan, plan
    assert "SCAN accounts" not in plan, plan


def test_date_triggers_a_playbook_deployed_again_starts_from_its_redeploy(store_settings: Any, tmp_path: Path) -> None:
    deps = Deps.from_settings(store_settings)
    folder = write_folder(tmp_path / "pb", {"workspace.yaml": WORKSPACE, "renewal.yaml": playbook("renewal")})
    (folder / "templates").mkdir(exist_ok=True)
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    try:
        with deps.sessions.begin() as s:
            deploy_project(s, load_project(folder))
            repo.set_cursor(s, "date-sweep/renewal", at=long_ago)
            repo.set_cursor(s, "schedule/renewal", at=long_ago)
        (folder / "renewal.yaml").unlink()
        with deps.sessions.begin() as s:
            assert deploy_project(s, load_project(folder)).removed == ["renewal"]
        (folder / "renewal.yaml").write_text(playbook("renewal"))
        before = datetime.now(UTC)
        with deps.sessions.begin() as s:
            assert deploy_project(s, load_project(folder)).added == ["renewal"]
        with deps.sessions() as s:
            # Moments that passed while it was removed are not fired retroactively.
            cursor = repo.get_cursor(s, "date-sweep/renewal")
            assert cursor is not None and cursor.at is not None and cursor.at >= before - timedelta(seconds=1)
            assert repo.get_cursor(s, "schedule/renewal") is None
    finally:
        bind = deps.sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()
