"""`touchpoint health show|recompute`: an account's score over time, and a recompute now."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import typer
from rich.text import Text

from touchpoint.cli.main import app, console, err, run_async
from touchpoint.cli.tables import Cell, Column, plural, print_table
from touchpoint.config import settings

health_app = typer.Typer(help="Health scores (health.yaml): history and recompute.", no_args_is_help=True)
app.add_typer(health_app, name="health")


def _moved_text(moved: dict[str, float]) -> str:
    return ", ".join(f"{name} {delta:+g}" for name, delta in sorted(moved.items(), key=lambda kv: -abs(kv[1])))


@health_app.command("show")
def show(
    account: str = typer.Argument(..., help="The account id."),
    as_json: bool = typer.Option(False, "--json", help="Plain JSON lines, one per score, oldest first."),
    limit: int = typer.Option(30, "--limit", help="Show the last N scores (0: all)."),
) -> None:
    """An account's health score over time, and which metrics moved it."""
    from touchpoint.cli.ops import _sessions
    from touchpoint.health import moved_by
    from touchpoint.store import repo

    with _sessions()() as s:
        if repo.get_account(s, account) is None:
            err.print(f"no account {account!r} (see `touchpoint accounts list`)")
            raise typer.Exit(1)
        rows = [(h.at, h.score, h.tier, h.breakdown) for h in repo.health_history(s, account)]
    lines: list[dict[str, Any]] = []
    previous: tuple[int, dict[str, Any]] | None = None
    for at, score, tier, breakdown in rows:
        lines.append(
            {
                "at": at.isoformat(),
                "score": score,
                "tier": tier,
                "previous_score": previous[0] if previous else None,
                # The first score has nothing to move from: it shows no movers.
                "moved": moved_by(previous[1], breakdown) if previous else {},
                "missing": sorted(name for name, item in breakdown.items() if item.get("missing")),
                "breakdown": breakdown,
            }
        )
        previous = (score, breakdown)
    if limit > 0:
        lines = lines[-limit:]
    if as_json:
        for line in lines:
            print(json.dumps(line), flush=True)
        return
    if not lines:
        console.print(f"no health scores for {account} yet (run `touchpoint health recompute {account}`)")
        return
    colours = {"green": "green", "yellow": "yellow", "red": "red"}
    table_rows: list[list[Cell]] = []
    for line in lines:
        change = "" if line["previous_score"] is None else f"{line['score'] - line['previous_score']:+d}"
        tier = line["tier"]
        table_rows.append(
            [
                line["at"][:16].replace("T", " "),
                str(line["score"]),
                change,
                Text(tier, style=colours.get(tier, "")),
                _moved_text(line["moved"]),
                ", ".join(line["missing"]),
            ]
        )
    columns = [
        Column("at (UTC)", key=True),
        Column("score", justify="right"),
        Column("change", justify="right"),
        Column("tier"),
        Column("moved by (points)"),
        Column("missing", drop=1),
    ]
    print_table(console, columns, table_rows, title=f"Health of {account}")


@health_app.command("recompute")
def recompute(
    account: str | None = typer.Argument(None, help="Only this account (default: every account)."),
    batch_size: int = typer.Option(500, "--batch-size", help="Accounts per batch."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for the result."),
) -> None:
    """Recompute health scores now on the configured Temporal server, and print a summary."""
    from temporalio.client import WorkflowFailureError

    from touchpoint.dsl.health_models import HealthRecomputeInput, HealthRecomputeResult
    from worker import connect
    from workflows import names

    config = settings()

    async def go() -> HealthRecomputeResult:
        client = await connect(config)
        handle = await client.start_workflow(
            names.HEALTH_RECOMPUTE,
            HealthRecomputeInput(account_id=account, batch_size=batch_size),
            id=f"health-recompute/manual-{uuid.uuid4().hex[:12]}",
            task_queue=config.task_queue,
            result_type=HealthRecomputeResult,
        )
        return await asyncio.wait_for(handle.result(), timeout)

    try:
        result = run_async(go())
    except TimeoutError:
        err.print(
            f"no result after {timeout:g}s: is a worker polling task queue {config.task_queue!r} on "
            f"{config.temporal_address}? Start one with `touchpoint dev` or `python worker.py`."
        )
        raise typer.Exit(1) from None
    except WorkflowFailureError as exc:
        cause: BaseException = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        err.print(f"recompute failed: {cause}", markup=False)
        raise typer.Exit(1) from None
    counts = result.counts
    if account is not None and counts.scored == 0 and counts.failed == 0:
        err.print(f"no account {account!r} (see `touchpoint accounts list`)")
        raise typer.Exit(1)
    console.print(
        f"scored {plural(counts.scored, 'account')}, {counts.changed} changed, "
        f"{counts.emitted} health.changed emitted"
        + (f", {counts.missing} with missing metrics" if counts.missing else "")
        + (f", {counts.failed} skipped (invalid documents)" if counts.failed else "")
        + f" (health.yaml {result.model_version}, {plural(result.batches, 'batch', 'batches')})",
        markup=False,
    )
