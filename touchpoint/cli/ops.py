"""CLI commands that talk to a running Temporal server and the store."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from touchpoint.cli.main import app, console, err, run_async
from touchpoint.config import settings
from touchpoint.dsl.runtime import EventIn, RunStatus

runs_app = typer.Typer(help="Pause, resume or cancel runs.", no_args_is_help=True)
tasks_app = typer.Typer(help="CRM tasks created by playbooks (local backend).", invoke_without_command=True)
accounts_app = typer.Typer(help="Account documents.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(tasks_app, name="tasks")
app.add_typer(accounts_app, name="accounts")


def _sessions() -> Any:
    from touchpoint.store import make_engine, migrate, session_factory

    engine = make_engine(settings().db_url)
    migrate(engine)
    return session_factory(engine)


def _run(coro: Any) -> Any:
    return run_async(coro)


@app.command()
def deploy(folder: Path = typer.Argument(Path("playbooks"), help="The playbooks folder.")) -> None:
    """Validate and publish a folder's playbooks as content-hashed versions."""
    from touchpoint.deploy import deploy_project
    from touchpoint.dsl.validate import load_project

    project = load_project(folder)
    if project.problems:
        for problem in project.problems:
            console.print(str(problem), markup=False, soft_wrap=True)
        raise typer.Exit(1)
    with _sessions().begin() as s:
        report = deploy_project(s, project)
    for line in report.lines():
        console.print(line, markup=False)
    _schedules(project)


