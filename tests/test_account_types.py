"""The account workflow's two types: a run of the first (`Account`, recorded with patch markers)
continues as the second (`AccountV2`) and keeps everything it knew."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.deps import Deps
from tests.conftest import write_folder
from touchpoint.config import Settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.runtime import AccountState, Envelope, EventIn
from touchpoint.dsl.schema import AccountDoc
from touchpoint.dsl.validate import load_project
from touchpoint.ingest import send_event
from touchpoint.store import repo
from touchpoint.temporal_server import start_dev_server
from worker import WORKFLOWS, build_worker, sandbox_runner
from workflows import names

PLAYBOOK = """\
playbook: webinar
trigger: {event: webinar.attended}
reenroll: always
steps:
  - note: {text: "thanks {{ account.name }}"}
  - wait: 30d
"""


async def test_account_types_the_first_continues_as_the_second_with_its_state(store_settings: Settings, tmp_path: Path) -> None:
    # A server that suggests continue-as-new after a few dozen history events.
    env = await start_dev_server(extra_args=["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=40"])
    deps = Deps.from_settings(store_settings)
    queue = f"test-{uuid.uuid4().hex[:8]}"
    acct = f"a{uuid.uuid4().hex[:8]}"
    try:
        folder = write_folder(tmp_path / "playbooks", {"workspace.yaml": "timezone: UTC\nsender: {email: cs@example.com}\n", "webinar.yaml": PLAYBOOK})
        with deps.sessions.begin() as s:
            deploy_project(s, load_project(folder))
        doc = AccountDoc.model_validate({"id": acct, "name": "Acme", "contacts": [{"email": "kim@acme.example", "role": "champion"}]})
        async with build_worker(env.client, deps, task_queue=queue, strict_imports=True, fail_fast=True):
            # An account workflow of the first type, as the API started them before `AccountV2`.
            first = await env.client.start_workflow(
                names.ACCOUNT, AccountState(account_id=acct), id=f"account/{acct}", task_queue=queue,
                start_signal="ingest", start_signal_args=[Envelope(event=EventIn(id="up", type="account.upserted", at=datetime.now(UTC), account_id=acct), account=doc)],
            )
            # Events one at a time, each applied before the next, until the server suggests
            # continue-as-new (40 history events) and the first type continues as the second.
            handle = env.client.get_workflow_handle(f"account/{acct}")
            sent = 0
            while sent < 40:
                await send_event(env.client, queue, deps.sessions, acct, EventIn(id=f"w{sent}", type="webinar.attended"))
                sent += 1
                for _ in range(500):
                    with deps.sessions() as s:
                        if len(repo.list_events(s, account_id=acct, type="webinar.attended")) == sent:
                            break
                    await asyncio.sleep(0.02)
                else:
                    raise AssertionError(f"event w{sent - 1} was not applied")
                described = await handle.describe()
                if described.run_id != first.result_run_id:
                    break
            assert described.run_id != first.result_run_id, f"no continue-as-new after {sent} events"
            assert described.workflow_type == names.ACCOUNT_V2
            first_history = await env.client.get_workflow_handle(f"account/{acct}", run_id=first.result_run_id).fetch_history()
            closing = first_history.events[-1].workflow_execution_continued_as_new_event_attributes
            assert closing.workflow_type.name == names.ACCOUNT_V2
            # That history, continue-as-new included, replays against today's workflows.
            replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter, workflow_runner=sandbox_runner(strict_imports=True))
            replayed = await replayer.replay_workflow(first_history, raise_on_replay_failure=False)
            assert replayed.replay_failure is None, replayed.replay_failure

            # What the first type knew carries over: the account, the run it started (one at a
            # time: one run for all those events) and the event ids it has seen (a repeat is a no-op).
            state = await handle.query("state", result_type=AccountState)
            assert state.account is not None and state.account.name == "Acme"
            assert set(state.last_started) == {"webinar"}  # only the first type's state knew it
            with deps.sessions() as s:
                runs = repo.list_runs(s, account_id=acct)
            assert [r.status for r in runs] == ["running"]
            assert [active.run_id for active in state.active.values()] == [runs[0].id]
            assert "w0" in state.seen_ids
            await send_event(env.client, queue, deps.sessions, acct, EventIn(id="w0", type="webinar.attended"))
            await send_event(env.client, queue, deps.sessions, acct, EventIn(id="last", type="usage.reported", data={"metrics": {"docs": 3}}))
            for _ in range(200):
                state = await handle.query("state", result_type=AccountState)
                if state.account is not None and state.account.metrics.get("docs") == 3:
                    break
                await asyncio.sleep(0.02)
            assert state.account is not None and state.account.metrics == {"docs": 3}
            with deps.sessions() as s:
                assert len(repo.list_events(s, account_id=acct, type="webinar.attended")) == sent
                assert len(repo.list_runs(s, account_id=acct)) == 1
            await env.client.get_workflow_handle(runs[0].workflow_id).terminate("test finished")
            await handle.terminate("test finished")
    finally:
        await deps.close()
        await env.shutdown()
