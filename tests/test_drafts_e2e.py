"""The `draft` step on the time-skipping server: the account workflow, the real `draft_text`
activity, the real `openai` and `anthropic` clients against the stand-ins in tests/servers/.

A run drafts a plan, then logs a note carrying it (an internal step may use a draft freely).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from activities.deps import Deps
from tests.conftest import write_folder
from tests.hosts import OneRun, start_one_run
from tests.servers.ai_server import DEFAULT_REPLY, FakeAI, run_ai_server
from tests.test_secrets_scan import _decoded
from touchpoint.config import load_settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import RunResult
from touchpoint.dsl.validate import load_project
from worker import build_worker

KEY = "sk-e2e-" + uuid.uuid4().hex
FILES = {
    "workspace.yaml": "timezone: UTC\n",
    "p.yaml": """\
playbook: p
trigger: manual
steps:
  - draft: {prompt: plan_prompt, into: plan, fallback: plan_fallback, max_words: 120}
    id: plan
  - note: {text: "Plan: {{ run.vars.plan }}"}
    id: plan_note
""",
    "templates/plan_prompt.txt.j2": "Write an AI plan for {{ account.name }}, {{ account.seats.active }} active seats.\n",
    "templates/plan_fallback.txt.j2": "Plan for {{ account.name }}: pick one workflow, automate it, measure it.\n",
}
FALLBACK = "Plan for Acme: pick one workflow, automate it, measure it."
ACCOUNT = AccountDoc.model_validate({"id": "acme", "name": "Acme", "seats": {"licensed": 50, "active": 40}})


@pytest.fixture(params=["openai", "anthropic"])
def ai(request: pytest.FixtureRequest) -> Iterator[FakeAI]:
    with run_ai_server(str(request.param), KEY) as server:
        yield server


@asynccontextmanager
async def worker_for(env: WorkflowEnvironment, tmp_path: Path, ai: FakeAI, **settings: Any) -> AsyncIterator[str]:
    keys = {"ai_key": KEY} if ai.provider == "openai" else {"anthropic_api_key": KEY}
    config = load_settings(
        home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/store.db", ai_backend=ai.provider, ai_url=ai.base_url,
        ai_model="plan-model", **{**keys, **settings},
    )
    deps = Deps.from_settings(config)
    project = load_project(write_folder(tmp_path / "playbooks", FILES))
    project.raise_for_problems()
    with deps.sessions.begin() as s:
        deploy_project(s, project)
    queue = f"drafts-{uuid.uuid4().hex[:10]}"
    try:
        async with build_worker(env.client, deps, task_queue=queue, strict_imports=True, fail_fast=True):
            yield queue
    finally:
        await deps.close()


def draft_line(result: RunResult) -> dict[str, Any]:
    (line,) = [r.detail for r in result.history if r.action == "draft"]
    return line


async def activity_attempts(run: OneRun) -> list[tuple[float, int]]:
    """Each `draft_text` activity's (seconds from its scheduling to its last attempt's start, on
    the server's clock, attempts)."""
    history = await run.handle.fetch_history()
    scheduled = {
        e.event_id: e.event_time.ToDatetime() for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and e.activity_task_scheduled_event_attributes.activity_type.name == "draft_text"
    }
    return [
        ((e.event_time.ToDatetime() - scheduled[a.scheduled_event_id]).total_seconds(), a.attempt)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED and (a := e.activity_task_started_event_attributes).scheduled_event_id in scheduled
    ]


async def test_drafts_e2e_the_models_text_is_kept_with_its_prompt_model_and_tokens(time_env: WorkflowEnvironment, tmp_path: Path, ai: FakeAI) -> None:
    async with worker_for(time_env, tmp_path, ai) as queue:
        run = await start_one_run(time_env.client, queue, ACCOUNT, "p")
        result = await run.result()
    assert result.outcome == "completed"
    assert result.vars["plan"] == DEFAULT_REPLY
    line = draft_line(result)
    assert line["into"] == "plan" and line["backend"] == ai.provider and line["source"] == "model"
    assert line["model"] == "plan-model" and line["words"] == len(DEFAULT_REPLY.split())
    assert line["prompt"] == "Write an AI plan for Acme, 40 active seats." and line["text"] == DEFAULT_REPLY
    assert line["tokens"] == {"input": 9, "output": len(DEFAULT_REPLY.split())}
    (note,) = [r.detail for r in result.history if r.action == "note"]
    assert note["text"] == f"Plan: {DEFAULT_REPLY}"
    bound = "max_completion_tokens" if ai.provider == "openai" else "max_tokens"
    assert ai.requests[0].body[bound] == 240
    texts: list[str] = []
    _decoded(json.loads((await run.handle.fetch_history()).to_json()), texts)
    history = "\n".join(texts)
    assert "Write an AI plan for Acme" in history  # the prompt is in the history, the key is not
    assert KEY not in history


