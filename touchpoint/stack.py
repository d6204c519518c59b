"""The embedded default stack: Temporal dev server (SQLite WAL file), worker and API in one process.

`touchpoint dev` keeps it up; `touchpoint demo` starts it, plays a script and stops. A second start
finds everything from the first: the server's SQLite file, the store and the generated secret key
live under `.touchpoint/`.

Stopping: SIGINT (Ctrl-C), SIGTERM and SIGHUP all cancel the task running the stack, which
stops the API, the worker and the server in order and leaves with `KeyboardInterrupt` (what
`touchpoint dev` expects of Ctrl-C). The handlers do not depend on how the process was started
(a shell's background job ignores SIGINT otherwise). The server also dies with this process if
it is killed outright (`touchpoint.temporal_server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.deps import Deps
from touchpoint.api.ops import build_app
from touchpoint.config import Settings, with_dev_secret
from touchpoint.deploy import DeployReport, deploy_project
from touchpoint.dsl.validate import Project, load_project
from touchpoint.observability import setup_process
from touchpoint.schedules import sync_schedules
from touchpoint.store import write_tx
from touchpoint.temporal_server import port_open, start_dev_server
from worker import build_worker, connect

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class LocalStack:
    """What a running local stack offers."""

    client: Client
    deps: Deps
    settings: Settings
    api_url: str
    ui_url: str | None
    report: DeployReport


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the stack decides when everything stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """Cancel the current task on the first stop signal; yields the signals received."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if not received and task is not None:
            task.cancel()
        received.append(signum)

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield received
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


@contextlib.asynccontextmanager
async def local_stack(settings: Settings, folder: Path) -> AsyncIterator[LocalStack]:
    """Start (or reuse) the Temporal dev server, deploy ``folder``, run the worker and the API.

    Raises:
        ConfigError: `TOUCHPOINT_SECRET_KEY` is set but too short, or the generated key's file
            is readable by others.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    settings = with_dev_secret(settings)
    project = load_project(folder)
    project.raise_for_problems()
    setup_process(settings, role="dev")
    with _stop_on_signals() as received:
        try:
            async with _running(settings, project) as stack:
                yield stack
        except asyncio.CancelledError:
            if received:
                raise KeyboardInterrupt from None
            raise


@contextlib.asynccontextmanager
async def _running(settings: Settings, project: Project) -> AsyncIterator[LocalStack]:
    host, port = settings.temporal_host_port()
    env: WorkflowEnvironment | None = None
    ui_url = None
    if port_open(host, port):
        client = await connect(settings)
    else:
        env = await start_dev_server(port=port, ui_port=port + 1000, database_file=(settings.home / "temporal.db").resolve())
        client = await connect(settings)
        ui_url = f"http://127.0.0.1:{port + 1000}"
    try:
        deps = Deps.from_settings(settings)
        try:
            with write_tx(deps.sessions) as s:  # the write lock first: workers may be writing
                report = deploy_project(s, project)
            report.schedules = await sync_schedules(client, project, task_queue=settings.task_queue, crm_backend=settings.crm_backend)
            api_host, api_port = settings.api_host_port()
            app = build_app(settings, client, deps.sessions)
            server = _EmbeddedServer(uvicorn.Config(app, host=api_host, port=api_port, log_config=None, log_level="warning", lifespan="off"))
            serving = asyncio.create_task(server.serve())
            try:
                async with build_worker(client, deps, task_queue=settings.task_queue, sandbox=settings.workflow_sandbox):
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
    finally:
        if env is not None:
            await env.shutdown()
