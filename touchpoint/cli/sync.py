"""`touchpoint accounts sync`: pull accounts, contacts and completed tasks from a CRM."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import typer

from touchpoint.cli.main import console, err, run_async
from touchpoint.cli.ops import _sessions, accounts_app
from touchpoint.cli.tables import Cell, Column, plural, print_table
from touchpoint.config import settings
from touchpoint.dsl.sync_models import AccountSyncInput, SyncTotals

SYNC_HELP = "\n\n".join(
    [
        "Pull accounts and contacts from HubSpot or Salesforce into Touchpoint.",
        "Reads the CRM page by page (memory stays flat however many accounts it has) and compares each account with the store: unchanged accounts are skipped; new and changed ones are upserted through their account workflow, which emits account.created, account.updated and seats.changed (and so starts the playbooks those trigger). CRM tasks created by Touchpoint and completed in the CRM since the last sync send task.completed to the runs awaiting them. The sync's high-water mark is the store cursor crm-sync/<backend>.",
        "Credentials come from the environment: HUBSPOT_TOKEN (and TOUCHPOINT_HUBSPOT_URL), or SALESFORCE_INSTANCE_URL and SALESFORCE_ACCESS_TOKEN. Without --backfill, the Temporal server of TOUCHPOINT_TEMPORAL_ADDRESS must be up (e.g. `touchpoint dev`).",
        "--backfill is for the first import of an existing CRM: accounts are written to the store directly and NO events are emitted, so 10,000 existing customers do not all start onboarding; no Temporal server is needed. Later syncs (without --backfill) then emit only real changes.",
    ]
)


@accounts_app.command("sync", help=SYNC_HELP)
def accounts_sync(
    source: str = typer.Option(..., "--from", help="The CRM: hubspot or salesforce."),
    backfill: bool = typer.Option(
        False, "--backfill", help="First import: write the store directly and emit no events (no onboarding starts)."
    ),
    page_size: int = typer.Option(100, "--page-size", min=1, max=2000, help="Accounts per CRM page."),
    on_server: bool = typer.Option(
        False,
        "--on-server",
        help="Run the AccountSync workflow on the Temporal server (credentials from the worker's environment) and wait for it.",
    ),
) -> None:
    """Pull accounts and contacts from HubSpot or Salesforce (see the help above)."""
    if source not in ("hubspot", "salesforce"):
        err.print(f"[red]error:[/] --from {source!r}: use hubspot or salesforce")
        raise typer.Exit(2)
    backend_name: Literal["hubspot", "salesforce"] = "hubspot" if source == "hubspot" else "salesforce"
    try:
        if on_server:
            totals = run_async(_on_server(backend_name, backfill=backfill, page_size=page_size))
        else:
            totals = run_async(_in_process(backend_name, backfill=backfill, page_size=page_size))
    except Exception as exc:  # a CLI reports, it does not dump tracebacks
        from touchpoint.crm.errors import CrmError

        if isinstance(exc, CrmError):
            err.print(f"[red]{source} sync failed:[/] {exc.message}", markup=True, soft_wrap=True)
        elif isinstance(exc, RuntimeError) and "connect" in str(exc).lower():
            err.print(
                f"[red]error:[/] cannot reach Temporal at {settings().temporal_address} ({exc}); start `touchpoint dev` "
                "or set TOUCHPOINT_TEMPORAL_ADDRESS (or use --backfill, which needs no server).",
                soft_wrap=True,
            )
        else:
            err.print(f"[red]{source} sync failed:[/] {type(exc).__name__}: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    title, rows = summary(source, totals, backfill=backfill)
    print_table(console, [Column(""), Column("count", justify="right")], rows, title=title)


def summary(source: str, totals: SyncTotals, *, backfill: bool) -> tuple[str, list[list[Cell]]]:
    """The title and rows of the table printed after a sync."""
    title = f"{source} sync" + (" (backfill: no events emitted)" if backfill else "")
    rows: list[list[Cell]] = [
        ["accounts read", str(totals.read)],
        ["created", str(totals.created)],
        ["updated", str(totals.updated)],
        ["unchanged", str(totals.unchanged)],
    ]
    if totals.skipped:
        rows.append(["skipped (invalid, see log)", str(totals.skipped)])
    rows += [["tasks completed", str(totals.tasks_completed)], ["pages", str(totals.pages)]]
    return title, rows


async def _in_process(backend_name: Literal["hubspot", "salesforce"], *, backfill: bool, page_size: int) -> SyncTotals:
    from activities.deps import Deps
    from activities.sync import make_backend, run_sync
    from worker import connect

    config = settings()
    deps = Deps(settings=config, sessions=_sessions(), template_cache=config.home / "templates")
    backend = make_backend(deps, backend_name)
    client = None if backfill else await connect(config)
    try:
        with console.status(f"reading {backend_name}") as status:

            def progress(totals: SyncTotals) -> None:
                status.update(
                    f"{backend_name}: {totals.read} read, {totals.created} created, {totals.updated} updated, "
                    f"{totals.unchanged} unchanged ({plural(totals.pages, 'page')})"
                )

            return await run_sync(
                deps,
                backend,
                client=client,
                task_queue=config.task_queue,
                page_size=page_size,
                backfill=backfill,
                on_page=progress,
            )
    finally:
        await backend.aclose()
        await deps.close()


async def _on_server(backend_name: Literal["hubspot", "salesforce"], *, backfill: bool, page_size: int) -> SyncTotals:
    from temporalio.common import WorkflowIDConflictPolicy

    from worker import connect
    from workflows import names

    config = settings()
    client = await connect(config)
    with console.status(f"AccountSync {backend_name} running on {config.temporal_address}"):
        # One sync per CRM at a time: a sync already running (e.g. from the Schedule) is joined.
        result: SyncTotals = await client.execute_workflow(
            names.ACCOUNT_SYNC,
            AccountSyncInput(backend=backend_name, page_size=page_size, backfill=backfill, now=datetime.now(UTC)),
            id=f"account-sync/{backend_name}",
            task_queue=config.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            result_type=SyncTotals,
        )
    return result
