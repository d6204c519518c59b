"""CLI commands that talk to a running Temporal server and the store."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import Any

import typer
import yaml

from touchpoint.cli.main import app, console, err, run_async
from touchpoint.cli.tables import Cell, Column, plural, print_table
from touchpoint.config import settings
from touchpoint.dsl.runtime import EventIn

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
def deploy(
    folder: Path = typer.Argument(Path("playbooks"), help="The playbooks folder."),
    create: bool = typer.Option(False, "--create", help="Create a new SQLite store if there is none yet."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object: store, Temporal address, playbooks, schedules."),
) -> None:
    """Validate and publish a folder's playbooks as content-hashed versions.

    Deploys to the store of TOUCHPOINT_DATABASE_URL (default .touchpoint/touchpoint.db under the
    working directory) and syncs the Schedules on TOUCHPOINT_TEMPORAL_ADDRESS; both are printed
    first. A SQLite store that does not exist yet is created only with --create.
    """
    from touchpoint.deploy import StoreNotFound, check_store, deploy_project, store_label
    from touchpoint.dsl.validate import load_project
    from touchpoint.store import write_tx

    config = settings()
    project = load_project(folder)
    if project.problems:
        for problem in project.problems:
            console.print(str(problem), markup=False, soft_wrap=True)
        raise typer.Exit(1)
    try:
        check_store(config.db_url, create=create)
    except StoreNotFound as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    where = {"store": store_label(config.db_url), "temporal": config.temporal_address, "namespace": config.temporal_namespace, "task_queue": config.task_queue}
    if not as_json:
        console.print(f"store     {where['store']}", markup=False, soft_wrap=True)
        console.print(f"temporal  {config.temporal_address} (namespace {config.temporal_namespace}, task queue {config.task_queue})", markup=False, soft_wrap=True)
    # The write lock first (BEGIN IMMEDIATE on SQLite): workers may be writing to the store, and a
    # read transaction that later writes fails at once with "database is locked" when one did.
    with write_tx(_sessions()) as s:
        report = deploy_project(s, project)
    if not as_json:
        _print_deploy(report)
    report.schedules = _schedules(project, quiet=as_json)
    if as_json:
        print(json.dumps({**where, **report.as_dict()}), flush=True)
        return
    for command in report.migrate_commands():
        console.print(f"to move the runs on older versions (`--dry-run` shows where each goes): {command}", markup=False, soft_wrap=True)


def _print_deploy(report: Any) -> None:
    if not console.is_terminal:
        for line in report.lines():
            console.print(line, markup=False, soft_wrap=True)
        return
    rows = [
        [item["change"], item["playbook"], item.get("version") or "", _older_note(item.get("runs_on_older_versions", 0))]
        for item in report.as_dict()["playbooks"]
    ]
    print_table(console, [Column("change"), Column("playbook", key=True), Column("version", key=True), Column("note")], rows)
    for line in report.listening_lines():
        console.print(line, markup=False, soft_wrap=True)


def _older_note(count: int) -> str:
    return f"{plural(count, 'run')} in flight stay on older versions" if count else ""


def _schedules(project: Any, *, quiet: bool = False) -> list[str]:
    """Bring the Temporal Schedules in line with the folder just deployed; returns their lines."""
    from touchpoint.schedules import planned_schedules, sync_schedules
    from worker import connect

    config = settings()

    async def update() -> list[str]:
        client = await connect(config)
        return await sync_schedules(client, project, task_queue=config.task_queue, crm_backend=config.crm_backend)

    try:
        lines: list[str] = _run(update())
    except RuntimeError as exc:  # the server is unreachable
        if not planned_schedules(project, task_queue=config.task_queue, crm_backend=config.crm_backend):
            return []  # nothing to schedule, nothing to tidy on a server that is not there
        err.print(
            f"[red]Schedules not updated:[/] cannot reach Temporal at {config.temporal_address} ({exc}). "
            "Schedule playbooks, date triggers and health scores need them: run `touchpoint deploy` again once it is up.",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    if not quiet:
        for line in lines:
            console.print(line, markup=False, soft_wrap=True)
    return lines


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
def status(
    account: str | None = typer.Option(None, "--account"),
    playbook: str | None = typer.Option(None, "--playbook"),
    step: str | None = typer.Option(None, "--step", help="Only runs in flight at this step (its id): every account waiting there."),
    run_id: str | None = typer.Option(None, "--run", help="One run, ended or not, with its whole timeline."),
    as_json: bool = typer.Option(False, "--json", help="Plain JSON lines, one run per line, with its whole timeline."),
) -> None:
    """Runs with their current step, what they wait for, vars, scorecard and recent steps.

    Read from the store, where account workflows project every step of their runs: no server
    is asked, and an ended run keeps its timeline.
    """
    from touchpoint.cli.status_view import print_runs, record_json, waiting_words
    from touchpoint.store import repo

    with _sessions()() as s:
        if run_id is not None:
            found = repo.get_run(s, run_id)
            rows = [found] if found is not None else []
        else:
            rows = repo.list_runs(s, account_id=account, playbook_id=playbook, step=step)
        zones = {}
        for r in rows:
            if r.account_id and r.account_id not in zones:
                stored = repo.get_account(s, r.account_id)
                zones[r.account_id] = (stored[0].get("timezone") if stored else None) or "UTC"
        runs: list[dict[str, Any]] = [
            {
                "id": r.id, "workflow_id": r.workflow_id, "playbook": r.playbook_id, "version": r.version, "account_id": r.account_id,
                "status": r.status, "step": r.step, "outcome": r.outcome, "paused_reason": r.paused_reason, "held_out": r.held_out,
                "waiting": waiting_words(r.waiting or [], zones.get(r.account_id or "", "UTC")) if r.status != "ended" else None,
                "vars": dict(r.vars or {}), "scorecard": r.scorecard,
                "history": [record_json(x) for x in repo.run_steps(s, r.id)],
            }
            for r in rows
        ]
    if run_id is not None and not runs:
        err.print(f"no run {run_id!r}: `touchpoint status` lists the runs")
        raise typer.Exit(1)
    print_runs(console, runs, as_json=as_json)


def _signal(run_id: str, name: str) -> None:
    """Send a run's account workflow a `control` signal naming the run."""
    from touchpoint.ingest import control_run
    from touchpoint.store import repo
    from worker import connect
    from workflows.messages import RunControl

    with _sessions()() as s:
        run = repo.get_run(s, run_id)
    if run is None or run.account_id is None:
        err.print(f"no run {run_id!r}: give a run id from `touchpoint status`")
        raise typer.Exit(1)
    account_id = run.account_id

    async def go() -> None:
        client = await connect(settings())
        await control_run(client, account_id, RunControl(action=name, run_id=run_id))  # type: ignore[arg-type]

    _run(go())
    console.print(f"{name} sent to {run_id}")


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
def tasks(
    ctx: typer.Context,
    status_filter: str | None = typer.Option("open", "--status", help="open, completed or all."),
    as_json: bool = typer.Option(False, "--json", help="Plain JSON lines, one per task."),
) -> None:
    """List tasks (open by default); `touchpoint tasks complete ID` completes one."""
    if ctx.invoked_subcommand:
        return
    from touchpoint.store import repo

    with _sessions()() as s:
        rows = repo.list_tasks(s, status=None if status_filter == "all" else status_filter)
        items: list[dict[str, Any]] = [
            {
                "id": t.id,
                "account_id": t.account_id,
                "playbook": t.playbook_id,
                "step": t.step,
                "title": t.title,
                "owner": t.owner,
                "due_at": t.due_at.isoformat() if t.due_at else None,
                "priority": t.priority,
                "status": t.status,
                "created_at": t.created_at.isoformat(),
                "completed_at": t.completed_at.isoformat() if t.completed_at else None,
            }
            for t in rows
        ]
    if as_json:
        for item in items:
            print(json.dumps(item), flush=True)
        return
    if not items:
        console.print(f"no {'' if status_filter == 'all' else f'{status_filter} '}tasks", markup=False)
        return
    columns = [
        Column("id", key=True),
        Column("account", key=True),
        Column("title"),
        Column("owner", key=True, drop=2),
        Column("due", key=True, drop=3),
        Column("status", drop=4 if status_filter != "all" else 1),
    ]
    table_rows = [[i["id"], i["account_id"], i["title"], i["owner"], (i["due_at"] or "")[:10], i["status"]] for i in items]
    print_table(console, columns, table_rows)


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
def outbox(
    limit: int = typer.Option(20, "--limit", help="Show the newest N emails."),
    as_json: bool = typer.Option(False, "--json", help="Plain JSON lines, one per email, newest first."),
) -> None:
    """Emails sent by the outbox backend (newest first); each is also a .eml file."""
    from touchpoint.store import repo

    folder = settings().outbox_dir
    with _sessions()() as s:
        rows = sorted(repo.list_messages(s, limit=10_000), key=lambda m: m.sent_at, reverse=True)[:limit]
        items: list[dict[str, Any]] = [
            {
                "id": m.id,
                "sent_at": m.sent_at.isoformat(),
                "status": m.status,
                "to": m.to_email,
                "subject": m.subject,
                "account_id": m.account_id,
                "playbook": m.playbook_id,
                "step": m.step,
                "template": m.template,
                "locale": m.locale,
                "error": m.error,
                "file": str(path.resolve()) if (path := folder / f"{m.id}.eml").exists() else None,
            }
            for m in rows
        ]
    if as_json:
        for item in items:
            print(json.dumps(item, ensure_ascii=False), flush=True)
        return
    if not items:
        console.print("no emails yet", markup=False)
        return
    columns = [
        Column("sent (UTC)", key=True, drop=2),
        Column("status", drop=1),
        Column("to", key=True),
        Column("subject"),
        Column("id", key=True, drop=3),
    ]
    table_rows = [[i["sent_at"][:16].replace("T", " "), i["status"], i["to"], i["subject"], i["id"]] for i in items]
    print_table(console, columns, table_rows)
    if any(i["file"] for i in items):
        console.print(f"each email is also <id>.eml in {folder.resolve()}", markup=False, soft_wrap=True, style="dim")


