"""`touchpoint worker` as a process: it waits for Temporal instead of exiting, and SIGTERM
drains it without losing the activity in flight (the run goes on, nothing twice)."""

from __future__ import annotations

import asyncio
import os
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
from touchpoint.dsl.runtime import EventIn
from touchpoint.dsl.schema import AccountDoc
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


def _spawn(root: Path, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    with open(root / f"{name}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "touchpoint.cli.main", "worker"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)


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
