"""Scenario 2: event-to-touchpoint latency under a steady rate of events.

Touchpoint: the real API (`touchpoint.api.app`) under uvicorn on 127.0.0.1, with the worker in
the same process as `touchpoint dev` runs them; accounts exist beforehand; each event goes to
its own account and triggers a playbook sending one email and creating one task. Latency is from
`POST /events` returning to the email row seen in the store by a poller (5 ms). Bare Temporal:
a minimal HTTP app whose `POST /events` starts a two-activity workflow; latency to its email row.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from temporalio.client import Client

from bench.common import Figure, Scenario, account_doc, fresh_server, percentile, wait_for_count, write_project
from bench.workers import baseline_worker, deploy, store_file, touchpoint_deps, touchpoint_worker
from touchpoint.api.app import create_app
from touchpoint.config import load_settings
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.ingest import put_account
from touchpoint.temporal_server import free_port

QUEUE = "bench"
POLL = 0.005
PING = """\
playbook: bench-ping
trigger: {event: bench.ping}
audience: [champion]
steps:
  - email: {template: hello}
    id: hello
  - task: {title: "Call {{ account.name }}", owner: csm, due: 2d}
    id: call
"""


class Ping(BaseModel):
    """The baseline app's event body."""

    account_id: str


def baseline_app(client: Client) -> FastAPI:
    """`POST /events` starting a bare two-activity workflow: the HTTP hop without Touchpoint."""
    app = FastAPI()

    @app.post("/events", status_code=202)
    async def post_event(body: Ping) -> dict[str, str]:
        await client.start_workflow("BareEnroll", body.account_id, id=f"bare/{body.account_id}", task_queue=QUEUE)
        return {"status": "accepted"}

    return app


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on a free 127.0.0.1 port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _new_rows(database: Path, sql: str, after: int) -> list[tuple[int, str]]:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as conn:
            return [(int(r[0]), str(r[1])) for r in conn.execute(sql, (after,))]
    except sqlite3.OperationalError:
        return []


async def _drive(url: str, database: Path, sql: str, accounts: list[str], rate: float, body: Any) -> list[float]:
    """POST one event per account at ``rate``/s; returns each email's latency in seconds."""
    returned: dict[str, float] = {}
    seen: dict[str, float] = {}
    finished = asyncio.Event()

    async def poller() -> None:
        last = 0
        while not finished.is_set():
            rows = await asyncio.to_thread(_new_rows, database, sql, last)
            now = time.monotonic()
            for rowid, account in rows:
                last = max(last, rowid)
                seen.setdefault(account, now)
            if len(seen) >= len(accounts):
                return
            await asyncio.sleep(POLL)

    async def post(http: httpx.AsyncClient, account: str) -> None:
        response = await http.post(f"{url}/events", json=body(account))
        response.raise_for_status()
        returned[account] = time.monotonic()

    watcher = asyncio.create_task(poller())
    async with httpx.AsyncClient(timeout=30) as http:
        begin = time.monotonic()
        posts = []
        for index, account in enumerate(accounts):
            # A steady schedule, not "sleep after each": a slow response does not slow the rate.
            await asyncio.sleep(max(0.0, begin + index / rate - time.monotonic()))
            posts.append(asyncio.create_task(post(http, account)))
        await asyncio.gather(*posts)
    try:
        await asyncio.wait_for(watcher, timeout=120)
    finally:
        finished.set()
    return [seen[a] - returned[a] for a in accounts]


async def touchpoint_latencies(count: int, rate: float) -> list[float]:
    """Latencies through the real API, account workflows and store."""
    async with fresh_server() as server:
        home = server.root / "touchpoint"
        deps = touchpoint_deps(home)
        try:
            deploy(deps, write_project(server.root / "playbooks", {"bench-ping": PING}))
            client = server.env.client
            settings = load_settings(home=home, database_url=f"sqlite:///{home}/touchpoint.db", task_queue=QUEUE)
            accounts = [f"acct-{i}" for i in range(count)]
            async with touchpoint_worker(client, deps, QUEUE), serve(create_app(settings, client, deps.sessions)) as url:
                for account in accounts:
                    await put_account(client, QUEUE, deps.sessions, AccountDoc.model_validate(account_doc(account)))
                await wait_for_count(store_file(home), "SELECT count(*) FROM accounts", count, timeout=60 + count)
                await asyncio.sleep(1.0)  # let the account workflows finish their upserts
                sql = "SELECT rowid, account_id FROM messages WHERE rowid > ? ORDER BY rowid"
                return await _drive(url, store_file(home), sql, accounts, rate, lambda a: {"type": "bench.ping", "account_id": a})
        finally:
            await deps.close()


async def baseline_latencies(count: int, rate: float) -> list[float]:
    """Latencies through a minimal HTTP app and a bare workflow."""
    async with fresh_server() as server:
        database = server.root / "bare.db"
        client = server.env.client
        async with baseline_worker(client, database, QUEUE), serve(baseline_app(client)) as url:
            sql = "SELECT rowid, key FROM effects WHERE rowid > ? AND kind = 'email' ORDER BY rowid"
            return await _drive(url, database, sql, [f"acct-{i}" for i in range(count)], rate, lambda a: {"account_id": a})


async def run(count: int, *, rate: float = 5.0) -> Scenario:
    """p50/p95/p99 on both sides."""
    scenario = Scenario(
        "latency",
        f"Event-to-touchpoint latency ({count} events at {rate:g}/s)",
        "p99 < 500 ms on the embedded default",
    )
    tp = await touchpoint_latencies(count, rate)
    bare = await baseline_latencies(count, rate)
    for pct in (50, 95, 99):
        scenario.figures.append(Figure(f"p{pct} POST /events -> email row", "ms", round(percentile(tp, pct) * 1000, 1), round(percentile(bare, pct) * 1000, 1), "lower"))
    scenario.met = percentile(tp, 99) < 0.5
    scenario.extra = {"touchpoint_max_ms": round(max(tp) * 1000, 1), "baseline_max_ms": round(max(bare) * 1000, 1), "poll_ms": POLL * 1000}
    scenario.notes.append(f"Measured to the row seen by a {POLL * 1000:g} ms poller of the store (both sides): figures include up to {POLL * 1000:g} ms of polling.")
    return scenario
