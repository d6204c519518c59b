"""`touchpoint forecast`: what a playbook would send and ask of each CSM, before it is deployed.

With `--json` stdout carries plain JSON lines only: one object per day of the window, then the
summary (contract section 14); warnings go to stderr. Without it, tables by week.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

import typer

from touchpoint.cli.main import app, console, err
from touchpoint.dsl.errors import ContractError


@app.command()
def forecast(
    playbook_file: Path = typer.Argument(..., help="The playbook YAML file (not yet deployed, or a new version)."),
    accounts: str = typer.Option("store", "--accounts", help="`store` (TOUCHPOINT_DATABASE_URL), an account file (YAML, JSON, CSV) or a folder of them."),
    events: Path | None = typer.Option(None, "--events", help="Events applied to every run, as for `simulate`: {after: 10d, type, data}."),
    days: int = typer.Option(90, "--days", min=1, help="The window: this many days from --start."),
    start: str | None = typer.Option(None, "--start", help="ISO date (midnight in the workspace's zone) or time; default: today."),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per day, then {\"summary\": ...}."),
) -> None:
    """Forecast a playbook over a book of accounts: emails, tasks and approvals per day and week."""
    from touchpoint import cache
    from touchpoint.forecast import ForecastError
    from touchpoint.forecast import forecast as run_forecast

    def warn(text: str) -> None:
        err.print(f"warning: {text}", markup=False, soft_wrap=True)

    try:
        begin = _start(start)
        with cache.using():  # holiday calendars from earlier runs
            result = run_forecast(playbook_file, accounts=accounts, events_file=events, days=days, start=begin, warn=warn)
    except ContractError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except ForecastError as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except ValueError as exc:  # --start
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    if as_json:
        out = sys.stdout
        for item in result.daily():
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
        out.write(json.dumps({"summary": result.summary()}, ensure_ascii=False) + "\n")
        out.flush()
        return
    _tables(result)


def _start(value: str | None) -> datetime | date | None:
    """`--start`: a date alone is that day's midnight in the workspace's zone; a naive time is UTC."""
    from touchpoint.simulate import parse_start

    if value and len(value) == 10:
        return date.fromisoformat(value)
    return parse_start(value)


def _tables(result: Any) -> None:
    from touchpoint.cli.tables import Cell, Column, plural, print_table

    weeks = result.weeks()
    rows: list[list[Cell]] = []
    for week in weeks:
        tasks: Counter[str] = week["tasks"]
        busiest = tasks.most_common(1)
        rows.append(
            [
                week["week"],
                str(sum(week["emails"].values())),
                str(sum(tasks.values())),
                str(sum(week["approvals"].values())),
                str(week["webhooks"]),
                str(week["held"]),
                f"{busiest[0][0]} ({busiest[0][1]})" if busiest else "-",
            ]
        )
    columns = [
        Column("week of", key=True),
        Column("emails", justify="right"),
        Column("tasks", justify="right"),
        Column("approvals", justify="right", drop=2),
        Column("webhooks", justify="right", drop=3),
        Column("held", justify="right", drop=1),
        Column("busiest owner (tasks)", drop=4),
    ]
    first, last = result.dates()[0], result.dates()[-1]
    print_table(console, columns, rows, title=f"{result.playbook}: {first} to {last} by week (Monday to Sunday), dates in {result.tz}")
    templates: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    for week in weeks:
        templates.update(week["emails"])
        owners.update(week["tasks"])
    peak = result.summary()["peak_week"]
    if templates:
        console.print()
        print_table(console, [Column("template", key=True), Column("emails", justify="right")], [[name, str(n)] for name, n in sorted(templates.items())], title="Emails by template")
    if owners:
        console.print()
        owner_rows: list[list[Cell]] = [[owner, str(n), str(peak.get(owner, 0))] for owner, n in sorted(owners.items(), key=lambda kv: (-peak.get(kv[0], 0), kv[0]))]
        print_table(console, [Column("owner", key=True), Column("tasks", justify="right"), Column("peak week", justify="right")], owner_rows, title="Tasks by owner, busiest week first")
    summary = result.summary()
    outcomes = ", ".join(f"{outcome} {n}" for outcome, n in sorted(result.tally.outcomes.items()))
    console.print()
    console.print(
        f"{plural(result.enrolled, 'account')} enrolled of {result.considered} considered; "
        f"{plural(summary['emails'], 'email')}, {plural(summary['tasks'], 'task')}"
        + (f"; runs at the end of the window: {outcomes}" if outcomes else ""),
        markup=False,
        soft_wrap=True,
    )
