"""No secret reaches a workflow history, a log line or the store.

A run drafts a text with an OpenAI-compatible model, sends through SendGrid, creates a task and a
note in HubSpot or Salesforce and calls a webhook whose header carries `${TP_HOOK_SECRET}`, on a
real dev server with stand-ins of the providers. Afterwards every history (payloads decoded), every log line the process wrote (DEBUG
and up) and every row of every table are searched for each secret.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import Client

from activities.deps import Deps
from tests.conftest import write_folder
from tests.servers.ai_server import DEFAULT_REPLY, run_ai_server
from tests.servers.hubspot_server import run_hubspot_server
from tests.servers.salesforce_server import run_salesforce_server
from tests.servers.sendgrid_server import run_sendgrid_server
from touchpoint.config import load_settings
from touchpoint.converter import DATA_CONVERTER
from touchpoint.deploy import deploy_project
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn
from touchpoint.dsl.validate import load_project
from touchpoint.ingest import put_account, send_event
from touchpoint.observability.context import ContextInterceptor
from touchpoint.observability.logs import JsonFormatter, Redactor, secret_values
from touchpoint.store.models import Base
from touchpoint.temporal_server import DevServerEnvironment, start_dev_server
from worker import build_worker

SENDGRID_KEY = "SG.scan-" + secrets.token_hex(12)
HUBSPOT_TOKEN = "pat-scan-" + secrets.token_hex(12)
SALESFORCE_TOKEN = "00Dscan!" + secrets.token_hex(12)
HOOK_SECRET = "hook-" + secrets.token_hex(12)
SECRET_KEY = secrets.token_urlsafe(40)
AI_KEY = "sk-scan-" + secrets.token_hex(12)


class Hook:
    """A webhook endpoint that records the Authorization header it got."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.authorizations.append(self.headers.get("Authorization", ""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
async def server() -> AsyncIterator[DevServerEnvironment]:
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture
def hook() -> Iterator[Hook]:
    endpoint = Hook()
    yield endpoint
    endpoint.close()


