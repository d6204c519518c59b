"""A playbook's email through each provider, end to end: settings → worker → provider server.

SendGrid: the real `sendgrid` client against the fake SendGrid server; SMTP: a real `aiosmtpd`
server. The backend is chosen by the settings, as `TOUCHPOINT_EMAIL_BACKEND` does.
"""

from __future__ import annotations

import email
import email.policy
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from email.message import EmailMessage as MimeMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from temporalio.testing import WorkflowEnvironment

from activities.deps import Deps
from tests.conftest import write_folder
from tests.hosts import start_one_run
from tests.servers.sendgrid_server import FakeSendGrid, run_sendgrid_server
from touchpoint.config import Settings, load_settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import RunResult
from touchpoint.dsl.validate import load_project
from touchpoint.store import repo
from worker import build_worker

KEY = "SG.e2e.key"
FILES = {
    "workspace.yaml": """\
timezone: UTC
sender: {email: success@example.com, name: Example Success}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
sendgrid: {unsubscribe_group: 4242, categories: [customer-success]}
""",
    "onboarding.yaml": """\
playbook: onboarding
trigger: manual
steps:
  - email: {template: welcome, to: [champion]}
    id: welcome
""",
    "templates/welcome.subject.j2": "Welcome aboard, {{ account.name }}",
    "templates/welcome.html.j2": "<p>Hi {{ contact.name }}, <b>{{ account.name }}</b> is live.</p>",
    "templates/welcome.de.subject.j2": "Willkommen, {{ account.name }}",
}
ACCOUNT = AccountDoc.model_validate(
    {
        "id": "acme",
        "name": "Acme & Co",
        "contacts": [{"email": "kim@acme.example", "name": "Kim, Park", "role": "champion", "locale": "de"}],
    }
)


@asynccontextmanager
async def run_onboarding(
    env: WorkflowEnvironment, tmp_path: Path, settings: Settings
) -> AsyncIterator[tuple[RunResult, list[Any]]]:
    """Deploy the folder, run the playbook once on a worker built from ``settings``."""
    deps = Deps.from_settings(settings)
    project = load_project(write_folder(tmp_path / "playbooks", FILES))
    project.raise_for_problems()
    with deps.sessions.begin() as s:
        deploy_project(s, project)
    queue = f"e2e-{uuid.uuid4().hex[:10]}"
    try:
        async with build_worker(env.client, deps, task_queue=queue, strict_imports=True, fail_fast=True):
            run = await start_one_run(env.client, queue, ACCOUNT, "onboarding")
            result = await run.result()
        with deps.sessions() as s:
            messages = list(repo.list_messages(s, run_id=run.run_id))
        yield result, messages
    finally:
        await deps.close()


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with run_sendgrid_server(KEY, verified_senders=["success@example.com"]) as server:
        yield server


async def test_email_providers_e2e_sendgrid_carries_categories_and_custom_args(
    time_env: WorkflowEnvironment, tmp_path: Path, sendgrid: FakeSendGrid
) -> None:
    settings = load_settings(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path}/store.db",
        email_backend="sendgrid",
        sendgrid_api_key=KEY,
        sendgrid_url=sendgrid.url,
    )
    async with run_onboarding(time_env, tmp_path, settings) as (result, messages):
        pass
    assert len(sendgrid.sent) == 1
    mail = sendgrid.sent[0]
    assert mail.headers["Authorization"] == f"Bearer {KEY}"
    assert mail.headers["User-Agent"].startswith("sendgrid/")
    body = mail.body
    assert body["from"] == {"email": "success@example.com", "name": "Example Success"}
    # SendGrid refuses commas in names: the recipient's is cleaned, the address kept.
    assert body["personalizations"] == [{"to": [{"email": "kim@acme.example", "name": "Kim Park"}]}]
    assert body["subject"] == "Willkommen, Acme & Co"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert "<b>Acme &amp; Co</b>" in body["content"][1]["value"]
    assert "Acme & Co" in body["content"][0]["value"]
    assert set(body["categories"]) == {"customer-success", "onboarding"}
    run_id = result.run_id
    message_id = messages[0].id
    assert body["custom_args"] == {
        "touchpoint_account": "acme",
        "touchpoint_playbook": "onboarding",
        "touchpoint_run": run_id,
        "touchpoint_step": "welcome",
        "touchpoint_message": message_id,
        "touchpoint_message_id": message_id,
    }
    assert body["asm"] == {"group_id": 4242}
    assert body["headers"]["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/unsubscribe/")
    # The provider's id is kept, so its delivery events map back to this message.
    assert [(m.status, m.provider_message_id, m.backend) for m in messages] == [("sent", mail.message_id, "sendgrid")]
    (record,) = [r for r in result.history if r.action == "email"]
    assert record.detail["subject"] == "Willkommen, Acme & Co"


class _Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_inbox() -> Iterator[tuple[Controller, _Inbox]]:
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


async def test_email_providers_e2e_smtp_delivers_one_multipart_message(
    time_env: WorkflowEnvironment, tmp_path: Path, smtp_inbox: tuple[Controller, _Inbox]
) -> None:
    controller, inbox = smtp_inbox
    settings = load_settings(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path}/store.db",
        email_backend="smtp",
        smtp_url=f"smtp://127.0.0.1:{controller.port}",
    )
    async with run_onboarding(time_env, tmp_path, settings) as (result, messages):
        pass
    assert len(inbox.envelopes) == 1
    envelope = inbox.envelopes[0]
    assert envelope.mail_from == "success@example.com" and envelope.rcpt_tos == ["kim@acme.example"]
    assert isinstance(envelope.content, bytes)
    mime = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert isinstance(mime, MimeMessage)
    assert mime["Subject"] == "Willkommen, Acme & Co"
    assert mime["To"].addresses[0].addr_spec == "kim@acme.example"
    assert mime["Message-ID"] == f"<{messages[0].id}@touchpoint>"
    assert mime["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/unsubscribe/")
    # Provider metadata stays out of real mail (only the outbox records it).
    assert mime["X-Touchpoint-Custom-Args"] is None
    plain, html = (part.get_content() for part in mime.iter_parts())
    assert "Acme & Co" in plain and "<b>Acme &amp; Co</b>" in html
    assert [(m.status, m.backend) for m in messages] == [("sent", "smtp")]
    assert [r.action for r in result.history] == ["email"]
