"""Recorded histories of earlier releases replay against today's workflows.

`tests/histories/*.json` are real runs recorded with `python -m tests.record_histories` (see
there). A workflow change that would break a run in flight on a worker upgrade (a new command
without a `workflow.patched()` guard, a reordered or renamed activity) fails here, not in
production.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from touchpoint.converter import DATA_CONVERTER
from worker import WORKFLOWS, sandbox_runner
from workflows.messages import AccountState

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))


def test_replay_histories_are_recorded() -> None:
    assert {p.stem for p in HISTORIES} >= {"account", "account_continued", "account_run", "schedule_run"}


def test_replay_the_continued_account_carried_its_run_in_flight() -> None:
    """`account_continued.json` is a run of the account workflow that continued as new with
    playbook runs in flight (one of them migrated by an update): the new run's input holds their
    state (not their programs)."""
    import base64

    events = json.loads((Path(__file__).resolve().parent / "histories" / "account_continued.json").read_text())["events"]
    closing = events[-1]["workflowExecutionContinuedAsNewEventAttributes"]
    raw = base64.b64decode(closing["input"]["payloads"][0]["data"])
    carried = AccountState.model_validate_json(raw)  # as the new run reads it (defaults left out)
    runs = {run.playbook: run for run in carried.runs.values()}
    assert sorted(runs) == ["m", "w"]  # the event-triggered run and the one POST /runs started
    assert all(run.status == "running" and run.threads for run in runs.values())
    assert "migrated" in [line.action for line in runs["w"].recent]  # moved to version 2 before
    assert b'"trigger"' not in raw  # no frozen playbook: the version is loaded again by its id


def test_replay_the_account_history_holds_an_approval_and_its_decision() -> None:
    """`account.json` has an email held for approval: the request made, the decision (with an
    edit) delivered, then the email sent; so its replay covers the approval phase."""
    import base64

    events = json.loads((Path(__file__).resolve().parent / "histories" / "account.json").read_text())["events"]
    steps = []
    for event in events:
        if scheduled := event.get("activityTaskScheduledEventAttributes"):
            steps.append(scheduled["activityType"]["name"])
        elif signaled := event.get("workflowExecutionSignaledEventAttributes"):
            payload = json.loads(base64.b64decode(signaled["input"]["payloads"][0]["data"]))
            steps.append(payload["event"]["type"])
    # In this order (other runs of the account interleave their own steps between them).
    start = steps.index("review.asked")
    requested = steps.index("request_approval", start)
    told = steps.index("approval.requested", requested)
    decided = steps.index("approval.decided", told)
    assert "send_email" in steps[decided:], steps


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay_recorded_history(path: Path) -> None:
    text = path.read_text()
    workflow_id = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"].get("workflowId", path.stem)
    history = WorkflowHistory.from_json(workflow_id, text)
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=DATA_CONVERTER, workflow_runner=sandbox_runner(strict_imports=True))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure!r}"


async def test_replay_a_patched_change_reaches_account_workflows_in_flight() -> None:
    """The upgrade path the README picks: a new command behind `workflow.patched()` replays a
    history recorded before it; the same change without the guard does not."""
    from tests.next_release import Patched, Unguarded

    path = Path(__file__).resolve().parent / "histories" / "account.json"
    text = path.read_text()
    workflow_id = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"].get("workflowId", "account")
    history = WorkflowHistory.from_json(workflow_id, text)
    results = []
    for variant in (Patched, Unguarded):
        replayer = Replayer(workflows=[variant], data_converter=DATA_CONVERTER, workflow_runner=sandbox_runner())
        results.append((await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure)
    assert results[0] is None, repr(results[0])
    assert results[1] is not None and "Nondeterminism" in type(results[1]).__name__ + str(results[1])