def _decoded(value: Any, out: list[str]) -> None:
    """Every string in a history's JSON, with base64 payload data decoded too."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "data" and isinstance(item, str):
                try:
                    out.append(base64.b64decode(item).decode("utf-8", errors="replace"))
                except ValueError:
                    pass
            _decoded(item, out)
    elif isinstance(value, list):
        for item in value:
            _decoded(item, out)
    elif isinstance(value, str):
        out.append(value)


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
@pytest.mark.timeout(180)
async def test_no_secret_in_histories_logs_or_store(
    crm: str, server: DevServerEnvironment, hook: Hook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TP_HOOK_SECRET", HOOK_SECRET)
    queue = f"scan-{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        sendgrid = stack.enter_context(run_sendgrid_server(SENDGRID_KEY, verified_senders=["cs@example.com"]))
        ai = stack.enter_context(run_ai_server("openai", AI_KEY))
        if crm == "hubspot":
            provider = stack.enter_context(run_hubspot_server(HUBSPOT_TOKEN))
            crm_settings: dict[str, Any] = {"hubspot_token": HUBSPOT_TOKEN, "hubspot_url": provider.url}
        else:
            provider = stack.enter_context(run_salesforce_server(SALESFORCE_TOKEN))
            crm_settings = {"salesforce_instance_url": provider.url, "salesforce_access_token": SALESFORCE_TOKEN}
        settings = load_settings(
            home=tmp_path / "home",
            database_url=f"sqlite:///{tmp_path}/store.db",
            task_queue=queue,
            secret_key=SECRET_KEY,
            email_backend="sendgrid",
            sendgrid_api_key=SENDGRID_KEY,
            sendgrid_url=sendgrid.url,
            ai_backend="openai",
            ai_url=ai.base_url,
            ai_key=AI_KEY,
            ai_model="scan-model",
            crm_backend=crm,
            **crm_settings,
        )
        logs = io.StringIO()
        handler = logging.StreamHandler(logs)
        handler.setFormatter(JsonFormatter(Redactor(secret_values(settings))))
        root = logging.getLogger()
        level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        stack.callback(root.setLevel, level)
        stack.callback(root.removeHandler, handler)

        folder = write_folder(
            tmp_path / "playbooks",
            {
                "workspace.yaml": 'timezone: UTC\nsender: {email: cs@example.com, name: CS}\nsend_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}\n',
                "p.yaml": (
                    "playbook: p\ntrigger: {event: trial.started}\naudience: [champion]\nsteps:\n"
                    "  - draft: {prompt: idea, into: idea}\n    id: idea\n"
                    "  - email: {template: hi}\n    id: hello\n"
                    "  - task: {title: 'Call {{ account.name }}', owner: csm, due: 3d}\n    id: call\n"
                    "  - note: {text: 'Welcomed {{ account.name }}'}\n    id: noted\n"
                    f"  - webhook: {{url: \"{hook.url}\", headers: {{Authorization: \"Bearer ${{TP_HOOK_SECRET}}\"}}, json: {{account: \"{{{{ account.id }}}}\"}}}}\n    id: notify\n"
                ),
                "templates/idea.txt.j2": "Suggest one AI workflow for {{ account.name }}",
                "templates/hi.subject.j2": "Hi {{ account.name }}",
                "templates/hi.html.j2": "<p>Hello {{ contact.name }}</p>",
            },
        )
        client = await Client.connect(
            server.client.service_client.config.target_host, data_converter=DATA_CONVERTER, interceptors=[ContextInterceptor()]
        )
        deps = Deps.from_settings(settings)
        try:
            with deps.sessions.begin() as s:
                deploy_project(s, load_project(folder))
            account = AccountDoc.model_validate(
                {"id": "acme", "name": "Acme", "csm": {"name": "Dana", "email": "dana@example.com"}, "contacts": [{"email": "kim@acme.example", "name": "Kim", "role": "champion"}]}
            )
            async with build_worker(client, deps, task_queue=queue):
                await put_account(client, queue, deps.sessions, account)
                await send_event(client, queue, deps.sessions, "acme", EventIn(id="e1", type="trial.started"))
                deadline = time.monotonic() + 90
                while not hook.authorizations:
                    assert time.monotonic() < deadline, logs.getvalue()[-3000:]
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)  # the webhook's result reaches the store and the history
            assert hook.authorizations == [f"Bearer {HOOK_SECRET}"]  # the secret was really used
            assert [r.headers["authorization"] for r in ai.requests] == [f"Bearer {AI_KEY}"]  # and the model's key
            assert len(sendgrid.sent) == 1
            # The CRM was called with its token (task and note): the token was really used.
            assert len([r for r in provider.requests if r.method in ("POST", "PATCH", "PUT")]) >= 2, [(r.method, r.path) for r in provider.requests]

            texts: list[str] = []
            async for execution in client.list_workflows():
                history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
                _decoded(json.loads(history.to_json()), texts)
            assert any("trial.started" in text for text in texts), "the scan read no history"
            assert any(DEFAULT_REPLY in text for text in texts), "the draft is not in the history"
            with deps.sessions() as s:
                for table in Base.metadata.sorted_tables:
                    texts += [repr(tuple(row)) for row in s.execute(select(table)).all()]
            assert any("kim@acme.example" in text for text in texts), "the scan read no store rows"
            texts.append(logs.getvalue())
            assert logs.getvalue(), "nothing was logged"
        finally:
            await deps.close()
    haystack = "\n".join(texts)
    for name, value in {"SendGrid key": SENDGRID_KEY, "HubSpot token": HUBSPOT_TOKEN, "Salesforce token": SALESFORCE_TOKEN, "webhook secret": HOOK_SECRET, "secret key": SECRET_KEY, "AI key": AI_KEY}.items():
        assert value not in haystack, f"the {name} leaked"
