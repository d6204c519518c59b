"""SendGrid's Event Webhook through the real API, a real Temporal server and a real store.

Emails go out through the SendGrid backend to the local SendGrid stand-in, which also builds the
events SendGrid would post back; `EventWebhookSigner` signs them as SendGrid does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.deps import Deps
from tests.conftest import on_both_stores, write_folder
from tests.hosts import stored_status
from tests.servers.sendgrid_server import EventWebhookSigner, FakeSendGrid, run_sendgrid_server
from touchpoint.api.app import create_app
from touchpoint.api.webhooks import WebhookKeyError, load_verifier
from touchpoint.config import Settings, load_settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.runtime import RunStatus
from touchpoint.dsl.validate import load_project
from touchpoint.email.sendgrid_backend import SendGridBackend
from touchpoint.store import repo
from touchpoint.store.models import ProviderEvent, Suppression
from worker import build_worker
from workflows.account import account_workflow_id

API_KEY = "SG.test.key"
URL = "/webhooks/sendgrid"
T = TypeVar("T")

WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
"""
PLAYBOOK = """\
playbook: nudge
trigger: {event: account.created}
audience: [champion]
steps:
  - email: {template: welcome}
    id: welcome
  - wait_for: {event: email.clicked, when: "event.data.step == 'welcome'", timeout: 30d, on_timeout: [{note: {text: "no click"}, id: chase}]}
    id: clicked
  - note: {text: "clicked {{ event.data.url }}"}
    id: thanks
"""
TEMPLATES = {
    "templates/welcome.subject.j2": "Welcome {{ account.name }}",
    "templates/welcome.html.j2": "<p>Hi {{ contact.name }}, <a href='https://docs.example.com/start'>start here</a></p>",
}


