"""What the failure drills share: their result, the processes they start, stores and counts.

Every drill counts what a customer or a provider would see (outbox files, requests accepted by
a stand-in, store rows), never workflow internals, so the drills keep working through engine
rewrites. Every process a drill starts goes through `Reaper`, which kills and waits for all of
them on the way out, also when the drill fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select

from activities.deps import Deps
from touchpoint.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
StoreKind = Literal["sqlite", "postgresql"]


@dataclass
class DrillResult:
    """One drill: what was expected, what arrived, and how long it took to settle.

    ``lost`` counts expected effects that never happened, ``doubled`` effects that happened more
    than once; the goal is 0 and 0. ``drain_seconds`` runs from the last disruption (kill,
    restart, or the end of the burst) until every effect is there and every run has ended.
    """

    key: str
    title: str
    expected: int
    delivered: int = 0
    lost: int = 0
    doubled: int = 0
    drain_seconds: float = float("nan")
    total_seconds: float = float("nan")
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing doubled, no error."""
        return self.error is None and self.lost == 0 and self.doubled == 0

    def as_json(self) -> dict[str, Any]:
        """The drill as stored in the results file."""
        return {**asdict(self), "ok": self.ok}


def tally(expected: Iterable[str], seen: Iterable[str]) -> tuple[int, int, int]:
    """(delivered, lost, doubled) of effects keyed by ``expected`` given what was ``seen``.

    An unexpected key seen counts as doubled: it is an effect nobody asked for.
    """
    counts = Counter(seen)
    wanted = set(expected)
    lost = sum(1 for key in wanted if counts[key] == 0)
    doubled = sum(max(0, n - 1) if key in wanted else n for key, n in counts.items())
    return sum(min(1, counts[key]) for key in wanted), lost, doubled


