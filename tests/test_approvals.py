"""Approvals on a real time-skipping server: the account workflow, the real activities, the store,
the outbox, and the API called in-process (the same app `touchpoint api` serves).

Each test has a server of its own: account workflows run for good (they are entities), and one
waiting for a decision would hold the shared server's clock for later tests.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, eventually, on_both_stores, write_folder
from touchpoint.api.app import create_app
from touchpoint.config import load_settings
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn
from touchpoint.ingest import control_run, put_account, send_event, start_now
from touchpoint.store import repo
from workflows.messages import RunControl

TOKEN = "approvals-test-token"
WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
"""
TEMPLATES = {
    "templates/welcome.subject.j2": "Welcome {{ account.name }}",
    "templates/welcome.html.j2": "<p>Hi {{ contact.name }}</p>",
}
PLAYBOOK = """\
playbook: p
trigger: manual
audience: [champion, admin]
steps:
  - email: {{template: welcome, approval: {{by: csm, timeout: 2d, on_timeout: {on_timeout}}}}}
    id: welcome
  - note: {{text: "after the email"}}
    id: after
"""


@pytest.fixture
async def stack(own_stack: Stack) -> Stack:
    return own_stack


@contextlib.asynccontextmanager
async def api_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(home=stack.settings.home, database_url=stack.settings.db_url, task_queue=stack.task_queue, api_token=TOKEN)
    app = create_app(settings, stack.client, stack.deps.sessions)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://touchpoint", headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(stack) as client:
        yield client


def account(**extra: Any) -> AccountDoc:
    account_id = f"a{uuid.uuid4().hex[:10]}"
    return AccountDoc.model_validate(
        {
            "id": account_id,
            "name": "Acme",
            "timezone": "UTC",
            "csm": {"name": "Dana", "email": "dana@example.com"},
            "contacts": [
                {"email": f"kim@{account_id}.example", "name": "Kim", "role": "champion"},
                {"email": f"lee@{account_id}.example", "name": "Lee", "role": "admin"},
            ],
            **extra,
        }
    )


async def started(stack: Stack, folder: Path, *, on_timeout: str = "skip", body: str | None = None, doc: AccountDoc | None = None) -> tuple[AccountDoc, str, Any]:
    """Deploy, put the account, start `p` now; the run's id and its pending approval row."""
    write_folder(folder, {"workspace.yaml": WORKSPACE, "p.yaml": body or PLAYBOOK.format(on_timeout=on_timeout), **TEMPLATES})
    stack.deploy(folder)
    doc = doc or account()
    await put_account(stack.client, stack.task_queue, stack.deps.sessions, doc)
    answer = await start_now(stack.client, stack.task_queue, doc.id, "p")
    assert answer.result == "started", answer
    run_id = str(answer.run_id)
    row = await eventually(stack, lambda s: next(iter(repo.list_approvals(s, run_id=run_id)), None))
    return doc, run_id, row


def messages(stack: Stack, run_id: str) -> list[Any]:
    with stack.deps.sessions() as s:
        return list(repo.list_messages(s, run_id=run_id))


