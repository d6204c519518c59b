"""`renewal-ai-plan` end to end on the dev server, driven through the API as a CRM integration and
a CSM would: the account put, the run started, the objective captured, the AI draft handed to the
CSM in a task, the plan email held for the CSM's approval and sent once approved.

The shipped folder is used as it is, except for a send window open around the clock (the test
must not wait for business hours) and no frequency cap.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from activities.deps import Deps
from touchpoint.api.app import create_app
from touchpoint.config import load_settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.validate import load_project
from touchpoint.store import repo
from touchpoint.temporal_server import DevServerEnvironment, start_dev_server
from worker import build_worker

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "renewal-api-token"
OBJECTIVE = "Cut the time to onboard a new field engineer from six weeks to two"


@pytest.fixture
async def server() -> AsyncIterator[DevServerEnvironment]:
    env = await start_dev_server()
    yield env
    await env.shutdown()


async def until(probe: Any, timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(180)
async def test_drafts_renewal_api_the_plan_reaches_the_champion_only_after_the_csm_approves(server: DevServerEnvironment, tmp_path: Path) -> None:
    folder = tmp_path / "playbooks"
    shutil.copytree(ROOT / "playbooks", folder)
    workspace = yaml.safe_load((folder / "workspace.yaml").read_text())
    workspace.update(send_window={"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "hours": "00:00-24:00"}, holidays=[])
    workspace.pop("frequency_cap", None)
    (folder / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    queue = f"renewal-{uuid.uuid4().hex[:8]}"
    settings = load_settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/store.db", task_queue=queue, api_token=TOKEN, secret_key="k" * 40)
    deps = Deps.from_settings(settings)
    with deps.sessions.begin() as s:
        deploy_project(s, load_project(folder))
    account = yaml.safe_load((folder / "samples" / "enterprise.yaml").read_text())
    account["id"] = f"globex-{uuid.uuid4().hex[:6]}"
    app = create_app(settings, server.client, deps.sessions)
    try:
        async with build_worker(server.client, deps, task_queue=queue), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://touchpoint", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as api:
            document = {**account, "created_at": "2026-01-05", "renewal_date": "2027-01-05"}  # YAML read them as dates
            assert (await api.put(f"/accounts/{account['id']}", json=document)).status_code == 202
            started = await api.post("/runs", json={"playbook": "renewal-ai-plan", "account_id": account["id"]})
            assert started.status_code == 201, started.text
            run_id = started.json()["run_id"]

            def sessions_do(work: Any) -> Any:
                with deps.sessions() as s:
                    return work(s)

            await until(lambda: sessions_do(lambda s: repo.list_tasks(s, account_id=account["id"])))
            posted = await api.post("/events", json={"type": "objective.captured", "account_id": account["id"], "id": f"obj-{run_id}", "data": {"objective": OBJECTIVE, "contact": "Marge Lee"}})
            assert posted.status_code == 202, posted.text

            # The draft is handed to the CSM in a task, and the plan email waits for her approval.
            pending = await until(lambda: sessions_do(lambda s: repo.list_approvals(s, run_id=run_id)))
            (request,) = pending
            assert (request.status, request.approver, request.step) == ("pending", "priya@example.com", "plan_email")
            run = (await api.get(f"/runs/{run_id}")).json()
            plan = run["vars"]["plan"]
            assert plan.startswith("AI transformation plan for Globex Corporation") and f'"{OBJECTIVE}"' in plan
            (draft,) = [line for line in run["history"] if line["action"] == "draft" and line["step"] == "plan_draft"]
            assert (draft["detail"]["backend"], draft["detail"]["source"], draft["detail"]["text"]) == ("none", "fallback", plan)
            assert f'"{OBJECTIVE}"' in draft["detail"]["prompt"]
            tasks = sessions_do(lambda s: repo.list_tasks(s, account_id=account["id"]))
            (review,) = [t for t in tasks if t.step == "plan_task"]
            assert review.owner == "priya@example.com" and plan.splitlines()[0] in (review.notes or "")
            assert not [m for m in sessions_do(lambda s: repo.list_messages(s, run_id=run_id)) if m.step == "plan_email"]
            shown = (await api.get(f"/approvals/{request.id}")).json()
            assert {e["to"] for e in shown["emails"]} == {"marge@globex.example", "hank@globex.example"}
            assert all("1. Start (days 1-30)" in e["html"] for e in shown["emails"])

            decided = await api.post(f"/approvals/{request.id}", json={"decision": "approved"})
            assert decided.status_code == 200, decided.text
            # Each recipient's email is its own activity: wait until both are written (or time out).
            sent = await until(lambda: len(found := [m for m in sessions_do(lambda s: repo.list_messages(s, run_id=run_id)) if m.step == "plan_email"]) >= 2 and found)
            assert {m.to_email for m in sent} == {"marge@globex.example", "hank@globex.example"}
            assert {m.subject for m in sent} == {f"A plan for Globex Corporation: {OBJECTIVE}"}
            await server.client.get_workflow_handle(f"account/{account['id']}").terminate("test finished")
    finally:
        await deps.close()
