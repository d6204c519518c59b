"""The production processes and their set-up: `worker`, `api`, `config`, `setup`.

`worker` and `api` refuse to start without a `TOUCHPOINT_SECRET_KEY` of at least 32 characters
(`dev` makes its own); `api` also refuses a non-loopback bind without `TOUCHPOINT_API_TOKEN`
unless `--insecure`. Both log JSON lines (`TOUCHPOINT_LOG_FORMAT=human` for plain lines).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from touchpoint.cli.main import app, console, err, run_async
from touchpoint.config import ConfigError, Settings, load_settings


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        err.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _refuse(exc: ConfigError) -> typer.Exit:
    err.print(f"[red]error:[/] {exc}", soft_wrap=True)
    return typer.Exit(2)


@app.command()
def worker(
    task_queue: str | None = typer.Option(None, "--task-queue", help="Queue to poll \\[default: TOUCHPOINT_TASK_QUEUE]."),
    max_cached_workflows: int | None = typer.Option(
        None, "--max-cached-workflows", help="Workflows kept in memory \\[default: TOUCHPOINT_WORKER_CACHE]."
    ),
    max_concurrent_activities: int | None = typer.Option(
        None, "--max-concurrent-activities", help="Activities at once \\[default: TOUCHPOINT_MAX_CONCURRENT_ACTIVITIES]."
    ),
) -> None:
    """Run a worker (no API, no server) until SIGTERM, which drains it."""
    from touchpoint.observability import setup_process
    from touchpoint.worker_process import WorkerOptions, serve_worker

    config = _settings()
    try:
        config.require_secret_key()
    except ConfigError as exc:
        raise _refuse(exc) from None
    options = WorkerOptions(
        task_queue=task_queue or config.task_queue,
        max_cached_workflows=config.worker_cache if max_cached_workflows is None else max_cached_workflows,
        max_concurrent_activities=max_concurrent_activities or config.max_concurrent_activities,
    )
    setup_process(config, role="worker")
    code = run_async(serve_worker(config, options))
    raise typer.Exit(code)


@app.command()
def api(
    workers: int = typer.Option(1, "--workers", min=1, help="uvicorn worker processes."),
    bind: str | None = typer.Option(None, "--bind", help="host:port \\[default: TOUCHPOINT_API_BIND]."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback bind without TOUCHPOINT_API_TOKEN."),
) -> None:
    """Serve the API (and console) with uvicorn: /healthz, /readyz, /metrics, OpenAPI at /docs."""
    import uvicorn

    if bind:
        os.environ["TOUCHPOINT_API_BIND"] = bind  # uvicorn's worker processes read the environment
    config = _settings()
    try:
        config.require_secret_key()
        config.require_safe_bind(insecure=insecure)
    except ConfigError as exc:
        raise _refuse(exc) from None
    from touchpoint.observability.logs import configure_logging

    configure_logging(config, default_format="json")  # uvicorn's supervisor logs here too
    host, port = config.api_host_port()
    os.environ["TOUCHPOINT_HARD_EXIT"] = "1"  # the SDK's runtime can abort at interpreter exit
    # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler it
    # found: make that a no-op, so a graceful stop exits 0 rather than "killed by SIGTERM".
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    uvicorn.run(
        "touchpoint.api.process:create_process_app",
        factory=True,
        host=host.strip("[]"),
        port=port,
        workers=workers,
        log_config=None,
        timeout_graceful_shutdown=8,
    )


@app.command("config")
def show_config() -> None:
    """Print the effective settings (environment and touchpoint.env) with every secret masked."""
    config = _settings()
    width = max(len(name) for name, _ in config.masked())
    for name, value in config.masked():
        console.print(f"{name:<{width}}  {value}", markup=False, soft_wrap=True)
    problems = []
    for check in (config.require_secret_key, config.require_safe_bind):
        try:
            check()
        except ConfigError as exc:
            problems.append(str(exc))
    for problem in problems:
        err.print(f"[yellow]note:[/] {problem} (`touchpoint worker` and `touchpoint api` refuse to start)", soft_wrap=True)


@app.command()
def setup(
    folder: Path | None = typer.Argument(None, help="A playbooks folder: also create or update its Schedules."),
    retention_days: int = typer.Option(30, "--retention-days", help="History retention of a namespace created here."),
) -> None:
    """Prepare a namespace and the store, idempotently: namespace (self-hosted), search
    attributes, the store's schema, and with FOLDER its playbooks' Schedules."""
    from touchpoint.setup import prepare

    config = _settings()
    try:
        lines = run_async(prepare(config, folder, retention_days=retention_days))
    except (ConfigError, RuntimeError) as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True, markup=False)
        raise typer.Exit(1) from None
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)
    sys.stdout.flush()
