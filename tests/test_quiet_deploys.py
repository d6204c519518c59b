"""A deploy that makes a quiet type listened to reaches every API process within the bound.

Two `touchpoint api` processes (as in production: each with its own view of the deploys,
`touchpoint.deployed`) take a steady stream of one type, alternately, while a deploy adds a
`wait_for` on it: every event accepted before the deploy began stays quiet (in the store, never
applied by a workflow), every event accepted more than `REFRESH_SECONDS` after the deploy
committed reaches the account's workflow, and the run waiting for the type goes on.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack, eventually, write_folder
from touchpoint.deployed import REFRESH_SECONDS
from touchpoint.ingest import start_run
from touchpoint.store import repo
from touchpoint.temporal_server import free_port

ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = 'timezone: UTC\nsender: {email: cs@example.com}\nsend_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}\n'
BEFORE = {"workspace.yaml": WORKSPACE, "templates/.keep": "", "trial.yaml": "playbook: trial\ntrigger: {event: trial.started}\nsteps: [{wait: 30d}]\n"}
WEBINAR = """\
playbook: webinar
trigger: manual
steps:
  - wait_for: {event: webinar.attended, timeout: 30d}
  - note: {text: "webinar seen"}
"""


@pytest.fixture
async def stack(own_stack: Stack) -> Stack:
    return own_stack


@pytest.fixture
def apis(stack: Stack, tmp_path: Path) -> Iterator[list[str]]:
    """Two `touchpoint api` processes on the stack's Temporal server and store."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TOUCHPOINT_TEMPORAL_ADDRESS": stack.client.service_client.config.target_host,
        "TOUCHPOINT_DATABASE_URL": stack.settings.db_url,
        "TOUCHPOINT_TASK_QUEUE": stack.task_queue,
        "TOUCHPOINT_HOME": str(tmp_path / "home"),
    }
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for index in range(2):
            port = free_port()
            log = open(tmp_path / f"api{index}.log", "wb")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "touchpoint.cli.main", "api", "--bind", f"127.0.0.1:{port}"],
                    cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                )
            )
            log.close()
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        for url in urls:
            while True:
                assert all(p.poll() is None for p in processes), _logs(tmp_path)
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"{url} not ready\n{_logs(tmp_path)}"
                time.sleep(0.1)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(folder.glob("api*.log")))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def test_quiet_deploy_adding_a_wait_for_reaches_both_api_processes_within_the_bound(
    stack: Stack, apis: list[str], http: httpx.AsyncClient, tmp_path: Path
) -> None:
    folder = write_folder(tmp_path / "playbooks", BEFORE)
    stack.deploy(folder)
    acct = "acme"
    doc = {"id": acct, "name": "Acme", "timezone": "UTC", "contacts": [{"email": "kim@acme.example", "role": "champion"}]}
    assert (await http.put(f"{apis[0]}/accounts/{acct}", json=doc)).status_code == 202
    await eventually(stack, lambda s: repo.get_account(s, acct))

    sent: list[tuple[str, float, float]] = []  # (event id, accepted from, accepted by), seconds after the deploy committed
    committed = began = 0.0

    async def send(n: int) -> None:
        start = time.monotonic()
        response = await http.post(f"{apis[n % 2]}/events", json={"type": "webinar.attended", "account_id": acct, "id": f"w{n}"})
        assert response.status_code == 202, response.text
        sent.append((f"w{n}", start, time.monotonic()))

    for n in range(10):  # both processes have read the deploys and take the type as quiet
        await send(n)
        await asyncio.sleep(0.05)
    began = time.monotonic()
    write_folder(folder, {"webinar.yaml": WEBINAR})
    stack.deploy(folder)
    committed = time.monotonic()
    await start_run(stack.client, stack.task_queue, acct, "webinar")
    for n in range(10, 60):  # a steady stream through both, for the bound and more
        await send(n)
        await asyncio.sleep(0.05)
    assert time.monotonic() - committed > REFRESH_SECONDS + 1

    before = [i for i, _, done in sent if done < began]
    after = [i for i, start, _ in sent if start > committed + REFRESH_SECONDS]
    assert len(before) >= 10 and len(after) >= 20 and before[-1] == "w9"
    await eventually(stack, lambda s: all((e := repo.get_event(s, i)) is not None and e.applied_by is not None for i in after))
    run = await eventually(stack, lambda s: (r := repo.list_runs(s, account_id=acct, playbook_id="webinar")) and r[0])
    await eventually(stack, lambda s: [n.text for n in repo.list_notes(s, run_id=run.id)] == ["webinar seen"])
    with stack.deps.sessions() as s:
        assert all((e := repo.get_event(s, i)) is not None and e.applied_by is None for i in before)
        assert {e.id for e in repo.list_events(s, account_id=acct, type="webinar.attended")} == {i for i, _, _ in sent}


