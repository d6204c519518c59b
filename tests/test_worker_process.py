"""`touchpoint worker` as a process: it waits for Temporal instead of exiting, outlives a server
restart, waits with back-off for a store it cannot reach, takes its queue and cache size as
flags, and SIGTERM drains it without losing the activity in flight (the run goes on, nothing
twice)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import write_folder
from touchpoint.config import load_settings
from touchpoint.connection import connect
from touchpoint.deploy import deploy_project
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn
from touchpoint.dsl.validate import load_project
from touchpoint.ingest import put_account, send_event
from touchpoint.store import make_engine, migrate, repo, session_factory
from touchpoint.temporal_server import free_port, start_dev_server

ROOT = Path(__file__).resolve().parent.parent
HOOK_SECONDS = 3.0


class SlowHook:
    """An HTTP endpoint that answers each POST after `HOOK_SECONDS`, counting the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_call = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.calls += 1
                hook.first_call.set()
                time.sleep(HOOK_SECONDS)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[SlowHook]:
    server = SlowHook()
    yield server
    server.close()


def _spawn(root: Path, env: dict[str, str], name: str, *args: str) -> subprocess.Popen[bytes]:
    with open(root / f"{name}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "touchpoint.cli.main", "worker", *args], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)


async def _until(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.timeout(180)
async def test_worker_waits_for_temporal_and_drains_on_sigterm(tmp_path: Path, hook: SlowHook) -> None:
    port, metrics = free_port(), free_port()
    queue = f"drain-{uuid.uuid4().hex[:8]}"
    database = f"sqlite:///{tmp_path}/store.db"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TOUCHPOINT_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "TOUCHPOINT_DATABASE_URL": database,
        "TOUCHPOINT_HOME": str(tmp_path / "home"),
        "TOUCHPOINT_TASK_QUEUE": queue,
        "TOUCHPOINT_SECRET_KEY": secrets.token_urlsafe(40),
        "TOUCHPOINT_METRICS_BIND": f"127.0.0.1:{metrics}",
        "TOUCHPOINT_SHUTDOWN_GRACE": "15",
    }
    first = _spawn(tmp_path, env, "first")
    server = None
    second = None
    try:
        # No server yet: the worker is alive, not ready, and says what it waits for.
        await _until(lambda: _status(f"http://127.0.0.1:{metrics}/healthz") == 200, "no /healthz")
        await _until(lambda: "waiting for Temporal at" in (tmp_path / "first.log").read_text(), "no waiting message")
        assert _status(f"http://127.0.0.1:{metrics}/readyz") == 503
        assert first.poll() is None
        server = await start_dev_server(port=port)
        await _until(lambda: _status(f"http://127.0.0.1:{metrics}/readyz") == 200, "the worker did not connect once the server was up")

        folder = write_folder(
            tmp_path / "playbooks",
            {
                "workspace.yaml": 'timezone: UTC\nsender: {email: cs@example.com}\nsend_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}\n',
                "p.yaml": f"playbook: p\ntrigger: {{event: trial.started}}\naudience: [champion]\nsteps:\n  - webhook: {{url: \"{hook.url}\", json: {{account: \"{{{{ account.id }}}}\"}}}}\n    id: notify\n  - email: {{template: hi}}\n    id: after\n",
                "templates/hi.subject.j2": "Hi",
                "templates/hi.html.j2": "<p>Hi</p>",
            },
        )
        engine = make_engine(database)
        migrate(engine)
        sessions = session_factory(engine)
        with sessions.begin() as s:
            deploy_project(s, load_project(folder))
        settings = load_settings(temporal_address=f"127.0.0.1:{port}")
        client = await connect(settings)
        account = AccountDoc.model_validate({"id": "acme", "name": "Acme", "contacts": [{"email": "kim@acme.example", "role": "champion"}]})
        await put_account(client, queue, sessions, account)
        await send_event(client, queue, sessions, "acme", EventIn(id="e1", type="trial.started"))

        # SIGTERM while the webhook activity is in flight: it finishes, then the worker exits 0.
        await _until(hook.first_call.is_set, "the webhook was never called")
        stopped_at = time.monotonic()
        first.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(first.wait, 30)
        assert code == 0, (tmp_path / "first.log").read_text()
        assert time.monotonic() - stopped_at >= HOOK_SECONDS - 1, "the worker did not wait for its activity"
        log = (tmp_path / "first.log").read_text()
        assert "SIGTERM: draining" in log and "worker drained and stopped" in log

        # The next worker carries the run on: the email once, the webhook never again.
        second = _spawn(tmp_path, env, "second")

        def emails() -> list[Any]:
            with sessions() as s:
                return list(repo.list_messages(s))

        await _until(lambda: len(emails()) == 1, "the run did not go on after the drain", timeout=90)
        await asyncio.sleep(1)
        assert [(m.step, m.status) for m in emails()] == [("after", "sent")]
        assert hook.calls == 1
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 30) == 0
        engine.dispose()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        if server is not None:
            await server.shutdown()


EMAIL_FOLDER = {
    "workspace.yaml": 'timezone: UTC\nsender: {email: cs@example.com}\nsend_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}\n',
    "p.yaml": "playbook: p\ntrigger: {event: trial.started}\naudience: [champion]\nsteps:\n  - email: {template: hi}\n    id: hello\n",
    "templates/hi.subject.j2": "Hi",
    "templates/hi.html.j2": "<p>Hi</p>",
}


def _worker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}
    return {**base, "PYTHONPATH": str(ROOT), "TOUCHPOINT_HOME": str(tmp_path / "home"), "TOUCHPOINT_SECRET_KEY": secrets.token_urlsafe(40), **extra}


