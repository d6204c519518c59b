"""Send windows, holidays and frequency caps on a real time-skipping Temporal server.

The time-skipping clock is shared and starts at the real current time, so each run gets a clock
offset that makes its own clock start at the moment the test wants (as `touchpoint simulate`
does), and dates are computed from there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.testing import ActivityEnvironment

from activities.deps import Deps
from activities.email import EmailActivities
from tests import pg
from tests.conftest import Stack, write_folder
from tests.hosts import assert_same_timeline, run_without_server
from touchpoint.config import load_settings
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import ReserveSlotInput, RunResult, StepRecord
from touchpoint.dsl.schema import SendWindow
from touchpoint.dsl.timing import next_opening
from touchpoint.store import repo
from workflows.simulation import SimInput, simulated_account

LA = ZoneInfo("America/Los_Angeles")
BERLIN = ZoneInfo("Europe/Berlin")
WEEK = timedelta(days=7)

BUSINESS_HOURS = """\
timezone: UTC
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri], hours: "09:00-17:00"}
"""
TEMPLATES = {
    "templates/hello.subject.j2": "Hello {{ account.name }}",
    "templates/hello.html.j2": "<p>Hi {{ contact.name }}</p>",
}
EMAIL_NOW = """\
playbook: {id}
trigger: manual
audience: [champion]
steps:
{wait}  - email: {{template: hello}}
    id: hello
  - note: {{text: "after the email"}}
    id: after
"""


def playbook(id: str = "p", wait: str | None = None) -> str:
    return EMAIL_NOW.format(id=id, wait=f"  - wait: {wait}\n" if wait else "")


def account(**fields: Any) -> AccountDoc:
    return AccountDoc.model_validate({"id": f"acct-{uuid.uuid4().hex[:8]}", "name": "Acme", **fields})


async def simulate(stack: Stack, folder: Path, files: dict[str, str], doc: AccountDoc, start: datetime, *, playbooks: Sequence[str] = ("p",), days: float = 30) -> list[RunResult]:
    """Run the playbooks side by side for one account, each run's clock starting at ``start``."""
    write_folder(folder, {**TEMPLATES, **files})
    project = stack.deploy(folder)
    offset = (start - await stack.env.get_current_time()).total_seconds()
    with stack.deps.sessions() as s:
        fresh = not repo.list_messages(s)  # no earlier send counts against the cap
    sims = []
    for name in playbooks:
        sim = SimInput(account=doc, playbook=name, clock_offset=offset, horizon=days * 86400)
        sims.append(stack.client.execute_workflow("Account", simulated_account(sim), id=f"sim-{uuid.uuid4().hex[:8]}", task_queue=stack.task_queue, result_type=RunResult))
    results = list(await asyncio.gather(*sims))
    if fresh and len(playbooks) == 1:
        # The same run on the server-less host `touchpoint simulate` uses: the same timeline.
        (result,) = results
        loaded = project.playbooks[playbooks[0]]
        assert result.started_at is not None
        _, records = run_without_server(
            loaded.playbook, project.workspace, loaded.version, doc, folder / "templates",
            start=result.started_at, events=[], days=days, run_id=result.run_id,
        )
        assert_same_timeline(result.history, records)
    return results


def emails(result: RunResult) -> list[StepRecord]:
    return [r for r in result.history if r.action == "email"]


def assert_at(record: StepRecord, expected: datetime) -> None:
    """The record happened at ``expected`` (plus the few seconds an activity takes), never before."""
    assert expected <= record.at < expected + timedelta(minutes=1), f"{record.step} at {record.at.isoformat()}, expected {expected.isoformat()}"


# ------------------------------------------------------------------ pure timing


def test_email_timing_next_opening_is_wall_clock_time_across_dst() -> None:
    window = SendWindow(days=["mon", "tue", "wed", "thu", "fri"], hours="09:00-17:00")
    saturday_noon = datetime(2027, 3, 13, 12, tzinfo=LA)
    opening = next_opening(saturday_noon.astimezone(UTC), "America/Los_Angeles", window)
    assert opening == datetime(2027, 3, 15, 9, tzinfo=LA)
    assert opening.utcoffset() == timedelta(0)  # returned in the caller's zone
    assert opening == datetime(2027, 3, 15, 16, tzinfo=UTC)  # 09:00 PDT, not 09:00 PST
    inside = datetime(2027, 3, 15, 16, 30, tzinfo=LA)
    assert next_opening(inside, "America/Los_Angeles", window) == inside
    at_close = datetime(2027, 3, 15, 17, tzinfo=LA)
    assert next_opening(at_close, "America/Los_Angeles", window) == datetime(2027, 3, 16, 9, tzinfo=LA)


