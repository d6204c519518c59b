"""Scenario: moving parked runs to a new version (`touchpoint migrate`), against bare updates.

Touchpoint parks N runs of a playbook in a 120-day wait (each in its account's workflow), deploys
a version with a 100-day wait, then times a dry run of the migration (every account workflow
answers what it would do) and the real one (every run moved and its new version projected to
the store). Bare Temporal parks N workflows and sends each one update that notes a new version:
the least a migration through the workflows can cost.
"""

from __future__ import annotations

import asyncio
import time

from temporalio.client import Client

from bench.common import Figure, Scenario, fresh_server, wait_for_count, write_project
from bench.parked import IN_FLIGHT, PARK, QUEUE, BaselineSide, TouchpointSide, _fire
from bench.workers import baseline_worker, deploy, touchpoint_worker
from touchpoint.converter import DATA_CONVERTER

MOVED = PARK.replace("wait: 120d", "wait: 100d")


async def _touchpoint(n: int) -> dict[str, float]:
    from touchpoint.migration import migrate

    async with fresh_server() as server:
        client = await Client.connect(server.address, data_converter=DATA_CONVERTER)
        side = TouchpointSide(server.root)
        out: dict[str, float] = {}
        async with touchpoint_worker(client, side.deps, QUEUE):
            begin = time.monotonic()
            await _fire(side, client, "park", range(n))
            await wait_for_count(side.database, side.parked_sql, n, timeout=120 + n)
            out["park_rate"] = n / (time.monotonic() - begin)
            write_project(side.folder, {"bench-park": MOVED})
            version = deploy(side.deps, side.folder).playbooks["bench-park"].version
            begin = time.monotonic()
            dry = await migrate(client, side.deps.sessions, "bench-park", dry_run=True)
            out["dry_seconds"] = time.monotonic() - begin
            begin = time.monotonic()
            report = await migrate(client, side.deps.sessions, "bench-park")
            out["answered_seconds"] = time.monotonic() - begin
            projected = await wait_for_count(side.database, f"SELECT count(*) FROM runs WHERE version = '{version}'", n, timeout=120 + n)
            out["seconds"] = projected - begin
            out["rate"] = n / out["seconds"]
            out["dry_listed"], out["moved"] = float(len(dry.moved)), float(len(report.moved))
        await side.deps.close()
        return out


async def _bare(n: int) -> dict[str, float]:
    async with fresh_server() as server:
        client = await Client.connect(server.address, data_converter=DATA_CONVERTER)
        side = BaselineSide(server.root)
        out: dict[str, float] = {}
        async with baseline_worker(client, side.database, QUEUE):
            await _fire(side, client, "park", range(n))
            await wait_for_count(side.database, side.parked_sql, n, timeout=120 + n)
            limit = asyncio.Semaphore(min(IN_FLIGHT, 32))

            async def one(i: int) -> None:
                async with limit:
                    await client.get_workflow_handle(f"bare/park/{i}").execute_update("move", "v2", result_type=str)

            begin = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(n)))
            out["seconds"] = time.monotonic() - begin
            out["rate"] = n / out["seconds"]
        return out


async def run(n: int) -> Scenario:
    """Both sides, one after the other, each on a fresh server."""
    scenario = Scenario("migrate", f"Moving {n} parked runs to a new version (touchpoint migrate) vs one update per bare workflow", "a dry run of 10,000 runs in seconds")
    tp = await _touchpoint(n)
    bare = await _bare(n)
    scenario.figures += [
        Figure("runs moved per second (until the store shows the new version)", "runs/s", round(tp["rate"], 1), round(bare["rate"], 1), "higher"),
        Figure("dry run: every account workflow answers what it would do", "s", round(tp["dry_seconds"], 2), round(bare["seconds"], 2), "lower"),
    ]
    scenario.met = tp["moved"] == n and tp["dry_listed"] == n and tp["dry_seconds"] < 60
    scenario.extra = {"touchpoint": tp, "baseline": bare}
    scenario.notes.append(
        f"{int(tp['moved'])}/{n} moved, {int(tp['dry_listed'])}/{n} listed by the dry run; bare: one update per workflow, "
        f"{n} in {bare['seconds']:.1f} s. Parking them took {n / tp['park_rate']:.0f} s."
    )
    return scenario
