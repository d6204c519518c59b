"""`touchpoint simulate`: one playbook for one account on a simulated clock, without a server.

With `--json` stdout carries plain JSON lines only, streamed as the run goes (warnings and logs
go to stderr); `--on-server` runs the same simulation on the time-skipping Temporal server.
Given a folder, it runs every playbook the account would enter, side by side with one shared
frequency cap (`touchpoint.simulate_folder`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from touchpoint.cli.main import app, console, err, run_async
from touchpoint.dsl.errors import ContractError


@app.command()
def simulate(
    playbook_file: Path = typer.Argument(..., help="The playbook YAML file, or a playbooks folder: every playbook the account would enter, side by side."),
    account: Path = typer.Option(..., "--account", help="An account document (YAML or JSON)."),
    events: Path | None = typer.Option(None, "--events", help="A list of {after: 10d, type, data} or {after: 6d, account: {...}}."),
    start: str | None = typer.Option(None, "--start", help="ISO date or time the run starts (past or future)."),
    days: int = typer.Option(730, "--days", help="Stop after this many days."),
    as_json: bool = typer.Option(False, "--json", help="Plain JSON lines, one per step, then the outcome."),
    trigger_data: str | None = typer.Option(None, "--trigger-data", help="JSON object: `event.data` of the triggering event."),
    on_server: bool = typer.Option(False, "--on-server", help="Run on the time-skipping Temporal server with the real workflows."),
    manual: list[str] = typer.Option([], "--manual", help="With a folder: also start this manual playbook at the start (repeatable)."),
    holdout: str | None = typer.Option(None, "--holdout", help="With a playbook `holdout`: `in` holds the run out, `out` treats it (default: the account's stable choice)."),
) -> None:
    """Run one playbook for one account until it ends or --days pass (90 days in milliseconds).

    Given a folder, run every account playbook that the account (arriving as a new account) and
    its events would start, on one clock with the workspace's frequency cap shared, in one
    timeline whose rows name their playbook; then say which playbooks it entered and why the
    others did not start.
    """
    if playbook_file.is_dir():
        if on_server or trigger_data:
            err.print("error: --on-server and --trigger-data take a playbook file, not a folder", markup=False)
            raise typer.Exit(2)
        _simulate_folder(playbook_file, account, events, start, days, as_json, manual)
        return
    if manual:
        err.print("error: --manual takes a playbooks folder, not a file", markup=False)
        raise typer.Exit(2)
    if holdout not in (None, "in", "out"):
        err.print(f"error: --holdout takes `in` or `out`, got {holdout!r}", markup=False)
        raise typer.Exit(2)
    if holdout is not None and on_server:
        err.print("error: --holdout forces the choice in a simulation without a server; --on-server applies the stable choice", markup=False)
        raise typer.Exit(2)
    from touchpoint.dsl.runtime import StepRecord
    from touchpoint.simulate import outcome_line, parse_start, record_line, simulate_on_server, timeline_json
    from touchpoint.simulate import simulate as run_simulation

    def warn(text: str) -> None:
        err.print(f"warning: {text}", markup=False, soft_wrap=True)

    tz = "UTC"

    def stream(record: StepRecord) -> None:
        line = record_line(record, tz)
        if line is not None:
            sys.stdout.write(line + "\n")

    try:
        data = json.loads(trigger_data) if trigger_data else None
        if not isinstance(data, (dict, type(None))):
            raise typer.BadParameter("expected a JSON object", param_hint="--trigger-data")
        begin = parse_start(start)
        if on_server:
            sim = run_async(simulate_on_server(playbook_file, account, events_file=events, start=begin, days=days, trigger_data=data))
            for text in sim.warnings:
                warn(text)
        else:
            from touchpoint import cache

            tz = _zone_of(playbook_file, account)
            with cache.using():  # checked templates and holiday calendars from earlier runs
                sim = run_simulation(playbook_file, account, events_file=events, start=begin, days=days, trigger_data=data, sink=stream if as_json else None, warn=warn, holdout=holdout)  # type: ignore[arg-type]
    except ContractError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except ValueError as exc:  # --start or --trigger-data
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    tz = sim.account.timezone or "UTC"
    if as_json:
        if on_server:
            for line in timeline_json(sim, tz)[:-1]:
                sys.stdout.write(line + "\n")
        sys.stdout.write(outcome_line(sim, tz) + "\n")
        sys.stdout.flush()
        return
    from touchpoint.cli.tables import Cell, Column, print_table

    rows: list[list[Cell]] = []
    for line in timeline_json(sim, tz)[:-1]:
        item = json.loads(line)
        detail = {k: v for k, v in item.items() if k not in ("at", "day", "step", "action")}
        # The account's local time to the minute (its zone is in the title); --json has seconds.
        at = item["at"][:16].replace("T", " ")
        rows.append([at, str(item["day"]), item["step"], item["action"], ", ".join(f"{k}={v}" for k, v in detail.items())])
    columns = [Column("at", key=True), Column("day", justify="right"), Column("step", key=True), Column("action"), Column("detail")]
    print_table(console, columns, rows, title=f"{sim.account.id}, times in {tz}")
    held = {None: "", True: ", held out", False: ", treated"}[sim.held_out]
    console.print(f"outcome: [bold]{sim.outcome}[/] on day {sim.day} ({sim.because}{held})")


def _simulate_folder(folder: Path, account: Path, events: Path | None, start: str | None, days: int, as_json: bool, manual: list[str]) -> None:
    """`simulate FOLDER`: the runs side by side, then what was entered and what was not."""
    from touchpoint import cache
    from touchpoint.dsl.runtime import StepRecord
    from touchpoint.simulate import parse_start
    from touchpoint.simulate_folder import row_line, simulate_folder, start_day, summary_lines

    def warn(text: str) -> None:
        err.print(f"warning: {text}", markup=False, soft_wrap=True)

    tz = _zone_of(folder, account)

    def stream(playbook: str, record: StepRecord) -> None:
        line = row_line(playbook, record, tz)
        if line is not None:
            sys.stdout.write(line + "\n")

    try:
        begin = parse_start(start)
        with cache.using():
            sim = simulate_folder(folder, account, events_file=events, start=begin, days=days, manual=manual, sink=stream if as_json else None, warn=warn)
    except ContractError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except ValueError as exc:  # --start, --manual
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    tz = sim.account.timezone or "UTC"
    if as_json:
        for text in summary_lines(sim, tz):
            sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    from touchpoint.cli.tables import Cell, Column, print_table

    rows: list[list[Cell]] = []
    for playbook, record in sim.records:
        line = row_line(playbook, record, tz)
        if line is None:
            continue
        item = json.loads(line)
        detail = {k: v for k, v in item.items() if k not in ("at", "day", "playbook", "step", "action")}
        rows.append([item["at"][:16].replace("T", " "), str(item["day"]), playbook, item["step"], item["action"], ", ".join(f"{k}={v}" for k, v in detail.items())])
    columns = [Column("at", key=True), Column("day", justify="right"), Column("playbook", key=True), Column("step", key=True), Column("action"), Column("detail")]
    print_table(console, columns, rows, title=f"{sim.account.id}: every playbook it enters, times in {tz}")
    for e in sim.entered:
        console.print(f"entered {e.playbook} on {e.trigger}, day {start_day(sim, e.started)}: {e.outcome} on its day {e.day} ({e.because})", markup=False, soft_wrap=True)
    for name, why in sim.skipped.items():
        console.print(f"not entered {name}: {why}", markup=False, soft_wrap=True)


def _zone_of(playbook_file: Path, account_file: Path) -> str:
    """The account's time zone, for streamed lines (the account file, else the workspace's)."""
    from touchpoint.dsl.yamlpos import load_yaml

    try:
        data, _, _ = load_yaml(account_file.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("timezone"), str):
            return str(data["timezone"])
        folder = playbook_file.parent if playbook_file.is_file() else playbook_file
        workspace, _, _ = load_yaml((folder / "workspace.yaml").read_text(encoding="utf-8"))
        if isinstance(workspace, dict) and isinstance(workspace.get("timezone"), str):
            return str(workspace["timezone"])
    except OSError:
        pass
    return "UTC"
