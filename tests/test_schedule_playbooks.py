"""Schedule playbooks: one tick of the shipped weekly digest, red-account review and wishlist.

Each test fills a real SQLite store with the sample accounts of `playbooks/samples/` and the
sample events of `samples/changes.yaml`, then runs `ScheduleRun` on the real time-skipping server
(which has no Schedules: the workflow is started as a Schedule would start it) and reads the
outbox: who received what.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Stack, write_folder
from touchpoint.dsl.schedule import ScheduleRunInput, ScheduleRunResult
from touchpoint.dsl.validate import load_project
from touchpoint.email.check import sample_accounts
from touchpoint.preview import sample_changes
from touchpoint.store import repo

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"
TICK = datetime(2027, 3, 1, 13, 0, tzinfo=UTC)  # a Monday, 08:00 in New York: the digest's tick


def load_samples(stack: Stack, *, at: datetime) -> None:
    """The sample accounts, and the sample changes as events a day before ``at``."""
    project = load_project(PLAYBOOKS)
    accounts, problems = sample_accounts(project, PLAYBOOKS / "samples")
    assert not problems
    with stack.deps.sessions.begin() as s:
        for _, account in accounts:
            doc = account.model_dump(mode="json")
            repo.upsert_account(s, doc, doc.pop("contacts"))
        for index, change in enumerate(sample_changes(PLAYBOOKS / "samples")):
            repo.record_event(s, f"sample-{index}", change.account, change.type, at - timedelta(days=1), change.data)


async def tick(stack: Stack, playbook: str, at: datetime = TICK) -> ScheduleRunResult:
    result: ScheduleRunResult = await stack.client.execute_workflow(
        "ScheduleRun",
        ScheduleRunInput(playbook=playbook, tick=at),
        id=f"schedule-{playbook}-{uuid.uuid4().hex[:6]}",
        task_queue=stack.task_queue,
        result_type=ScheduleRunResult,
    )
    return result


def inbox(stack: Stack) -> dict[str, list[tuple[str, str]]]:
    """Sent messages by recipient: (subject, html)."""
    with stack.deps.sessions() as s:
        found: dict[str, list[tuple[str, str]]] = {}
        for m in repo.list_messages(s, limit=1000):
            if m.status == "sent":
                found.setdefault(m.to_email, []).append((m.subject, m.html))
        return found


@pytest.fixture
def shipped(stack: Stack) -> Stack:
    stack.deploy(PLAYBOOKS)
    load_samples(stack, at=TICK)
    return stack


async def test_schedule_weekly_digest_sends_each_csm_only_their_book(shipped: Stack) -> None:
    result = await tick(shipped, "weekly-seat-digest")
    assert result.outcome == "completed"
    mail = inbox(shipped)
    # Dana: Contoso (-50); Jonas: Brandt (+50); Priya: Globex (+200). Tinyco has no CSM.
    assert set(mail) == {"dana@example.com", "jonas@example.com", "priya@example.com"}
    (subject, html), = mail["dana@example.com"]
    assert "1 accounts" in subject
    assert "Contoso Health" in html and "-50 (risk)" in html
    assert "Globex" not in html and "Brandt" not in html
    (_, html), = mail["priya@example.com"]
    assert "Globex Corporation" in html and "+200 (expansion)" in html and "Contoso" not in html
    (_, html), = mail["jonas@example.com"]
    assert "Brandt" in html and "2 accounts in your book" in html  # Brandt and Rheinwerk

    # A week later nothing changed: the window starts at the previous tick, so no digest.
    later = await tick(shipped, "weekly-seat-digest", TICK + timedelta(days=7))
    assert later.outcome == "completed"
    assert [r for r in later.history if r.action == "email"] == []
    assert sum(len(v) for v in inbox(shipped).values()) == 3


async def test_schedule_tick_twice_sends_nothing_twice(shipped: Stack) -> None:
    await tick(shipped, "weekly-seat-digest")
    again = await tick(shipped, "weekly-seat-digest")  # the same tick, started a second time
    assert [r.detail["status"] for r in again.history if r.action == "email"] == ["sent"] * 3
    assert sum(len(v) for v in inbox(shipped).values()) == 3
    with shipped.deps.sessions() as s:
        run = repo.get_run(s, f"schedule:weekly-seat-digest:{TICK.strftime('%Y%m%dT%H%M%SZ')}")
        assert run is not None and run.status == "ended" and run.outcome == "completed" and run.account_id is None


async def test_schedule_quarterly_wishlist_ranks_features_by_arr(shipped: Stack) -> None:
    result = await tick(shipped, "quarterly-product-wishlist", datetime(2027, 4, 1, 13, 0, tzinfo=UTC))
    assert result.outcome == "completed"
    mail = inbox(shipped)
    assert set(mail) == {"product-leadership@example.com", "cs-leadership@example.com"}
    (subject, html), = mail["product-leadership@example.com"]
    assert "3 features requested" in subject
    # SCIM: Globex + Brandt = $910,000; Offline mode: Contoso + Northwind = $144,000; Gantt: $52,000.
    scim, offline, gantt = (html.index(f) for f in ("SCIM provisioning", "Offline mode", "Gantt view"))
    assert scim < offline < gantt
    assert "$910,000" in html and "$144,000" in html and "$52,000" in html


async def test_schedule_red_review_goes_to_leadership_and_csms_with_red_accounts(shipped: Stack) -> None:
    result = await tick(shipped, "monthly-red-account-review", datetime(2027, 3, 1, 14, 0, tzinfo=UTC))
    assert result.vars["red_accounts"] == 2  # Contoso and Tinyco
    mail = inbox(shipped)
    # Only Dana has a red account in her book; Tinyco has no CSM.
    assert set(mail) == {"cs-leadership@example.com", "dana@example.com"}
    (subject, html), = mail["cs-leadership@example.com"]
    assert "2 accounts" in subject and "$96,000" in subject
    assert "Contoso Health" in html and "new to red" in html and "-50 seats" in html
    assert "Globex" not in html
    (_, html), = mail["dana@example.com"]
    assert "Contoso Health" in html and "Tinyco" not in html


async def test_schedule_when_if_set_and_webhook_see_accounts(stack: Stack, folder: Path) -> None:
    write_folder(
        folder,
        {
            "workspace.yaml": "timezone: UTC\nsender: {email: cs@example.com}\n",
            "p.yaml": """\
playbook: p
trigger: {schedule: "0 9 * * *"}
steps:
  - set: {big: "accounts | selectattr('arr', 'gt', 100000) | map(attribute='id') | list"}
    id: big
  - if: "run.vars.big | length > 1"
    id: many
    then:
      - email: {template: t, to: [ops@example.com]}
        id: report
    else:
      - exit: {}
  - email: {template: t, to: [never@example.com]}
""",
            "templates/t.subject.j2": "{{ run.vars.big | join(',') }}",
            "templates/t.html.j2": "{{ accounts | length }} accounts",
        },
    )
    stack.deploy(folder)
    load_samples(stack, at=TICK)
    result = await tick(stack, "p")
    assert result.vars["big"] == ["brandt", "globex"]
    assert [(r.step, r.action) for r in result.history] == [("big", "set"), ("many", "if"), ("report", "email"), ("steps[2]", "email")]
    mail = inbox(stack)
    ((subject, html),) = mail["ops@example.com"]
    assert subject == "brandt,globex" and html.startswith("6 accounts")
