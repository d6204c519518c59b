"""The console's pages (GET): overview, playbook, accounts, account, tasks, runs (approvals: `approvals`).

Everything shown is read from the store through `repo` (the projections the account workflows
write at every step); no page queries Temporal. Each handler is a plain function (FastAPI runs it
in its thread pool) that reads in one session and renders before the session closes.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from touchpoint.analytics import playbook_analytics
from touchpoint.console import diagram
from touchpoint.console.core import Console
from touchpoint.dsl.schema import Milestone, Playbook
from touchpoint.dsl.walk import all_steps, step_name
from touchpoint.store import repo
from touchpoint.store.models import Run

TIERS = ("green", "yellow", "red", "unscored")
STATUSES = ("running", "paused", "ended")
DONE_NOTICES = {
    "pause": "Pause sent: the run holds before its next side effect (the page shows it once its account's workflow has applied it).",
    "resume": "Resume sent: the run goes on where it was.",
    "cancel": "Cancel sent: the run ends with outcome cancelled.",
    "complete": "Task completed: a run awaiting it moves on.",
}

Text = Annotated[str, Query(max_length=200)]


def add_pages(router: APIRouter, console: Console) -> None:
    """Register the GET pages on the console's router."""

    @router.get("")
    def overview(request: Request) -> Response:
        entered = console.enter(request)
        if isinstance(entered, Response):
            return entered
        visit, fresh = entered
        now = dt.datetime.now(dt.UTC)
        with console.db() as s:
            deployments = repo.current_deployments(s, "playbook")
            counts = repo.run_counts(s)
            week = repo.emails_sent_since(s, now - dt.timedelta(days=7))
            month = repo.emails_sent_since(s, now - dt.timedelta(days=30))
            open_tasks, overdue = repo.task_counts(s, now)
            tiers = repo.health_tiers(s)
            layers = _three_layers(s, now)
            pending = repo.approval_counts(s).get("pending", 0)
            rows = []
            for d in deployments:
                playbook = console.playbook(d)
                by_status = counts.get(d.name, {})
                rows.append(
                    {
                        "id": d.name, "name": playbook.name or d.name, "trigger": diagram.trigger_words(playbook), "version": d.version,
                        "running": by_status.get("running", 0), "paused": by_status.get("paused", 0), "ended": by_status.get("ended", 0),
                        "week": week.get(d.name, 0), "month": month.get(d.name, 0),
                    }
                )
        gone = sorted(set(counts) - {d.name for d in deployments})
        tier_rows = [(tier, tiers.get(tier, 0)) for tier in TIERS] + [(t, n) for t, n in sorted(tiers.items()) if t not in TIERS]
        return console.page(
            request, visit, "overview.html", fresh=fresh, playbooks=rows, gone=[(g, counts[g]) for g in gone],
            emails_week=sum(week.values()), emails_month=sum(month.values()), open_tasks=open_tasks, overdue=overdue,
            tiers=tier_rows, accounts_total=sum(tiers.values()), layers=layers, pending_approvals=pending,
        )

    @router.get("/playbooks/{playbook_id}")
    def playbook_page(request: Request, playbook_id: str, version: Text = "") -> Response:
        entered = console.enter(request)
        if isinstance(entered, Response):
            return entered
        visit, fresh = entered
        with console.db() as s:
            deployment = repo.get_deployment(s, "playbook", playbook_id, version or None)
            if deployment is None:
                what = f"version {version} of playbook {playbook_id!r}" if version else f"playbook {playbook_id!r}"
                return console.problem(request, visit, 404, "Not deployed", f"There is no {what} in the store: `touchpoint deploy` publishes playbooks.")
            current = repo.get_deployment(s, "playbook", playbook_id)
            playbook = console.playbook(deployment)
            at_steps = repo.runs_at_steps(s, playbook_id)
            # The same numbers as `touchpoint analytics PLAYBOOK --version V` (one function).
            numbers = playbook_analytics(s, playbook_id, version=deployment.version)
            (funnel,) = numbers.versions
            reached = {reach.step: reach.entered for reach in funnel.steps}
            in_flight = repo.find_runs(s, playbook_id=playbook_id, version=deployment.version, in_flight=True, limit=10_000)
            milestones = _milestones_done(playbook, in_flight)
            versions: Counter[str] = Counter()
            for (v, _step), n in at_steps.items():
                versions[v] += n
            svg, nodes = diagram.render(
                playbook,
                counts=lambda name: (at_steps.get((deployment.version, name), 0), reached.get(name, 0)),
                link=diagram.runs_link(playbook_id, deployment.version),
            )
            names = {step_name(step, path) for path, step in all_steps(playbook)}
            placed = sum(n for (v, step), n in at_steps.items() if v == deployment.version and step in names)
            return console.page(
                request, visit, "playbook.html", fresh=fresh, playbook=playbook, deployment=deployment,
                current_version=current.version if current else None, svg=svg, nodes=nodes,
                in_flight=versions.get(deployment.version, 0), unplaced=versions.get(deployment.version, 0) - placed,
                versions=sorted(versions.items(), key=lambda item: (item[0] != (current.version if current else ""), item[0])),
                milestones=milestones, runs_total=len(in_flight), funnel=funnel, uplift=numbers.uplift,
            )

    @router.get("/accounts")
    def accounts(request: Request, q: Text = "") -> Response:
        entered = console.enter(request)
        if isinstance(entered, Response):
            return entered
        visit, fresh = entered
        with console.db() as s:
            rows = repo.search_accounts(s, q, limit=200)
        return console.page(request, visit, "accounts.html", fresh=fresh, q=q, rows=rows)

    @router.get("/accounts/{account_id}")
    def account(request: Request, account_id: str, done: Text = "") -> Response:
        entered = console.enter(request)
        if isinstance(entered, Response):
            return entered
        visit, fresh = entered
        with console.db() as s:
            found = repo.get_account(s, account_id)
            if found is None:
                return console.problem(request, visit, 404, "No such account", f"No account {account_id!r} is in the store yet.")
            doc, contacts = found
            runs = repo.find_runs(s, account_id=account_id, limit=200)
            names = {d.name: console.playbook(d).name or d.name for d in repo.current_deployments(s, "playbook")}
            return console.page(
                request, visit, "account.html", fresh=fresh, doc=doc, contacts=contacts, tz=doc.get("timezone") or "UTC",
                health=repo.health_history(s, account_id)[-90:], runs=runs, names=names,
                lines=repo.timelines(s, [r.id for r in runs]), messages=repo.account_messages(s, account_id),
                delivery=repo.delivery_status(s, account_id), tasks=repo.list_tasks(s, account_id=account_id),
                notes=repo.list_notes(s, account_id=account_id), notice=DONE_NOTICES.get(done, ""),
                approvals=repo.list_approvals(s, account_id=account_id), now=dt.datetime.now(dt.UTC),
            )

    @router.get("/tasks")
    def tasks(request: Request, owner: Text = "", show: Text = "open", done: Text = "") -> Response:
        entered = console.enter(request)
        if isinstance(entered, Response):
            return entered
        visit, fresh = entered
        now = dt.datetime.now(dt.UTC)
        with console.db() as s:
            rows = repo.list_tasks(s, status=None if show == "all" else "open")
            if owner:
                rows = [t for t in rows if t.owner.lower() == owner.lower()]
            by_owner: dict[str, list[Any]] = defaultdict(list)
            for task in sorted(rows, key=lambda t: (t.status != "open", t.due_at or dt.datetime.max.replace(tzinfo=dt.UTC), t.created_at)):
                by_owner[task.owner].append(task)
            names = {k: name for k, (name, _tz) in repo.account_labels(s, [t.account_id for t in rows]).items()}
            return console.page(
                request, visit, "tasks.html", fresh=fresh, by_owner=sorted(by_owner.items()), owner=owner, show=show, now=now,
                names=names, notice=DONE_NOTICES.get(done, ""),
                overdue=sum(1 for t in rows if t.status == "open" and t.due_at is not None and t.due_at < now),
            )

    @router.get("/runs")
    def runs(request: Request, playbook: Text = "", version: Text = "", step: Text = "", status: Text = "", account: Text = "") -> Response:
        entered = console.enter(request)
        if isinstance(entered, Response):
            return entered
        visit, fresh = entered
        with console.db() as s:
            rows = repo.find_runs(
                s, playbook_id=playbook or None, version=version or None, step=step or None,
                status=status if status in STATUSES else None, in_flight=status == "in_flight", account_id=account or None, limit=500,
            )
            zones = {k: tz for k, (_name, tz) in repo.account_labels(s, [r.account_id or "" for r in rows]).items()}
            playbooks = [d.name for d in repo.current_deployments(s, "playbook")]
            return console.page(
                request, visit, "runs.html", fresh=fresh, rows=rows, zones=zones, playbooks=playbooks,
                filters={"playbook": playbook, "version": version, "step": step, "status": status, "account": account},
            )


