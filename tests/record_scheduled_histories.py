"""Record histories of the scheduled workflows into `tests/histories/` for the Replayer.

    PYTHONPATH=. .venv/bin/python -m tests.record_scheduled_histories

Writes `health.json` (`HealthRecompute`), `sweep.json` (`DateSweep`) and `sync.json`
(`AccountSync`): each a real run, started as its Temporal Schedule starts it, on the
time-skipping server with a real SQLite store, the production worker and (sync) the HubSpot
stand-in. Small pages make each run loop over several activity calls, so a replay covers the
loop. `tests/test_replay_scheduled.py` replays them against the current workflows; re-record
only on a release, before changing these workflows (a change that breaks a recorded history
would break a run in flight on a worker upgrade).
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

from temporalio.service import RPCError

from activities.deps import Deps
from tests.servers.hubspot_server import run_hubspot_server
from touchpoint.config import load_settings
from touchpoint.crm import HubSpotBackend
from touchpoint.deploy import deploy_project
from touchpoint.dsl.health_models import HealthRecomputeInput, HealthRecomputeResult
from touchpoint.dsl.sweep_models import DateSweepInput, DateSweepResult
from touchpoint.dsl.sync_models import AccountSyncInput, SyncTotals
from touchpoint.dsl.validate import load_project
from touchpoint.store import repo
from touchpoint.temporal_server import start_time_skipping
from worker import build_worker
from workflows import names
from workflows.account import account_workflow_id

HERE = Path(__file__).resolve().parent
OUT = HERE / "histories"
HUBSPOT_TOKEN = "pat-recorded-secret"
"""Must never appear in a history: the test checks `sync.json` for it."""

FILES = {
    "workspace.yaml": 'timezone: UTC\nsender: {email: cs@example.com}\nsend_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}\n',
    "health.yaml": (
        'schedule: "0 6 * * *"\n'
        "metrics:\n"
        '  - {id: seat_utilisation, value: "account.seats.active / account.seats.licensed", weight: 100, good: 0.8, bad: 0.3}\n'
        "tiers: {green: 70, yellow: 40}\n"
    ),
    "renewal.yaml": (
        "playbook: renewal\n"
        "trigger: {date: account.renewal_date, offset: -120d}\n"
        "steps:\n"
        '  - note: {text: "renewal on {{ account.renewal_date }}"}\n'
    ),
}
NOW = datetime(2027, 3, 1, 6, 0, tzinfo=UTC)


def seed(deps: Deps) -> list[str]:
    """Five accounts of varied seat use; three renew 120 days after NOW."""
    ids = []
    with deps.sessions.begin() as s:
        for i in range(5):
            account_id = f"acct-{i}"
            renewal = date(2027, 6, 29) if i < 3 else date(2028, 1, 1)
            doc = {"id": account_id, "name": f"Account {i}", "timezone": "UTC", "renewal_date": renewal.isoformat(), "seats": {"licensed": 100, "active": 20 * i + 10}}
            repo.upsert_account(s, doc, [{"email": f"kim@{account_id}.example", "role": "champion"}])
            ids.append(account_id)
    return ids


async def main() -> None:
    OUT.mkdir(exist_ok=True)
    env = await start_time_skipping()
    root = Path(tempfile.mkdtemp(prefix="touchpoint-record-"))
    folder = root / "playbooks"
    for name, text in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    settings = load_settings(home=root / "home", database_url=f"sqlite:///{root}/store.db", crm_backend="local")
    deps = Deps.from_settings(settings)
    queue = f"record-{uuid.uuid4().hex[:6]}"
    written = []
    try:
        project = load_project(folder)
        project.raise_for_problems()
        with deps.sessions.begin() as s:
            deploy_project(s, project)
        accounts = seed(deps)
        with run_hubspot_server(HUBSPOT_TOKEN) as hubspot:
            for i in range(5):
                company = hubspot.add_company(f"Company {i}", seats_licensed=50 + i, seats_active=10)
                hubspot.add_contact(f"lee{i}@c{i}.example", company_id=company, firstname="Lee", touchpoint_role="champion")
                accounts.append(company)
            hubspot.fail_next(429, headers={"Retry-After": "2"}, match="GET /crm/v3/objects/companies")
            async with HubSpotBackend(HUBSPOT_TOKEN, hubspot.url, timeout=5.0) as backend:
                deps.crm_backend = backend
                async with build_worker(env.client, deps, task_queue=queue, strict_imports=True):
                    runs = [
                        ("health", names.HEALTH_RECOMPUTE, HealthRecomputeInput(batch_size=2), HealthRecomputeResult),
                        ("sweep", names.DATE_SWEEP, DateSweepInput(now=NOW, limit=2), DateSweepResult),
                        ("sync", names.ACCOUNT_SYNC, AccountSyncInput(backend="hubspot", page_size=2, now=NOW), SyncTotals),
                    ]
                    for stem, workflow, arg, result_type in runs:
                        handle = await env.client.start_workflow(workflow, arg, id=f"recorded-{stem}", task_queue=queue, result_type=result_type)
                        await handle.result()
                        (OUT / f"{stem}.json").write_text((await handle.fetch_history()).to_json())
                        written.append(f"{stem}.json")
                    for account_id in accounts:  # account workflows the runs started
                        try:
                            await env.client.get_workflow_handle(account_workflow_id(account_id)).terminate("recorded")
                        except RPCError:
                            pass
    finally:
        deps.crm_backend = None
        await deps.close()
        await env.shutdown()
    print(f"recorded {', '.join(written)} in {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
