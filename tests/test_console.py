"""The console in a real browser: Debian's chromium driven by Playwright, against the real API app.

uvicorn serves `create_app` on 127.0.0.1 over a real store; the shipped playbooks are deployed,
the sample accounts put through the JSON API and real account workflows (a worker on a
time-skipping server of the test's own) run them to their first waits; nothing in the store is
written by the test itself. The test then looks at what a CS-ops lead sees: counts that match
the store, the journey drawn with one node per step, an account's runs, emails and tasks, pause
and resume, completing a task, and login and CSRF refusing what they must. Every request the
browser makes stays on 127.0.0.1 and no page logs an error (the pages run no JavaScript).

Screenshots of every page go to the test's temporary folder; the three the README shows go to
``$TOUCHPOINT_CONSOLE_SCREENSHOTS`` instead when it is set (``=docs/screenshots`` refreshes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
import yaml
from playwright.async_api import expect
from pydantic import SecretStr
from temporalio.client import WorkflowExecutionStatus

from tests.conftest import Stack, eventually, on_both_stores
from touchpoint.api.app import create_app
from touchpoint.config import load_settings
from touchpoint.dsl.health_models import HealthRecomputeInput
from touchpoint.dsl.schema import Playbook
from touchpoint.dsl.walk import count_steps
from touchpoint.store import repo
from workflows import names

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("TOUCHPOINT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def chromium() -> str:
    """Debian's chromium (never a browser download): fail, saying how to install it, without it."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no chromium at {CHROMIUM}: the console's tests drive Debian's browser; install it with "
            "`apt-get install chromium` (scripts/test does when apt is available) or point TOUCHPOINT_CHROMIUM at one",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture
async def stack(own_stack: Stack) -> Stack:
    """A server of its own: runs park in waits that must not be skipped by another test's sleep."""
    return own_stack


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free port of 127.0.0.1; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class Browser:
    """One chromium page, with every URL it requested and every error it reported."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    shots: Path = Path()
    readme: Path | None = None

    async def shot(self, name: str, *, readme: bool = False, full_page: bool = True) -> None:
        """Save a screenshot of the page; the README's go to ``$TOUCHPOINT_CONSOLE_SCREENSHOTS`` when set."""
        folder = self.readme if readme and self.readme is not None else self.shots
        await self.page.screenshot(path=str(folder / f"console-{name}.png"), full_page=full_page)

    def check_clean(self) -> None:
        off = sorted({u for u in self.requests if urlsplit(u).hostname != "127.0.0.1"})
        assert not off, f"requests left 127.0.0.1: {off}"
        assert not self.errors, f"the pages reported errors: {self.errors}"


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    path = chromium()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    readme = Path(os.environ["TOUCHPOINT_CONSOLE_SCREENSHOTS"]) if os.environ.get("TOUCHPOINT_CONSOLE_SCREENSHOTS") else None
    async with async_playwright() as p:
        chrome = await p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            page = await chrome.new_page(viewport={"width": 1280, "height": 900})
            found = Browser(page, shots=shots, readme=readme)
            page.on("request", lambda request: found.requests.append(request.url))
            page.on("pageerror", lambda error: found.errors.append(f"page error: {error}"))
            page.on("console", lambda m: found.errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
            yield found
        finally:
            await chrome.close()


def open_window_copy(source: Path, target: Path) -> Path:
    """The shipped playbooks with send windows open around the clock (as `touchpoint demo` does)."""
    shutil.copytree(source, target)
    workspace = target / "workspace.yaml"
    data = yaml.safe_load(workspace.read_text(encoding="utf-8"))
    data["send_window"] = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "hours": "00:00-24:00"}
    workspace.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    for path in target.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "playbook" in doc and "send_window" in doc:
            doc.pop("send_window")
            path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return target


