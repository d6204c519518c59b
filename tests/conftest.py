"""Shared fixtures: real Temporal servers from the wheels, a real store, a worker per test."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import sys
import tempfile
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
# Worker and API processes that tests start (`python worker.py`, `touchpoint worker`) need a
# secret key, as in production; tests of the refusal remove it from their process's environment.
os.environ.setdefault("TOUCHPOINT_SECRET_KEY", "test-only-" + uuid.uuid4().hex + uuid.uuid4().hex)
# The CLI's cache of checked and compiled templates (`touchpoint.cache`): one fresh folder per
# test session, never the user's own.
os.environ["TOUCHPOINT_CACHE_DIR"] = tempfile.mkdtemp(prefix="touchpoint-test-cache-")
atexit.register(shutil.rmtree, os.environ["TOUCHPOINT_CACHE_DIR"], True)


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


# ---------------------------------------------------------------------------- leftover processes
# The suite fails when a test leaves a process behind. pytest becomes a child subreaper, so a
# grandchild orphaned by a killed child (a dev server whose `touchpoint dev` was killed) is
# reparented to it and seen here; each new descendant is attributed to the test it appeared in.

PR_SET_CHILD_SUBREAPER = 36
LEFTOVER_GRACE = float(os.environ.get("TOUCHPOINT_LEFTOVER_GRACE", "10"))
"""Seconds a descendant may take to exit after the last test before it counts as left behind."""
_spawned_by: dict[int, str] = {}


def descendants(root: int | None = None) -> dict[int, str]:
    """Live (non-zombie) descendants of ``root`` (default: this process): pid -> command line."""
    children: dict[int, list[int]] = {}
    states: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        children.setdefault(int(ppid), []).append(int(entry.name))
        states[int(entry.name)] = state
    found: dict[int, str] = {}
    stack = [root or os.getpid()]
    while stack:
        for pid in children.get(stack.pop(), []):
            stack.append(pid)
            if states.get(pid) != "Z":
                try:
                    found[pid] = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    continue
    return found


def _reap_zombies() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def pytest_configure(config: pytest.Config) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if not sys.platform.startswith("linux"):
        yield
        return
    before = set(descendants())
    yield
    for pid in set(descendants()) - before:
        _spawned_by.setdefault(pid, item.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Last, so that under pytest-xdist the controller has shut its workers down first (each
    # worker checks the processes its own tests started).
    if not sys.platform.startswith("linux"):
        return
    import signal
    import time

    deadline = time.monotonic() + LEFTOVER_GRACE
    left = descendants()
    while left and time.monotonic() < deadline:
        _reap_zombies()
        time.sleep(0.2)
        left = descendants()
    if not left:
        return
    lines = [f"  pid {pid} (started during {_spawned_by.get(pid, 'an unknown test')}): {cmd[:200]}" for pid, cmd in sorted(left.items())]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap_zombies()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"\n{len(left)} process(es) left behind by the tests (now killed):\n" + "\n".join(lines)
    if reporter is not None:
        reporter.write_line(message, red=True, bold=True)
    else:
        print(message, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def invoke_cli(args: list[str], env: dict[str, str]) -> Any:
    """Run a `touchpoint` command in this process with ``env`` (CliRunner), on settings read
    from that environment: the process-wide `settings()` cache is cleared before and after."""
    from typer.testing import CliRunner

    from touchpoint.cli.main import app
    from touchpoint.config import settings

    settings.cache_clear()
    try:
        return CliRunner().invoke(app, args, env=env)
    finally:
        settings.cache_clear()

