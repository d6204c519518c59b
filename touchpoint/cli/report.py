"""`touchpoint report`: ARR and NRR, leading indicators and CSM activities for a period."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from touchpoint.cli.main import app, console, err
from touchpoint.cli.tables import Cell, Column, print_table


@app.command()
def report(
    period: str | None = typer.Option(None, "--period", help="2026-Q3, 2026-07, 2026 or 2026-07-01..2026-09-30 (default: this quarter)."),
    segment: str | None = typer.Option(None, "--segment", help="Only accounts of this segment (at the period's start)."),
    playbooks: Path | None = typer.Option(None, "--playbooks", help="Read `indicators` and `activities` from this folder's workspace.yaml (default: the deployed one)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """The three layers of CS metrics: revenue (ARR, NRR), leading indicators, CSM activities."""
    from touchpoint.cli.ops import _sessions
    from touchpoint.report import build_report, parse_period

    factory = _sessions()
    with factory() as s:
        workspace = _workspace(s, playbooks)
        try:
            chosen = parse_period(period, workspace.timezone)
        except ValueError as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(2) from None
        data = build_report(s, workspace, chosen, segment=segment)
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
        return
    _print(data)


def _workspace(s: Any, folder: Path | None) -> Any:
    from activities.store import current_workspace
    from touchpoint.dsl.validate import load_project

    if folder is None:
        return current_workspace(s)
    project = load_project(folder)
    problems = [p for p in project.problems if Path(p.file).name == "workspace.yaml"]
    if problems:
        for problem in problems:
            err.print(str(problem), markup=False, soft_wrap=True)
        raise typer.Exit(1)
    return project.workspace


def _money(value: float, sign: str = "") -> str:
    return f"{sign}{value:,.0f}" if value else "0"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _print(data: dict[str, Any]) -> None:
    period, revenue = data["period"], data["revenue"]
    scope = f" (segment {data['segment']})" if data["segment"] else ""
    console.print(f"{period['label']}: {period['start'][:10]} to {period['end'][:10]} ({period['timezone']}){scope}", markup=False)
    counts = revenue["accounts"]
    rows: list[list[Cell]] = [
        ["starting ARR", _money(revenue["starting_arr"]), f"{counts['starting']} accounts"],
        ["expansion", _money(revenue["expansion"]), f"{counts['expanded']} accounts"],
        ["contraction", _money(revenue["contraction"], "-"), f"{counts['contracted']} accounts"],
        ["churn", _money(revenue["churn"], "-"), f"{counts['churned']} accounts"],
        ["NRR", _share(revenue["nrr"]), "(starting + expansion - contraction - churn) / starting"],
        ["GRR", _share(revenue["grr"]), "(starting - contraction - churn) / starting"],
        ["new business", _money(revenue["new_arr"]), f"{counts['new']} accounts"],
        ["ending ARR", _money(revenue["ending_arr"]), "every customer at the end"],
    ]
    print_table(console, [Column("measure", key=True), Column("ARR", justify="right"), Column("", drop=1)], rows, title="1. Revenue")
    names = data["indicators"]["names"]
    segments = data["indicators"]["segments"]
    console.print()
    if segments:
        columns = [Column("segment", key=True), Column("customers", justify="right")]
        columns += [Column(f"{name} > 0", justify="right", drop=2) for name in names]
        columns.append(Column("active / seat", justify="right"))
        table = [[seg, str(item["customers"]), *[_share(item["above_zero"][n]) for n in names], _share(item["active_per_seat"])] for seg, item in segments.items()]
        print_table(console, columns, table, title="2. Leading indicators at the period's end (share of customers above zero)")
    else:
        console.print("2. Leading indicators: no customers at the period's end.")
    console.print()
    found = data["activities"]
    if not found:
        console.print("3. CSM activities: none defined (workspace.yaml `activities`).")
        return
    csms = sorted({c for item in found.values() for c in item["by_csm"]})
    columns = [Column("CSM", key=True), *[Column(name, justify="right") for name in found]]
    table = [[c, *[str(item["by_csm"].get(c, 0)) for item in found.values()]] for c in csms]
    table.append(["total", *[str(item["total"]) for item in found.values()]])
    print_table(console, columns, table, title="3. CSM activities in the period, per CSM")