@dataclass
class Hook:
    """The API with the webhook, its worker and store, the SendGrid stand-in and a signer."""

    http: httpx.AsyncClient
    client: Client
    deps: Deps
    settings: Settings
    sendgrid: FakeSendGrid
    signer: EventWebhookSigner
    folder: Path
    accounts: list[str] = field(default_factory=list)

    def new_account(self) -> str:
        """A fresh account id (workflow ids are shared by every test on the server)."""
        self.accounts.append(f"acct-{uuid.uuid4().hex[:8]}")
        return self.accounts[-1]

    async def post(self, events: list[dict[str, Any]], *, signer: EventWebhookSigner | None = None, timestamp: str | None = None) -> httpx.Response:
        body, headers = (signer or self.signer).signed_batch(events, timestamp=timestamp)
        return await self.http.post(URL, content=body, headers=headers)

    def provider_events(self) -> int:
        with self.deps.sessions() as s:
            return len(list(s.scalars(select(ProviderEvent))))

    def suppressions(self) -> dict[str, str]:
        with self.deps.sessions() as s:
            return {row.email: row.reason for row in s.scalars(select(Suppression))}

    def events(self, account_id: str, type: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        with self.deps.sessions() as s:
            return [(e.type, e.data) for e in repo.list_events(s, account_id=account_id, type=type)]


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with run_sendgrid_server(API_KEY) as server:
        yield server


@pytest.fixture
async def hook(own_time_env: WorkflowEnvironment, tmp_path: Path, sendgrid: FakeSendGrid, database_url: str) -> AsyncIterator[Hook]:
    # A server of its own: account workflows run local activities that must not strand on a shared one.
    time_env = own_time_env
    signer = EventWebhookSigner()
    settings = load_settings(
        home=tmp_path / "home",
        database_url=database_url,
        task_queue=f"hook-{uuid.uuid4().hex[:10]}",
        sendgrid_webhook_key=signer.public_key_b64,
        email_backend="sendgrid",
    )
    deps = Deps.from_settings(settings, email_backend=SendGridBackend(API_KEY, host=sendgrid.url))
    folder = write_folder(tmp_path / "playbooks", {"workspace.yaml": WORKSPACE, "nudge.yaml": PLAYBOOK, **TEMPLATES})
    project = load_project(folder)
    project.raise_for_problems()
    with deps.sessions.begin() as s:
        deploy_project(s, project)
    app = create_app(settings, time_env.client, deps.sessions)
    worker = build_worker(time_env.client, deps, task_queue=settings.task_queue, strict_imports=True, fail_fast=True)
    async with worker, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://touchpoint.test") as http:
        hook = Hook(http, time_env.client, deps, settings, sendgrid, signer, folder)
        yield hook
        await stop_workflows(time_env.client, hook.accounts)
    await deps.close()


async def stop_workflows(client: Client, accounts: list[str]) -> None:
    """Terminate what the test left running: a workflow stranded mid-task on a queue without a
    worker stalls the shared time-skipping server for the tests that come after."""
    for acct in accounts:
        for workflow_id in (account_workflow_id(acct),):
            try:
                await client.get_workflow_handle(workflow_id).terminate("test finished")
            except RPCError:
                pass  # never started, or already ended


async def eventually(probe: Callable[[], T | Awaitable[T]], what: str, timeout: float = 15.0) -> T:
    """Poll ``probe`` until it returns something truthy (the account workflow works asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def event(kind: str, email: str, account: str, **extra: Any) -> dict[str, Any]:
    """An event as SendGrid posts it for one of our messages (custom args at the top level)."""
    return {
        "email": email,
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": f"sg-{uuid.uuid4().hex}",
        "sg_message_id": f"x{uuid.uuid4().hex[:20]}.recvd-1-0",
        "smtp-id": "<abc@ismtpd0001p1>",
        "category": "nudge",
        "touchpoint_account": account,
        "touchpoint_playbook": "nudge",
        "touchpoint_run": "run-1",
        "touchpoint_step": "welcome",
        "touchpoint_message": "m123",
        "touchpoint_message_id": "m123",
        **extra,
    }


@on_both_stores()
async def test_sendgrid_webhook_valid_batch_becomes_events_and_suppressions(hook: Hook) -> None:
    acct = hook.new_account()
    batch = [
        event("processed", "kim@acme.example", acct),
        event("delivered", "kim@acme.example", acct, response="250 OK"),
        event("open", "kim@acme.example", acct, useragent="Mozilla", ip="10.0.0.1"),
        event("click", "Kim@Acme.example", acct, url="https://docs.example.com/start", url_offset={"index": 0, "type": "html"}),
        event("bounce", "gone@acme.example", acct, reason="550 5.1.1 unknown user", status="5.1.1", type="bounce"),
        event("bounce", "busy@acme.example", acct, reason="blocked by policy", status="5.7.1", type="blocked"),
        event("spamreport", "angry@acme.example", acct),
        event("group_unsubscribe", "leaving@acme.example", acct, asm_group_id=7),
        event("dropped", "old@acme.example", acct, reason="Bounced Address", status="5.0.0"),
        event("dropped", "odd@acme.example", acct, reason="Invalid SMTPAPI header", status="5.0.0"),
    ]
    response = await hook.post(batch)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 10, "processed": 10, "duplicates": 0}
    assert hook.provider_events() == 10
    assert hook.suppressions() == {
        "gone@acme.example": "bounced",
        "angry@acme.example": "spamreport",
        "leaving@acme.example": "unsubscribed",
        "old@acme.example": "bounced",
    }
    # `processed` and a drop for another reason mean nothing to playbooks.
    await eventually(lambda: len(hook.events(acct)) == 8, "the account's eight events")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for type_, data in hook.events(acct):
        by_type.setdefault(type_, []).append(data)
    assert sorted((t, len(v)) for t, v in by_type.items()) == [
        ("email.bounced", 3),
        ("email.clicked", 1),
        ("email.delivered", 1),
        ("email.opened", 1),
        ("email.unsubscribed", 2),
    ]
    assert by_type["email.clicked"][0] == {
        "message_id": "m123",
        "playbook": "nudge",
        "step": "welcome",
        "template": None,
        "to": "kim@acme.example",
        "url": "https://docs.example.com/start",
    }
    bounces = {d["to"]: d for d in by_type["email.bounced"]}
    assert bounces["busy@acme.example"]["bounce_type"] == "blocked"
    assert "busy@acme.example" not in hook.suppressions()  # a block is not a hard bounce
    assert {d["to"]: d["reason"] for d in by_type["email.unsubscribed"]} == {
        "angry@acme.example": "spamreport",
        "leaving@acme.example": "unsubscribed",
    }


async def test_sendgrid_webhook_forged_or_stale_signature_is_refused(hook: Hook) -> None:
    acct = hook.new_account()
    batch = [event("bounce", "gone@acme.example", acct, reason="550", type="bounce"), event("click", "kim@acme.example", acct, url="https://x.example")]
    forged = await hook.post(batch, signer=EventWebhookSigner())
    assert forged.status_code == 401
    assert "signature does not match" in forged.json()["detail"]
    stale = await hook.post(batch, timestamp=str(int(time.time()) - 3600))
    assert stale.status_code == 401
    assert "replayed or delayed" in stale.json()["detail"]
    body, headers = hook.signer.signed_batch(batch)
    tampered = await hook.http.post(URL, content=body.replace(b"gone@", b"kim@"), headers=headers)
    assert tampered.status_code == 401
    unsigned = await hook.http.post(URL, content=body, headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401
    assert "Signed Event Webhook" in unsigned.json()["detail"]
    garbage = await hook.http.post(URL, content=body, headers={**headers, EventWebhookSigner.SIGNATURE_HEADER: "not base64!"})
    assert garbage.status_code == 401
    assert hook.provider_events() == 0
    assert hook.suppressions() == {}
    # The genuine batch still goes through afterwards: nothing was half-recorded.
    accepted = await hook.post(batch)
    assert accepted.status_code == 200
    assert hook.suppressions() == {"gone@acme.example": "bounced"}
    await eventually(lambda: len(hook.events(acct)) == 2, "the genuine batch's events")


@on_both_stores()
async def test_sendgrid_webhook_replayed_batch_records_nothing_twice(hook: Hook) -> None:
    acct = hook.new_account()
    batch = [event("open", "kim@acme.example", acct), event("click", "kim@acme.example", acct, url="https://x.example")]
    first = await hook.post(batch)
    assert first.json() == {"received": 2, "processed": 2, "duplicates": 0}
    await eventually(lambda: len(hook.events(acct)) == 2, "the first batch's events")
    # SendGrid retries re-sign the same events; a batch may also repeat an event within itself.
    again = await hook.post(batch + batch[:1])
    assert again.status_code == 200
    assert again.json() == {"received": 3, "processed": 0, "duplicates": 3}
    # The account workflow handles its events in order: once a later event is stored, a
    # duplicate of the replay would have been stored too.
    marker = await hook.post([event("delivered", "kim@acme.example", acct)])
    assert marker.json()["processed"] == 1
    await eventually(lambda: hook.events(acct, "email.delivered"), "the marker event")
    assert sorted(t for t, _ in hook.events(acct)) == ["email.clicked", "email.delivered", "email.opened"]
    assert hook.provider_events() == 3


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b'{"event": "open"}', "expected a JSON array"),
        (b'[{"event": "open", "email": "kim@acme.example"}]', "[0].sg_event_id"),
        (b'["open"]', "[0]: expected an event object"),
        (b'[{"event": "open", "email": "k@a.example", "sg_event_id": "e1", "timestamp": "yesterday"}]', "[0].timestamp"),
        (b"\xff\xfe[]", "not UTF-8"),
    ],
)
async def test_sendgrid_webhook_malformed_body_is_a_400_with_the_reason(hook: Hook, body: bytes, reason: str) -> None:
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        EventWebhookSigner.SIGNATURE_HEADER: hook.signer.sign(body, stamp),
        EventWebhookSigner.TIMESTAMP_HEADER: stamp,
    }
    response = await hook.http.post(URL, content=body, headers=headers)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert hook.provider_events() == 0


async def test_sendgrid_webhook_half_bad_batch_applies_nothing(hook: Hook) -> None:
    good = event("unsubscribe", "leaving@acme.example", hook.new_account())
    response = await hook.post([good, {"event": "open", "email": "kim@acme.example"}])
    assert response.status_code == 400
    assert "[1].sg_event_id" in response.json()["detail"]
    assert hook.suppressions() == {} and hook.provider_events() == 0


def test_sendgrid_webhook_bad_key_fails_at_startup_with_a_fix() -> None:
    with pytest.raises(WebhookKeyError, match="Signed Event Webhook"):
        load_verifier("bm90IGEga2V5")


@on_both_stores()
async def test_sendgrid_webhook_click_moves_a_waiting_playbook_on(hook: Hook) -> None:
    acct = hook.new_account()
    doc = {"name": "Acme", "contacts": [{"email": "kim@acme.example", "name": "Kim", "role": "champion"}]}
    put = await hook.http.put(f"/accounts/{acct}", json=doc)
    assert put.status_code == 202, put.text
    mail = await eventually(lambda: hook.sendgrid.sent[:1], "the welcome email at SendGrid")
    sent = mail[0]
    assert sent.recipients == ["kim@acme.example"]
    args = sent.body["custom_args"]
    assert args["touchpoint_account"] == acct and args["touchpoint_step"] == "welcome"
    runs = await eventually(lambda: _runs(hook.http, acct), "the run in GET /runs")
    assert runs[0]["status"] == "running"

    async def status() -> RunStatus:
        found = stored_status(hook.deps.sessions, acct, "nudge")
        assert found is not None
        return found

    await eventually(lambda: _step_is(status, "clicked"), "the run waiting for the click")
    # An open is not a click: the run keeps waiting.
    opened = await hook.post([hook.sendgrid.event_for(sent, "open", useragent="Mozilla", ip="10.0.0.1")])
    assert opened.status_code == 200
    await eventually(lambda: hook.events(acct, "email.opened"), "the open in the account's events")
    assert (await status()).status == "running"
    click = hook.sendgrid.event_for(sent, "click", url="https://docs.example.com/start")
    response = await hook.post([click])
    assert response.status_code == 200 and response.json()["processed"] == 1
    ended = await eventually(lambda: _ended(status), "the run to end after the click")
    assert ended.outcome == "completed"
    actions = [(r.step, r.action) for r in ended.history]
    assert actions == [("welcome", "email"), ("clicked", "wait_for"), ("thanks", "note")]
    assert ended.history[1].detail["timeout"] is False
    assert ended.history[2].detail["text"] == "clicked https://docs.example.com/start"
    (clicked,) = hook.events(acct, "email.clicked")
    with hook.deps.sessions() as s:
        (message,) = repo.list_messages(s, to_email="kim@acme.example")
    assert clicked[1] == {
        "message_id": message.id,
        "playbook": "nudge",
        "step": "welcome",
        "template": "welcome",
        "to": "kim@acme.example",
        "url": "https://docs.example.com/start",
    }
    runs = await eventually(lambda: _runs(hook.http, acct, status="ended"), "the ended run in GET /runs")
    assert runs[0]["outcome"] == "completed"


async def _runs(http: httpx.AsyncClient, acct: str, status: str | None = None) -> list[dict[str, Any]]:
    response = await http.get("/runs", params={"account": acct})
    runs: list[dict[str, Any]] = response.json()
    return [r for r in runs if status is None or r["status"] == status]


async def _step_is(status: Callable[[], Awaitable[RunStatus]], step: str) -> bool:
    return (await status()).step == step


async def _ended(status: Callable[[], Awaitable[RunStatus]]) -> RunStatus | None:
    current = await status()
    return current if current.status == "ended" else None

