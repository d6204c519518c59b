"""Scenario 7: paging 10,000 CRM accounts through the HubSpot and Salesforce connectors.

Touchpoint: `HubSpotBackend.iter_accounts` (pages of 100) and `SalesforceBackend.iter_accounts`
(pages of 2,000) against the test suite's stand-ins (`tests/servers/`, written from the providers'
contracts) on 127.0.0.1, each holding N accounts: HTTP, JSON, field mapping, owners and contacts.
The baseline replays the very same GET requests with httpx and decodes their JSON, mapping
nothing (the floor of any connector over the same API). The tests check what the pages hold; the
speed goal (under 10 s each, moved here from the tests) is this scenario's.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import httpx

from bench.common import Figure, Scenario

HUBSPOT_TOKEN = "pat-na1-bench-token"
SALESFORCE_TOKEN = "00Dxx0000001gPL!AQ4AQbench"
GOAL_SECONDS = 10.0


async def _replay(base: str, token: str, requests: list[Any]) -> float:
    """GET every recorded request again and decode its JSON; the wall time.

    Salesforce's query cursors serve once: a recorded cursor page is skipped, and the fresh
    query's own `nextRecordsUrl` is followed instead.
    """
    begin = time.monotonic()
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        for request in requests:
            if "/query/" in request.path:
                continue
            query = urlencode([(k, v) for k, values in request.query.items() for v in values])
            url: str | None = f"{request.path}?{query}" if query else request.path
            while url:
                response = await http.get(url)
                response.raise_for_status()
                data = response.json()
                url = data.get("nextRecordsUrl") if isinstance(data, dict) else None
    return time.monotonic() - begin


async def _hubspot(count: int) -> tuple[float, float, int]:
    from tests.servers.hubspot_server import run_hubspot_server
    from touchpoint.crm import HubSpotBackend

    with run_hubspot_server(HUBSPOT_TOKEN) as fake:
        for i in range(count):
            fake.add_company(f"Company {i}", seats_licensed=i)
        begin = time.monotonic()
        async with HubSpotBackend(HUBSPOT_TOKEN, fake.url, timeout=30.0) as backend:
            seen = sum([len(page) async for page in backend.iter_accounts()])
        wall = time.monotonic() - begin
        gets = [r for r in fake.requests if r.method == "GET"]
        bare = await _replay(fake.url, HUBSPOT_TOKEN, gets)
    return wall, bare, seen


async def _salesforce(count: int) -> tuple[float, float, int]:
    from tests.servers.salesforce_server import run_salesforce_server
    from touchpoint.crm import SalesforceBackend

    with run_salesforce_server(SALESFORCE_TOKEN) as fake:
        for i in range(count):
            fake.add_account(f"Account {i}", Seats_Licensed__c=i)
        begin = time.monotonic()
        async with SalesforceBackend(fake.url, SALESFORCE_TOKEN, timeout=30.0) as backend:
            seen = sum([len(page) async for page in backend.iter_accounts(page_size=2000)])
        wall = time.monotonic() - begin
        gets = [r for r in fake.requests if r.method == "GET"]
        bare = await _replay(fake.url, SALESFORCE_TOKEN, gets)
    return wall, bare, seen


async def run(count: int = 10_000) -> Scenario:
    """Page ``count`` accounts through each connector, then replay its requests bare.

    Raises:
        RuntimeError: a connector did not return every account (a bug, not a slow run).
    """
    scenario = Scenario("crm", f"Paging {count:,} CRM accounts (HubSpot, Salesforce stand-ins)", f"< {GOAL_SECONDS:g} s each")
    walls = []
    for name, measure in (("HubSpot", _hubspot), ("Salesforce", _salesforce)):
        wall, bare, seen = await measure(count)
        if seen != count:
            raise RuntimeError(f"{name}: expected {count} accounts, paged {seen}")
        scenario.figures.append(Figure(f"{name} wall time", "s", round(wall, 3), round(bare, 3), "lower"))
        walls.append(wall)
    scenario.met = all(wall < GOAL_SECONDS for wall in walls)
    scenario.notes.append("Baseline: the same GET requests replayed with httpx and JSON-decoded, nothing mapped (a floor).")
    return scenario