class Reaper:
    """Starts processes and guarantees they are gone afterwards (SIGKILL, then wait).

    Processes started with ``group=True`` lead a session of their own; killing them kills their
    whole process group (`touchpoint dev` and the Temporal server it runs), and `kill` waits
    until no process of the group is left.
    """

    def __init__(self) -> None:
        self.processes: list[tuple[subprocess.Popen[bytes], bool]] = []

    def spawn(self, args: list[str], *, env: Mapping[str, str], cwd: Path = ROOT, group: bool = False, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``args`` (output to ``log`` or nowhere)."""
        out: Any = open(log, "ab") if log else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(args, env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=group)
        finally:
            if log:
                out.close()
        self.processes.append((proc, group))
        return proc

    def kill(self, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        """``kill -9`` the process (its group when it leads one) and reap it."""
        group = next((g for p, g in self.processes if p is proc), False)
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        proc.wait(timeout)
        if group:
            _wait_group_gone(proc.pid, timeout)

    def close(self) -> None:
        """Kill and reap everything still running."""
        for proc, group in self.processes:
            if proc.poll() is None or group:
                with contextlib.suppress(Exception):
                    self.kill(proc)
        self.processes.clear()

    def __enter__(self) -> Reaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Wait until no process of group ``pgid`` exists (orphans are reaped by init)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.05)
    raise TimeoutError(f"process group {pgid} still has processes {timeout:.0f} s after SIGKILL")


@contextlib.contextmanager
def drill_folder(prefix: str) -> Iterator[Path]:
    """A fresh temporary folder for one drill."""
    with tempfile.TemporaryDirectory(prefix=f"touchpoint-drill-{prefix}-") as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def store_url(kind: StoreKind, root: Path) -> Iterator[str]:
    """A fresh store: a SQLite file under ``root`` or a PostgreSQL schema of its own (dropped after).

    The PostgreSQL server is the tests' (`tests/pg.py`, ``TOUCHPOINT_TEST_POSTGRES_URL``).
    """
    if kind == "sqlite":
        yield f"sqlite:///{root / 'home' / 'touchpoint.db'}"
        return
    from tests import pg

    with pg.schema("tp_drill") as schema:
        yield pg.schema_url(schema)


def make_deps(root: Path, url: str, *, email_backend: Any = None, crm_backend: Any = None) -> Deps:
    """The drill's store (migrated) and backends, home ``root/home`` like its workers' (outbox there)."""
    settings = load_settings(home=root / "home", database_url=url, email_backend="outbox", crm_backend="local")
    settings.home.mkdir(parents=True, exist_ok=True)
    return Deps.from_settings(settings, email_backend=email_backend, crm_backend=crm_backend)


def worker_env(address: str, queue: str, url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a production worker process (`python worker.py`): outside `touchpoint
    dev` it refuses to start without a secret key, so a drill run from a shell brings its own."""
    return {
        "TOUCHPOINT_SECRET_KEY": secrets.token_urlsafe(40),
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TOUCHPOINT_TEMPORAL_ADDRESS": address,
        "TOUCHPOINT_TASK_QUEUE": queue,
        "TOUCHPOINT_DATABASE_URL": url,
        "TOUCHPOINT_HOME": str(home),
        **extra,
    }


def python(*args: str) -> list[str]:
    """A command line running this interpreter."""
    return [sys.executable, *args]


def outbox_recipients(outbox: Path) -> list[str]:
    """The ``To`` address of every message in an outbox folder (one entry per file)."""
    parser = BytesHeaderParser()
    found = []
    for path in outbox.glob("*.eml"):
        with path.open("rb") as handle:
            to = parser.parse(handle).get("To", "")
        found.append(to.rsplit("<", 1)[-1].rstrip(">").strip().lower())
    return found


def store_counts(deps: Deps, playbook: str) -> dict[str, Any]:
    """Runs of ``playbook`` (all, ended), sent messages by recipient and tasks by account."""
    from touchpoint.store.models import Message, Run, Task

    with deps.sessions() as s:
        runs = s.scalar(select(func.count()).select_from(Run).where(Run.playbook_id == playbook)) or 0
        ended = s.scalar(select(func.count()).select_from(Run).where(Run.playbook_id == playbook, Run.status == "ended")) or 0
        sent = [str(to) for to in s.scalars(select(Message.to_email).where(Message.status == "sent"))]
        tasks = [str(a) for a in s.scalars(select(Task.account_id))]
    return {"runs": runs, "ended": ended, "sent": sent, "tasks": tasks}


async def until(probe: Callable[[], Awaitable[bool]], *, timeout: float, every: float = 0.25) -> bool:
    """Poll ``probe`` until it is true or ``timeout`` passes; True when it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return True
        await asyncio.sleep(every)
    return False


async def fire(n: int, in_flight: int, start: Callable[[int], Awaitable[Any]]) -> None:
    """Call ``start(i)`` for i in range(n), ``in_flight`` at a time."""
    sem = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with sem:
            await start(i)

    await asyncio.gather(*(one(i) for i in range(n)))


@contextlib.asynccontextmanager
async def api(deps: Deps, client: Any, queue: str) -> AsyncIterator[Any]:
    """Touchpoint's API in-process (ASGI), bound to the drill's server, queue and store."""
    import httpx

    from touchpoint.api.app import create_app

    settings = load_settings(home=deps.settings.home, database_url=deps.settings.db_url, task_queue=queue)
    app = create_app(settings, client, deps.sessions)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://touchpoint.drill", timeout=60) as http:
        yield http


def account_doc(account_id: str, contacts: int = 1) -> dict[str, Any]:
    """An account with ``contacts`` champions and a CSM."""
    return {
        "id": account_id,
        "name": f"Drill {account_id}",
        "timezone": "UTC",
        "csm": {"name": "Dana", "email": "dana@drill.example"},
        "contacts": [{"email": f"c{i}@{account_id}.example", "name": f"C{i}", "role": "champion"} for i in range(contacts)],
    }
