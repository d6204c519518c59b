"""`touchpoint migrate`: move a playbook's live runs to another version (contract section 13)."""

from __future__ import annotations

import json

import typer

from touchpoint.cli.main import app, console, err, run_async
from touchpoint.cli.tables import Column, plural, print_table
from touchpoint.config import settings


@app.command()
def migrate(
    playbook: str = typer.Argument(..., help="The playbook whose runs move."),
    to: str = typer.Option("latest", "--to", help="`latest` (the current version) or a version id as `deploy` prints it."),
    account: str | None = typer.Option(None, "--account", help="Only this account's run."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would move, and where, and change nothing."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object: the target version and every run."),
) -> None:
    """Move the playbook's runs in flight on other versions to --to, each at the step with the same id.

    Vars, milestones and the time spent in a wait carry over; a run whose step is not in the
    target version stays where it is and is listed with the reason. Returns when the runs moved.
    """
    from touchpoint.cli.ops import _sessions
    from touchpoint.migration import MigrationError
    from touchpoint.migration import migrate as run_migration
    from worker import connect

    sessions = _sessions()

    async def go() -> object:
        client = await connect(settings())
        return await run_migration(client, sessions, playbook, to=to, account_id=account, dry_run=dry_run)

    try:
        report = run_async(go())
    except MigrationError as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    except RuntimeError as exc:  # the server is unreachable
        err.print(f"[red]error:[/] cannot reach Temporal at {settings().temporal_address} ({exc})", soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(report.as_dict()), flush=True)
        return
    if not report.moves:
        console.print(f"no run of {playbook} is in flight on a version other than {report.to_version}", markup=False)
        return
    rows = [
        [m.account_id or "", m.run_id, m.from_version, m.from_step or "", m.to_step or "", m.status, "moves" if m.moved and dry_run else ("moved" if m.moved else f"stays: {m.reason}")]
        for m in report.moves
    ]
    columns = [Column("account", key=True), Column("run", key=True), Column("from version"), Column("step"), Column("new step"), Column("status"), Column("result")]
    print_table(console, columns, rows)
    verb = "would move" if dry_run else "moved"
    console.print(f"{plural(len(report.moved), 'run')} {verb} to {report.to_version}; {len(report.stayed)} stay", markup=False)
