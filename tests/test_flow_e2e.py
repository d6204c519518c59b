"""The event -> run -> email flow and frequency caps on both stores, SQLite and PostgreSQL.

Production runs on PostgreSQL, whose write path relies on ``FOR UPDATE`` locks; the embedded
default on SQLite's one write lock. Each test here runs on both: through the API in-process on a
real time-skipping server, and (caps) from several OS processes reserving at the same moment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import Stack, eventually, on_both_stores, write_folder
from touchpoint.api.app import create_app
from touchpoint.config import load_settings
from touchpoint.store import make_engine, migrate, repo, session_factory
from touchpoint.store.models import SendSlot

ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
"""
PLAYBOOK = """\
playbook: trial
trigger: {event: trial.started, when: "event.data.plan == 'team'"}
audience: [champion]
steps:
  - email: {template: hi}
    id: hello
  - task: {title: "Call {{ account.name }} about {{ event.data.plan }}", owner: csm, due: 2d}
    id: call
"""
TEMPLATES = {
    "templates/hi.subject.j2": "Welcome to the trial, {{ account.name }}",
    "templates/hi.html.j2": "<p>Hi {{ contact.name }}</p>",
}


@pytest.fixture
async def stack(own_stack: Stack) -> Stack:
    """A server of its own: account workflows run local activities that must not strand on a shared one."""
    return own_stack


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(home=stack.settings.home, database_url=stack.settings.db_url, task_queue=stack.task_queue)
    app = create_app(settings, stack.client, stack.deps.sessions)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://touchpoint.test") as http:
        yield http


@on_both_stores()
async def test_flow_event_starts_a_run_that_sends_one_email(stack: Stack, folder: Path, api: httpx.AsyncClient, store: str) -> None:
    write_folder(folder, {"workspace.yaml": WORKSPACE, "trial.yaml": PLAYBOOK, **TEMPLATES})
    stack.deploy(folder)
    acct = f"acct-{uuid.uuid4().hex[:8]}"
    doc = {
        "name": "Acme",
        "csm": {"name": "Dana", "email": "dana@example.com"},
        "contacts": [
            {"email": f"kim@{acct}.example", "name": "Kim", "role": "champion"},
            {"email": f"lee@{acct}.example", "name": "Lee", "role": "admin"},
        ],
    }
    assert (await api.put(f"/accounts/{acct}", json=doc)).status_code == 202
    # Not the trigger's plan: no run. Then the right plan, twice with one id, and once more later.
    other = {"type": "trial.started", "account_id": acct, "data": {"plan": "solo"}, "id": "evt-solo"}
    assert (await api.post("/events", json=other)).status_code == 202
    event = {"type": "trial.started", "account_id": acct, "data": {"plan": "team"}, "id": "evt-team"}
    for _ in range(2):
        assert (await api.post("/events", json=event)).status_code == 202

    def ended(s: Any) -> list[Any]:
        return [r for r in repo.list_runs(s, account_id=acct) if r.status == "ended"]

    (run,) = await eventually(stack, ended)
    assert (run.playbook_id, run.outcome) == ("trial", "completed")
    with stack.deps.sessions() as s:
        messages = repo.list_messages(s, run_id=run.id)
        tasks = repo.list_tasks(s)
        events = sorted(e.type for e in repo.list_events(s, account_id=acct))
    assert [(m.to_email, m.status, m.subject) for m in messages] == [(f"kim@{acct}.example", "sent", "Welcome to the trial, Acme")]
    assert [(t.account_id, t.title, t.owner) for t in tasks] == [(acct, "Call Acme about team", "dana@example.com")]
    assert events.count("trial.started") == 2  # the repeated id is recorded once
    outbox = list(stack.settings.outbox_dir.glob("*.eml"))
    assert len(outbox) == 1 and f"kim@{acct}.example" in outbox[0].read_text()
    runs = (await api.get("/runs", params={"account": acct})).json()
    assert [(r["playbook"], r["status"], r["outcome"]) for r in runs] == [("trial", "ended", "completed")]
    assert stack.settings.db_url.startswith("postgresql" if store == "postgresql" else "sqlite")


RESERVER = """\
import asyncio, json, sys
from datetime import datetime, timedelta
from temporalio.testing import ActivityEnvironment
from activities.deps import Deps
from activities.email import EmailActivities
from touchpoint.config import load_settings
from touchpoint.dsl.runtime import ReserveSlotInput

url, home, name, count, t0 = sys.argv[1:6]
deps = Deps.from_settings(load_settings(home=home, database_url=url))
activities = EmailActivities(deps)
print("ready", flush=True)
sys.stdin.readline()  # every process starts reserving at once

async def main():
    env = ActivityEnvironment()
    slots = {}
    for i in range(int(count)):
        key = f"run-{name}-{i}|steps[0]|kim@acme.example|1"
        slot = ReserveSlotInput(key=key, contact_email="Kim@Acme.example", desired_at=datetime.fromisoformat(t0), emails=2, per=timedelta(days=7))
        slots[key] = (await env.run(activities.reserve_send_slot, slot)).isoformat()
    return slots

print(json.dumps(asyncio.run(main())), flush=True)
"""


@on_both_stores()
def test_flow_frequency_cap_holds_with_reservations_from_several_processes(database_url: str, tmp_path: Path) -> None:
    processes, per_process = 4, 6
    t0 = datetime(2027, 1, 4, 10, tzinfo=UTC)
    engine = make_engine(database_url)
    migrate(engine)  # once, before the race: the race is about slots, not migrations
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started: list[subprocess.Popen[str]] = []
    try:
        for n in range(processes):
            started.append(
                subprocess.Popen(
                    [sys.executable, "-c", RESERVER, database_url, str(tmp_path / "home"), f"p{n}", str(per_process), t0.isoformat()],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                )
            )
        for proc in started:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in started:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results: dict[str, datetime] = {}
        for proc in started:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, out
            results.update({k: datetime.fromisoformat(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()})
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    week = timedelta(days=7)
    total = processes * per_process
    # Two per rolling week, packed as early as the cap allows, whichever process won each race.
    assert sorted(results.values()) == [t0 + week * (i // 2) for i in range(total)]
    sessions = session_factory(engine)
    try:
        with sessions() as s:
            rows = {key: at for key, at in s.execute(select(SendSlot.ledger_key, SendSlot.slot_at))}
        assert rows == results
    finally:
        engine.dispose()
