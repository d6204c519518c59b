"""Scenario: events at product volume, to existing accounts, in batches (issue 21).

Touchpoint: a `touchpoint api` process (the production API, a process of its own) and a worker
in this process, one dev server, the SQLite store. N accounts exist beforehand (their account
workflows too); a playbook is deployed whose `wait_for` listens to `webinar.attended` and
`meeting.booked` (no run waits: a listened event is applied by its account's workflow and
changes nothing else). Events are posted as `POST /events` batches of 500, 4 batches in flight,
spread over the accounts; each phase is timed from the first batch until `GET /events` (one
call per account, `type` filter) lists every event of the phase:

- quiet: every event of a type nothing deployed listens to (recorded in the store, no workflow);
- listened: every event of a listened type (each a signal and a workflow task);
- mixed: 90% quiet, 10% listened.

Bare Temporal: the same N accounts as bare account workflows (`BareEvents`, signalled-with-start
by their first event, untimed); the timed events are one signal-with-start each (100 in flight),
each recorded by one local activity, until every row exists: the least an event that reaches a
workflow costs. Both figures are events per second on the same server settings.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    CpuMeter,
    Figure,
    Scenario,
    Server,
    account_doc,
    fresh_server,
    server_pid,
    wait_for_count,
    write_project,
)
from bench.workers import baseline_worker, deploy, store_file, touchpoint_deps, touchpoint_worker
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.ingest import put_account
from touchpoint.temporal_server import free_port

QUEUE = "bench"
BATCH = 500
BATCHES_IN_FLIGHT = 4
SIGNALS_IN_FLIGHT = 100
ROOT = Path(__file__).resolve().parent.parent
LISTEN = """\
playbook: bench-listen
trigger: manual
steps:
  - wait_for: {event: [webinar.attended, meeting.booked], timeout: 30d}
