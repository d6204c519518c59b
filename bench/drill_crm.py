"""Drill: HubSpot rate-limits every third call during a sync of 10,000 companies.

Two syncs against the HubSpot stand-in (tests/servers/hubspot_server.py), both rate-limited:

1. the first import, `touchpoint accounts sync --from hubspot --backfill` (`run_sync`, the CLI's
   code): every company must land in the store once;
2. after ``changed`` companies changed their seats and ``new`` companies appeared, the
   `AccountSync` workflow a Temporal Schedule starts, on a fresh dev server with the production
   worker: each changed company must emit `account.updated` and `seats.changed` once, each new
   one `account.created` once.

Lost and doubled are counted on the store's account rows and event rows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from sqlalchemy import select

from bench.common import fresh_server
from bench.drill_support import DrillResult, drill_folder, make_deps, tally, until
from worker import build_worker

QUEUE = "drill"
TOKEN = "pat-drill"
CHANGES = ("account.created", "account.updated", "seats.changed")


def _account_ids(deps: Any) -> list[str]:
    from touchpoint.store.models import Account

    with deps.sessions() as s:
        return [str(a) for a in s.scalars(select(Account.id))]


def _change_events(deps: Any) -> list[str]:
    from touchpoint.store.models import Event

    with deps.sessions() as s:
        return [f"{a}|{t}" for a, t in s.execute(select(Event.account_id, Event.type).where(Event.type.in_(CHANGES)))]


async def crm_rate_limit(*, companies: int = 10_000, every: int = 3, changed: int = 100, new: int = 50, retry_after: str = "0.05", timeout: float = 600) -> DrillResult:
    """Sync ``companies`` companies while every ``every``-th HubSpot call answers 429 with
    ``Retry-After``, then sync again after ``changed`` seat changes and ``new`` companies."""
    from activities.sync import run_sync
    from tests.servers.hubspot_server import run_hubspot_server
    from touchpoint.crm import HubSpotBackend
    from touchpoint.dsl.sync_models import AccountSyncInput, SyncTotals
    from workflows import names

    result = DrillResult("crm-rate-limit", f"HubSpot rate-limiting every {'third' if every == 3 else f'{every}th'} call during a sync of {companies:,} companies", expected=companies + 2 * changed + new)
    begin = time.monotonic()
    with drill_folder("crm") as root, run_hubspot_server(TOKEN) as hubspot:
        owner = hubspot.add_owner("dana@drill.example", first_name="Dana")
        ids = []
        for i in range(companies):
            company = hubspot.add_company(f"Company {i}", seats_licensed=100 + i % 50, seats_active=40, hubspot_owner_id=owner)
            hubspot.add_contact(f"kim{i}@c{i}.example", company_id=company, firstname="Kim", touchpoint_role="champion")
            ids.append(company)
        hubspot.rate_limit_every(every, retry_after=retry_after)
        deps = make_deps(root, f"sqlite:///{root / 'home' / 'touchpoint.db'}")
        try:
            async with HubSpotBackend(TOKEN, hubspot.url, timeout=10.0) as backend:
                started = time.monotonic()
                first = await run_sync(deps, backend, client=None, task_queue=QUEUE, backfill=True)
                result.detail["backfill"] = {"seconds": round(time.monotonic() - started, 1), "read": first.read, "created": first.created, "rate_limited": hubspot.rate_limited}
                stored = await asyncio.to_thread(_account_ids, deps)
                imported = tally(ids, stored)
                hubspot.requests.clear()

                step = max(1, companies // max(1, changed))
                moved = ids[::step][:changed]
                for company in moved:
                    seats = int(hubspot.companies[company].properties["seats_licensed"])
                    hubspot.companies[company].properties["seats_licensed"] = str(seats + 10)
                added = [hubspot.add_company(f"Newco {i}", seats_licensed=10) for i in range(new)]
                expected = [f"{c}|{t}" for c in moved for t in ("account.updated", "seats.changed")] + [f"{c}|account.created" for c in added]
                limited_before = hubspot.rate_limited
                deps.crm_backend = backend
                async with fresh_server() as server, build_worker(server.env.client, deps, task_queue=QUEUE):
                    started = time.monotonic()
                    second: SyncTotals = await server.env.client.execute_workflow(
                        names.ACCOUNT_SYNC, AccountSyncInput(backend="hubspot"), id=f"account-sync/{uuid.uuid4().hex[:8]}", task_queue=QUEUE, result_type=SyncTotals
                    )
                    synced = time.monotonic()

                    async def drained() -> bool:
                        seen = await asyncio.to_thread(_change_events, deps)
                        changes = tally(expected, seen)
                        result.delivered = imported[0] + changes[0]
                        result.lost = imported[1] + changes[1]
                        result.doubled = imported[2] + changes[2]
                        result.detail["events"] = {"delivered": changes[0], "lost": changes[1], "doubled": changes[2]}
                        return changes[1] == 0

                    if not await until(drained, timeout=timeout):
                        result.error = f"events not drained {timeout:.0f} s after the sync"
                    result.drain_seconds = round(time.monotonic() - synced, 1)
                    await asyncio.sleep(1.0)  # a late duplicate would land now
                    await drained()
                    await _stop_accounts(server.env.client, added + moved)
                result.detail["sync"] = {
                    "seconds": round(synced - started, 1),
                    "read": second.read,
                    "created": second.created,
                    "updated": second.updated,
                    "rate_limited": hubspot.rate_limited - limited_before,
                }
                result.detail["imported"] = {"delivered": imported[0], "lost": imported[1], "doubled": imported[2]}
        finally:
            deps.crm_backend = None
            await deps.close()
    result.total_seconds = round(time.monotonic() - begin, 1)
    return result


async def _stop_accounts(client: Any, accounts: list[str]) -> None:
    """Terminate the account workflows the sync started (the server is about to stop anyway)."""
    from temporalio.service import RPCError

    from workflows.account import account_workflow_id

    for account in accounts:
        try:
            await client.get_workflow_handle(account_workflow_id(account)).terminate("drill finished")
        except RPCError:
            pass
