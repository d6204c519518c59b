"""The operator's CLI against a running `touchpoint dev` stack, as separate processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_folder
from touchpoint.temporal_server import free_port

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = """\
playbook: setup
trigger: manual
audience: [champion]
steps:
  - email: {template: hi}
    id: hello
  - task: {title: "Set up SSO for {{ account.name }}", owner: csm, due: 3d, await: true}
    id: sso
  - note: {text: "SSO done"}
    id: done
  - wait: 30d
    id: long
"""
ACCOUNT = """\
id: acme
name: Acme
timezone: UTC
csm: {name: Dana, email: dana@example.com}
contacts: [{email: kim@acme.example, name: Kim, role: champion}]
"""


def dev_servers(folder: Path) -> list[int]:
    """Pids of Temporal dev servers whose database lives under ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "start-dev" in cmdline and str(folder) in cmdline:
                found.append(int(entry.name))
    return found


@contextlib.contextmanager
def running_dev(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str], str]]:
    """`touchpoint dev` in a session of its own, up and answering; its whole group is gone after."""
    write_folder(
        tmp_path / "playbooks",
        {
            "workspace.yaml": 'timezone: UTC\nsender: {email: cs@example.com}\nsend_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}\n',
            "setup.yaml": PLAYBOOK,
            "templates/hi.subject.j2": "Hi {{ account.name }}",
            "templates/hi.html.j2": "<p>Hello {{ contact.name }}</p>",
        },
    )
    (tmp_path / "acme.yaml").write_text(ACCOUNT)
    api_port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TOUCHPOINT_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TOUCHPOINT_API_BIND": f"127.0.0.1:{api_port}",
        "COLUMNS": "200",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "touchpoint.cli.main", "dev", "playbooks"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                if httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "touchpoint dev did not come up"
            time.sleep(0.2)
        env["CWD"] = str(tmp_path)
        yield process, env, url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Whatever of its group is left (a Temporal server, should its shutdown have failed).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.stdout:
            process.stdout.close()


@pytest.fixture
def dev_stack(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    with running_dev(tmp_path) as (_, env, url):
        yield env, url


def test_cli_stack_sigterm_stops_the_temporal_server_it_started(tmp_path: Path) -> None:
    with running_dev(tmp_path) as (process, _, _):
        servers = dev_servers(tmp_path)
        assert len(servers) == 1
        process.terminate()
        assert process.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while dev_servers(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dev_servers(tmp_path) == [], "touchpoint dev left its Temporal server running after SIGTERM"


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "touchpoint.cli.main", *args], cwd=env["CWD"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def wait_for_output(env: dict[str, str], args: tuple[str, ...], text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = cli(env, *args)
        if text in out:
            return out
        assert time.monotonic() < deadline, f"{text!r} never appeared in {out}"
        time.sleep(0.3)


def test_cli_stack_operates_runs_tasks_and_outbox(dev_stack: tuple[dict[str, str], str]) -> None:
    env, url = dev_stack
    assert "accepted 1 account" in cli(env, "accounts", "put", "acme.yaml").splitlines()
    wait_for_output(env, ("accounts", "list"), "acme")
    cli(env, "start", "setup", "--account", "acme")
    out = wait_for_output(env, ("status", "--account", "acme"), "at sso")
    assert "setup acme" in out and "running" in out
    outbox = cli(env, "outbox")
    assert "kim@acme.example" in outbox and "Hi Acme" in outbox
    tasks = wait_for_output(env, ("tasks",), "Set up SSO for Acme")
    assert "dana@example.com" in tasks
    task_id = next(word for word in tasks.split() if word.startswith("task_"))
    assert f"completed {task_id}" in cli(env, "tasks", "complete", task_id)
    wait_for_output(env, ("status", "--account", "acme"), "at long")
    runs = httpx.get(f"{url}/runs", params={"account": "acme"}).json()
    (run,) = runs
    assert (run["playbook"], run["status"], run["step"]) == ("setup", "running", "long")
    cli(env, "runs", "pause", run["id"])
    wait_for_output(env, ("status", "--account", "acme"), "paused")
    cli(env, "runs", "resume", run["id"])
    cli(env, "runs", "cancel", run["id"])
    out = wait_for_output(env, ("status", "--account", "acme"), "outcome cancelled")
    assert "ended" in out