@pytest.mark.parametrize(("headers", "delay"), [({"retry-after": "7"}, 7.0), ({"retry-after-ms": "2500"}, 2.5)])
async def test_drafts_e2e_a_429_is_retried_after_the_providers_hint(
    time_env: WorkflowEnvironment, tmp_path: Path, ai: FakeAI, headers: dict[str, str], delay: float
) -> None:
    ai.fail_next(429, headers=headers)
    async with worker_for(time_env, tmp_path, ai) as queue:
        run = await start_one_run(time_env.client, queue, ACCOUNT, "p")
        result = await run.result()
        attempts = await activity_attempts(run)
    assert result.vars["plan"] == DEFAULT_REPLY and len(ai.requests) == 2
    (waited, attempt), *_ = attempts
    assert attempt == 2
    assert delay <= waited < delay + 1.0  # the hint, not the 1 s the retry policy starts with


async def test_drafts_e2e_5xx_and_a_timeout_are_retried(time_env: WorkflowEnvironment, tmp_path: Path, ai: FakeAI) -> None:
    ai.fail_next(500 if ai.provider == "openai" else 529)
    ai.delay_next(0.0)  # the failure above
    ai.delay_next(3.0)  # the second attempt outlasts the client's 0.5 s
    async with worker_for(time_env, tmp_path, ai, ai_timeout=0.5) as queue:
        run = await start_one_run(time_env.client, queue, ACCOUNT, "p")
        result = await run.result()
        attempts = await activity_attempts(run)
    assert result.vars["plan"] == DEFAULT_REPLY and draft_line(result)["source"] == "model"
    assert len(ai.requests) == 3 and attempts[-1][1] == 3


async def test_drafts_e2e_a_401_pauses_the_run_until_resumed(time_env: WorkflowEnvironment, tmp_path: Path, ai: FakeAI) -> None:
    ai.api_key = "sk-the-provider-revoked-ours"
    async with worker_for(time_env, tmp_path, ai) as queue:
        run = await start_one_run(time_env.client, queue, ACCOUNT, "p")
        for _ in range(500):
            status = await run.status()
            if status.status == "paused":
                break
            await asyncio.sleep(0.02)
        assert status.status == "paused" and status.step == "plan"
        assert status.paused_reason is not None and "401" in status.paused_reason and "resume the run" in status.paused_reason
        assert KEY not in status.paused_reason
        assert len(ai.requests) == 1  # a configuration error is not retried
        ai.api_key = KEY  # fixed on the provider's side
        await run.control("resume")
        result = await run.result()
    assert result.outcome == "completed" and result.vars["plan"] == DEFAULT_REPLY
    assert [r.action for r in result.history if r.step == "plan"] == ["paused", "draft"]


@pytest.mark.parametrize("case", ["refusal", "empty"])
async def test_drafts_e2e_a_refusal_or_an_empty_answer_keeps_the_fallback_and_a_note(time_env: WorkflowEnvironment, tmp_path: Path, ai: FakeAI, case: str) -> None:
    (ai.refuse if case == "refusal" else ai.answer_empty)()
    async with worker_for(time_env, tmp_path, ai) as queue:
        run = await start_one_run(time_env.client, queue, ACCOUNT, "p")
        result = await run.result()
    assert result.outcome == "completed" and result.vars["plan"] == FALLBACK
    line = draft_line(result)
    assert line["source"] == "fallback" and line["backend"] == ai.provider and line["model"] == "plan-model"
    assert ("refused" if case == "refusal" else "no text") in line["note"]
    assert len(ai.requests) == 1


async def test_drafts_e2e_a_failure_after_retries_keeps_the_fallback_and_a_note(time_env: WorkflowEnvironment, tmp_path: Path, ai: FakeAI) -> None:
    ai.fail_next(503, times=100_000)
    async with worker_for(time_env, tmp_path, ai) as queue:
        run = await start_one_run(time_env.client, queue, ACCOUNT, "p")
        result = await run.result()
    assert result.outcome == "completed" and result.vars["plan"] == FALLBACK
    line = draft_line(result)
    assert line["source"] == "fallback" and "failed after retries" in line["note"] and "503" in line["note"]
    assert len(ai.requests) > 10  # retried with back-off for the whole retry window (24 h, skipped)
    (note,) = [r.detail for r in result.history if r.action == "note"]
    assert note["text"] == f"Plan: {FALLBACK}"
