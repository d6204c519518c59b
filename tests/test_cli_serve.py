"""`touchpoint worker` and `touchpoint api` from the command line: their flags (not only their
variables) and their help, as an operator types them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}
    return {**base, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **extra}


def _cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "touchpoint.cli.main", *args], cwd=ROOT, env=_env(**extra), capture_output=True, text=True, timeout=60)


def test_cli_serve_help_names_the_variable_behind_each_default() -> None:
    worker = _cli("worker", "--help")
    assert worker.returncode == 0, worker.stderr
    for text in (
        "Queue to poll [default: TOUCHPOINT_TASK_QUEUE].",
        "Workflows kept in memory [default: TOUCHPOINT_WORKER_CACHE].",
        "Activities at once [default: TOUCHPOINT_MAX_CONCURRENT_ACTIVITIES].",
    ):
        assert text in worker.stdout, worker.stdout
    api = _cli("api", "--help")
    assert api.returncode == 0 and "host:port [default: TOUCHPOINT_API_BIND]." in api.stdout, api.stdout