def _schedules(project: Any) -> None:
    """Bring the Temporal Schedules in line with the folder just deployed."""
    from touchpoint.schedules import planned_schedules, sync_schedules
    from worker import connect

    config = settings()

    async def update() -> list[str]:
        client = await connect(config)
        return await sync_schedules(client, project, task_queue=config.task_queue, crm_backend=config.crm_backend)

    try:
        lines = _run(update())
    except RuntimeError as exc:  # the server is unreachable
        if not planned_schedules(project, task_queue=config.task_queue, crm_backend=config.crm_backend):
            return  # nothing to schedule, nothing to tidy on a server that is not there
        err.print(
            f"[red]Schedules not updated:[/] cannot reach Temporal at {config.temporal_address} ({exc}). "
            "Schedule playbooks, date triggers and health scores need them: run `touchpoint deploy` again once it is up.",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    for line in lines:
        console.print(line, markup=False)


@app.command()
def start(playbook: str = typer.Argument(...), account: str = typer.Option(..., "--account")) -> None:
    """Start a playbook for an account now."""
    from touchpoint.ingest import start_run
    from worker import connect

    async def go() -> None:
        client = await connect(settings())
        await start_run(client, settings().task_queue, account, playbook)

    _run(go())
    console.print(f"started {playbook} for {account} (see `touchpoint status --account {account}`)")


@app.command()
def event(
    type: str = typer.Argument(..., help="Event type, e.g. setup.sso_configured."),
    account: str = typer.Option(..., "--account"),
    data: str = typer.Option("{}", "--data", help="JSON object."),
    id: str | None = typer.Option(None, "--id", help="Event id (a repeated id is a no-op)."),
) -> None:
    """Send one event about an account."""
    from touchpoint.ingest import send_event
    from worker import connect

    async def go() -> str:
        client = await connect(settings())
        return await send_event(client, settings().task_queue, _sessions(), account, EventIn(id=id, type=type, data=json.loads(data)))

    console.print(f"accepted {_run(go())}")


@app.command()
def status(account: str | None = typer.Option(None, "--account"), playbook: str | None = typer.Option(None, "--playbook")) -> None:
    """Runs with their current step, vars, scorecard and recent steps."""
    from temporalio.client import Client

    from touchpoint.store import repo
    from worker import connect

    with _sessions()() as s:
        rows = repo.list_runs(s, account_id=account, playbook_id=playbook)
        runs = [(r.id, r.workflow_id, r.playbook_id, r.account_id, r.status, r.step, r.outcome, r.paused_reason) for r in rows]

    async def live(client: Client, workflow_id: str) -> RunStatus | None:
        try:
            result: RunStatus = await client.get_workflow_handle(workflow_id).query("status", result_type=RunStatus)
            return result
        except Exception:
            return None

    async def go() -> None:
        client = await connect(settings()) if any(r[4] != "ended" for r in runs) else None
        for run_id, workflow_id, pb, acct, state, step, outcome, reason in runs:
            info = await live(client, workflow_id) if client and state != "ended" else None
            if info and info.id == run_id:
                state, step, reason = info.status, info.step, info.paused_reason
            console.print(f"[bold]{pb}[/] {acct} {run_id}: {state}" + (f" at {step}" if step else "") + (f", outcome {outcome}" if outcome else "") + (f" [yellow](paused: {reason})[/]" if reason else ""))
            if info:
                if info.vars:
                    console.print(f"  vars: {json.dumps(info.vars, default=str)}", markup=False)
                if info.scorecard:
                    console.print(f"  scorecard: {info.scorecard['score']}% (target {info.scorecard['target']} by day {info.scorecard['by_day']})", markup=False)
                for record in info.history[-10:]:
                    console.print(f"  {record.at:%Y-%m-%d %H:%M} day {record.day} {record.step} {record.action} {json.dumps(record.detail, default=str)}", markup=False)
        if not runs:
            console.print("no runs")

    _run(go())


def _signal(run_id_or_workflow: str, name: str) -> None:
    from worker import connect

    async def go() -> None:
        client = await connect(settings())
        workflow_id = run_id_or_workflow
        if not workflow_id.startswith("run/"):
            from touchpoint.store import repo

            with _sessions()() as s:
                run = repo.get_run(s, run_id_or_workflow)
            if run is None:
                err.print(f"no run {run_id_or_workflow!r}: give a run id from `touchpoint status` or a workflow id run/<playbook>/<account>")
                raise typer.Exit(1)
            workflow_id = run.workflow_id
        await client.get_workflow_handle(workflow_id).signal(name)

    _run(go())
    console.print(f"{name} sent to {run_id_or_workflow}")


@runs_app.command("pause")
def pause(run: str) -> None:
    """Hold a run before its next side effect."""
    _signal(run, "pause")


@runs_app.command("resume")
def resume(run: str) -> None:
    """Resume a paused run where it was."""
    _signal(run, "resume")


@runs_app.command("cancel")
def cancel(run: str) -> None:
    """End a run with outcome `cancelled`."""
    _signal(run, "cancel")


@tasks_app.callback()
def tasks(ctx: typer.Context, status_filter: str | None = typer.Option("open", "--status")) -> None:
    """List tasks (open by default)."""
    if ctx.invoked_subcommand:
        return
    from touchpoint.store import repo

    with _sessions()() as s:
        rows = repo.list_tasks(s, status=None if status_filter == "all" else status_filter)
        table = Table("id", "account", "title", "owner", "due", "status")
        for t in rows:
            table.add_row(t.id, t.account_id, t.title, t.owner, f"{t.due_at:%Y-%m-%d}" if t.due_at else "", t.status)
    console.print(table)


@tasks_app.command("complete")
def complete(task_id: str) -> None:
    """Complete a task; a run awaiting it moves on."""
    from datetime import datetime

    from touchpoint.ingest import send_event
    from touchpoint.store import repo
    from worker import connect

    sessions = _sessions()
    with sessions.begin() as s:
        task = repo.complete_task(s, task_id, datetime.now(UTC))
        if task is None:
            err.print(f"no task {task_id!r} (see `touchpoint tasks`)")
            raise typer.Exit(1)
        account_id, data = task.account_id, {"task_id": task.id, "playbook": task.playbook_id, "step": task.step}

    async def go() -> None:
        client = await connect(settings())
        await send_event(client, settings().task_queue, sessions, account_id, EventIn(type="task.completed", data=data))

    _run(go())
    console.print(f"completed {task_id}")


@app.command()
def outbox(limit: int = typer.Option(20, "--limit")) -> None:
    """Emails sent by the outbox backend (newest first)."""
    from touchpoint.store import repo

    with _sessions()() as s:
        rows = sorted(repo.list_messages(s, limit=10_000), key=lambda m: m.sent_at, reverse=True)[:limit]
        for m in rows:
            path = settings().outbox_dir / f"{m.id}.eml"
            console.print(f"{m.sent_at:%Y-%m-%d %H:%M} {m.status:10} {m.to_email:30} {m.subject}  [dim]{path if path.exists() else ''}[/]", soft_wrap=True)


@accounts_app.command("put")
def accounts_put(file: Path) -> None:
    """Upsert account documents from a YAML or JSON file (one document or a list)."""
    from touchpoint.dsl.schema import AccountDoc
    from touchpoint.ingest import put_account
    from worker import connect

    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    docs = [AccountDoc.model_validate(d) for d in (data if isinstance(data, list) else [data])]

    async def go() -> None:
        client = await connect(settings())
        for doc in docs:
            await put_account(client, settings().task_queue, _sessions(), doc)

    _run(go())
    console.print(f"accepted {len(docs)} account(s)")


@accounts_app.command("import")
def accounts_import(file: Path) -> None:
    """Upsert accounts from a CSV file; any bad row stops the import before anything is sent."""
    from touchpoint.accounts_csv import read_accounts_csv
    from touchpoint.ingest import put_account
    from worker import connect

    docs, problems = read_accounts_csv(file)
    if problems:
        for problem in problems:
            console.print(str(problem), markup=False, soft_wrap=True)
        err.print(f"{len(problems)} problem(s): nothing was imported")
        raise typer.Exit(1)

    async def go() -> None:
        client = await connect(settings())
        sessions = _sessions()
        for doc in docs:
            await put_account(client, settings().task_queue, sessions, doc)

    _run(go())
    console.print(f"accepted {len(docs)} account(s)")


@accounts_app.command("list")
def accounts_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Accounts in the store (one document per line with --json)."""
    from touchpoint.store import repo

    after = None
    with _sessions()() as s:
        while True:
            page = repo.list_accounts(s, after=after, limit=500)
            if not page:
                break
            for doc, contacts in page:
                if as_json:
                    print(json.dumps({**doc, "contacts": contacts}, default=str))
                else:
                    console.print(f"{doc['id']:20} {doc.get('name', ''):30} {doc.get('segment') or '':12} {len(contacts)} contacts", markup=False)
            after = page[-1][0]["id"]
