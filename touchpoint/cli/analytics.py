"""`touchpoint analytics PLAYBOOK`: funnels, email engagement and uplift of a playbook's runs."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import typer

from touchpoint.cli.main import app, console, err
from touchpoint.cli.tables import Cell, Column, print_table

if TYPE_CHECKING:
    from touchpoint.analytics import PlaybookAnalytics, RunCounts


@app.command()
def analytics(
    playbook: str = typer.Argument(..., help="The playbook's id."),
    since: str | None = typer.Option(None, "--since", help="Only runs enrolled on or after this day (YYYY-MM-DD, UTC)."),
    version: str | None = typer.Option(None, "--version", help="Only runs of this version (as `deploy` prints it)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object (its shape below)."),
) -> None:
    """Per version and `split` variant: runs enrolled, held out, in flight and their outcomes;
    per step: runs that entered, passed, were skipped or failed it and the median time from the
    previous step; per email step: sent, held, delivered, opened, clicked, bounced, unsubscribed;
    and the goal rate of treated against held-out runs within the holdout's `for`, with the
    uplift and its 95% interval (Newcombe).

    `--json` prints `GET /playbooks/{id}/analytics`'s object: `{playbook, since, version,
    totals: RUNS, versions: [RUNS + {version, current, variants: [RUNS + {variant}], steps:
    [{step, kind, entered, passed, skipped, failed, median_seconds_from_previous, emails: null |
    {sent, held, not_sent, delivered, opened, clicked, bounced, unsubscribed}}]}], uplift:
    {method, treated: ARM, held_out: ARM, enough, points, low, high, sentence}}` where RUNS is
    `{enrolled, held_out, in_flight, outcomes: {outcome: n}, treated_ended, treated_converted,
    goal_rate}` and ARM `{runs, reached_goal, rate}` (docs/playbook-reference.md, section 16).
    """
    from touchpoint.analytics import NotFound, playbook_analytics
    from touchpoint.cli.ops import _sessions

    try:
        day = dt.date.fromisoformat(since) if since is not None else None
    except ValueError:
        err.print(f"error: --since {since!r} is not a day: write it as YYYY-MM-DD, e.g. 2026-11-01", markup=False)
        raise typer.Exit(2) from None
    factory = _sessions()
    try:
        with factory() as s:
            data = playbook_analytics(s, playbook, since=day, version=version)
    except NotFound as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    finally:
        factory.kw["bind"].dispose()  # close PostgreSQL's connections now, not at interpreter exit
    if as_json:
        print(data.model_dump_json())
        return
    _print(data)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _runs(label: str, counts: RunCounts) -> list[Cell]:
    outcomes = ", ".join(f"{name} {n}" for name, n in sorted(counts.outcomes.items())) or "-"
    return [label, str(counts.enrolled), str(counts.held_out), str(counts.in_flight), outcomes, _rate(counts.goal_rate)]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _print(data: PlaybookAnalytics) -> None:
    scope = f" enrolled since {data.since}" if data.since else ""
    console.print(f"{data.playbook}: {data.totals.enrolled} runs{scope}", markup=False)
    numbers = [Column(n, justify="right") for n in ("enrolled", "held out", "in flight")]
    rows = []
    for version in data.versions:
        rows.append(_runs(version.version + (" (current)" if version.current else ""), version))
        rows.extend(_runs(f"  {v.variant or '(no split)'}", v) for v in version.variants if len(version.variants) > 1 or v.variant)
    print_table(console, [Column("version / variant", key=True), *numbers, Column("outcomes", drop=1), Column("goal rate", justify="right")], rows, title="Runs")
    for version in data.versions:
        reach = [Column("step", key=True), *(Column(n, justify="right") for n in ("entered", "passed", "skipped", "failed")), Column("median from previous", justify="right", drop=1)]
        print_table(console, reach, [[x.step, str(x.entered), str(x.passed), str(x.skipped), str(x.failed), _duration(x.median_seconds_from_previous)] for x in version.steps], title=f"Steps of {version.version}")
        names = ("sent", "held", "not_sent", "delivered", "opened", "clicked", "bounced", "unsubscribed")
        emails = [[x.step, *(str(getattr(x.emails, n)) for n in names)] for x in version.steps if x.emails is not None]
        if emails:
            print_table(console, [Column("email step", key=True), *(Column(n.replace("_", " "), justify="right", drop=1 if i > 2 else 0) for i, n in enumerate(names))], emails, title=f"Emails of {version.version}")
    uplift = data.uplift
    console.print(f"Goal within `for`: treated {_rate(uplift.treated.rate)} of {uplift.treated.runs}, held out {_rate(uplift.held_out.rate)} of {uplift.held_out.runs}", markup=False)
    console.print(uplift.sentence, markup=False, soft_wrap=True)