def cli(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TOUCHPOINT_TEMPORAL_ADDRESS": stack.client.service_client.config.target_host,
        "TOUCHPOINT_DATABASE_URL": stack.settings.db_url,
        "TOUCHPOINT_TASK_QUEUE": stack.task_queue,
        "TOUCHPOINT_HOME": str(tmp_path / "home"),
        "COLUMNS": "200",
    }
    return subprocess.run([sys.executable, "-m", "touchpoint.cli.main", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


async def test_quiet_cli_sends_a_file_in_batches_and_lists_the_log(stack: Stack, tmp_path: Path) -> None:
    import json

    stack.deploy(write_folder(tmp_path / "playbooks", {**BEFORE, "webinar.yaml": WEBINAR}))
    lines = [json.dumps({"type": "feature.used", "account_id": "acme", "id": f"f{n:04d}", "at": f"2026-03-01T09:{n // 60:02d}:{n % 60:02d}Z"}) for n in range(1100)]
    lines[5] = json.dumps({"type": "webinar.attended", "account_id": "acme", "id": "listened"})
    lines[7] = '{"type": "Bad Type", "account_id": "acme"}'
    lines[9] = lines[8]  # a repeated id
    lines.insert(3, "")  # blank lines are skipped
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    result = await asyncio.to_thread(cli, stack, tmp_path, "event", "--file", "events.jsonl")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1,099 events accepted: 1,097 quiet (recorded only), 1 to account workflows, 1 repeated id; 1 rejected" in result.stdout, result.stdout
    assert "events.jsonl:9: type: String should match pattern" in result.stderr, result.stderr
    # The listened event is stored by its account workflow's store step: wait for it, then count.
    await eventually(stack, lambda s: (e := repo.get_event(s, "listened")) is not None and e.applied_by is not None)
    with stack.deps.sessions() as s:
        assert len(repo.event_log(s, "acme", limit=2000)) == 1098

    listed = await asyncio.to_thread(cli, stack, tmp_path, "events", "acme", "--type", "feature.used", "--limit", "3", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["f1099", "f1098", "f1097"]
    page = await asyncio.to_thread(cli, stack, tmp_path, "events", "--account", "acme", "--limit", "2", "--type", "feature.used", "--before", "f1097")
    assert page.returncode == 0 and "f1096" in page.stdout and "f1095" in page.stdout and "f1097" not in page.stdout.split("more:")[0], page.stdout
    assert "more: touchpoint events acme --before f1095" in page.stdout
    single = await asyncio.to_thread(cli, stack, tmp_path, "event", "invoice.paid", "--account", "acme", "--id", "one", "--data", '{"amount": 5}')
    assert single.returncode == 0 and "accepted one" in single.stdout, single.stdout + single.stderr
    with stack.deps.sessions() as s:
        assert (e := repo.get_event(s, "one")) is not None and e.data == {"amount": 5} and e.applied_by is None
    unknown = await asyncio.to_thread(cli, stack, tmp_path, "events", "acme", "--before", "nope")
    assert unknown.returncode == 1 and "no event 'nope'" in unknown.stderr
