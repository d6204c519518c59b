"""How `touchpoint status` shows runs: JSON lines for scripts, readable blocks for people.

A run is a plain dict (what `--json` prints, one per line): ``id``, ``workflow_id``, ``playbook``,
``account_id``, ``status``, ``step``, ``outcome``, ``paused_reason``, optionally ``waiting`` (what
the run waits for, in words), ``vars``, ``scorecard`` and ``history`` (``{at, day, step, action,
detail}`` records, oldest first). On a terminal each run is a heading line with its ids whole, its
state and what it waits for, its vars one per line, and its recent steps as a table that fits the
terminal; in a pipe the same as plain lines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from touchpoint.cli.tables import Column, print_table
from touchpoint.runs_view import _plain, record_json, waiting_words

__all__ = ["print_runs", "record_json", "waiting_words"]

HISTORY_SHOWN = 10
"""Recent steps shown per run (`--json` carries the whole timeline the run reports)."""


def print_runs(console: Console, runs: Sequence[dict[str, Any]], *, as_json: bool = False) -> None:
    """Print runs as JSON lines (``as_json``) or as readable blocks."""
    if as_json:
        for run in runs:
            print(json.dumps(_plain(run), ensure_ascii=False), flush=True)
        return
    if not runs:
        console.print("no runs", markup=False)
        return
    for number, run in enumerate(runs):
        if number:
            console.print()
        _print_run(console, run)


def _print_run(console: Console, run: dict[str, Any]) -> None:
    console.print(Text.assemble((run["playbook"], "bold"), " ", run["account_id"]), soft_wrap=True)
    state = run["status"] + (f" at {run['step']}" if run.get("step") else "") + (f", outcome {run['outcome']}" if run.get("outcome") else "")
    facts: list[tuple[str, Text]] = [("run", Text(run["id"])), ("state", Text(state))]
    if run.get("paused_reason"):
        facts.append(("paused", Text(run["paused_reason"], style="yellow")))
    if run.get("held_out"):
        facts.append(("holdout", Text("held out: takes no steps until the holdout window ends")))
    if run.get("waiting"):
        facts.append(("waiting", Text(run["waiting"])))
    scorecard = run.get("scorecard")
    if scorecard:
        facts.append(("scorecard", Text(f"{scorecard['score']}% (target {scorecard['target']} by day {scorecard['by_day']})")))
    for name, value in (run.get("vars") or {}).items():
        facts.append((f"{name} =", Text(json.dumps(_plain(value), ensure_ascii=False))))
    if console.is_terminal:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, style="dim")
        grid.add_column(overflow="fold")
        for name, value in facts:
            grid.add_row(" " + name, value)
        console.print(grid)
    else:
        for name, value in facts:
            console.print(f"  {name} {value.plain}", markup=False, highlight=False, soft_wrap=True)
    history = list(run.get("history") or [])[-HISTORY_SHOWN:]
    if not history:
        return
    details = [", ".join(f"{k}={v}" for k, v in (item.get("detail") or {}).items()) for item in history]
    if not console.is_terminal:
        rows = [[item["at"][:16].replace("T", " "), str(item["day"]), item["step"], item["action"], detail] for item, detail in zip(history, details, strict=True)]
        columns = [Column("at (UTC)"), Column("day", justify="right"), Column("step"), Column("action"), Column("detail")]
        print_table(console, columns, rows)
        return
    # On a terminal each step is a line of its own (time, day, step id whole, action) with its
    # detail wrapped below it: a detail holds ids too (task_id=...), so no column of a table
    # narrow enough for 80 columns would do.
    console.print(Text(" recent steps (UTC)", style="dim"))
    for item, detail in zip(history, details, strict=True):
        console.print(Text(f" {item['at'][:16].replace('T', ' ')}  day {item['day']:<3} {item['step']}  {item['action']}"), soft_wrap=True)
        if detail:
            grid = Table.grid()
            grid.add_column(width=4)
            grid.add_column(overflow="fold")
            grid.add_row("", Text(detail, style="dim"))
            console.print(grid)


