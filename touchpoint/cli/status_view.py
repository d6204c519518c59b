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
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from touchpoint.cli.tables import Column, print_table

HISTORY_SHOWN = 10
"""Recent steps shown per run (`--json` carries the whole timeline the run reports)."""


def waiting_words(entries: Sequence[dict[str, Any]], tz: str) -> str | None:
    """What a run waits for, in the account's zone: "held until Mon 09:00 Europe/Berlin: send_window"."""
    from zoneinfo import ZoneInfo

    words = []
    for entry in entries:
        until = entry.get("until")
        when = ""
        if until:
            moment = datetime.fromisoformat(str(until)).astimezone(ZoneInfo(tz))
            when = f" until {moment:%a %d %b %H:%M} {tz}"
        kind, detail = entry.get("kind"), entry.get("detail")
        if kind == "email":
            words.append(f"email held{when}" + (f": {detail}" if detail else ""))
        elif kind == "event":
            words.append(f"waiting for {detail or 'an event'}{when}")
        elif kind == "task":
            words.append(f"waiting for its task to be completed{when}")
        elif kind == "paused":
            words.append("paused" + (f": {detail}" if detail else ""))
        elif kind == "effect":
            words.append("calling a provider")
        else:
            words.append(f"{'scorecard ' if entry.get('step') == 'scorecard' else ''}waiting{when}")
    return "; ".join(words) or None


def record_json(record: Any) -> dict[str, Any]:
    """A history record (`StepRecord`-like: at, day, step, action, detail) as JSON-ready data."""
    at = record.at.astimezone(UTC).isoformat(timespec="seconds") if isinstance(record.at, datetime) else str(record.at)
    return {"at": at, "day": record.day, "step": record.step, "action": record.action, "detail": _plain(record.detail)}


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


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as ISO text, containers walked, anything else as ``str``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
