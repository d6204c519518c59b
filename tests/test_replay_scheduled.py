"""Recorded `HealthRecompute`, `DateSweep` and `AccountSync` histories replay against today's code.

The histories are real runs recorded with `python -m tests.record_scheduled_histories` (see
there), each looping over several activity pages. A change to one of these workflows that would
break a run in flight on a worker upgrade (a new command without `workflow.patched()`, a
reordered or renamed activity) fails here; so does a secret that reached a history.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.record_scheduled_histories import HUBSPOT_TOKEN
from touchpoint.converter import DATA_CONVERTER
from worker import WORKFLOWS, sandbox_runner

HISTORIES = Path(__file__).resolve().parent / "histories"
RECORDED = {"health": "HealthRecompute", "sweep": "DateSweep", "sync": "AccountSync"}


@pytest.mark.parametrize(("stem", "workflow_type"), RECORDED.items(), ids=list(RECORDED))
async def test_replay_scheduled_history(stem: str, workflow_type: str) -> None:
    text = (HISTORIES / f"{stem}.json").read_text()
    events = json.loads(text)["events"]
    started = events[0]["workflowExecutionStartedEventAttributes"]
    assert started["workflowType"]["name"] == workflow_type
    assert sum(e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" for e in events) >= 2  # the page loop ran
    assert events[-1]["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    history = WorkflowHistory.from_json(started.get("workflowId", stem), text)
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=DATA_CONVERTER, workflow_runner=sandbox_runner(strict_imports=True))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{stem}.json: {result.replay_failure!r}"


def test_replay_scheduled_sync_history_holds_no_crm_token() -> None:
    text = (HISTORIES / "sync.json").read_text()
    assert HUBSPOT_TOKEN not in text and "Bearer" not in text
