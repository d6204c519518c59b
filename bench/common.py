"""What every scenario shares: figures, fresh servers, bench playbook folders, store counts."""

from __future__ import annotations

import asyncio
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from temporalio.testing import WorkflowEnvironment

from touchpoint.temporal_server import free_port, start_dev_server

Better = Literal["higher", "lower"]

WORKSPACE = """\
timezone: UTC
sender: {email: cs@bench.example, name: Bench CS}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
"""
TEMPLATES = {
    "templates/hello.subject.j2": "Welcome to Bench, {{ account.name }}",
    "templates/hello.html.j2": "<p>Hi {{ contact.name }}, welcome aboard.</p>",
}


@dataclass
class Figure:
    """One measured quantity, Touchpoint next to bare Temporal."""

    name: str
    unit: str
    touchpoint: float
    baseline: float
    better: Better

    @property
    def ratio(self) -> float:
        """Touchpoint / baseline (read it with ``better``: >1 is good for rates, bad for times)."""
        return self.touchpoint / self.baseline if self.baseline else float("nan")

    def as_json(self) -> dict[str, Any]:
        """The figure with its ratio, for the results file."""
        return {**asdict(self), "ratio": round(self.ratio, 3)}


@dataclass
class Scenario:
    """A scenario's figures, its goal and what was measured versus computed."""

    key: str
    title: str
    goal: str
    figures: list[Figure] = field(default_factory=list)
    met: bool | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The scenario as stored in ``bench/results/<timestamp>.json``."""
        return {
            "title": self.title,
            "goal": self.goal,
            "met": self.met,
            "figures": [f.as_json() for f in self.figures],
            "notes": self.notes,
            "extra": self.extra,
        }


def machine() -> dict[str, Any]:
    """The machine the figures belong to."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(), "system": platform.platform()}


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    """The median, NaN when empty."""
    return statistics.median(values) if values else float("nan")


def rss_kb(pid: int | str = "self") -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in KiB, from /proc (Linux)."""
    current = peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    return current, peak


def db_size(path: Path) -> int:
    """Bytes of a SQLite database with its WAL and shared-memory files."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


@dataclass
class Server:
    """A fresh dev server with the embedded default's settings, in its own folder."""

    env: WorkflowEnvironment
    root: Path
    address: str

    @property
    def database(self) -> Path:
        """The server's SQLite file."""
        return self.root / "temporal.db"


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(server: Server) -> int | None:
    """The pid of the dev server process started for ``server`` (found by its database file)."""
    marker = str(server.database)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "start-dev" in cmdline and marker in cmdline:
            return int(entry.name)
    return None


@dataclass
class CpuMeter:
    """CPU seconds used by the dev server and by the worker processes between start and stop.

    The worker side is this process (the in-process worker, and the bench's own client calls,
    which stand for the API's) plus any extra worker processes.
    """

    server: int | None
    workers: list[int] = field(default_factory=list)
    _begin: tuple[float, float] = (0.0, 0.0)

    def _now(self) -> tuple[float, float]:
        server = cpu_seconds(self.server) if self.server else float("nan")
        return server, cpu_seconds() + sum(cpu_seconds(pid) for pid in self.workers)

    def start(self) -> None:
        """Take the first reading."""
        self._begin = self._now()

    def per_item_ms(self, items: int) -> dict[str, float]:
        """Milliseconds of CPU per item since ``start``: server and workers."""
        server, workers = self._now()
        return {
            "server_cpu_ms": round((server - self._begin[0]) * 1000 / items, 1),
            "worker_cpu_ms": round((workers - self._begin[1]) * 1000 / items, 1),
        }


@asynccontextmanager
async def fresh_server() -> AsyncIterator[Server]:
    """Start ``temporal server start-dev`` on a free port with a new SQLite file (WAL pragmas)."""
    with tempfile.TemporaryDirectory(prefix="touchpoint-bench-") as tmp:
        root = Path(tmp)
        port = free_port()
        env = await start_dev_server(port=port, database_file=root / "temporal.db", wal=True)
        try:
            yield Server(env=env, root=root, address=f"127.0.0.1:{port}")
        finally:
            await env.shutdown()


def write_project(root: Path, playbooks: dict[str, str]) -> Path:
    """A playbooks folder with the bench workspace and templates plus ``playbooks`` (name: YAML)."""
    files = {"workspace.yaml": WORKSPACE, **TEMPLATES, **{f"{name}.yaml": body for name, body in playbooks.items()}}
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def account_doc(account_id: str) -> dict[str, Any]:
    """A small account with one champion and a CSM (the task's owner)."""
    return {
        "id": account_id,
        "name": f"Bench {account_id}",
        "timezone": "UTC",
        "seats": {"licensed": 100, "active": 10},
        "csm": {"name": "Dana", "email": "dana@bench.example"},
        "contacts": [{"email": f"kim@{account_id}.example", "name": "Kim", "role": "champion"}],
    }


_POLLER = ThreadPoolExecutor(1, thread_name_prefix="bench-poller")


def count_rows(database: Path, sql: str) -> int:
    """One integer from a read-only query on a SQLite file (the store or the baseline's)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def wait_for_count(database: Path, sql: str, target: int, *, timeout: float, poll: float = 0.05) -> float:
    """Poll until ``sql`` counts ``target`` rows; returns the monotonic time it did.

    Raises:
        TimeoutError: with the count reached, so a stuck scenario says how far it got.
    """
    deadline = time.monotonic() + timeout
    found = 0
    while time.monotonic() < deadline:
        try:
            # In its own thread: the worker under test shares this process's event loop and the
            # default executor (its activities).
            found = await asyncio.get_running_loop().run_in_executor(_POLLER, count_rows, database, sql)
        except sqlite3.OperationalError:  # the table is not there yet
            found = 0
        if found >= target:
            return time.monotonic()
        await asyncio.sleep(poll)
    raise TimeoutError(f"{found} of {target} rows after {timeout:.0f} s for: {sql}")
