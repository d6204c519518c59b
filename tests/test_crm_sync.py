"""CRM account sync, owners and webhook secrets, on real parts only.

A real time-skipping Temporal server and worker (`own_stack`), a real SQLite store, and the
real httpx connectors against the fake HubSpot and Salesforce servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from activities.sync import run_sync
from tests.conftest import Stack, eventually, write_folder
from tests.servers.hubspot_server import FakeHubSpot, run_hubspot_server
from tests.servers.salesforce_server import run_salesforce_server
from touchpoint.crm import HubSpotBackend, SalesforceBackend
from touchpoint.dsl.sync_models import AccountSyncInput, SyncTotals, cursor_name
from touchpoint.ingest import start_run
from touchpoint.store import repo
from workflows import names

PLUMBING = ("account.upserted",)
"""Recorded with the derived events: the upsert itself."""
HS_TOKEN = "pat-na1-sync-test"
SF_TOKEN = "00D-sync-test"
WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
segments:
  enterprise: "account.seats.licensed >= 1000"
  scale: "true"
crm:
  fallback_owner: cs-ops@example.com
"""


@pytest.fixture
def hubspot() -> Iterator[FakeHubSpot]:
    with run_hubspot_server(HS_TOKEN) as fake:
        yield fake


@pytest.fixture
async def hs_backend(hubspot: FakeHubSpot) -> AsyncIterator[HubSpotBackend]:
    async with HubSpotBackend(HS_TOKEN, hubspot.url, timeout=5.0) as backend:
        yield backend


def deploy(stack: Stack, folder: Path, playbooks: dict[str, str]) -> None:
    write_folder(folder, {"workspace.yaml": WORKSPACE, **playbooks})
    stack.deploy(folder)



async def sync(stack: Stack, backend: Any, **options: Any) -> SyncTotals:
    """The sync `touchpoint accounts sync` runs in-process, against the test's server."""
    return await run_sync(stack.deps, backend, client=stack.client, task_queue=stack.task_queue, **options)


async def sync_on_server(stack: Stack, backend: Any, **options: Any) -> SyncTotals:
    """The `AccountSync` workflow, as a Temporal Schedule would start it."""
    stack.deps.crm_backend = backend
    result: SyncTotals = await stack.client.execute_workflow(
        names.ACCOUNT_SYNC,
        AccountSyncInput(backend=backend.name, **options),
        id=f"account-sync/{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=SyncTotals,
    )
    return result


def events(stack: Stack, type: str | None = None) -> list[tuple[str, str]]:
    with stack.deps.sessions() as s:
        return [(e.account_id, e.type) for e in repo.list_events(s, type=type)]


