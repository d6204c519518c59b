"""The console's overview shows the three layers of CS metrics for the quarter so far (issue 26):
the same figures `touchpoint report` computes, from the account history upserts write."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Stack, write_folder
from touchpoint.api.app import create_app
from touchpoint.config import load_settings
from touchpoint.report import parse_period
from touchpoint.store.accounts import record_event, upsert_account

WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com}
indicators: [ai_weekly_users]
activities:
  ai_workshop: {event: workshop.completed}
"""


def cell(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">([^<]*)<', html)
    assert found, element_id
    return found.group(1).strip()


async def test_console_overview_shows_the_three_layers_of_the_quarter(stack: Stack, tmp_path: Path) -> None:
    stack.deploy(write_folder(tmp_path / "playbooks", {"workspace.yaml": WORKSPACE}))
    now = dt.datetime.now(dt.UTC)
    quarter = parse_period(None, "UTC", now=now)
    before, during = quarter.start - dt.timedelta(days=30), min(quarter.start + dt.timedelta(days=1), now - dt.timedelta(minutes=5))

    def put(account_id: str, when: dt.datetime, arr: float, **metrics: Any) -> None:
        doc = {"id": account_id, "name": account_id, "segment": "scale", "arr": arr, "seats": {"licensed": 100, "active": 40}, "metrics": metrics, "csm": {"email": "dana@example.com"}}
        with stack.deps.sessions.begin() as s:
            upsert_account(s, doc, [], at=when)

    put("acme", before, 1000, ai_weekly_users=3)
    put("globex", before, 500, ai_weekly_users=0)
    put("acme", during, 1200, ai_weekly_users=5)  # expansion 200
    put("globex", during, 0)  # churn 500
    with stack.deps.sessions.begin() as s:
        record_event(s, "w1", "acme", "workshop.completed", during, {})
    app = create_app(load_settings(home=tmp_path / "home", database_url=stack.settings.db_url), stack.client, stack.deps.sessions)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://touchpoint") as http:
        page = await http.get("/console")
    assert page.status_code == 200
    html = page.text
    assert f"three layers, {quarter.label}" in html
    assert cell(html, "starting-arr") == "1,500"
    assert cell(html, "nrr") == "80.0%"  # (1,500 + 200 - 500) / 1,500
    assert re.search(r"<code>ai_weekly_users</code> above zero</td><td class=\"num\">100%", html)  # acme, the one customer left
    assert re.search(r"<code>ai_workshop</code> \(dana@example.com 1\)</td><td class=\"num\">1<", html)
