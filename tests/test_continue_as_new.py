"""Continue-as-new with runs in flight, forced by a low threshold on a real dev server.

One account hosts four runs, each caught mid-way when its workflow continues as new: in a
`wait`, in a `wait_for`, with a report card half done, and between the rounds of a `repeat`.
Each must go on from where it stood (the wait keeps its deadline, the scorecard its milestone,
the repeat its round) and send nothing twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Stack, _stack, eventually, write_folder
from touchpoint.config import Settings
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn, RunStatus
from touchpoint.ingest import put_account, send_event, start_now
from touchpoint.store import repo
from touchpoint.temporal_server import start_dev_server
from workflows import names
from workflows.messages import AccountState

SUGGEST_AFTER = 60
"""History events after which the dev server suggests continue-as-new (its default is 4 MB or
about 4,000 events): the account's setup below stays under it (25 events when measured), a few
usage events cross it."""
WAIT_SECONDS = 30
WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
"""
PLAYBOOKS = {
    "waits.yaml": f"""\
playbook: waits
trigger: {{event: kick.off}}
steps:
  - note: {{text: "waits began"}}
    id: began
  - wait: PT{WAIT_SECONDS}S
  - note: {{text: "waits done"}}
    id: done
""",
    "listens.yaml": """\
playbook: listens
trigger: {event: kick.off}
steps:
  - wait_for: {event: x.done, timeout: 1d}
  - note: {text: "x arrived"}
""",
    "card.yaml": """\
playbook: card
trigger: {event: kick.off}
goal: "run.scorecard.score >= 100"
scorecard:
  target: {score: 100, by_day: 90}
  milestones:
    - {id: first, weight: 50, event: m.first}
    - {id: second, weight: 50, event: m.second}
steps:
  - wait: 30d
""",
    "loops.yaml": f"""\
playbook: loops
trigger: {{event: kick.off}}
steps:
  - repeat:
      every: PT{WAIT_SECONDS // 3}S
      times: 3
      steps: [{{note: {{text: "round {{{{ run.round }}}}"}}}}]
""",
}


async def _dev_stack(settings: Settings, tmp_path: Path, *extra_args: str) -> AsyncIterator[Stack]:
    """A worker and store on a dev server of this test's own, started with ``extra_args``."""
    env = await start_dev_server(extra_args=extra_args)
    try:
        async for item in _stack(env, settings, tmp_path):
            yield item
    finally:
        await env.shutdown()