def samples() -> list[dict[str, Any]]:
    """The sample accounts; Globex is made a new customer, so it starts enterprise onboarding."""
    docs = []
    for path in sorted((ROOT / "playbooks" / "samples").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "id" in doc and "name" in doc:
            if doc["id"] == "globex":
                doc["properties"].pop("onboarded")
            docs.append(doc)
    return docs


def run_of(s: Any, account_id: str, playbook: str) -> Any:
    return next((r for r in repo.list_runs(s, account_id=account_id, playbook_id=playbook)), None)


def at_step(account_id: str, playbook: str, step: str) -> Any:
    def probe(s: Any) -> Any:
        run = run_of(s, account_id, playbook)
        return run if run is not None and run.step == step and run.waiting and run.waiting[0]["kind"] != "effect" else None

    return probe


async def settled(stack: Stack) -> None:
    """Until every run in flight is parked (no provider call in flight) twice in a row."""

    def parked(s: Any) -> list[tuple[str, str | None, str]]:
        runs = repo.list_runs(s)
        if any(r.status != "ended" and (not r.waiting or any(w["kind"] == "effect" for w in r.waiting)) for r in runs):
            return []
        return [(r.id, r.step, r.status) for r in runs] or [("none", None, "")]

    while True:
        first = await eventually(stack, parked)
        await asyncio.sleep(0.5)
        with stack.deps.sessions() as s:
            if parked(s) == first:
                return


def jsonable(doc: Any) -> Any:
    from touchpoint.dsl.runtime import plain

    return plain(doc)


@pytest.fixture
async def demo(stack: Stack, tmp_path: Path) -> AsyncIterator[str]:
    """The shipped playbooks deployed, the samples put and moved along by real events; the URL."""
    stack.deploy(open_window_copy(ROOT / "playbooks", tmp_path / "playbooks"))
    settings = load_settings(home=stack.settings.home, database_url=stack.settings.db_url, task_queue=stack.task_queue)
    app = create_app(settings, stack.client, stack.deps.sessions)
    async with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for doc in samples():
                assert (await http.put(f"/accounts/{doc['id']}", json=jsonable(doc))).status_code == 202
                usage = {"type": "usage.reported", "account_id": doc["id"], "data": {"metrics": {"integrations": 1}}}
                assert (await http.post("/events", json=usage)).status_code == 202
            await eventually(stack, at_step("globex", "onboarding-enterprise", "kickoff"))
            await eventually(stack, at_step("northwind", "onboarding-scale", "sso"))
            kickoff = {"type": "meeting.completed", "account_id": "globex", "data": {"meeting": "kickoff"}}
            sso = {"type": "setup.sso_configured", "account_id": "northwind"}
            for event in (kickoff, sso):
                assert (await http.post("/events", json=event)).status_code == 202
        await eventually(stack, at_step("globex", "onboarding-enterprise", "council"))
        await eventually(stack, at_step("northwind", "onboarding-scale", "after_docs"))
        # The daily health recompute, started as its Schedule would; not awaited, so the
        # time-skipping server keeps its clock and the runs stay where they are.
        recompute = await stack.client.start_workflow(
            names.HEALTH_RECOMPUTE, HealthRecomputeInput(), id=f"health-{uuid.uuid4().hex[:8]}", task_queue=stack.task_queue
        )
        for _ in range(600):  # until it has completed, so its health.changed events have been sent
            if (await recompute.describe()).status == WorkflowExecutionStatus.COMPLETED:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the health recompute did not complete within a minute")
        await eventually(stack, lambda s: all(repo.latest_health(s, doc["id"]) for doc in samples()))
        await settled(stack)
        yield url


def numbers(text: str) -> int:
    found = re.findall(r"\d+", text)
    assert found, f"no number in {text!r}"
    return int(found[0])


@on_both_stores()
async def test_console_shows_journeys_accounts_and_tasks_and_pauses_a_run(stack: Stack, demo: str, browser: Browser, store: str) -> None:
    page = browser.page
    # --- the overview: every deployed playbook with its runs and emails, tasks, health tiers
    await page.goto(f"{demo}/console")
    with stack.deps.sessions() as s:
        deployed = [d.name for d in repo.current_deployments(s, "playbook")]
        runs = repo.list_runs(s)
        sent = [m for m in repo.list_messages(s, limit=10_000) if m.status == "sent"]
        open_tasks = repo.list_tasks(s, status="open")
        tiers = Counter(score.tier for doc in samples() if (score := repo.latest_health(s, doc["id"])) is not None)
    rows = page.locator("table.playbooks tbody tr")
    assert sorted(await rows.evaluate_all("rows => rows.map(r => r.dataset.playbook)")) == sorted(deployed)
    for playbook in ("onboarding-enterprise", "onboarding-scale"):
        row = page.locator(f'tr[data-playbook="{playbook}"]')
        running = sum(1 for r in runs if r.playbook_id == playbook and r.status == "running")
        assert running >= 1
        assert numbers(await row.locator("td.running").inner_text()) == running
        assert numbers(await row.locator("td.week").inner_text()) == sum(1 for m in sent if m.playbook_id == playbook)
    assert numbers(await page.locator("#emails-week").inner_text()) == len(sent) > 0
    assert numbers(await page.locator("#open-tasks").inner_text()) == len(open_tasks) > 0
    for tier, n in tiers.items():
        assert numbers(await page.locator(f"li.tier.{tier}").inner_text()) == n
    await browser.shot("overview", readme=True)

    # --- a playbook: one node per step, each with the runs there now and the runs that reached it
    await page.click('tr[data-playbook="onboarding-scale"] a')
    await page.wait_for_url("**/console/playbooks/onboarding-scale")
    with stack.deps.sessions() as s:
        deployment = repo.get_deployment(s, "playbook", "onboarding-scale")
        assert deployment is not None
        playbook = Playbook.model_validate(deployment.content["playbook"])
        mine = [r for r in repo.list_runs(s, playbook_id="onboarding-scale") if r.version == deployment.version]
        now = Counter(r.step for r in mine if r.status != "ended")
        reached = Counter(step for r in mine for step in {line.step for line in repo.run_steps(s, r.id)})
    nodes = await page.locator("svg.journey a.step").evaluate_all(
        "nodes => nodes.map(n => [n.dataset.step, +n.dataset.now, +n.dataset.reached])"
    )
    assert len(nodes) == count_steps(playbook) == len({name for name, _, _ in nodes})
    assert {name: (n, r) for name, n, r in nodes} == {name: (now[name], reached[name]) for name, _, _ in nodes}
    assert set(now) <= {name for name, _, _ in nodes}  # every run in flight is at a node
    drawn = {name: n for name, n, _ in nodes}
    assert drawn["after_docs"] == 1 and drawn["sso"] == 1  # Northwind moved on, Rheinwerk waits for SSO
    await browser.shot("playbook", readme=True)
    # A node links to the runs there now.
    await page.click('svg.journey a.step[data-step="after_docs"]')
    await page.wait_for_url("**/console/runs?*step=after_docs*")
    assert await page.locator("table.runs tbody tr").count() == 1
    assert await page.locator("table.runs tbody tr td").first.inner_text() == "northwind"

    # --- every shipped playbook is drawn with one node per step
    with stack.deps.sessions() as s:
        shipped = {d.name: count_steps(Playbook.model_validate(d.content["playbook"])) for d in repo.current_deployments(s, "playbook")}
    for name, steps in shipped.items():
        await page.goto(f"{demo}/console/playbooks/{name}")
        assert await page.locator("svg.journey a.step").count() == steps, name

    # --- the enterprise journey, with its report card lanes
    await page.goto(f"{demo}/console/playbooks/onboarding-enterprise")
    assert await page.locator('svg.journey a.step[data-step="council"]').get_attribute("data-now") == "1"
    assert await page.locator('tr[data-milestone="kickoff_held"] td.num').last.inner_text() == "1"
    await browser.shot("playbook-enterprise")

    # --- accounts: search by CSM, then Globex's page with its run, emails and tasks
    await page.goto(f"{demo}/console/accounts")
    await page.fill("#q", "dana")
    await page.press("#q", "Enter")
    await page.wait_for_url("**/console/accounts?q=dana")
    found = await page.locator("table.accounts tbody tr").evaluate_all("rows => rows.map(r => r.dataset.account)")
    with stack.deps.sessions() as s:
        assert sorted(found) == sorted(doc["id"] for doc, _ in repo.list_accounts(s, csm_email="dana@example.com"))
    await page.goto(f"{demo}/console/accounts/globex")
    with stack.deps.sessions() as s:
        run = run_of(s, "globex", "onboarding-enterprise")
        emails = [m for m in repo.list_messages(s, limit=10_000) if m.account_id == "globex"]
        tasks = repo.list_tasks(s, account_id="globex")
    section = page.locator(f'section.run[data-run="{run.id}"]')
    assert await section.get_attribute("data-status") == "running"
    assert "council.chartered" in await section.locator(".waiting").inner_text()
    timeline = await section.locator("table.timeline tbody tr").count()
    with stack.deps.sessions() as s:
        assert timeline == len(repo.run_steps(s, run.id)) > 5
    subjects = await page.locator("table.emails td.subject").all_inner_texts()
    assert sorted(subjects) == sorted(m.subject for m in emails) and len(subjects) >= 2
    assert sorted(await page.locator("ul.tasks li.task > div > strong").all_inner_texts()) == sorted(t.title for t in tasks)
    assert await page.locator("#health-score").inner_text() == str(repo_score(stack, "globex"))
    await browser.shot("account", readme=True, full_page=False)

    # --- pause and resume Northwind's run in the browser
    with stack.deps.sessions() as s:
        northwind = run_of(s, "northwind", "onboarding-scale")
    await page.goto(f"{demo}/console/accounts/northwind")
    await page.locator(f'section.run[data-run="{northwind.id}"] button', has_text="Pause").click()
    await page.wait_for_url("**done=pause**")
    await eventually(stack, lambda s: repo.get_run(s, northwind.id).status == "paused")
    await page.reload()
    section = page.locator(f'section.run[data-run="{northwind.id}"]')
    assert await section.get_attribute("data-status") == "paused"
    assert "Paused: paused in the console" in await section.locator(".meta").inner_text()
    await section.locator("button", has_text="Resume").click()
    await page.wait_for_url("**done=resume**")
    await eventually(stack, lambda s: repo.get_run(s, northwind.id).status == "running")

    # --- tasks by owner; complete one
    await page.goto(f"{demo}/console/tasks")
    with stack.deps.sessions() as s:
        task = next(t for t in repo.list_tasks(s, status="open", account_id="globex") if t.step == "kickoff_task")
        owners = {t.owner for t in repo.list_tasks(s, status="open")}
    assert set(await page.locator("section.owner").evaluate_all("els => els.map(e => e.dataset.owner)")) == owners
    await browser.shot("tasks")
    await page.locator(f'li[data-task="{task.id}"] button', has_text="Complete").click()
    await page.wait_for_url("**done=complete")
    assert await page.locator("p.notice").count() == 1
    with stack.deps.sessions() as s:
        stored = repo.get_task(s, task.id)
        assert stored is not None and stored.status == "completed"
    assert await page.locator(f'li[data-task="{task.id}"]').count() == 0

    # --- readable on a phone: nothing wider than the screen but the scrolling tables and diagram
    await page.set_viewport_size({"width": 390, "height": 800})
    for path in ("/console", "/console/accounts/globex", "/console/playbooks/onboarding-enterprise"):
        await page.goto(demo + path)
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390, path
    browser.check_clean()


def repo_score(stack: Stack, account_id: str) -> int:
    with stack.deps.sessions() as s:
        latest = repo.latest_health(s, account_id)
        assert latest is not None
        return latest.score


async def test_console_login_and_csrf_refuse_without_the_token(stack: Stack, folder: Path, browser: Browser) -> None:
    (folder / "workspace.yaml").write_text("timezone: UTC\n")
    (folder / "manual.yaml").write_text("playbook: hello\ntrigger: manual\nsteps:\n  - wait: 1d\n")
    stack.deploy(folder)
    token = "console-test-" + uuid.uuid4().hex
    settings = load_settings(
        home=stack.settings.home, database_url=stack.settings.db_url, task_queue=stack.task_queue, api_token=SecretStr(token)
    )
    app = create_app(settings, stack.client, stack.deps.sessions)
    async with serve(app) as url:
        page = browser.page
        # Every page sends a visitor without a session to the login form, and back after it.
        await page.goto(f"{url}/console/tasks")
        assert urlsplit(page.url).path == "/console/login"
        await page.fill("#token", "not-the-token")
        await page.fill("#by", "lead@example.com")
        await page.click("button:has-text('Sign in')")
        await expect(page.locator("p.problem")).to_contain_text("not the API token")
        # The refusal is a 401, which chromium logs as a failed load: expected here, and only here.
        assert browser.errors == ["console error: Failed to load resource: the server responded with a status of 401 (Unauthorized)"]
        browser.errors.clear()
        await browser.shot("login")
        await page.fill("#token", token)
        await page.fill("#by", "lead@example.com")
        await page.click("button:has-text('Sign in')")
        await page.wait_for_url("**/console/tasks")
        assert "lead@example.com" in await page.locator(".who").inner_text()
        cookie = next(c for c in await page.context.cookies() if c["name"] == "touchpoint_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"

        async with httpx.AsyncClient(base_url=url) as http:
            # Without a session: the login form; a forged post: refused, whatever it carries.
            assert (await http.get("/console")).status_code == 303
            forged = await http.post("/console/tasks/x/complete", data={"csrf": "guess"})
            assert forged.status_code == 403 and "did not come from the console" in forged.text
            # With the browser's session cookie but without its CSRF token (a cross-site form
            # could make the browser send the cookie, never read the token): refused.
            http.cookies.set("touchpoint_console", cookie["value"], domain="127.0.0.1", path="/console")
            assert (await http.get("/console")).status_code == 200
            assert (await http.post("/console/runs/r/control", data={"action": "cancel"})).status_code == 403
            other_site = await http.post("/console/logout", data={"csrf": "x"}, headers={"origin": "https://evil.example"})
            assert other_site.status_code == 403
            assert (await http.post("/console/logout", content=b"csrf=" + b"x" * 70_000)).status_code == 413

            async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it comes
                for _ in range(70):
                    yield b"x" * 1024

            assert (await http.post("/console/logout", content=chunks())).status_code == 413
            # A tampered cookie is no session; the JSON API still wants its bearer token.
            http.cookies.set("touchpoint_console", cookie["value"][:-2] + "xx", domain="127.0.0.1", path="/console")
            assert (await http.get("/console")).status_code == 303
            assert (await http.get("/runs")).status_code == 401
            # The console is not part of the API's document.
            spec = (await http.get("/openapi.json", headers={"Authorization": f"Bearer {token}"})).json()
            assert not [p for p in spec["paths"] if p.startswith("/console")]

        # A pause sent by a signed-in reviewer names them as its reason.
        bearer = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=bearer) as api:
            assert (await api.put("/accounts/acme", json={"name": "Acme"})).status_code == 202
            await eventually(stack, lambda s: repo.get_account(s, "acme"))
            assert (await api.post("/runs", json={"playbook": "hello", "account_id": "acme"})).status_code == 201
        run = await eventually(stack, at_step("acme", "hello", "steps[0]"))
        await page.goto(f"{url}/console/accounts/acme")
        await page.locator(f'section.run[data-run="{run.id}"] button', has_text="Pause").click()
        await page.wait_for_url("**done=pause**")
        paused = await eventually(stack, lambda s: (r := repo.get_run(s, run.id)) is not None and r.status == "paused" and r)
        assert paused.paused_reason == "paused in the console by lead@example.com"

        # Signing out ends the session.
        await page.click("button:has-text('Sign out')")
        await page.wait_for_url("**/console/login")
        await page.goto(f"{url}/console")
        assert urlsplit(page.url).path == "/console/login"
    browser.check_clean()


EVERY_SHAPE = """\
playbook: shapes
trigger: {event: trial.started, when: "account.arr < 1000 and account.name != '<b>'"}
scorecard:
  milestones: [{id: sso, weight: 1, event: setup.sso_configured}]
  checkpoints: [{day: 30, below: 40, steps: [{note: {text: behind}}]}]
  on_miss: [{note: {text: missed}, id: missed}]
steps:
  - email: {template: hi}
    id: hello
  - split:
      a: {weight: 1, steps: [{wait: 2d, id: a_wait}]}
      b: {weight: 3, steps: []}
    id: ab
  - if: "account.arr < 10 and account.name == '<i>'"
    then: [{exit: converted}]
  - repeat:
      every: 7d
      times: 3
      steps:
        - task: {title: Call, due: 2d, await: true, on_overdue: [{note: {text: late}, id: late}]}
          id: call
        - wait_for: {event: call.done, timeout: 3d, on_timeout: [{set: {missed: "true"}}]}
          id: answer
    id: weekly
"""


def test_console_diagram_draws_every_shape_with_one_node_per_step() -> None:
    import xml.etree.ElementTree as ET

    from touchpoint.console import diagram
    from touchpoint.dsl.walk import all_steps, step_name

    playbook = Playbook.model_validate(yaml.safe_load(EVERY_SHAPE))
    svg, nodes = diagram.render(playbook, counts=lambda name: (1, 2) if name == "a_wait" else (0, 0), link=diagram.runs_link("shapes", "v1"))
    tree = ET.fromstring(str(svg))  # well-formed: every text escaped
    ns = {"svg": "http://www.w3.org/2000/svg"}
    steps = {a.get("data-step"): (a.get("data-now"), a.get("data-reached"), a.get("href")) for a in tree.iter("{http://www.w3.org/2000/svg}a")}
    names = {step_name(step, path) for path, step in all_steps(playbook)}
    assert nodes == len(steps) == count_steps(playbook) == 12 and set(steps) == names
    assert steps["a_wait"][:2] == ("1", "2") and steps["hello"][:2] == ("0", "0")
    assert steps["steps[2].then[0]"][2] == "/console/runs?playbook=shapes&version=v1&step=steps%5B2%5D.then%5B0%5D&status=in_flight"
    texts = {t.text for t in tree.iterfind(".//svg:text", ns)}
    for label in ("a 25%", "b 75%", "then", "else", "every 1w", "timeout 3d", "overdue", "checkpoint day 30", "on miss, day 90", "start", "end"):
        assert label in texts, label
    assert "repeat every 1w × 3" in texts and "wait for call.done ≤ 3d" in texts
    assert "<i>" in "".join(t.text or "" for t in tree.iter()) and "<i>" not in str(svg)  # shown, escaped
