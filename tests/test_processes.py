"""Clean processes: `touchpoint dev` stops everything on SIGINT/SIGTERM/SIGHUP, its server dies
with it when it is killed, it keeps a generated secret key, it logs human lines, and the suite
catches leftovers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import descendants, write_folder
from touchpoint.temporal_server import free_port

ROOT = Path(__file__).resolve().parent.parent
FOLDER = {
    "workspace.yaml": 'timezone: UTC\nsender: {email: cs@example.com}\nsend_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}\n',
    "hello.yaml": "playbook: hello\ntrigger: manual\nsteps:\n  - email: {template: hi}\n    id: hi\n",
    "templates/hi.subject.j2": "Hi",
    "templates/hi.html.j2": "<p>Hi</p>",
}


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return state[state.rindex(")") + 2] == "Z"


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if not _gone(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if not _gone(pid)]


def _frontend_port() -> int:
    """A free port whose web UI port (`touchpoint dev` serves it 1000 above) is free too: other
    tests' servers pick ports at random, and a taken UI port stops the dev server at start."""
    while True:
        port = free_port()
        if port + 1000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1000))
            except OSError:
                continue
        return port


class Dev:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.api = f"http://127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TOUCHPOINT_TEMPORAL_ADDRESS": f"127.0.0.1:{_frontend_port()}",
            "TOUCHPOINT_API_BIND": self.api.removeprefix("http://"),
        }
        env.pop("TOUCHPOINT_SECRET_KEY", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "touchpoint.cli.main", "dev", "playbooks"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.close()  # a failed start leaves no process and no open pipe to the next test
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(f"{self.api}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "touchpoint dev did not come up"
            time.sleep(0.1)

    def output(self) -> str:
        return self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    write_folder(tmp_path / "playbooks", FOLDER)
    running = Dev(tmp_path)
    try:
        yield running
    finally:
        running.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["TERM", "INT", "HUP"])
def test_dev_stops_server_worker_and_api_on_signal(dev: Dev, signum: int) -> None:
    children = list(descendants(dev.process.pid))
    assert any("start-dev" in cmd for cmd in descendants(dev.process.pid).values()), "no dev server child"
    started = time.monotonic()
    dev.process.send_signal(signum)
    code = dev.process.wait(timeout=10)
    elapsed = time.monotonic() - started
    assert code == 0, dev.output()
    assert _wait_gone(children, 10 - elapsed) == [], "a child outlived touchpoint dev"
    assert time.monotonic() - started < 10
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{dev.api}/healthz", timeout=1)


def test_dev_server_exits_when_dev_is_killed(dev: Dev) -> None:
    server = [pid for pid, cmd in descendants(dev.process.pid).items() if "start-dev" in cmd]
    assert server, "no dev server child"
    dev.process.kill()
    dev.process.wait(timeout=10)
    assert _wait_gone(server, 10) == [], "the dev server outlived a SIGKILL of touchpoint dev"


def test_dev_generates_a_private_secret_key_and_keeps_it(dev: Dev) -> None:
    key_file = dev.root / ".touchpoint" / "secret_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    assert len(key) >= 32
    dev.process.send_signal(signal.SIGTERM)
    dev.process.wait(timeout=10)
    assert key not in dev.output()
    again = Dev(dev.root)
    try:
        assert key_file.read_text().strip() == key
    finally:
        again.process.send_signal(signal.SIGTERM)
        again.process.wait(timeout=10)
        again.close()


def test_dev_logs_human_lines_with_the_work_in_progress(dev: Dev) -> None:
    account = {"name": "Acme", "contacts": [{"email": "kim@acme.example", "role": "champion"}]}
    assert httpx.put(f"{dev.api}/accounts/acme", json=account, timeout=30).status_code == 202
    assert httpx.post(f"{dev.api}/runs", json={"playbook": "hello", "account_id": "acme"}, timeout=30).status_code == 201
    deadline = time.monotonic() + 60
    while not list((dev.root / ".touchpoint" / "outbox").glob("*.eml")):
        assert time.monotonic() < deadline and dev.process.poll() is None, "no email was sent"
        time.sleep(0.1)
    dev.process.send_signal(signal.SIGTERM)
    assert dev.process.wait(timeout=10) == 0
    lines = dev.output().splitlines()
    # `HH:MM:SS LEVEL logger: message [account=... playbook=... run=... step=...]`, never JSON.
    assert not [line for line in lines if line.lstrip().startswith("{")], lines
    sent = [line for line in lines if "activities.email: email sent" in line]
    assert len(sent) == 1, lines
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO +activities\.email: email sent \(message m\w+, template hi, via outbox\) \[account=acme playbook=hello run=\S+ step=hi\]", sent[0]), sent


def test_suite_fails_when_a_test_leaves_a_process_behind(tmp_path: Path) -> None:
    test_file = tmp_path / "test_leaky.py"
    test_file.write_text(
        textwrap.dedent(
            """
            import subprocess

            def test_leaky():
                child = subprocess.Popen(["sleep", "60"])
                child.returncode = 0  # not waited for: left behind
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:unraisableexception", str(test_file)],
        cwd=ROOT,
        env={**os.environ, "TOUCHPOINT_LEFTOVER_GRACE": "0.5"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "left behind by the tests (now killed)" in result.stdout
    assert "test_leaky.py::test_leaky): sleep 60" in result.stdout
