"""`touchpoint health calibrate`: which health metrics predict retention, and suggested weights."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from touchpoint.cli.health import health_app
from touchpoint.cli.main import console, err
from touchpoint.cli.tables import Cell, Column, print_table
from touchpoint.dsl.errors import ContractError


@health_app.command("calibrate")
def calibrate(
    outcomes: Path = typer.Option(..., "--outcomes", help="CSV: account_id,outcome,date (outcome: retained, expanded, contracted or churned)."),
    horizon: str = typer.Option("12mo", "--horizon", help="How long before each outcome to read the metrics: 12mo, 6mo, 1y, 90d."),
    playbooks: Path = typer.Option(Path("playbooks"), "--playbooks", help="The folder whose health.yaml is calibrated."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Fit outcomes against the metric history: effects, AUC, suggested health.yaml weights (a diff; nothing is written)."""
    from touchpoint.calibrate import CalibrationRefused, parse_horizon, read_outcomes, samples
    from touchpoint.calibrate import calibrate as fit
    from touchpoint.cli.ops import _sessions
    from touchpoint.dsl.validate import load_project
    from touchpoint.store.accounts import account_history

    try:
        span = parse_horizon(horizon)
        found = read_outcomes(outcomes)
    except ContractError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except (ValueError, OSError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    project = load_project(playbooks)
    health_file = project.root / "health.yaml"
    problems = [p for p in project.problems if Path(p.file).name == "health.yaml"]
    if project.health is None or problems:
        for problem in problems:
            err.print(str(problem), markup=False, soft_wrap=True)
        err.print(f"error: no valid health.yaml in {project.root}", markup=False)
        raise typer.Exit(1)
    with _sessions()() as s:
        rows = account_history(s, sorted({o.account_id for o in found}))
    usable, skipped = samples(rows, found, project.health, span)
    try:
        result = fit(usable, project.health, health_file.read_text(encoding="utf-8"), skipped=skipped)
    except CalibrationRefused as exc:
        err.print(f"refused: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(asdict(result), ensure_ascii=False))
        return
    rows_out: list[list[Cell]] = [
        [
            e.name,
            f"{e.effect:+.3f}",
            f"[{e.low:+.3f}, {e.high:+.3f}]",
            "yes" if e.matters else "no",
            "-" if e.current_weight is None else f"{e.current_weight:g}",
            "-" if e.suggested_weight is None else f"{e.suggested_weight:g}",
        ]
        for e in result.effects
    ]
    columns = [
        Column("metric", key=True),
        Column("effect", justify="right"),
        Column("95% interval", key=True),
        Column("matters"),
        Column("weight", justify="right"),
        Column("suggested", justify="right"),
    ]
    left_out = ", ".join(f"{n} {reason}" for reason, n in sorted(result.skipped.items()))
    console.print(f"{result.samples} outcomes ({result.good} retained or expanded, {result.bad} contracted or churned), metrics {horizon} before each" + (f"; left out: {left_out}" if left_out else ""), markup=False, soft_wrap=True)
    print_table(console, columns, rows_out, title="Effect on a good outcome: log-odds per standard deviation (L2-regularised logistic regression, bootstrap interval)")
    console.print(f"AUC on held-out accounts: current health score {result.auc_current:.3f}, suggested {result.auc_suggested:.3f}", markup=False)
    if result.diff:
        console.print("Suggested health.yaml (not written; apply it yourself, then `touchpoint validate`):", markup=False)
        console.print(result.diff, markup=False, highlight=False, soft_wrap=True, end="")
    else:
        console.print("The current weights stand: no change to suggest.", markup=False)
