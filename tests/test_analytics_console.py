"""`touchpoint analytics`, `GET /playbooks/{id}/analytics` and the console's playbook page give
the same numbers (one function), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.conftest import Stack, invoke_cli, on_both_stores, write_folder
from tests.test_analytics import FILES, record
from touchpoint.analytics import playbook_analytics
from touchpoint.api.app import create_app
from touchpoint.config import load_settings


def cells(html: str, table: str) -> dict[str, list[str]]:
    """A table of the page by its id: each row's first cell and the numbers after it."""
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    rows = {}
    for row in re.findall(r"<tr data-[a-z]+=\"[^\"]*\">(.*?)</tr>", body, re.S):
        found = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        rows[found[0]] = found[1:]
    return rows


@on_both_stores()
async def test_analytics_cli_api_and_console_show_the_same_numbers(stack: Stack, tmp_path: Path) -> None:
    stack.deploy(write_folder(tmp_path / "playbooks", FILES))
    with stack.deps.sessions() as s:
        version = playbook_analytics(s, "trial").versions[0].version
    record(stack.deps.sessions, version)
    with stack.deps.sessions() as s:
        expected = playbook_analytics(s, "trial").model_dump(mode="json")
    env = {"TOUCHPOINT_HOME": str(tmp_path / "home"), "TOUCHPOINT_DATABASE_URL": stack.settings.db_url}
    cli = invoke_cli(["analytics", "trial", "--json"], env)
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == expected
    table = invoke_cli(["analytics", "trial"], env)
    assert table.exit_code == 0 and "welcome" in table.stdout and "not enough runs to tell yet" in table.stdout
    bad = invoke_cli(["analytics", "trial", "--since", "yesterday"], env)
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output

    app = create_app(load_settings(home=tmp_path / "home", database_url=stack.settings.db_url), stack.client, stack.deps.sessions)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://touchpoint") as http:
        got = await http.get("/playbooks/trial/analytics")
        assert got.status_code == 200 and got.json() == expected
        later = await http.get("/playbooks/trial/analytics", params={"since": "2026-12-01"})
        assert later.status_code == 200 and later.json()["totals"]["enrolled"] == 0
        unknown = await http.get("/playbooks/nope/analytics")
        assert unknown.status_code == 404 and "was ever deployed" in unknown.json()["detail"]
        no_version = await http.get("/playbooks/trial/analytics", params={"version": "v0"})
        assert no_version.status_code == 404 and version in no_version.json()["detail"]
        malformed = await http.get("/playbooks/trial/analytics", params={"since": "soon"})
        assert malformed.status_code == 422 and "since" in malformed.text
        page = await http.get("/console/playbooks/trial")
    assert page.status_code == 200
    steps = expected["versions"][0]["steps"]
    assert cells(page.text, "funnel") == {x["step"]: [str(x[k]) for k in ("entered", "passed", "skipped", "failed")] for x in steps}
    emails = {x["step"]: x["emails"] for x in steps if x["emails"]}
    assert cells(page.text, "emails") == {step: [str(v) for v in counts.values()] for step, counts in emails.items()}
    variants = cells(page.text, "variants")
    assert variants["tone=friendly"][:3] == ["1", "0", "0"] and variants["tone=friendly"][-1] == "100.0%"
    assert expected["uplift"]["sentence"] in page.text