def _milestones_done(playbook: Playbook, runs: list[Run]) -> list[tuple[Milestone, int]]:
    """The report card's milestones, each with how many of these runs have it done."""
    if playbook.scorecard is None:
        return []
    done: Counter[str] = Counter()
    for run in runs:
        for milestone, state in ((run.scorecard or {}).get("milestones") or {}).items():
            if isinstance(state, dict) and state.get("done"):
                done[milestone] += 1
    return [(m, done[m.id]) for m in playbook.scorecard.milestones]


def _three_layers(s: Any, now: dt.datetime) -> dict[str, Any]:
    """The quarter so far in the three layers of CS metrics (`touchpoint report`, issue 26):
    ARR and NRR, the leading indicators across customers, and the CSM activities."""
    from activities.store import current_workspace
    from touchpoint.report import ALL, build_report, parse_period

    workspace = current_workspace(s)
    report = build_report(s, workspace, parse_period(None, workspace.timezone, now=now))
    overall = report["indicators"]["segments"].get(ALL, {})
    return {
        "period": report["period"]["label"],
        "revenue": report["revenue"],
        "indicators": [(name, overall.get("above_zero", {}).get(name)) for name in report["indicators"]["names"]],
        "customers": overall.get("customers", 0),
        "active_per_seat": overall.get("active_per_seat"),
        "activities": [(name, spec["total"], spec["by_csm"]) for name, spec in report["activities"].items()],
    }
