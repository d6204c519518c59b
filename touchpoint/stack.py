"""The embedded default stack: Temporal dev server (SQLite WAL file), worker and API in one process.

`touchpoint dev` keeps it up; `touchpoint demo` starts it, plays a script and stops. A second start
finds everything from the first: the server's SQLite file and the store live under `.touchpoint/`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.deps import Deps
from touchpoint.api.app import create_app
from touchpoint.config import Settings
from touchpoint.deploy import DeployReport, deploy_project
from touchpoint.dsl.validate import load_project
from touchpoint.schedules import sync_schedules
from touchpoint.temporal_server import port_open, start_dev_server
from worker import build_worker, connect


@dataclass
class LocalStack:
    """What a running local stack offers."""

    client: Client
    deps: Deps
    settings: Settings
    api_url: str
    ui_url: str | None
    report: DeployReport


@contextlib.asynccontextmanager
async def local_stack(settings: Settings, folder: Path) -> AsyncIterator[LocalStack]:
    """Start (or reuse) the Temporal dev server, deploy ``folder``, run the worker and the API."""
    settings.home.mkdir(parents=True, exist_ok=True)
    project = load_project(folder)
    project.raise_for_problems()
    host, port = settings.temporal_host_port()
    env: WorkflowEnvironment | None = None
    ui_url = None
    if port_open(host, port):
        client = await connect(settings)
    else:
        env = await start_dev_server(port=port, ui_port=port + 1000, database_file=(settings.home / "temporal.db").resolve())
        client = env.client
        ui_url = f"http://127.0.0.1:{port + 1000}"
    deps = Deps.from_settings(settings)
    try:
        with deps.sessions.begin() as s:
            report = deploy_project(s, project)
        report.schedules = await sync_schedules(client, project, task_queue=settings.task_queue, crm_backend=settings.crm_backend)
        api_host, api_port = settings.api_host_port()
        server = uvicorn.Server(uvicorn.Config(create_app(settings, client, deps.sessions), host=api_host, port=api_port, log_level="warning", lifespan="off"))
        serving = asyncio.create_task(server.serve())
        try:
            async with build_worker(client, deps, task_queue=settings.task_queue):
                while not server.started and not serving.done():
                    await asyncio.sleep(0.02)
                if serving.done():
                    serving.result()
                    raise RuntimeError(f"the API could not listen on {settings.api_bind} (TOUCHPOINT_API_BIND)")
                yield LocalStack(client, deps, settings, f"http://{api_host}:{api_port}", ui_url, report)
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await serving
    finally:
        await deps.close()
        if env is not None:
            await env.shutdown()