"""
QUIET, LISTENED = "feature.used", "webinar.attended"
MIX_QUIET, MIX_LISTENED = "page.viewed", "meeting.booked"


@asynccontextmanager
async def api_process(server: Server, home: Path) -> AsyncIterator[tuple[str, int]]:
    """`touchpoint api` on a free port against the server and the store; yields (url, pid)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TOUCHPOINT_TEMPORAL_ADDRESS": server.address,
        "TOUCHPOINT_DATABASE_URL": f"sqlite:///{store_file(home)}",
        "TOUCHPOINT_TASK_QUEUE": QUEUE,
        "TOUCHPOINT_HOME": str(home),
        "TOUCHPOINT_SECRET_KEY": secrets.token_urlsafe(40),
        "TOUCHPOINT_LOG_LEVEL": "WARNING",
    }
    log = open(server.root / "api.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "touchpoint.cli.main", "api", "--bind", f"127.0.0.1:{port}"], env=env, cwd=server.root, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"touchpoint api exited ({proc.returncode}): {(server.root / 'api.log').read_text()[-2000:]}")
                try:
                    if (await http.get(f"{url}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("touchpoint api did not get ready in 60 s")
                await asyncio.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _events(phase: str, n: int, accounts: Sequence[str], listened_every: int) -> list[dict[str, Any]]:
    """``n`` events spread over the accounts; every ``listened_every``-th one listened (0: none, 1: all)."""
    quiet_type, listened_type = (MIX_QUIET, MIX_LISTENED) if phase == "mixed" else (QUIET, LISTENED)
    out = []
    for i in range(n):
        listened = listened_every > 0 and i % listened_every == 0
        out.append({"type": listened_type if listened else quiet_type, "account_id": accounts[i % len(accounts)], "id": f"{phase}-{i}", "data": {"n": i}})
    return out


async def _post(http: httpx.AsyncClient, url: str, events: list[dict[str, Any]]) -> None:
    gate = asyncio.Semaphore(BATCHES_IN_FLIGHT)

    async def one(batch: list[dict[str, Any]]) -> None:
        async with gate:
            response = await http.post(f"{url}/events", json=batch)
            response.raise_for_status()
            refused = [r for r in response.json() if r["status"] != "accepted"]
            if refused:
                raise RuntimeError(f"{len(refused)} events rejected, e.g. {refused[0]}")

    await asyncio.gather(*(one(events[i : i + BATCH]) for i in range(0, len(events), BATCH)))


async def _listed(http: httpx.AsyncClient, url: str, events: list[dict[str, Any]], timeout: float) -> float:
    """Poll `GET /events` per account until every event is listed; the monotonic time it was."""
    want: dict[tuple[str, str], int] = {}
    for e in events:
        want[(e["account_id"], e["type"])] = want.get((e["account_id"], e["type"]), 0) + 1
    gate = asyncio.Semaphore(8)
    deadline = time.monotonic() + timeout

    async def complete(key: tuple[str, str]) -> bool:
        async with gate:
            response = await http.get(f"{url}/events", params={"account": key[0], "type": key[1], "limit": 1000})
            response.raise_for_status()
            return len(response.json()) >= want[key]

    pending = list(want)
    while pending:
        done = await asyncio.gather(*(complete(key) for key in pending))
        pending = [key for key, ok in zip(pending, done, strict=True) if not ok]
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} (account, type) pairs not fully listed after {timeout:.0f} s")
            await asyncio.sleep(0.2)
    return time.monotonic()


async def touchpoint_rates(accounts: int, sizes: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Events per second for each phase, through a `touchpoint api` process."""
    out: dict[str, dict[str, Any]] = {}
    async with fresh_server() as server:
        home = server.root / "touchpoint"
        deps = touchpoint_deps(home)
        try:
            deploy(deps, write_project(server.root / "playbooks", {"bench-listen": LISTEN}))
            client = server.env.client
            ids = [f"acct-{i}" for i in range(accounts)]
            async with touchpoint_worker(client, deps, QUEUE), api_process(server, home) as (url, api_pid):
                gate = asyncio.Semaphore(SIGNALS_IN_FLIGHT)

                async def upsert(account_id: str) -> None:
                    async with gate:
                        await put_account(client, QUEUE, deps.sessions, AccountDoc.model_validate(account_doc(account_id)))

                await asyncio.gather(*(upsert(a) for a in ids))
                await wait_for_count(store_file(home), "SELECT count(*) FROM events WHERE type = 'account.created'", accounts, timeout=120 + accounts)
                async with httpx.AsyncClient(timeout=120) as http:
                    for phase, every in (("quiet", 0), ("listened", 1), ("mixed", 10)):
                        events = _events(phase, sizes[phase], ids, every)
                        meter = CpuMeter(server_pid(server), [api_pid])
                        meter.start()
                        begin = time.monotonic()
                        await _post(http, url, events)
                        accepted = time.monotonic()
                        done = await _listed(http, url, events, timeout=300 + len(events) / 5)
                        out[phase] = {
                            "events": len(events),
                            "listened": sum(1 for e in events if e["type"] in (LISTENED, MIX_LISTENED)),
                            "rate": len(events) / (done - begin),
                            "accept_seconds": round(accepted - begin, 2),
                            "total_seconds": round(done - begin, 2),
                            **meter.per_item_ms(len(events)),
                        }
        finally:
            await deps.close()
    return out


async def baseline_rate(accounts: int, n: int) -> tuple[float, dict[str, Any]]:
    """Bare: signal-with-start of existing `BareEvents` workflows, one local activity per event."""
    async with fresh_server() as server:
        database = server.root / "bare.db"
        client = server.env.client
        async with baseline_worker(client, database, QUEUE):
            gate = asyncio.Semaphore(SIGNALS_IN_FLIGHT)

            async def signal(account: int, key: str) -> None:
                async with gate:
                    await client.start_workflow(
                        "BareEvents", id=f"bare-events/acct-{account}", task_queue=QUEUE, start_signal="ingest", start_signal_args=[key]
                    )

            await asyncio.gather(*(signal(a, f"hello-{a}") for a in range(accounts)))
            await wait_for_count(database, "SELECT count(*) FROM events", accounts, timeout=120 + accounts)
            meter = CpuMeter(server_pid(server), [])
            meter.start()
            begin = time.monotonic()
            await asyncio.gather(*(signal(i % accounts, f"event-{i}") for i in range(n)))
            accepted = time.monotonic()
            done = await wait_for_count(database, "SELECT count(*) FROM events", accounts + n, timeout=300 + n / 5)
            cpu = meter.per_item_ms(n)
    return n / (done - begin), {"events": n, "accept_seconds": round(accepted - begin, 2), "total_seconds": round(done - begin, 2), **cpu}


async def run(accounts: int, quiet: int, listened: int, mixed: int, bare: int) -> Scenario:
    """Measure the three Touchpoint phases, then bare Temporal."""
    scenario = Scenario(
        "events",
        f"Events to {accounts} existing accounts, POST /events batches of {BATCH}",
        "quiet events/s >= 2x the bare-Temporal event rate",
    )
    tp = await touchpoint_rates(accounts, {"quiet": quiet, "listened": listened, "mixed": mixed})
    bare_rate, bare_detail = await baseline_rate(accounts, bare)
    names = {
        "quiet": "events/s, quiet (recorded only), batches, until GET /events lists them",
        "listened": "events/s, listened (each to its account workflow), batches, until listed",
        "mixed": "events/s, 90% quiet + 10% listened, batches, until listed",
    }
    for phase, name in names.items():
        scenario.figures.append(Figure(name, "/s", round(tp[phase]["rate"], 1), round(bare_rate, 1), "higher"))
    for phase in ("quiet", "listened"):
        scenario.figures.append(
            Figure(f"CPU per event, {phase}: dev server + API + worker (ms)", "ms", round(tp[phase]["server_cpu_ms"] + tp[phase]["worker_cpu_ms"], 2),
                   round(bare_detail["server_cpu_ms"] + bare_detail["worker_cpu_ms"], 2), "lower")
        )
    scenario.met = scenario.figures[0].ratio >= 2
    scenario.extra = {"touchpoint": tp, "baseline": bare_detail}
    scenario.notes.append(
        f"Bare Temporal: {bare} events as signal-with-start to {accounts} existing bare account workflows, {SIGNALS_IN_FLIGHT} in flight, "
        "each recorded by one local activity (`BareEvents`), timed until every row exists."
    )
    scenario.notes.append(
        f"Touchpoint: quiet {quiet}, listened {listened}, mixed {mixed} events (10% listened) through one `touchpoint api` process, "
        f"{BATCHES_IN_FLIGHT} batches of {BATCH} in flight, timed until `GET /events` lists them all. CPU: the dev server, "
        "the API process and this process (worker and the bench's client)."
    )
    return scenario
