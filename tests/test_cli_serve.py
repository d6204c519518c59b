"""`touchpoint worker` and `touchpoint api` from the command line: their flags (not only their
variables) and their help, as an operator types them. `touchpoint worker --task-queue
--max-cached-workflows` are run as flags in tests/test_worker_process.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import descendants
from touchpoint.temporal_server import free_port

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


def test_python_m_worker_refuses_to_start_without_a_secret_key() -> None:
    result = subprocess.run([sys.executable, "-m", "worker"], cwd=ROOT, env=_env(TOUCHPOINT_TEMPORAL_ADDRESS="127.0.0.1:1"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "TOUCHPOINT_SECRET_KEY is not set" in result.stderr


@pytest.mark.timeout(120)
def test_api_workers_flag_serves_from_that_many_processes(tmp_path: Path) -> None:
    port = free_port()
    env = _env(
        TOUCHPOINT_SECRET_KEY="k" * 40,
        TOUCHPOINT_HOME=str(tmp_path / "home"),
        TOUCHPOINT_DATABASE_URL=f"sqlite:///{tmp_path}/store.db",
        TOUCHPOINT_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",  # nothing there: /readyz says so
    )
    log_file = tmp_path / "api.log"
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "touchpoint.cli.main", "api", "--workers", "2", "--bind", f"127.0.0.1:{port}"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while log_file.read_text().count("API ready on") < 2 or _status(f"http://127.0.0.1:{port}/healthz") != 200:
            assert process.poll() is None and time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.2)
        workers = [pid for pid, cmd in descendants(process.pid).items() if "spawn_main" in cmd]
        assert len(workers) == 2, descendants(process.pid)
        assert all(_status(f"http://127.0.0.1:{port}/healthz") == 200 for _ in range(10))
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["temporal"].startswith("unreachable"), ready.text
        lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
        assert sum(1 for line in lines if line["msg"].startswith("API ready on")) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_file.read_text()
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() and "spawn_main" in _cmdline(pid) for pid in workers):
            assert time.monotonic() < deadline, "a uvicorn worker outlived `touchpoint api`"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