@accounts_app.command("put")
def accounts_put(file: Path) -> None:
    """Upsert account documents from a YAML or JSON file (one document or a list)."""
    from touchpoint.dsl.accounts import AccountDoc
    from touchpoint.ingest import put_account
    from worker import connect

    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    docs = [AccountDoc.model_validate(d) for d in (data if isinstance(data, list) else [data])]

    async def go() -> None:
        client = await connect(settings())
        for doc in docs:
            await put_account(client, settings().task_queue, _sessions(), doc)

    _run(go())
    console.print(f"accepted {plural(len(docs), 'account')}")


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
        err.print(f"{plural(len(problems), 'problem')}: nothing was imported")
        raise typer.Exit(1)

    async def go() -> None:
        client = await connect(settings())
        sessions = _sessions()
        for doc in docs:
            await put_account(client, settings().task_queue, sessions, doc)

    _run(go())
    console.print(f"accepted {plural(len(docs), 'account')}")


@accounts_app.command("list")
def accounts_list(as_json: bool = typer.Option(False, "--json", help="Plain JSON lines, one account document per line.")) -> None:
    """Accounts in the store, in id order."""
    from touchpoint.store import repo

    after = None
    rows: list[list[Cell]] = []
    with _sessions()() as s:
        while True:
            page = repo.list_accounts(s, after=after, limit=500)
            if not page:
                break
            for doc, contacts in page:
                if as_json:
                    print(json.dumps({**doc, "contacts": contacts}, default=str), flush=True)
                else:
                    csm = (doc.get("csm") or {}).get("email") or ""
                    rows.append([doc["id"], doc.get("name", ""), doc.get("segment") or "", csm, str(len(contacts))])
            after = page[-1][0]["id"]
    if as_json:
        return
    if not rows:
        console.print("no accounts (add some with `touchpoint accounts put FILE`)", markup=False)
        return
    columns = [Column("id", key=True), Column("name"), Column("segment", drop=2), Column("csm", key=True, drop=1), Column("contacts", justify="right", drop=3)]
    print_table(console, columns, rows)
