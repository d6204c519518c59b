"""A second worker process for the 2-worker runs: ``python -m bench.worker_proc KIND ADDRESS QUEUE PATH``.

KIND is ``touchpoint`` (PATH is the store's home folder, shared with the first worker) or
``baseline`` (PATH is the baseline's SQLite file). Prints ``ready`` once it polls; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from temporalio.client import Client

from bench.workers import baseline_worker, touchpoint_deps, touchpoint_worker
from touchpoint.converter import DATA_CONVERTER


async def serve(kind: str, address: str, queue: str, path: Path) -> None:
    """Run one worker until SIGTERM."""
    client = await Client.connect(address, data_converter=DATA_CONVERTER)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "touchpoint":
        deps = touchpoint_deps(path)
        try:
            async with touchpoint_worker(client, deps, queue):
                print("ready", flush=True)
                await stop.wait()
        finally:
            await deps.close()
    else:
        async with baseline_worker(client, path, queue):
            print("ready", flush=True)
            await stop.wait()


if __name__ == "__main__":
    kind, address, queue, path = sys.argv[1:5]
    asyncio.run(serve(kind, address, queue, Path(path)))
    sys.stdout.flush()
    os._exit(0)  # sdk-python #300: skip the interpreter's teardown
