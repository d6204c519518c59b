"""The production topology as processes: two `touchpoint api` and three `touchpoint worker`
against one Temporal dev server and PostgreSQL, fed through both APIs; every email once.

The same shape as docker-compose.yml (which no Docker engine runs here). The test checks
outcomes only (messages in the store, files in the outbox, counters on `/metrics`), never
workflow or activity names, which the engine may change.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import write_folder
from touchpoint.temporal_server import DevServerEnvironment, free_port, start_dev_server

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
ACCOUNTS = 8
FOLDER = {
    "workspace.yaml": 'timezone: UTC\nsender: {email: cs@example.com, name: CS}\nsend_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}\n',
    "kickoff.yaml": (
        "playbook: kickoff\n"
        "trigger: {event: trial.started}\n"
        "audience: [champion]\n"
        "steps:\n"
        "  - email: {template: welcome}\n    id: welcome\n"
        "  - email: {template: tips}\n    id: tips\n"
    ),
    "templates/welcome.subject.j2": "Welcome {{ account.name }}",
    "templates/welcome.html.j2": "<p>Hi {{ contact.name }}</p>",
    "templates/tips.subject.j2": "Tips for {{ account.name }}",
    "templates/tips.html.j2": "<p>Tip one</p>",
}


@dataclass
class Topology:
    root: Path
    env: dict[str, str]
    database_url: str
    apis: list[str] = field(default_factory=list)
    worker_metrics: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "touchpoint.cli.main", *args],
            cwd=self.root,
            env={**self.env, **extra},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.root.glob("*.log")))

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "touchpoint.cli.main", *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@contextlib.contextmanager
def own_database() -> Iterator[str]:
    """A database of this test's own on the shared PostgreSQL (dropped afterwards)."""
    name = f"tp_topology_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def server() -> AsyncIterator[DevServerEnvironment]:
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture
def topology(server: DevServerEnvironment, tmp_path: Path) -> Iterator[Topology]:
    write_folder(tmp_path / "playbooks", FOLDER)
    with own_database() as database_url:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TOUCHPOINT_TEMPORAL_ADDRESS": server.client.service_client.config.target_host,
            "TOUCHPOINT_DATABASE_URL": database_url,
            "TOUCHPOINT_HOME": str(tmp_path / "home"),
            "TOUCHPOINT_TASK_QUEUE": f"topology-{uuid.uuid4().hex[:8]}",
            "TOUCHPOINT_SECRET_KEY": secrets.token_urlsafe(40),
            "TOUCHPOINT_SHUTDOWN_GRACE": "5",
        }
        topo = Topology(tmp_path, env, database_url)
        try:
            yield topo
        finally:
            for process in topo.processes:
                if process.poll() is None:
                    process.kill()
                process.wait()


def _wait_ready(urls: list[str], topo: Topology, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending:
        for process in topo.processes:
            assert process.poll() is None, topo.logs()
        try:
            if httpx.get(f"{pending[0]}/readyz", timeout=2).status_code == 200:
                pending.pop(0)
                continue
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{pending[0]} not ready\n{topo.logs()}"
        time.sleep(0.2)


def _metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{.*\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


@pytest.mark.timeout(240)
def test_two_apis_and_three_workers_send_every_email_once(topology: Topology) -> None:
    topo = topology
    assert "namespace 'default': exists" in topo.cli("setup", "playbooks")
    assert "store: schema up to date" in topo.cli("setup")  # a second run changes nothing
    assert "kickoff" in topo.cli("deploy", "playbooks")
    for i in range(3):
        port = free_port()
        topo.worker_metrics.append(f"http://127.0.0.1:{port}")
        topo.spawn(f"worker{i}", ["worker", "--max-concurrent-activities", "20"], TOUCHPOINT_METRICS_BIND=f"127.0.0.1:{port}")
    for i in range(2):
        port = free_port()
        topo.apis.append(f"http://127.0.0.1:{port}")
        topo.spawn(f"api{i}", ["api", "--bind", f"127.0.0.1:{port}"])
    _wait_ready(topo.apis + topo.worker_metrics, topo)

    accepted_events = 0
    for n in range(ACCOUNTS):
        api = topo.apis[n % 2]
        doc = {"id": f"acct{n}", "name": f"Account {n}", "timezone": "UTC", "contacts": [{"email": f"kim@acct{n}.example", "name": "Kim", "role": "champion"}]}
        assert httpx.put(f"{api}/accounts/acct{n}", json=doc, timeout=30).status_code == 202
    for n in range(ACCOUNTS):
        # The same event id through both APIs: accepted twice, applied once.
        for api in topo.apis:
            response = httpx.post(f"{api}/events", json={"type": "trial.started", "account_id": f"acct{n}", "id": f"evt-{n}"}, timeout=30)
            assert response.status_code == 202, response.text
            accepted_events += 1

    engine = create_engine(topo.database_url)
    expected = ACCOUNTS * 2
    deadline = time.monotonic() + 90
    try:
        while True:
            with engine.connect() as conn:
                sent = conn.execute(text("SELECT count(*) FROM messages WHERE status = 'sent'")).scalar_one()
            if sent >= expected:
                break
            assert time.monotonic() < deadline, f"{sent} of {expected} emails sent\n{topo.logs()}"
            time.sleep(0.3)
        time.sleep(2)  # a duplicate would show up now
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT account_id, step, to_email, count(*) FROM messages GROUP BY account_id, step, to_email")).all()
            runs = conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
    finally:
        engine.dispose()
    assert len(rows) == expected
    assert {count for *_, count in rows} == {1}, rows
    assert {(a, s) for a, s, _, _ in rows} == {(f"acct{n}", step) for n in range(ACCOUNTS) for step in ("welcome", "tips")}
    assert runs == ACCOUNTS
    outbox = list((topo.root / "home" / "outbox").glob("*.eml"))
    assert len(outbox) == expected

    # Metrics: each worker's own counters add up; the APIs count what each accepted.
    sent_by_workers = [_metric(url, "touchpoint_emails_total", playbook="kickoff", status="sent") for url in topo.worker_metrics]
    assert sum(sent_by_workers) == expected
    assert sum(_metric(url, "touchpoint_emails_total", playbook="kickoff", step="welcome", status="sent") for url in topo.worker_metrics) == ACCOUNTS
    assert all(_metric(url, "temporal_worker_task_slots_available") > 0 or _metric(url, "temporal_request_total") > 0 for url in topo.worker_metrics)
    events = [_metric(url, "touchpoint_events_accepted_total", type="trial.started", path="/events") for url in topo.apis]
    assert events == [ACCOUNTS, ACCOUNTS] and sum(events) == accepted_events
    assert sum(_metric(url, "touchpoint_events_accepted_total", type="account.updated") for url in topo.apis) == ACCOUNTS
    assert _metric(topo.apis[0], "touchpoint_enrollments_total", playbook="kickoff") == ACCOUNTS
    assert _metric(topo.apis[1], "temporal_request_total") > 0

    # SIGTERM: every process drains and leaves with 0.
    for process in topo.processes:
        process.send_signal(signal.SIGTERM)
    for process in topo.processes:
        assert process.wait(timeout=30) == 0, topo.logs()
