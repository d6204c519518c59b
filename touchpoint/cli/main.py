"""`touchpoint`: validate, simulate, run and inspect playbooks.

Commands that talk to Temporal connect to `TOUCHPOINT_TEMPORAL_ADDRESS`; `dev` and `demo` start
an embedded Temporal dev server first; `worker` and `api` are the production processes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from touchpoint.dsl.errors import Problem
from touchpoint.dsl.validate import load_project, summary
from touchpoint.email.check import check_templates

app = typer.Typer(
    name="touchpoint",
    help="Customer-success playbooks in YAML, run durably on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@app.callback()
def _root() -> None:
    """Customer-success playbooks in YAML, run durably on Temporal."""


@app.command()
def validate(
    targets: list[Path] = typer.Argument(None, help="Playbook folders or files (default: ./playbooks)."),
) -> None:
    """Check playbooks, workspace.yaml, health.yaml and templates without a server."""
    from touchpoint import cache

    with cache.using():  # template checks of files unchanged since an earlier run
        _validate(targets or [Path("playbooks")])


def _validate(targets: list[Path]) -> None:
    problems: list[Problem] = []
    summaries: list[str] = []
    projects = []
    for target in targets:
        if not target.exists():
            err.print(f"[red]error:[/] {target}: no such file or folder")
            raise typer.Exit(1)
        project = load_project(target)
        problems.extend(project.problems)
        # Render every template against the sample accounts: run-time errors show up here.
        problems.extend(check_templates(project, project.root / "samples"))
        summaries.extend(summary(lp) for lp in project.playbooks.values())
        projects.append(project)
    for problem in problems:
        console.print(str(problem), markup=False, soft_wrap=True)
    if problems:
        err.print(f"[red]{len(problems)} problem{'s' if len(problems) != 1 else ''} found[/]")
        raise typer.Exit(1)
    for line in summaries:
        console.print(f"[green]ok[/] {line}", soft_wrap=True)
    for project in projects:
        _overlaps(project)


def _overlaps(project: Any) -> None:
    """Which playbooks each sample account enters, and a warning for each pair that email one
    contact within one frequency-cap window (`touchpoint.overlaps`); never an error."""
    from touchpoint.dsl.durations import format_duration
    from touchpoint.overlaps import HORIZON_DAYS, sample_reports

    cap = project.workspace.frequency_cap
    per = f"{cap.emails} per {format_duration(cap.per)}" if cap else ""
    for report in sample_reports(project, project.root / "samples"):
        where = _shown(report.path) + (f" with {report.events.name}" if report.events else "")
        entered = ", ".join(f"{name} (day {day})" for name, day in report.entered) or f"no playbook in {HORIZON_DAYS} days"
        console.print(f"sample {report.account_id} ({where}) enters {entered}", markup=False, soft_wrap=True)
        for overlap in report.overlaps:
            err.print(f"warning: sample {report.account_id}: {overlap.describe(per)}", markup=False, soft_wrap=True)


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_async(coro: Any) -> Any:
    """Run a command's coroutine; the process then leaves with `os._exit` (see `main`).

    Temporal's Rust runtime keeps threads that can abort the interpreter's finalization
    ("PyGILState_Release ... must be current"), most often after a failed connect: a command
    that touched it exits hard, after flushing, with its own exit code.
    """
    import asyncio

    os.environ["TOUCHPOINT_HARD_EXIT"] = "1"
    return asyncio.run(coro)


def main() -> None:
    """Console-script entry point; leaves with `os._exit` after commands that ran a worker."""
    if sys.argv[1:2] == ["simulate"]:
        # Start-up time is most of what a simulation costs: load only its command's module.
        from touchpoint.cli import simulate as _simulate  # noqa: F401
    elif sys.argv[1:2] == ["forecast"]:
        from touchpoint.cli import forecast as _forecast  # noqa: F401
    else:
        load_commands()
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        if os.environ.get("TOUCHPOINT_HARD_EXIT"):
            os._exit(code)
        raise


def load_commands() -> None:
    """Register the commands defined in other modules (they import `app` from here)."""
    from touchpoint.cli import (  # noqa: F401
        analytics,
        approvals,
        calibrate,
        events,
        forecast,
        health,
        migrate,
        ops,
        preview,
        report,
        run,
        schema,
        serve,
        simulate,
        sync,
    )


if not getattr(sys.modules["touchpoint.cli"], "LAZY", False):
    # Importers of `app` (tests, `python -m touchpoint.cli.main`) see every command; the
    # console script (`touchpoint.cli.entry`) loads only what its command line needs.
    load_commands()

if __name__ == "__main__":
    # Run through the imported module so the commands registered on its `app` are found.
    from touchpoint.cli.main import main as _main

    _main()