def test_email_timing_holidays_only_for_listed_countries() -> None:
    window = SendWindow()
    christmas = datetime(2026, 12, 25, 10, tzinfo=BERLIN)
    assert next_opening(christmas, "Europe/Berlin", window, country="de", holidays=("DE",)) == datetime(2026, 12, 28, 9, tzinfo=BERLIN)
    assert next_opening(christmas, "Europe/Berlin", window, country="DE", holidays=("US",)) == christmas
    assert next_opening(christmas, "Europe/Berlin", window, country=None, holidays=("DE",)) == christmas
    # Whit Monday is a holiday in Germany but not in the US.
    whit_monday = datetime(2027, 5, 17, 10, tzinfo=BERLIN)
    assert next_opening(whit_monday, "Europe/Berlin", window, country="DE", holidays=("DE", "US")) == datetime(2027, 5, 18, 9, tzinfo=BERLIN)
    assert next_opening(whit_monday, "Europe/Berlin", window, country="US", holidays=("DE", "US")) == whit_monday


# ------------------------------------------------------------------ windows in workflows


async def test_email_timing_saturday_noon_in_los_angeles_waits_for_monday_after_dst(stack: Stack, folder: Path) -> None:
    doc = account(timezone="America/Los_Angeles", contacts=[{"email": "kim@acme.example", "name": "Kim", "role": "champion"}])
    start = datetime(2027, 3, 13, 12, tzinfo=LA)  # the US moves to summer time on Sunday the 14th
    (result,) = await simulate(stack, folder, {"workspace.yaml": BUSINESS_HOURS, "p.yaml": playbook()}, doc, start)
    assert result.outcome == "completed"
    (email,) = emails(result)
    assert "status" not in email.detail  # sent
    monday_nine = datetime(2027, 3, 15, 9, tzinfo=LA)
    assert_at(email, monday_nine)
    assert email.at.astimezone(LA).utcoffset() == timedelta(hours=-7)
    with stack.deps.sessions() as s:
        (message,) = repo.list_messages(s, run_id=result.run_id)
    assert message.status == "sent"
    assert monday_nine <= message.sent_at < monday_nine + timedelta(minutes=1)


@pytest.mark.parametrize(("listed", "expected"), [("[DE]", datetime(2026, 12, 28, 9, tzinfo=BERLIN)), ("[US]", datetime(2026, 12, 25, 10, tzinfo=BERLIN))])
async def test_email_timing_christmas_in_germany_waits_for_the_next_business_day(stack: Stack, folder: Path, listed: str, expected: datetime) -> None:
    doc = account(
        timezone="Europe/Berlin",
        country="DE",
        contacts=[{"email": "jonas@acme.example", "name": "Jonas", "role": "champion", "country": "DE"}],
    )
    workspace = BUSINESS_HOURS + f"holidays: {listed}\n"
    start = datetime(2026, 12, 25, 10, tzinfo=BERLIN)  # Christmas Day, a Friday; the 26th is a holiday too
    (result,) = await simulate(stack, folder, {"workspace.yaml": workspace, "p.yaml": playbook()}, doc, start)
    (email,) = emails(result)
    assert_at(email, expected)


async def test_email_timing_each_recipient_in_their_own_window(stack: Stack, folder: Path) -> None:
    doc = account(
        timezone="UTC",
        contacts=[
            {"email": "kim@acme.example", "name": "Kim", "role": "champion", "timezone": "Europe/Berlin"},
            {"email": "lee@acme.example", "name": "Lee", "role": "champion", "timezone": "America/Los_Angeles"},
        ],
    )
    start = datetime(2027, 1, 4, 10, tzinfo=UTC)  # Monday: 11:00 in Berlin, 02:00 in Los Angeles
    (result,) = await simulate(stack, folder, {"workspace.yaml": BUSINESS_HOURS, "p.yaml": playbook()}, doc, start)
    sent = {r.detail["to"]: r for r in emails(result)}
    assert_at(sent["kim@acme.example"], start)
    assert_at(sent["lee@acme.example"], datetime(2027, 1, 4, 9, tzinfo=LA))
    # The step completes when both are done: the next step runs after Lee's email.
    after = next(r for r in result.history if r.step == "after")
    assert [r.step for r in result.history] == ["hello", "hello", "after"]
    assert after.at >= sent["lee@acme.example"].at


# ------------------------------------------------------------------ frequency caps