@pytest.fixture
async def stack(store_settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    """A dev server that suggests continue-as-new after `SUGGEST_AFTER` events."""
    async for item in _dev_stack(store_settings, tmp_path, "--dynamic-config-value", f"limit.historyCount.suggestContinueAsNew={SUGGEST_AFTER}"):
        yield item


@pytest.fixture
async def plain_stack(store_settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    """A dev server with the default thresholds (4,096 events, 4 MB)."""
    async for item in _dev_stack(store_settings, tmp_path):
        yield item


def _notes(stack: Stack, account_id: str) -> dict[str, list[str]]:
    with stack.deps.sessions() as s:
        runs = {r.id: r.playbook_id for r in repo.list_runs(s, account_id=account_id)}
        found: dict[str, list[str]] = {}
        for note in repo.list_notes(s, account_id=account_id):
            found.setdefault(runs.get(note.run_id or "", "?"), []).append(note.text)
        return found


async def test_continue_as_new_carries_runs_mid_wait_wait_for_report_card_and_repeat(stack: Stack, tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "playbooks", {"workspace.yaml": WORKSPACE, **PLAYBOOKS})
    stack.deploy(folder)
    acct = f"a{uuid.uuid4().hex[:10]}"
    doc = AccountDoc(id=acct, name="Acme", timezone="UTC", contacts=[{"email": "kim@acme.example", "role": "champion"}])
    await put_account(stack.client, stack.task_queue, stack.deps.sessions, doc)
    await send_event(stack.client, stack.task_queue, stack.deps.sessions, acct, EventIn(id="kick", type="kick.off"))
    await send_event(stack.client, stack.task_queue, stack.deps.sessions, acct, EventIn(id="first", type="m.first"))

    handle = stack.client.get_workflow_handle(f"account/{acct}")
    await eventually(stack, lambda s: (runs := {r.playbook_id: r for r in repo.list_runs(s, account_id=acct)}) and len(runs) == 4
                     and (card := runs["card"]).scorecard and card.scorecard["milestones"]["first"]["done"])
    first = await handle.describe()
    history = await handle.fetch_history()
    assert len(history.events) < SUGGEST_AFTER, f"the setup alone crossed the threshold ({len(history.events)} events)"

    # Push the history over the threshold with events the account takes (its usage).
    pushed = 0
    while (await handle.describe()).run_id == first.run_id:
        assert pushed < 200, "the account workflow did not continue as new"
        await send_event(stack.client, stack.task_queue, stack.deps.sessions, acct, EventIn(id=f"u{pushed}", type="usage.reported", data={"metrics": {"n": pushed}}))
        pushed += 1
        await asyncio.sleep(0.05)
    closed = (await stack.client.get_workflow_handle(f"account/{acct}", run_id=first.run_id).describe()).close_time
    assert closed is not None

    # Every run was in flight when the workflow continued, and the new run carries all four.
    carried: list[RunStatus] = await handle.query("runs", result_type=list[RunStatus])
    assert sorted(r.playbook for r in carried) == ["card", "listens", "loops", "waits"]
    before = _notes(stack, acct)
    assert "waits done" not in before.get("waits", []) and "x arrived" not in before.get("listens", [])
    assert len(before.get("loops", [])) < 3, f"the repeat had ended before continue-as-new: {before}"
    status = {r.playbook: r for r in carried}
    assert status["card"].scorecard is not None and status["card"].scorecard["milestones"]["first"]["done"] is True

    # After it: the events each run waits for arrive, and the clocks run out.
    await send_event(stack.client, stack.task_queue, stack.deps.sessions, acct, EventIn(id="x", type="x.done"))
    await send_event(stack.client, stack.task_queue, stack.deps.sessions, acct, EventIn(id="second", type="m.second"))
    runs = await eventually(stack, lambda s: (rows := repo.list_runs(s, account_id=acct)) and all(r.status == "ended" for r in rows) and {r.playbook_id: r for r in rows}, timeout=WAIT_SECONDS + 60)
    assert {name: run.outcome for name, run in runs.items()} == {"waits": "completed", "listens": "completed", "card": "converted", "loops": "completed"}
    assert runs["card"].scorecard["milestones"]["first"]["done"] and runs["card"].scorecard["milestones"]["second"]["done"]
    # Nothing twice, nothing lost: each note once, the rounds in order.
    assert _notes(stack, acct) == {"waits": ["waits began", "waits done"], "listens": ["x arrived"], "loops": ["round 1", "round 2", "round 3"]}
    # The wait kept its deadline: it ended WAIT_SECONDS after it began, not after the new run began.
    with stack.deps.sessions() as s:
        lines = {line.step: _utc(line.at) for line in repo.run_steps(s, runs["waits"].id) if line.action == "note"}
    began, done, continued = lines["began"], lines["done"], _utc(closed)
    assert began < continued < done, (began, continued, done)
    assert timedelta(seconds=WAIT_SECONDS) <= done - began < (continued - began) + timedelta(seconds=WAIT_SECONDS), (began, continued, done)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is None else at.astimezone(UTC).replace(tzinfo=None)


async def test_continue_as_new_after_its_share_of_updates_whatever_the_server_suggests(plain_stack: Stack, tmp_path: Path) -> None:
    """An update can cost two history events, so 2,000 of them (Temporal Cloud's limit per run)
    fit under the server's 4,096-event suggestion: the account continues as new after its own
    share (`AccountState.updates_before_continue`, low here), carrying its run, and the start
    requests after it still find that run in flight."""
    stack = plain_stack
    folder = write_folder(tmp_path / "playbooks", {"workspace.yaml": WORKSPACE, "m.yaml": "playbook: m\ntrigger: manual\nsteps:\n  - wait: 1d\n"})
    stack.deploy(folder)
    acct = f"a{uuid.uuid4().hex[:10]}"
    doc = AccountDoc(id=acct, name="Acme", timezone="UTC")
    # The account's workflow started with a low share (the API starts it with the default).
    handle = await stack.client.start_workflow(
        names.ACCOUNT, AccountState(account_id=acct, account=doc, updates_before_continue=3), id=f"account/{acct}", task_queue=stack.task_queue,
    )
    first = (await handle.describe()).run_id
    answers = [await start_now(stack.client, stack.task_queue, acct, "m") for _ in range(3)]
    assert [a.result for a in answers] == ["started", "in_flight", "in_flight"]
    run_id = answers[0].run_id
    assert run_id is not None and {a.run_id for a in answers} == {run_id}
    deadline = asyncio.get_running_loop().time() + 30
    while (await handle.describe()).run_id == first:
        assert asyncio.get_running_loop().time() < deadline, "the account did not continue as new after its share of updates"
        await asyncio.sleep(0.05)
    history = await stack.client.get_workflow_handle(f"account/{acct}", run_id=first).fetch_history()
    assert len(history.events) < 100  # far below the server's 4,096: the share, not the suggestion
    carried: list[RunStatus] = await handle.query("runs", result_type=list[RunStatus])
    assert [(r.id, r.playbook, r.status) for r in carried] == [(run_id, "m", "running")]
    again = await start_now(stack.client, stack.task_queue, acct, "m")
    assert (again.result, again.run_id) == ("in_flight", run_id)
