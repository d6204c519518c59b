"""Shared fixtures: real Temporal servers from the wheels, a real store, a worker per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.deps import Deps
from tests import pg
from touchpoint.config import Settings, load_settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.validate import Project, load_project
from touchpoint.temporal_server import start_time_skipping
from worker import build_worker

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """One time-skipping server for the session (its clock only moves forward)."""
    env = await start_time_skipping()
    yield env
    await env.shutdown()


@dataclass
class Stack:
    """A worker on a fresh task queue with its own store and outbox."""

    client: Client
    env: WorkflowEnvironment
    deps: Deps
    settings: Settings
    task_queue: str
    root: Path

    def deploy(self, folder: Path) -> Project:
        project = load_project(folder)
        project.raise_for_problems()
        with self.deps.sessions.begin() as s:
            deploy_project(s, project)
        return project


STORES = ("sqlite", "postgresql")
"""The store's two databases; parametrize ``store`` (``indirect=True``) to run a test on both."""


@pytest.fixture
def store(request: pytest.FixtureRequest) -> str:
    """The store's database for this test: ``sqlite`` unless the test parametrizes ``store``."""
    return str(getattr(request, "param", "sqlite"))


def on_both_stores() -> pytest.MarkDecorator:
    """Run the test once on a SQLite file and once on a PostgreSQL schema of its own."""
    return pytest.mark.parametrize("store", STORES, indirect=True)


@pytest.fixture
def database_url(store: str, tmp_path: Path) -> Iterator[str]:
    """The store's URL: a SQLite file, or a PostgreSQL schema of its own (tests/pg.py), dropped after."""
    if store == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    try:
        pg.check()
    except pg.PostgresUnreachable as exc:
        pytest.fail(str(exc), pytrace=False)
    with pg.schema("tp_stack") as schema:
        yield pg.schema_url(schema)


@pytest.fixture
def store_settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings(home=tmp_path / "home", database_url=database_url)


@pytest.fixture
async def own_time_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this test's own, for tests that skip a lot of time."""
    env = await start_time_skipping()
    yield env
    await env.shutdown()


@pytest.fixture
async def own_stack(own_time_env: WorkflowEnvironment, store_settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    """Like `stack`, on a server of its own."""
    async for item in _stack(own_time_env, store_settings, tmp_path):
        yield item


@pytest.fixture
async def stack(time_env: WorkflowEnvironment, store_settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    async for item in _stack(time_env, store_settings, tmp_path):
        yield item


async def _stack(time_env: WorkflowEnvironment, store_settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    deps = Deps.from_settings(store_settings)
    queue = f"test-{uuid.uuid4().hex[:10]}"
    worker = build_worker(time_env.client, deps, task_queue=queue, strict_imports=True, fail_fast=True)
    async with worker:
        yield Stack(time_env.client, time_env, deps, store_settings, queue, tmp_path)
        await _terminate_leftovers(time_env.client, deps)
    await deps.close()


async def _terminate_leftovers(client: Client, deps: Deps) -> None:
    # The time-skipping server is shared and its clock only moves forward: a workflow left open
    # without a worker blocks time skipping for later tests once its next timer is due.
    from temporalio.service import RPCError

    from touchpoint.store import repo

    with deps.sessions() as s:
        ids = [r.workflow_id for r in repo.list_runs(s) if r.status != "ended"]
        ids += [f"account/{doc['id']}" for doc, _ in repo.list_accounts(s, limit=10_000)]
    for workflow_id in ids:
        try:
            await client.get_workflow_handle(workflow_id).terminate("test finished")
        except RPCError:
            pass


async def eventually(stack: Stack, probe: Any, timeout: float = 60.0) -> Any:
    """Poll ``probe(session)`` on the stack's store until it returns something truthy.

    Account workflows and their runs are asynchronous to the test; the generous default is for
    a loaded 2-core CI machine, a passing probe returns at once.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        with stack.deps.sessions() as s:
            value = probe(s)
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def write_folder(root: Path, files: dict[str, str]) -> Path:
    """Write a playbooks folder (paths relative to it)."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "playbooks"
    (root / "templates").mkdir(parents=True)
    yield root