def timeline(stack: Stack, run_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    with stack.deps.sessions() as s:
        return [(r.step, r.action, dict(r.detail or {})) for r in repo.run_steps(s, run_id)]


async def note_written(stack: Stack, run_id: str) -> None:
    """The run took its last step (the note) and ended: its whole timeline is in the store."""
    await eventually(stack, lambda s: repo.list_notes(s, run_id=run_id))
    await eventually(stack, lambda s: (r := repo.get_run(s, run_id)) is not None and r.status == "ended")


@on_both_stores()
async def test_approvals_approve_sends_the_rendered_emails_once(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    doc, run_id, row = await started(stack, folder)
    kim, lee = (c.email for c in doc.contacts)
    # One request lists both recipients, waits for the CSM, and tells her with a task linking to it.
    assert (row.status, row.approver, [e["to"] for e in row.emails]) == ("pending", "dana@example.com", [kim, lee])
    (task,) = await eventually(stack, lambda s: repo.list_tasks(s, account_id=doc.id))
    if True:
        assert task.id == row.task_id and task.owner == "dana@example.com" and task.title == "Approve the welcome email for Acme (2 recipients)"
        assert f"/approvals/{row.id}" in (task.notes or "")
    requested = await eventually(stack, lambda s: repo.list_events(s, account_id=doc.id, type="approval.requested"))
    assert requested[0].data["approval_id"] == row.id
    assert messages(stack, run_id) == []

    listed = (await api.get("/approvals", params={"status": "pending", "by": "DANA@example.com"})).json()
    assert [a["id"] for a in listed] == [row.id] and listed[0]["to"] == [kim, lee]
    assert (await api.get("/approvals", params={"by": "someone@example.com"})).json() == []
    shown = (await api.get(f"/approvals/{row.id}")).json()
    assert [(e["to"], e["subject"]) for e in shown["emails"]] == [(kim, "Welcome Acme"), (lee, "Welcome Acme")]
    assert "Hi Kim" in shown["emails"][0]["html"] and "/unsubscribe/" in shown["emails"][0]["html"]

    decided = await api.post(f"/approvals/{row.id}", json={"decision": "approved"})
    assert decided.status_code == 200, decided.text
    assert (decided.json()["status"], decided.json()["decided_by"]) == ("approved", "dana@example.com")
    await note_written(stack, run_id)
    sent = messages(stack, run_id)
    assert sorted((m.to_email, m.subject, m.status) for m in sent) == [(kim, "Welcome Acme", "sent"), (lee, "Welcome Acme", "sent")]
    # The approved email is what the approver saw.
    assert next(m for m in sent if m.to_email == kim).html == shown["emails"][0]["html"]
    lines = [(step, action, d.get("status"), d.get("by")) for step, action, d in timeline(stack, run_id) if action in ("approval", "email")]
    assert lines[:2] == [("welcome", "approval", "requested", "dana@example.com"), ("welcome", "approval", "approved", "dana@example.com")]
    assert [line[1] for line in lines[2:]] == ["email", "email"]
    assert all(d["held"]["reason"] == "approval" for _, action, d in timeline(stack, run_id) if action == "email")

    again = await api.post(f"/approvals/{row.id}", json={"decision": "rejected", "reason": "too late"})
    assert again.status_code == 409 and "already approved by dana@example.com" in again.json()["detail"]
    with stack.deps.sessions() as s:
        assert repo.get_task(s, row.task_id).status == "completed"  # type: ignore[union-attr]


async def test_approvals_a_decision_delivered_twice_sends_once(stack: Stack, folder: Path) -> None:
    doc, run_id, row = await started(stack, folder)
    data = {"approval_id": row.id, "decision": "approved", "by": "dana@example.com"}
    for event_id in ("decided-1", "decided-1", "decided-2"):  # the same event again, then another one
        await send_event(stack.client, stack.task_queue, stack.deps.sessions, doc.id, EventIn(id=event_id, type="approval.decided", data=data))
    await note_written(stack, run_id)
    assert len(messages(stack, run_id)) == 2
    decisions = [d for _, action, d in timeline(stack, run_id) if action == "approval" and d["status"] == "approved"]
    assert len(decisions) == 1


async def test_approvals_an_edit_renders_per_recipient_and_a_broken_one_is_refused(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    doc, run_id, row = await started(stack, folder)
    kim, lee = (c.email for c in doc.contacts)

    unknown = await api.post(f"/approvals/{row.id}", json={"decision": "approved", "html": "<p>Dear {{ contact.nmae }}</p>"})
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["errors"][0]["loc"] == ["body", "html"] and "nmae" in unknown.json()["detail"]
    syntax = await api.post(f"/approvals/{row.id}", json={"decision": "approved", "subject": "Hello {{ contact.name"})
    assert syntax.status_code == 422 and syntax.json()["errors"][0]["loc"] == ["body", "subject"], syntax.text
    failing = await api.post(f"/approvals/{row.id}", json={"decision": "approved", "html": "<p>{{ 1 // (account.seats.licensed) }}</p>"})
    assert failing.status_code == 422 and f"for {kim}" in failing.json()["detail"], failing.text
    assert (await api.get(f"/approvals/{row.id}")).json()["status"] == "pending"  # refused edits decide nothing

    edit = {"decision": "approved", "subject": "A note for {{ contact.name }}", "html": "<p>Dear {{ contact.name }} {{ '<b>' }}</p>", "by": "boss@example.com"}
    decided = await api.post(f"/approvals/{row.id}", json=edit)
    assert decided.status_code == 200, decided.text
    assert decided.json()["edited"] == ["subject", "html"] and decided.json()["decided_by"] == "boss@example.com"
    await note_written(stack, run_id)
    sent = {m.to_email: m for m in messages(stack, run_id)}
    assert (sent[kim].subject, sent[lee].subject) == ("A note for Kim", "A note for Lee")
    assert "<p>Dear Kim &lt;b&gt;</p>" in sent[kim].html and "Dear Lee" in sent[lee].html  # autoescaped as any HTML template
    # The edit dropped the unsubscribe link: it is added back, in the HTML and the text part.
    assert "/unsubscribe/" in sent[kim].html and "/unsubscribe/" in sent[kim].text
    approved = next(d for _, action, d in timeline(stack, run_id) if action == "approval" and d["status"] == "approved")
    assert (approved["by"], approved["subject"], approved["html"]) == ("boss@example.com", edit["subject"], edit["html"])


async def test_approvals_reject_sends_nothing_and_the_run_goes_on(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    _, run_id, row = await started(stack, folder)
    decided = await api.post(f"/approvals/{row.id}", json={"decision": "rejected", "reason": "wrong tone"})
    assert decided.status_code == 200 and decided.json()["reason"] == "wrong tone"
    await note_written(stack, run_id)
    assert messages(stack, run_id) == []
    lines = [(step, action, d.get("status"), d.get("reason")) for step, action, d in timeline(stack, run_id) if action in ("approval", "email", "note")]
    assert lines == [("welcome", "approval", "requested", None), ("welcome", "approval", "rejected", "wrong tone"), ("after", "note", None, None)]


@pytest.mark.parametrize("on_timeout", ["send", "skip"])
async def test_approvals_timeout_sends_or_skips(stack: Stack, folder: Path, on_timeout: str) -> None:
    _, run_id, row = await started(stack, folder, on_timeout=on_timeout)
    await stack.env.sleep(timedelta(days=2, hours=1))
    await note_written(stack, run_id)
    sent = messages(stack, run_id)
    assert len(sent) == (2 if on_timeout == "send" else 0)
    await eventually(stack, lambda s: (r := repo.get_approval(s, row.id)) is not None and r.status == "timed_out")
    timed_out = next(d for _, action, d in timeline(stack, run_id) if action == "approval" and d["status"] == "timed_out")
    assert timed_out["by"] == "dana@example.com"


async def test_approvals_a_decision_after_the_run_was_cancelled_is_refused(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    doc, run_id, row = await started(stack, folder)
    await control_run(stack.client, doc.id, RunControl(action="cancel", run_id=run_id))
    await eventually(stack, lambda s: (r := repo.get_approval(s, row.id)) is not None and r.status == "closed")
    refused = await api.post(f"/approvals/{row.id}", json={"decision": "approved"})
    assert refused.status_code == 409 and "run ended" in refused.json()["detail"], refused.text
    # Even a decision sent straight to the account (not through the API) sends nothing.
    data = {"approval_id": row.id, "decision": "approved"}
    await send_event(stack.client, stack.task_queue, stack.deps.sessions, doc.id, EventIn(id="late", type="approval.decided", data=data))
    await eventually(stack, lambda s: repo.list_events(s, account_id=doc.id, type="approval.decided"))
    assert messages(stack, run_id) == []
    assert (await api.get("/approvals", params={"status": "pending"})).json() == []
    missing = await api.post("/approvals/apr_nothing", json={"decision": "approved"})
    assert missing.status_code == 404


async def test_approvals_cli_lists_shows_approves_with_an_edit_and_rejects(stack: Stack, folder: Path, tmp_path: Path) -> None:
    import asyncio
    import json
    import sys

    from tests.conftest import invoke_cli

    doc, run_id, row = await started(stack, folder)
    kim = doc.contacts[0].email
    env = {
        "TOUCHPOINT_TEMPORAL_ADDRESS": stack.client.service_client.config.target_host,
        "TOUCHPOINT_DATABASE_URL": stack.settings.db_url,
        "TOUCHPOINT_TASK_QUEUE": stack.task_queue,
        "TOUCHPOINT_HOME": str(tmp_path / "cli-home"),
        "COLUMNS": "200",
    }
    listed = await asyncio.to_thread(invoke_cli, ["approvals", "list", "--json", "--by", "dana@example.com"], env)
    assert listed.exit_code == 0, listed.output
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [row.id]
    table = await asyncio.to_thread(invoke_cli, ["approvals", "list"], env)
    assert row.id in table.stdout and "dana@example.com" in table.stdout
    shown = await asyncio.to_thread(invoke_cli, ["approvals", "show", row.id], env)
    assert shown.exit_code == 0 and f"to {kim} (Kim)\nsubject: Welcome Acme\nHi Kim" in shown.stdout, shown.output

    # $EDITOR gets the template source of the subject and the HTML; what it saves is the edit.
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "p.write_text(p.read_text().replace('Subject: Welcome {{ account.name }}', 'Subject: Hello {{ contact.name }}').replace('<p>Hi', '<p>Dear'))\n"
    )
    broken = tmp_path / "broken.py"
    broken.write_text("import sys, pathlib\np = pathlib.Path(sys.argv[1])\np.write_text(p.read_text().replace('<p>Hi', '<p>{{ contact.nmae }}'))\n")
    refused = await asyncio.to_thread(invoke_cli, ["approvals", "approve", row.id, "--edit"], {**env, "EDITOR": f"{sys.executable} {broken}"})
    assert refused.exit_code == 1 and "the edit cannot be sent" in refused.output and "nmae" in refused.output, refused.output
    approved = await asyncio.to_thread(invoke_cli, ["approvals", "approve", row.id, "--edit", "--by", "lead@example.com"], {**env, "EDITOR": f"{sys.executable} {editor}"})
    assert approved.exit_code == 0, approved.output
    assert approved.stdout.strip() == f"approved {row.id} by lead@example.com, edited: subject, html"
    await note_written(stack, run_id)
    sent = {m.to_email: m for m in messages(stack, run_id)}
    assert sent[kim].subject == "Hello Kim" and "<p>Dear Kim</p>" in sent[kim].html
    again = await asyncio.to_thread(invoke_cli, ["approvals", "reject", row.id], env)
    assert again.exit_code == 1 and "already approved by lead@example.com" in again.output

    other, other_run, second = await started(stack, folder, doc=account())
    rejected = await asyncio.to_thread(invoke_cli, ["approvals", "reject", second.id, "--reason", "not now"], env)
    assert rejected.exit_code == 0 and rejected.stdout.strip() == f"rejected {second.id} by dana@example.com", rejected.output
    await note_written(stack, other_run)
    assert messages(stack, other_run) == []
    history = await asyncio.to_thread(invoke_cli, ["approvals", "list", "--status", "all", "--json"], env)
    statuses = {json.loads(line)["id"]: json.loads(line)["status"] for line in history.stdout.splitlines()}
    assert statuses == {row.id: "approved", second.id: "rejected"}
