"""Runs survive worker restarts, keep their version, pause, resume, cancel, and replay."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from temporalio.worker import Replayer

from tests.conftest import Stack, on_both_stores, write_folder
from tests.hosts import OneRun, start_one_run
from tests.test_interpreter import ACCOUNT, TEMPLATES, WORKSPACE
from touchpoint.converter import DATA_CONVERTER
from touchpoint.dsl.runtime import RunResult, RunStatus
from touchpoint.store import repo
from worker import build_worker, sandbox_runner
from workflows.account import AccountWorkflow


@dataclass
class Planned:
    """A run about to start: its id (chosen here) and the version `p` is deployed at."""

    run_id: str
    version: str


def deploy(stack: Stack, folder: Path, body: str, templates: dict[str, str] | None = None) -> Planned:
    write_folder(folder, {"workspace.yaml": WORKSPACE, "p.yaml": body, **TEMPLATES, **(templates or {})})
    project = stack.deploy(folder)
    return Planned(run_id=f"run-{uuid.uuid4().hex[:8]}", version=project.playbooks["p"].version)


async def start(stack: Stack, run: Planned) -> OneRun:
    return await start_one_run(stack.client, stack.task_queue, ACCOUNT, "p", run_id=run.run_id)


async def until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def messages(stack: Stack, run_id: str) -> list[Any]:
    with stack.deps.sessions() as s:
        return repo.list_messages(s, run_id=run_id)


async def status(handle: OneRun) -> RunStatus:
    return await handle.status()


ROOT = Path(__file__).resolve().parent.parent

THREE_EMAILS = """\
playbook: p
trigger: manual
audience: [champion]
steps:
  - email: {template: welcome}
    id: first
  - wait: 2d
  - email: {template: welcome}
    id: second
  - wait: 2d
  - email: {template: welcome}
    id: third
"""


def spawn_worker(stack: Stack, queue: str) -> subprocess.Popen[bytes]:
    """A real worker process (`python worker.py`) on ``queue``, sharing the test's store."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TOUCHPOINT_TEMPORAL_ADDRESS": stack.client.service_client.config.target_host,
        "TOUCHPOINT_TASK_QUEUE": queue,
        "TOUCHPOINT_DATABASE_URL": stack.settings.db_url,
        "TOUCHPOINT_HOME": str(stack.settings.home),
        # No cache, so no sticky queue: the Java test server does not time out the sticky queue
        # of a killed worker, which would strand the run there (the dev server does, after 5 s).
        "TOUCHPOINT_WORKER_CACHE": "0",
    }
    return subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run_across_a_kill(stack: Stack, run: Planned, *, after_kill: Any = None) -> RunResult:
    """Start ``run`` on a worker process, SIGKILL it after the first email, finish on a new worker."""
    queue = f"restart-{uuid.uuid4().hex[:8]}"
    process = spawn_worker(stack, queue)
    try:
        handle = await start_one_run(stack.client, queue, ACCOUNT, "p", run_id=run.run_id)
        await until(lambda: len(messages(stack, run.run_id)) == 1, timeout=60)
    finally:
        process.kill()
        process.wait()
    if after_kill:
        after_kill()
    async with build_worker(stack.client, stack.deps, task_queue=queue, strict_imports=True, fail_fast=True):
        return await handle.result()


@on_both_stores()
async def test_durability_worker_kill_resumes_without_duplicates(stack: Stack, folder: Path) -> None:
    run = deploy(stack, folder, THREE_EMAILS)
    result = await run_across_a_kill(stack, run)
    assert result.outcome == "completed"
    sent = messages(stack, run.run_id)
    assert sorted(m.step for m in sent) == ["first", "second", "third"]
    assert [r.step for r in result.history if r.action == "email"] == ["first", "second", "third"]
    assert len(list(stack.settings.outbox_dir.glob("*.eml"))) == 3


async def test_durability_runs_keep_their_version_after_a_redeploy(stack: Stack, folder: Path) -> None:
    v1 = THREE_EMAILS.replace("  - wait: 2d\n  - email: {template: welcome}\n    id: third\n", "")
    run = deploy(stack, folder, v1 + "  - note: {text: v1 ending}\n")
    new_versions: list[str] = []

    def edit_and_redeploy() -> None:
        # Edit the playbook and its template and deploy, while the run waits and no worker runs.
        v2 = deploy(stack, folder, "playbook: p\ntrigger: manual\nsteps:\n  - note: {text: v2 only}\n", {"templates/welcome.subject.j2": "NEW subject"})
        new_versions.append(v2.version)

    result = await run_across_a_kill(stack, run, after_kill=edit_and_redeploy)
    assert new_versions and new_versions[0] != run.version
    assert [r.detail.get("text") for r in result.history if r.action == "note"] == ["v1 ending"]
    assert [r.detail["subject"] for r in result.history if r.action == "email"] == ["Welcome Acme", "Welcome Acme"]