async def test_crm_sync_ten_thousand_companies_backfill_bounded_memory_then_only_changes_emit(
    own_stack: Stack, hubspot: FakeHubSpot, hs_backend: HubSpotBackend, folder: Path
) -> None:
    stack = own_stack
    deploy(stack, folder, {})
    owner = hubspot.add_owner("dana@example.com", first_name="Dana", last_name="Lee")
    ids = []
    for i in range(10_000):
        company = hubspot.add_company(f"Company {i}", seats_licensed=100 + i % 50, seats_active=40, hubspot_owner_id=owner)
        hubspot.add_contact(f"kim{i}@c{i}.example", company_id=company, firstname="Kim", touchpoint_role="champion")
        ids.append(company)
    # Rate limits on the way: each is retried after the Retry-After HubSpot sent.
    hubspot.fail_next(429, headers={"Retry-After": "0.05"}, times=3, match="GET /crm/v3/objects/companies")

    samples: list[int] = []
    listed = 0

    def on_page(totals: SyncTotals) -> None:
        # The fake's request log is test instrumentation in this process: count, then drop it.
        nonlocal listed
        listed += sum(1 for r in hubspot.requests if r.path == "/crm/v3/objects/companies")
        hubspot.requests.clear()
        samples.append(tracemalloc.get_traced_memory()[0])

    tracemalloc.start()
    try:
        totals = await run_sync(
            stack.deps,
            hs_backend,
            client=None,  # backfill needs no Temporal server
            task_queue=stack.task_queue,
            backfill=True,
            on_page=on_page,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (totals.read, totals.created, totals.pages) == (10_000, 10_000, 100)
    assert listed == 103  # 100 pages + 3 retries after 429s
    # Memory follows a page, not the CRM: 90 more pages (9,000 accounts, well over 10 MB as
    # documents) add at most a few MB of live memory (other tests' leftovers in this process
    # allocate too), and the peak stays far below 10,000 accounts.
    assert samples[-1] - samples[9] < 4_000_000, (samples[9], samples[-1])
    assert peak < 25_000_000, peak
    with stack.deps.sessions() as s:
        doc, contacts = repo.get_account(s, ids[7]) or ({}, [])
        assert doc["name"] == "Company 7" and doc["seats"] == {"licensed": 107, "active": 40}
        assert doc["csm"] == {"name": "Dana Lee", "email": "dana@example.com"}
        assert doc["segment"] == "scale" and doc["properties"]["crm_id"] == ids[7]
        assert contacts[0]["email"] == "kim7@c7.example" and contacts[0]["role"] == "champion"
        assert repo.get_cursor(s, cursor_name("hubspot")) is not None
    assert events(stack) == []  # backfill emits nothing: no onboarding starts

    # A few changes in the CRM: only they reach Touchpoint as events.
    hubspot.companies[ids[3]].properties["seats_licensed"] = "90"
    hubspot.companies[ids[5]].properties["name"] = "Company Five"
    hubspot.contacts[next(iter(hubspot.companies[ids[8]].associations["contacts"]))].properties["firstname"] = "Kimberly"
    new = hubspot.add_company("Newco", seats_licensed=10)
    totals = await sync_on_server(stack, hs_backend)
    assert (totals.read, totals.created, totals.updated, totals.unchanged) == (10_001, 1, 3, 9_997)

    expected = {
        (ids[3], "account.updated"),
        (ids[3], "seats.changed"),
        (ids[5], "account.updated"),
        (ids[8], "account.updated"),
        (new, "account.created"),
    }
    await eventually(stack, lambda s: {(e.account_id, e.type) for e in repo.list_events(s) if e.type not in PLUMBING} == expected)
    with stack.deps.sessions() as s:
        seats = repo.list_events(s, type="seats.changed")[0].data
        assert (seats["licensed"], seats["previous_licensed"], seats["delta"]) == (90, 103, -13)
        assert repo.get_account(s, ids[5])[0]["name"] == "Company Five"  # type: ignore[index]
        # `own_stack` terminates every stored account's workflow at teardown: 10,000 of them
        # were never started (backfill), so leave only those that were.
        s.execute(text("DELETE FROM contacts WHERE account_id NOT IN (:a, :b, :c, :d)"), {"a": ids[3], "b": ids[5], "c": ids[8], "d": new})
        s.execute(text("DELETE FROM accounts WHERE id NOT IN (:a, :b, :c, :d)"), {"a": ids[3], "b": ids[5], "c": ids[8], "d": new})
        s.commit()


SEAT_DROP = """\
playbook: seat-drop
trigger: {event: seats.changed, when: "event.data.delta < 0"}
steps:
  - task: {title: "Seats down by {{ -event.data.delta }} at {{ account.name }}", owner: csm}
"""


async def test_crm_sync_seat_drop_starts_the_seats_changed_playbook_once(
    own_stack: Stack, hubspot: FakeHubSpot, hs_backend: HubSpotBackend, folder: Path
) -> None:
    stack = own_stack
    deploy(stack, folder, {"seat-drop.yaml": SEAT_DROP})
    owner = hubspot.add_owner("dana@example.com", first_name="Dana")
    acme = hubspot.add_company("Acme", seats_licensed=400, seats_active=300, hubspot_owner_id=owner)
    other = hubspot.add_company("Other", seats_licensed=50)
    assert (await sync(stack, hs_backend, backfill=True)).created == 2

    hubspot.companies[acme].properties["seats_licensed"] = "350"
    hubspot.companies[other].properties["seats_licensed"] = "60"  # a rise: no run
    totals = await sync(stack, hs_backend)
    assert (totals.updated, totals.unchanged) == (2, 0)
    tasks = await eventually(stack, lambda s: repo.list_tasks(s))
    assert [(t.account_id, t.title, t.owner) for t in tasks] == [(acme, "Seats down by 50 at Acme", "dana@example.com")]

    # The account workflows project the store after the upserts: let both land first.
    await eventually(stack, lambda s: repo.get_account(s, other)[0]["seats"]["licensed"] == 60)  # type: ignore[index]
    totals = await sync(stack, hs_backend)  # nothing changed
    assert (totals.updated, totals.created, totals.unchanged) == (0, 0, 2)
    await asyncio.sleep(0.5)
    with stack.deps.sessions() as s:
        assert [(r.playbook_id, r.account_id) for r in repo.list_runs(s)] == [("seat-drop", acme)]
        assert len(repo.list_tasks(s)) == 1
        assert len(repo.list_events(s, type="seats.changed")) == 2


async def test_crm_sync_salesforce_pages_by_next_records_url(own_stack: Stack, folder: Path) -> None:
    stack = own_stack
    deploy(stack, folder, {})
    with run_salesforce_server(SF_TOKEN) as sf:
        user = sf.add_user("sam@example.com", name="Sam Ortiz")
        accounts = [
            sf.add_account(f"Account {i:03}", owner_id=user, Seats_Licensed__c=10 + i, BillingCountry="DE") for i in range(450)
        ]
        sf.add_contact("Lea@Acme.example", account_id=accounts[0], name="Lea Vogel")
        async with SalesforceBackend(sf.url, SF_TOKEN, timeout=5.0) as backend:
            totals = await sync_on_server(stack, backend, backfill=True, page_size=200)
            assert (totals.read, totals.created, totals.pages) == (450, 450, 3)
            # The first page is the query; the two after it follow nextRecordsUrl.
            assert sum(1 for r in sf.requests if "/query/01g" in r.path) == 2
            with stack.deps.sessions() as s:
                doc, contacts = repo.get_account(s, accounts[0]) or ({}, [])
            assert doc["csm"] == {"name": "Sam Ortiz", "email": "sam@example.com"} and doc["country"] == "DE"
            assert contacts == [{"email": "lea@acme.example", "name": "Lea Vogel", "role": None, "locale": None, "timezone": None, "country": None}]

            sf.accounts[accounts[9]]["Seats_Licensed__c"] = 5.0
            totals = await sync_on_server(stack, backend, page_size=200)
            assert (totals.updated, totals.unchanged, totals.pages) == (1, 449, 3)
            await eventually(stack, lambda s: repo.list_events(s, type="seats.changed"))
            assert {e for e in events(stack) if e[1] not in PLUMBING} == {(accounts[9], "account.updated"), (accounts[9], "seats.changed")}


AWAIT_TASK = """\
playbook: kickoff
trigger: manual
steps:
  - id: call
    task: {title: "Kickoff call with {{ account.name }}", owner: csm, await: true}
  - note: {text: "kickoff done"}
"""


async def test_crm_sync_task_completed_in_crm_resumes_the_awaiting_run(
    own_stack: Stack, hubspot: FakeHubSpot, hs_backend: HubSpotBackend, folder: Path
) -> None:
    stack = own_stack
    deploy(stack, folder, {"kickoff.yaml": AWAIT_TASK})
    owner = hubspot.add_owner("dana@example.com")
    acme = hubspot.add_company("Acme", hubspot_owner_id=owner)
    await sync(stack, hs_backend, backfill=True)
    stack.deps.crm_backend = hs_backend  # task steps create tasks in HubSpot

    await start_run(stack.client, stack.task_queue, acme, "kickoff")
    task = await eventually(stack, lambda s: next(iter(repo.list_tasks(s)), None))
    assert task.crm_id in hubspot.tasks and task.status == "open"
    assert (await sync(stack, hs_backend)).tasks_completed == 0  # not completed yet

    hubspot.complete_task(task.crm_id)
    assert (await sync(stack, hs_backend)).tasks_completed == 1
    run = await eventually(stack, lambda s: (r := next(iter(repo.list_runs(s)), None)) is not None and r.status == "ended" and r)
    assert run.outcome == "completed"
    with stack.deps.sessions() as s:
        assert [n.text for n in repo.list_notes(s, run_id=run.id)] == ["kickoff done"]
        assert repo.get_task(s, task.id).status == "completed"  # type: ignore[union-attr]
        (event,) = repo.list_events(s, type="task.completed")
        assert event.id == f"crm-task:{task.crm_id}" and event.data == {"task_id": task.id, "playbook": "kickoff", "step": "call"}
    assert (await sync(stack, hs_backend)).tasks_completed == 0  # seen once only


OWNER_TASK = """\
playbook: owners
trigger: manual
steps:
  - task: {title: "Check in", owner: csm, notes: "Say hi"}
"""


async def test_crm_sync_unknown_owner_and_missing_csm_get_the_fallback_owner(
    own_stack: Stack, hubspot: FakeHubSpot, hs_backend: HubSpotBackend, folder: Path
) -> None:
    stack = own_stack
    deploy(stack, folder, {"owners.yaml": OWNER_TASK})
    gone = hubspot.add_owner("gone@example.com", first_name="Gone")
    fallback = hubspot.add_owner("cs-ops@example.com")
    left = hubspot.add_company("Left", hubspot_owner_id=gone)
    orphan = hubspot.add_company("Orphan")
    await sync(stack, hs_backend, backfill=True)
    del hubspot.owners[gone]  # the CSM left the company: HubSpot no longer knows them
    stack.deps.crm_backend = hs_backend

    for account in (left, orphan):
        await start_run(stack.client, stack.task_queue, account, "owners")
    tasks = await eventually(stack, lambda s: len(found := repo.list_tasks(s)) == 2 and {t.account_id: t for t in found})

    assert tasks[left].owner == "cs-ops@example.com"
    assert "gone@example.com is not a user in hubspot: assigned to the fallback owner cs-ops@example.com" in tasks[left].notes
    assert tasks[orphan].owner == "cs-ops@example.com"
    assert "No CSM on this account: assigned to the fallback owner cs-ops@example.com" in tasks[orphan].notes
    for task in tasks.values():
        remote = hubspot.tasks[task.crm_id].properties
        assert remote["hubspot_owner_id"] == fallback
        assert remote["hs_task_body"].startswith("Say hi\n\n") and "fallback owner" in remote["hs_task_body"]


def decoded(node: Any) -> str:
    """A history's JSON with every payload's base64 ``data`` decoded, as one text."""
    parts: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data" and isinstance(value, str):
                parts.append(base64.b64decode(value).decode("utf-8", "replace"))
            else:
                parts.append(decoded(value))
    elif isinstance(node, list):
        parts.extend(decoded(item) for item in node)
    else:
        parts.append(str(node))
    return "\n".join(parts)


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


WEBHOOK = """\
playbook: hook
trigger: manual
steps:
  - webhook:
      url: "http://127.0.0.1:{port}/hook?token=${{TP_TEST_HOOK_SECRET}}"
      headers: {{Authorization: "Bearer ${{TP_TEST_HOOK_SECRET}}"}}
      json: {{account: "{{{{ account.name }}}}", key: "${{TP_TEST_HOOK_SECRET}}"}}
"""


async def test_crm_sync_webhook_secret_never_reaches_history_or_store(
    own_stack: Stack, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = own_stack
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("TP_TEST_HOOK_SECRET", secret)
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Recorder", (_Recorder,), {"seen": []}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        deploy(stack, folder, {"hook.yaml": WEBHOOK.format(port=server.server_address[1])})
        with stack.deps.sessions.begin() as s:
            repo.upsert_account(s, {"id": "acme", "name": "Acme", "timezone": "UTC"}, [])
        await start_run(stack.client, stack.task_queue, "acme", "hook")
        run = await eventually(stack, lambda s: (r := next(iter(repo.list_runs(s)), None)) is not None and r.status == "ended" and r)
    finally:
        server.shutdown()
        server.server_close()
    seen = server.RequestHandlerClass.seen  # type: ignore[attr-defined]
    assert len(seen) == 1
    assert seen[0]["path"] == f"/hook?token={secret}"
    assert seen[0]["headers"]["Authorization"] == f"Bearer {secret}"
    assert json.loads(seen[0]["body"]) == {"account": "Acme", "key": secret}

    for workflow_id in (run.workflow_id, "account/acme"):
        history = await stack.client.get_workflow_handle(workflow_id).fetch_history()
        dumped = decoded(json.loads(history.to_json()))
        assert secret not in dumped, workflow_id
        if workflow_id == run.workflow_id:  # the payloads were decoded: the template is there
            assert "Bearer ${TP_TEST_HOOK_SECRET}" in dumped
    with stack.deps.sessions() as s:
        for table in ("runs", "run_steps", "ledger", "events"):
            rows = s.execute(text(f"SELECT * FROM {table}")).all()
            assert rows or table == "events"
            assert secret not in repr(rows), table
    assert run.outcome == "completed"
