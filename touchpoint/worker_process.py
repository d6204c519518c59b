"""`touchpoint worker`: one worker process, outside `dev`.

- At start, and whenever the worker stops because Temporal went away, it waits for the store
  and for Temporal with back-off (0.5 s doubling to 15 s), logging each attempt, instead of
  exiting.
- SIGTERM, SIGINT or SIGHUP drain it: it stops polling, lets running activities finish for
  `TOUCHPOINT_SHUTDOWN_GRACE` seconds (then cancels them; Temporal retries them elsewhere),
  and exits 0. A second signal stops waiting.
- With `TOUCHPOINT_METRICS_BIND` it serves `/metrics` (Touchpoint's and the SDK's),
  `/healthz` (the process is alive) and `/readyz` (the worker is polling) there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from touchpoint.config import Settings, mask_url
from touchpoint.connection import connect, with_backoff

log = logging.getLogger("touchpoint.worker")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class WorkerOptions:
    """What `touchpoint worker` takes on its command line (defaults from the settings)."""

    task_queue: str
    max_cached_workflows: int
    max_concurrent_activities: int


class OpsServer:
    """`/metrics`, `/healthz` and `/readyz` on a plain HTTP server in a daemon thread."""

    def __init__(self, bind: str) -> None:
        host, _, port = bind.rpartition(":")
        self.ready = False
        ops = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._answer(200, b'{"status":"ok"}', "application/json")
                elif path == "/readyz":
                    code, state = (200, b"ready") if ops.ready else (503, b"waiting")
                    self._answer(code, b'{"status":"' + state + b'"}', "application/json")
                else:
                    self._answer(404, b'{"detail":"not found"}', "application/json")

            def _answer(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the log

        self.server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="ops-http", daemon=True)

    @property
    def port(self) -> int:
        """The port actually bound (for a bind with port 0)."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Serve in the background."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def install_stop_signals(stop: asyncio.Event, grace: float) -> None:
    """SIGTERM, SIGINT and SIGHUP set ``stop``."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again: still draining", name)
        else:
            log.info("%s: draining (running activities get %gs to finish)", name, grace)
        stop.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)


async def serve_worker(config: Settings, options: WorkerOptions) -> int:
    """Run a worker until a stop signal; the process's exit code."""
    from activities.deps import Deps
    from worker import build_worker

    stop = asyncio.Event()
    install_stop_signals(stop, config.shutdown_grace)
    ops = OpsServer(config.metrics_bind) if config.metrics_bind else None
    if ops is not None:
        ops.start()
        log.info("metrics and probes on port %d (/metrics, /healthz, /readyz)", ops.port)

    async def open_store() -> Deps:
        return await asyncio.to_thread(Deps.from_settings, config)

    deps = await with_backoff(f"the store at {mask_url(config.db_url)}", open_store, stop=stop)
    if deps is None:
        return 0
    try:
        while not stop.is_set():
            client = await with_backoff(f"Temporal at {config.temporal_address}", lambda: connect(config), stop=stop)
            if client is None:
                break
            deps.client = client
            worker = build_worker(
                client,
                deps,
                task_queue=options.task_queue,
                max_cached_workflows=options.max_cached_workflows,
                max_concurrent_activities=options.max_concurrent_activities,
                graceful_shutdown_timeout=timedelta(seconds=config.shutdown_grace),
                sandbox=config.workflow_sandbox,
            )
            running = asyncio.create_task(worker.run())
            stopping = asyncio.create_task(stop.wait())
            watching = asyncio.create_task(_watch_server(client, config, ops))
            log.info(
                "worker polling task queue %r on %s namespace %r (cache %d workflows, %d activities at once)",
                options.task_queue,
                config.temporal_address,
                config.temporal_namespace,
                options.max_cached_workflows,
                options.max_concurrent_activities,
            )
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            watching.cancel()
            if ops is not None:
                ops.ready = False
            if running.done():
                stopping.cancel()
                error = running.exception()
                log.warning("the worker stopped (%s); reconnecting", error or "no error")
                continue
            await worker.shutdown()
            with contextlib.suppress(Exception):  # the SDK has logged it
                await running
            log.info("worker drained and stopped")
    finally:
        await deps.close()
        if ops is not None:
            ops.stop()
    return 0



async def _watch_server(client: Any, config: Settings, ops: OpsServer | None, every: float = 5.0) -> None:
    """Say when Temporal stops answering and when it is back (the worker keeps polling and
    resumes by itself); `/readyz` follows."""
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    reachable = True
    while True:
        try:
            await client.workflow_service.get_system_info(GetSystemInfoRequest(), timeout=timedelta(seconds=2))
            ok = True
        except Exception:
            ok = False
        if ok != reachable:
            if ok:
                log.info("Temporal at %s answers again; the worker resumes polling", config.temporal_address)
            else:
                log.warning("Temporal at %s does not answer; the worker keeps retrying until it is back", config.temporal_address)
            reachable = ok
        if ops is not None:
            ops.ready = ok
        await asyncio.sleep(every)