async def test_durability_pause_holds_and_resume_goes_on(own_stack: Stack, folder: Path) -> None:
    # Its own server: it skips days of time, which another test's workflow with an activity in
    # flight on the shared server can hold back (seen as a run still in its first wait).
    stack = own_stack
    run = deploy(stack, folder, "playbook: p\ntrigger: manual\nsteps:\n  - wait: 1d\n  - note: {text: one}\n  - wait: 1d\n  - note: {text: two}\n")
    handle = await start(stack, run)
    await handle.control("pause")
    await stack.env.sleep(timedelta(days=3))
    # env.sleep may return before the workflow has processed the timer: look a few times.
    for _ in range(400):
        state = await status(handle)
        if state.status == "paused" and state.step == "steps[1]":
            break
        await asyncio.sleep(0.05)
    assert state.status == "paused"
    assert state.step == "steps[1]"  # held before the note, after the 1-day wait expired
    assert [r.action for r in state.history] == ["wait"]
    await handle.control("resume")
    result = await handle.result()
    assert result.outcome == "completed"
    assert [r.detail.get("text") for r in result.history if r.action == "note"] == ["one", "two"]


async def test_durability_cancel_ends_the_run(stack: Stack, folder: Path) -> None:
    run = deploy(stack, folder, "playbook: p\ntrigger: manual\nsteps:\n  - wait: 30d\n  - note: {text: never}\n")
    handle = await start(stack, run)
    await handle.control("cancel")
    result = await handle.result()
    assert result.outcome == "cancelled"
    with stack.deps.sessions() as s:
        row = repo.get_run(s, run.run_id)
    assert row is not None and row.status == "ended" and row.outcome == "cancelled"


class _Hook(BaseHTTPRequestHandler):
    status_code = 401
    calls: list[bytes] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).calls.append(body)
        self.send_response(type(self).status_code)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"calls": [], "status_code": 401})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()
    thread.join()


async def test_durability_configuration_error_pauses_until_resumed(stack: Stack, folder: Path, hook_server: tuple[str, type[_Hook]]) -> None:
    url, handler = hook_server
    run = deploy(stack, folder, f"playbook: p\ntrigger: manual\nsteps:\n  - webhook: {{url: \"{url}\", json: {{account: \"{{{{ account.id }}}}\"}}}}\n    id: notify\n  - note: {{text: after}}\n")
    handle = await start(stack, run)

    async def paused() -> bool:
        return (await status(handle)).status == "paused"

    for _ in range(200):
        if await paused():
            break
        await asyncio.sleep(0.05)
    state = await status(handle)
    assert state.status == "paused" and state.paused_reason is not None and "401" in state.paused_reason
    handler.status_code = 200
    await handle.control("resume")
    result = await handle.result()
    assert result.outcome == "completed"
    assert [r.action for r in result.history] == ["paused", "webhook", "note"]
    assert handler.calls[-1] == b'{"account":"acme"}'
    assert len([c for c in handler.calls]) == 2  # one refused with 401, one accepted


async def test_durability_histories_replay_deterministically(stack: Stack, folder: Path) -> None:
    body = """\
playbook: p
trigger: manual
audience: [champion]
scorecard:
  target: {score: 80, by_day: 10}
  milestones: [{id: m, weight: 1, event: x.done}]
  checkpoints: [{day: 3, below: 50, steps: [{note: {text: behind}}]}]
steps:
  - email: {template: welcome}
  - if: "account.seats.licensed > 100"
    then: [{task: {title: "Call {{ account.name }}", due: 2d}}]
  - split: {a: {weight: 1, steps: [{wait: 1d}]}, b: {weight: 1, steps: [{wait: 2d}]}}
    id: ab
  - repeat: {every: 2d, times: 2, steps: [{note: {text: "r{{ run.round }}"}}]}
"""
    run = deploy(stack, folder, body)
    handle = await start(stack, run)
    await handle.result()
    history = await handle.handle.fetch_history()
    replayer = Replayer(workflows=[AccountWorkflow], data_converter=DATA_CONVERTER, workflow_runner=sandbox_runner(strict_imports=True))
    await replayer.replay_workflow(history)