async def test_email_timing_cap_across_three_playbooks_sends_all_none_early(stack: Stack, folder: Path) -> None:
    doc = account(timezone="UTC", contacts=[{"email": "kim@acme.example", "name": "Kim", "role": "champion"}])
    workspace = BUSINESS_HOURS + "frequency_cap: {emails: 2, per: 7d}\n"
    files = {"workspace.yaml": workspace, **{f"{name}.yaml": playbook(name) for name in ("a", "b", "c")}}
    monday = datetime(2027, 1, 4, 10, tzinfo=UTC)
    # Three playbooks start on three days of one week. The runs go one after the other: with
    # several runs in flight the time-skipping server moves its clock while activities are in
    # flight, which makes virtual timestamps nondeterministic (see the report of issue 6).
    results = []
    for offset_days, name in enumerate(("a", "b", "c")):
        (result,) = await simulate(stack, folder, files, doc, monday + timedelta(days=offset_days), playbooks=(name,))
        results.append(result)
    assert [r.outcome for r in results] == ["completed"] * 3
    a, b, c = (emails(r)[0] for r in results)
    assert [e.detail.get("status", "sent") for e in (a, b, c)] == ["sent"] * 3  # held, never dropped
    assert_at(a, monday)
    assert_at(b, monday + timedelta(days=1))
    # Two emails this week already: the third waits until the first leaves the rolling window
    # (next Monday 10:00, inside the send window) and is sent then.
    assert_at(c, monday + WEEK)
    with stack.deps.sessions() as s:
        times = sorted(m.sent_at for m in repo.list_messages(s, to_email="kim@acme.example") if m.status == "sent")
    assert len(times) == 3
    # Recorded send times may trail their reserved slot by the send activity's latency.
    assert times[2] - times[0] >= WEEK - timedelta(seconds=5)


async def test_email_timing_cap_slot_outside_the_window_waits_for_the_next_opening(stack: Stack, folder: Path) -> None:
    doc = account(timezone="UTC", contacts=[{"email": "kim@acme.example", "name": "Kim", "role": "champion"}])
    workspace = BUSINESS_HOURS + "frequency_cap: {emails: 1, per: 2d}\n"
    files = {"workspace.yaml": workspace, **{f"{name}.yaml": playbook(name) for name in ("a", "b")}}
    friday = datetime(2027, 1, 8, 16, tzinfo=UTC)
    (first,) = await simulate(stack, folder, files, doc, friday, playbooks=("a",))
    (second,) = await simulate(stack, folder, files, doc, friday + timedelta(minutes=30), playbooks=("b",))
    assert_at(emails(first)[0], friday)
    # The free slot (Sunday 16:00) is outside the window: the email goes out on Monday at 09:00.
    assert_at(emails(second)[0], datetime(2027, 1, 11, 9, tzinfo=UTC))


async def test_email_timing_cap_counts_the_moved_send_not_the_reserved_slot(stack: Stack, folder: Path) -> None:
    doc = account(timezone="UTC", contacts=[{"email": "kim@acme.example", "name": "Kim", "role": "champion"}])
    workspace = BUSINESS_HOURS + "frequency_cap: {emails: 1, per: 2d}\n"
    files = {"workspace.yaml": workspace, **{f"{name}.yaml": playbook(name) for name in ("a", "b", "c")}}
    friday = datetime(2027, 1, 8, 16, tzinfo=UTC)
    await simulate(stack, folder, files, doc, friday, playbooks=("a",))
    (second,) = await simulate(stack, folder, files, doc, friday + timedelta(minutes=30), playbooks=("b",))
    (third,) = await simulate(stack, folder, files, doc, datetime(2027, 1, 11, 10, tzinfo=UTC), playbooks=("c",))
    monday_nine = datetime(2027, 1, 11, 9, tzinfo=UTC)
    assert_at(emails(second)[0], monday_nine)
    # One email per two days: the third may not go out before Wednesday 09:00 (today it is
    # sent on Tuesday 16:00, two days after the slot reserved for Sunday, 31 hours after the
    # second email really went out).
    assert emails(third)[0].at >= monday_nine + timedelta(days=2)


@pytest.fixture
def postgres_deps(tmp_path: Path) -> Iterator[Deps]:
    try:
        pg.check()
    except pg.PostgresUnreachable as exc:
        pytest.fail(str(exc), pytrace=False)
    with pg.schema("tp_timing") as schema:
        deps = Deps.from_settings(load_settings(home=tmp_path / "home", database_url=pg.schema_url(schema)))
        try:
            yield deps
        finally:
            bind = deps.sessions.kw.get("bind")
            if bind is not None:
                bind.dispose()


async def test_email_timing_cap_holds_under_concurrency_on_postgresql(postgres_deps: Deps) -> None:
    activities = EmailActivities(postgres_deps)
    env = ActivityEnvironment()
    t0 = datetime(2027, 1, 4, 10, tzinfo=UTC)

    def reserve(key: str) -> Any:
        slot = ReserveSlotInput(key=key, contact_email="Kim@Acme.example", desired_at=t0, emails=2, per=WEEK)
        return env.run(activities.reserve_send_slot, slot)

    keys = [f"run-{i}|steps[0]|kim@acme.example|1" for i in range(24)]
    slots: list[datetime] = list(await asyncio.gather(*(reserve(k) for k in keys)))
    # Exactly two per rolling week, packed as early as the cap allows, whatever the interleaving.
    assert sorted(slots) == [t0 + WEEK * (i // 2) for i in range(24)]
    # A retried activity gets the slot it reserved the first time.
    assert await reserve(keys[5]) == slots[5]
    with postgres_deps.sessions() as s:
        other = repo.reserve_send_slot(s, "lee@acme.example", "other", t0, 2, WEEK)
    assert other == t0  # caps are per contact
