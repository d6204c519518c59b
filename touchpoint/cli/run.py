"""`touchpoint dev` and `touchpoint demo`: the embedded default stack."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import typer
import yaml

from touchpoint.cli.main import app, console, err
from touchpoint.config import ConfigError, load_settings


@app.command()
def dev(folder: Path = typer.Argument(Path("playbooks"), help="The playbooks folder to deploy.")) -> None:
    """Run the local stack (Temporal dev server, worker, API) until Ctrl-C or SIGTERM."""
    from touchpoint.stack import local_stack

    try:
        config = load_settings()
    except ConfigError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None

    async def go() -> None:
        # SIGTERM (docker stop, systemd, a test's teardown) stops the stack like Ctrl-C: without
        # this the process died at once and left the Temporal dev server it started running.
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with local_stack(config, folder) as stack:
            for line in stack.report.lines():
                console.print(f"  {line}", markup=False)
            console.print(f"API       {stack.api_url}  (OpenAPI at {stack.api_url}/docs)")
            console.print(f"Console   {stack.api_url}/console")
            console.print(f"Temporal  {config.temporal_address}" + (f"  (web UI {stack.ui_url})" if stack.ui_url else ""))
            console.print("Ctrl-C stops everything.")
            await stop.wait()
        console.print("stopped")

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        console.print("stopped")
    _leave(0)


def _leave(code: int) -> None:
    # The SDK's runtime can abort at interpreter exit (sdk-python #300): keep the exit code true.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _sample_accounts(folder: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((folder / "samples").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "id" in data and "name" in data:
            docs.append(data)
    return docs


@app.command()
def demo(
    folder: Path = typer.Argument(Path("playbooks"), help="The playbooks folder to deploy."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for the touchpoints."),
) -> None:
    """Start the local stack, deploy, load sample accounts, send events, show what happened."""
    code = asyncio.run(_demo(folder, timeout))
    _leave(code)


async def _demo(folder: Path, timeout: float) -> int:
    import httpx

    from touchpoint.dsl.schema import SendWindow
    from touchpoint.dsl.validate import load_project
    from touchpoint.stack import local_stack
    from touchpoint.store import repo

    try:
        config = load_settings()
    except ConfigError as exc:
        err.print(str(exc), markup=False)
        return 2
    project = load_project(folder)
    if project.problems:
        for problem in project.problems:
            err.print(str(problem), markup=False)
        return 1
    accounts = _sample_accounts(folder)
    console.print(f"[bold]Touchpoint demo[/]: {len(project.playbooks)} playbooks, {len(accounts)} sample accounts from {folder}")
    console.print("[dim]demo only: send windows are open around the clock, so the emails go out now[/]")
    open_window = SendWindow(days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], hours="00:00-24:00")
    demo_folder = config.home / "demo-playbooks"
    _copy_with_open_window(folder, demo_folder, open_window)
    started = time.monotonic()
    async with local_stack(config, demo_folder) as stack:
        for line in stack.report.lines():
            console.print(f"  deploy: {line}", markup=False)
        headers = {"Authorization": f"Bearer {config.api_token.get_secret_value()}"} if config.api_token else {}
        async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=10) as http:
            for doc in accounts:
                response = await http.put(f"/accounts/{doc['id']}", json=_jsonable(doc))
                response.raise_for_status()
                console.print(f"  account {doc['id']}: {response.status_code} accepted")
            for doc in accounts:
                response = await http.post("/events", json={"type": "usage.reported", "account_id": doc["id"], "data": {"metrics": {"integrations": 1}}})
                response.raise_for_status()
            # Wait until every triggered run has done its first side effects.
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with stack.deps.sessions() as s:
                    runs = repo.list_runs(s)
                    done = runs and all(len(repo.run_steps(s, r.id)) >= 3 or r.status == "ended" for r in runs)
                if done:
                    break
                await asyncio.sleep(0.5)
            response = await http.get("/runs")
            runs_view = response.json()
        with stack.deps.sessions() as s:
            messages = repo.list_messages(s, limit=1000)
            tasks = repo.list_tasks(s)
            console.print(f"\n[bold]Runs started[/] ({len(runs_view)})")
            for run in runs_view:
                console.print(f"  {run['playbook']:24} {run['account_id']:16} {run['status']:8} at {run['step']}", markup=False)
            console.print(f"\n[bold]Emails sent[/] ({len(messages)}), outbox {config.outbox_dir.resolve()}")
            for m in messages:
                console.print(f"  {m.status:9} {m.to_email:32} {m.subject}", markup=False, soft_wrap=True)
            console.print(f"\n[bold]Tasks created[/] ({len(tasks)})")
            for t in tasks:
                console.print(f"  {t.owner:28} {t.title}", markup=False)
        console.print(f"\nTemporal web UI: {stack.ui_url or 'n/a (an existing server was used)'}; API: {stack.api_url}/docs")
        console.print(f"done in {time.monotonic() - started:.1f}s; `touchpoint dev` keeps the stack up.")
        return 0 if runs_view and messages else 1


def _copy_with_open_window(source: Path, target: Path, window: Any) -> None:
    import shutil

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    workspace = target / "workspace.yaml"
    data = yaml.safe_load(workspace.read_text(encoding="utf-8")) if workspace.exists() else {}
    data["send_window"] = {"days": list(window.days), "hours": window.hours}
    workspace.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    for path in target.glob("*.yaml"):
        if path.name in ("workspace.yaml", "health.yaml"):
            continue
        text = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(text, dict) and "send_window" in text:
            text.pop("send_window")
            path.write_text(yaml.safe_dump(text, sort_keys=False), encoding="utf-8")


def _jsonable(value: Any) -> Any:
    from touchpoint.dsl.runtime import plain

    return plain(value)
