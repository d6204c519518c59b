"""Drills that kill processes: worker processes during enrollments, and the whole `touchpoint dev`.

Each enrollment is an account upsert through the API; the playbook it starts sends one email
(outbox) and creates one task. Lost and doubled are counted on the outbox files (one per email
a customer gets) and the task rows, against one email and one task per account.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import fresh_server, write_project
from bench.drill_support import (
    DrillResult,
    Reaper,
    StoreKind,
    account_doc,
    api,
    drill_folder,
    fire,
    make_deps,
    outbox_recipients,
    python,
    store_counts,
    store_url,
    tally,
    until,
    worker_env,
)
from bench.workers import deploy
from touchpoint.temporal_server import free_port, port_open

QUEUE = "drill"
PLAYBOOK_ID = "drill-enroll"
PLAYBOOK = """\
playbook: drill-enroll
trigger: {event: account.created}
audience: [champion]
steps:
  - email: {template: hello}
    id: hello
  - task: {title: "Call {{ account.name }}", owner: csm, due: 2d}
    id: call
"""
IN_FLIGHT = 50


def _expected(n: int) -> tuple[list[str], list[str]]:
    accounts = [f"acct-{i}" for i in range(n)]
    return [f"c0@{a}.example" for a in accounts], accounts


def _score(result: DrillResult, n: int, outbox: Path, counts: dict[str, Any]) -> None:
    """Fill lost/doubled from the outbox and the task rows."""
    recipients, accounts = _expected(n)
    emails = tally(recipients, outbox_recipients(outbox))
    tasks = tally(accounts, counts["tasks"])
    result.delivered = emails[0] + tasks[0]
    result.lost = emails[1] + tasks[1]
    result.doubled = emails[2] + tasks[2]
    result.detail.update(
        emails={"delivered": emails[0], "lost": emails[1], "doubled": emails[2]},
        tasks={"delivered": tasks[0], "lost": tasks[1], "doubled": tasks[2]},
        runs=counts["runs"],
        runs_ended=counts["ended"],
        sent_rows=len(counts["sent"]),
    )


async def worker_kills(store: StoreKind, *, enrollments: int = 500, kills: int = 20, interval: float = 2.5, workers: int = 2, rate: float | None = None, timeout: float = 600) -> DrillResult:
    """``kill -9`` one of ``workers`` worker processes ``kills`` times during ``enrollments``
    enrollments; a fresh worker replaces each one at once.

    The first enrollment goes alone, to know the workers are up; the others follow at ``rate``
    per second, or all at once (50 in flight) without one. The kills are spread over the run by
    progress (kill k once k/(kills+1) of the emails are out) and at least ``interval`` s apart;
    the drain runs from the last kill until every email and task is there and every run has ended.
    """
    result = DrillResult(f"worker-kills-{store}", f"{kills} kill -9 of worker processes during {enrollments} enrollments ({store})", expected=2 * enrollments)
    begin = time.monotonic()
    with drill_folder(f"kills-{store}") as root, store_url(store, root) as url, Reaper() as reaper:
        async with fresh_server() as server:
            deps = make_deps(root, url)
            try:
                deploy(deps, write_project(root / "playbooks", {PLAYBOOK_ID: PLAYBOOK}))
                env = worker_env(server.address, QUEUE, url, deps.settings.home)
                outbox = deps.settings.outbox_dir
                procs = [reaper.spawn(python("worker.py"), env=env) for _ in range(workers)]

                async def drained() -> bool:
                    counts = await asyncio.to_thread(store_counts, deps, PLAYBOOK_ID)
                    _score(result, enrollments, outbox, counts)
                    return result.lost == 0 and counts["ended"] >= enrollments

                async with api(deps, server.env.client, QUEUE) as http:

                    async def enroll(i: int) -> None:
                        if rate:
                            await asyncio.sleep(max(0.0, paced + (i - 1) / rate - time.monotonic()))
                        (await http.put(f"/accounts/acct-{i}", json=account_doc(f"acct-{i}"))).raise_for_status()

                    paced = 0.0
                    await enroll(0)
                    await _progress(outbox, 1, 0.0, timeout)  # the workers are up
                    paced = time.monotonic()
                    submit = asyncio.create_task(fire(enrollments - 1, enrollments if rate else IN_FLIGHT, lambda i: enroll(i + 1)))
                    try:
                        last = time.monotonic()
                        for k in range(kills):
                            await _progress(outbox, enrollments * (k + 1) // (kills + 1), last + interval, timeout)
                            result.detail.setdefault("emails_at_kill", []).append(len(outbox_recipients(outbox)))
                            slot = k % workers
                            reaper.kill(procs[slot])
                            procs[slot] = reaper.spawn(python("worker.py"), env=env)
                            last = time.monotonic()
                        await submit
                    finally:
                        if not submit.done():
                            submit.cancel()
                    result.detail["kills"] = kills
                    if not await until(drained, timeout=timeout):
                        result.error = f"not drained {timeout:.0f} s after the last kill"
                    result.drain_seconds = round(time.monotonic() - last, 1)
                    await drained()
            finally:
                reaper.close()
                await deps.close()
    result.total_seconds = round(time.monotonic() - begin, 1)
    return result


async def _progress(outbox: Path, emails: int, not_before: float, timeout: float) -> None:
    """Wait until ``emails`` messages are in the outbox and ``not_before`` (monotonic) has passed:
    the kills are spread over the run, each while work is in flight, never closer than the interval.

    Raises:
        TimeoutError: no progress for ``timeout`` seconds (the drill reports it).
    """

    async def reached() -> bool:
        return time.monotonic() >= not_before and await asyncio.to_thread(lambda: len(list(outbox.glob("*.eml"))) if outbox.is_dir() else 0) >= emails

    if not await until(reached, timeout=timeout, every=0.1):
        raise TimeoutError(f"fewer than {emails} emails in the outbox after {timeout:.0f} s")


def _ports() -> tuple[int, int]:
    """A Temporal port whose UI port (+1000) is free too, and an API port."""
    while True:
        port = free_port()
        if port + 1000 < 65536 and not port_open("127.0.0.1", port + 1000):
            return port, free_port()


async def stack_kills(*, enrollments: int = 200, kills: int = 3, interval: float = 5.0, rate: float = 10.0, timeout: float = 600) -> DrillResult:
    """``kill -9`` the whole `touchpoint dev` (its process group: CLI, worker, API and Temporal dev
    server) ``kills`` times, spread over the run like `worker_kills` and at least ``interval`` s
    after the last (re)start, restarting it on the same folder each time; enrollments go through
    its HTTP API at ``rate`` per second (so some arrive while it is down, and are retried as a
    client would). The drain runs from the last restart.
    """
    result = DrillResult("stack-kills", f"{kills} kill -9 of the whole touchpoint dev stack during {enrollments} enrollments, restarted on the same folder", expected=2 * enrollments)
    begin = time.monotonic()
    with drill_folder("stack") as root, Reaper() as reaper:
        write_project(root / "playbooks", {PLAYBOOK_ID: PLAYBOOK})
        port, api_port = _ports()
        base = f"http://127.0.0.1:{api_port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "TOUCHPOINT_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
            "TOUCHPOINT_API_BIND": f"127.0.0.1:{api_port}",
            "TOUCHPOINT_HOME": str(root / ".touchpoint"),
        }
        env.pop("TOUCHPOINT_DATABASE_URL", None)
        outbox = root / ".touchpoint" / "outbox"
        retries = accepted = 0
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:

            async def up() -> bool:
                try:
                    return (await http.get("/openapi.json")).status_code == 200
                except httpx.HTTPError:
                    return False

            async def start() -> Any:
                proc = reaper.spawn(python("-m", "touchpoint.cli.main", "dev", "playbooks"), env=env, cwd=root, group=True, log=root / "dev.log")
                if not await until(up, timeout=120, every=0.1):
                    raise RuntimeError(f"touchpoint dev did not come up (exit {proc.poll()}); see its log")
                return proc

            async def enroll(i: int) -> None:
                nonlocal retries, accepted
                await asyncio.sleep(max(0.0, paced + i / rate - time.monotonic()))
                while True:
                    try:
                        response = await http.put(f"/accounts/acct-{i}", json=account_doc(f"acct-{i}"))
                        if response.status_code == 202:
                            accepted += 1
                            return
                    except httpx.HTTPError:
                        pass
                    retries += 1  # the stack is down or restarting: as a client would, try again
                    await asyncio.sleep(0.2)

            proc = await start()
            paced = time.monotonic()
            deps = make_deps(root, f"sqlite:///{root / '.touchpoint' / 'touchpoint.db'}")
            try:
                submit = asyncio.create_task(fire(enrollments, enrollments, enroll))
                try:
                    last = time.monotonic()
                    for k in range(kills):
                        await _progress(outbox, enrollments * (k + 1) // (kills + 1), last + interval, timeout)
                        result.detail.setdefault("emails_at_kill", []).append(len(outbox_recipients(outbox)))
                        result.detail.setdefault("enrolled_at_kill", []).append(accepted)
                        reaper.kill(proc)
                        proc = await start()
                        last = time.monotonic()
                    await submit
                finally:
                    if not submit.done():
                        submit.cancel()

                async def drained() -> bool:
                    counts = await asyncio.to_thread(store_counts, deps, PLAYBOOK_ID)
                    _score(result, enrollments, outbox, counts)
                    return result.lost == 0 and counts["ended"] >= enrollments

                result.detail.update(kills=kills, put_retries=retries)
                if not await until(drained, timeout=timeout):
                    result.error = f"not drained {timeout:.0f} s after the last restart"
                result.drain_seconds = round(time.monotonic() - last, 1)
                await drained()
            finally:
                reaper.close()
                await deps.close()
    result.total_seconds = round(time.monotonic() - begin, 1)
    return result