@pytest.mark.timeout(180)
async def test_worker_outlives_a_server_restart_and_takes_its_queue_as_a_flag(tmp_path: Path) -> None:
    port, metrics = free_port(), free_port()
    queue = f"restart-{uuid.uuid4().hex[:8]}"
    database = f"sqlite:///{tmp_path}/store.db"
    history = tmp_path / "temporal.db"  # the server's state survives its restart
    env = _worker_env(
        tmp_path,
        TOUCHPOINT_TEMPORAL_ADDRESS=f"127.0.0.1:{port}",
        TOUCHPOINT_DATABASE_URL=database,
        TOUCHPOINT_TASK_QUEUE="not-this-queue",  # the flag wins
        TOUCHPOINT_METRICS_BIND=f"127.0.0.1:{metrics}",
    )
    ready = f"http://127.0.0.1:{metrics}/readyz"
    log_file = tmp_path / "worker.log"
    server = await start_dev_server(port=port, database_file=history)
    worker = _spawn(tmp_path, env, "worker", "--task-queue", queue, "--max-cached-workflows", "7")
    engine = make_engine(database)
    try:
        await _until(lambda: _status(ready) == 200, "the worker never became ready")
        assert f"worker polling task queue '{queue}' on 127.0.0.1:{port} namespace 'default' (cache 7 workflows" in log_file.read_text()
        migrate(engine)
        sessions = session_factory(engine)
        with sessions.begin() as s:
            deploy_project(s, load_project(write_folder(tmp_path / "playbooks", EMAIL_FOLDER)))

        async def enroll(account_id: str) -> None:
            client = await connect(load_settings(temporal_address=f"127.0.0.1:{port}"))
            doc = AccountDoc.model_validate({"id": account_id, "name": account_id, "contacts": [{"email": f"kim@{account_id}.example", "role": "champion"}]})
            await put_account(client, queue, sessions, doc)
            await send_event(client, queue, sessions, account_id, EventIn(id=f"start-{account_id}", type="trial.started"))

        def sent() -> list[str]:
            with sessions() as s:
                return sorted(m.account_id or "" for m in repo.list_messages(s) if m.status == "sent")

        await enroll("before")
        await _until(lambda: sent() == ["before"], "no email before the restart")

        # The server goes away: the worker stays, says so, and is not ready.
        await server.shutdown()
        server = None
        await _until(lambda: "does not answer" in log_file.read_text() or "waiting for Temporal" in log_file.read_text(), "the worker did not notice", timeout=30)
        await _until(lambda: _status(ready) == 503, "/readyz still says ready")
        assert worker.poll() is None, log_file.read_text()

        # Back on the same port: the worker says so and takes new work.
        server = await start_dev_server(port=port, database_file=history)
        await _until(lambda: _status(ready) == 200, "the worker did not come back", timeout=90)
        text = log_file.read_text()
        assert "answers again" in text or "reachable again" in text, text
        await enroll("after")
        await _until(lambda: sent() == ["after", "before"], "no email after the restart", timeout=90)
        assert worker.poll() is None
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0, log_file.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        engine.dispose()
        if server is not None:
            await server.shutdown()


class Gate:
    """A TCP port that refuses connections until `open()`, then forwards them to ``target``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            self.writers += [writer, upstream_writer]
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

        self.server = await asyncio.start_server(forward, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self.writers:
                writer.close()
            await self.server.wait_closed()


@pytest.mark.timeout(120)
async def test_worker_waits_with_backoff_for_a_store_it_cannot_reach(tmp_path: Path) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from tests import pg

    with pg.schema("tp_wait") as schema:
        real = urlsplit(pg.schema_url(schema))
        gate = Gate((real.hostname or "127.0.0.1", real.port or 5432))
        netloc = real.netloc.rsplit("@", 1)
        url = urlunsplit(real._replace(netloc=f"{netloc[0]}@127.0.0.1:{gate.port}" if len(netloc) == 2 else f"127.0.0.1:{gate.port}"))
        metrics = free_port()
        env = _worker_env(tmp_path, TOUCHPOINT_DATABASE_URL=url, TOUCHPOINT_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}", TOUCHPOINT_METRICS_BIND=f"127.0.0.1:{metrics}")
        log_file = tmp_path / "worker.log"
        worker = _spawn(tmp_path, env, "worker")
        try:
            # Nothing listens at the store's address: the worker waits, each time twice as long.
            await _until(lambda: "attempt 3 failed" in log_file.read_text(), "no third attempt", timeout=60)
            lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
            waits = [re.fullmatch(r"waiting for the store at \S+ \(attempt (\d+) failed: .*\); retrying in ([\d.]+)s", line["msg"]) for line in lines]
            assert [(int(m[1]), float(m[2])) for m in waits if m][:3] == [(1, 0.5), (2, 1.0), (3, 2.0)], lines
            assert f"127.0.0.1:{gate.port}" in log_file.read_text()
            assert _status(f"http://127.0.0.1:{metrics}/healthz") == 200 and _status(f"http://127.0.0.1:{metrics}/readyz") == 503
            assert worker.poll() is None
            # The store answers: the worker migrates it and goes on to wait for Temporal.
            await gate.open()
            await _until(lambda: "waiting for Temporal at" in log_file.read_text(), "the worker did not get past the store", timeout=60)
            assert re.search(r"the store at \S+ is reachable again after \d+ failed attempts", log_file.read_text()), log_file.read_text()
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 30) == 0, log_file.read_text()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            await gate.close()
