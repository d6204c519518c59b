"""Temporal Schedules made by deploy, on the real dev server (the time-skipping one has none).

One test: the shipped folder's Schedules are created with their crons, zones and inputs; a
triggered digest Schedule starts a `ScheduleRun` that a worker runs to the end (its tick comes
from the Schedule's scheduled time); a redeploy without a schedule playbook removes its Schedule.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

from temporalio.client import Client, ScheduleActionStartWorkflow
from temporalio.service import RPCError, RPCStatusCode

from activities.deps import Deps
from touchpoint.config import Settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.validate import load_project
from touchpoint.schedules import planned_schedules, prefix, sync_schedules
from touchpoint.store import repo
from touchpoint.temporal_server import start_dev_server
from worker import build_worker

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"


async def ours(client: Client, queue: str) -> dict[str, ScheduleActionStartWorkflow]:
    found = {}
    async for listed in await client.list_schedules():
        if listed.id.startswith(prefix(queue)):
            try:
                described = await client.get_schedule_handle(listed.id).describe()
            except RPCError as exc:  # the listing trails deletes
                if exc.status == RPCStatusCode.NOT_FOUND:
                    continue
                raise
            action = described.schedule.action
            assert isinstance(action, ScheduleActionStartWorkflow)
            found[listed.id[len(prefix(queue)) :]] = action
    return found


async def eventually_listed(client: Client, queue: str, expected: set[str]) -> dict[str, ScheduleActionStartWorkflow]:
    # Listing goes through visibility, which trails writes by a moment.
    for _ in range(100):
        found = await ours(client, queue)
        if set(found) == expected:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"schedules listed: {sorted(await ours(client, queue))}, expected {sorted(expected)}")


async def test_schedules_created_triggered_and_removed_by_deploy(store_settings: Settings, tmp_path: Path) -> None:
    env = await start_dev_server()
    deps = Deps.from_settings(store_settings)
    queue = f"test-{uuid.uuid4().hex[:8]}"
    try:
        folder = tmp_path / "playbooks"
        shutil.copytree(PLAYBOOKS, folder)
        project = load_project(folder)
        with deps.sessions.begin() as s:
            deploy_project(s, project)
        lines = await sync_schedules(env.client, project, task_queue=queue)
        assert len(lines) == 5 and all(line.endswith("created") for line in lines)

        expected = {"playbook/weekly-seat-digest", "playbook/monthly-red-account-review", "playbook/quarterly-product-wishlist", "date-sweep", "health"}
        actions = await eventually_listed(env.client, queue, expected)
        digest = await env.client.get_schedule_handle(f"{prefix(queue)}playbook/weekly-seat-digest").describe()
        # The server keeps the cron as calendars: check what it will do, the next ticks.
        assert digest.schedule.spec.time_zone_name == "America/New_York"
        ticks = [t.astimezone(ZoneInfo("America/New_York")) for t in digest.info.next_action_times]
        assert ticks and all((t.weekday(), t.hour, t.minute) == (0, 8, 0) for t in ticks)
        assert actions["playbook/weekly-seat-digest"].workflow == "ScheduleRun"
        assert actions["date-sweep"].workflow == "DateSweep" and actions["health"].workflow == "HealthRecompute"
        assert all(a.task_queue == queue for a in actions.values())

        # Deploying again updates in place.
        again = await sync_schedules(env.client, project, task_queue=queue)
        assert all(line.endswith("updated") for line in again)

        # Triggered now, the digest runs on a worker: a tick over an empty store sends nothing.
        async with build_worker(env.client, deps, task_queue=queue, strict_imports=True, fail_fast=True):
            await env.client.get_schedule_handle(f"{prefix(queue)}playbook/weekly-seat-digest").trigger()
            for _ in range(200):
                with deps.sessions() as s:
                    runs = [r for r in repo.list_runs(s) if r.playbook_id == "weekly-seat-digest"]
                if runs and runs[0].status == "ended":
                    break
                await asyncio.sleep(0.05)
            assert runs and runs[0].status == "ended" and runs[0].outcome == "completed", runs
            assert runs[0].id.startswith("schedule:weekly-seat-digest:")
            with deps.sessions() as s:
                assert repo.get_cursor(s, "schedule/weekly-seat-digest") is not None

        # A folder without the wishlist: its Schedule goes.
        (folder / "quarterly-product-wishlist.yaml").unlink()
        smaller = load_project(folder)
        lines = await sync_schedules(env.client, smaller, task_queue=queue)
        assert any("quarterly-product-wishlist" in line and line.endswith("removed") for line in lines)
        await eventually_listed(env.client, queue, expected - {"playbook/quarterly-product-wishlist"})
    finally:
        await deps.close()
        await env.shutdown()


def test_schedules_planned_for_crm_sync_only_with_a_crm_backend(tmp_path: Path) -> None:
    folder = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, folder)
    workspace = folder / "workspace.yaml"
    workspace.write_text(workspace.read_text().replace("  fallback_owner: cs-ops@example.com", '  fallback_owner: cs-ops@example.com\n  sync: "*/30 * * * *"'))
    project = load_project(folder)
    assert not project.problems
    local = {p.id: p for p in planned_schedules(project, task_queue="q")}
    assert "touchpoint/q/crm-sync" not in local  # the local store has nothing to sync from
    hubspot = {p.id: p for p in planned_schedules(project, task_queue="q", crm_backend="hubspot")}
    sync = hubspot["touchpoint/q/crm-sync"]
    assert (sync.cron, sync.timezone, sync.workflow) == ("*/30 * * * *", "America/New_York", "AccountSync")
    assert sync.arg.backend == "hubspot" and not sync.arg.backfill

    workspace.write_text(workspace.read_text().replace('sync: "*/30 * * * *"', 'sync: "every half hour"'))
    problems = load_project(folder).problems
    assert any("workspace.yaml" in str(p) and "cron" in str(p) for p in problems), problems


def test_schedules_deploy_without_a_server_says_so_and_keeps_the_store(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from touchpoint.temporal_server import free_port

    env = {**os.environ, "TOUCHPOINT_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "PYTHONPATH": str(PLAYBOOKS.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "touchpoint.cli.main", "deploy", str(PLAYBOOKS), "--create"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr  # not 134: the CLI leaves cleanly after a failed connect
    assert "Schedules not updated" in done.stderr and "run `touchpoint deploy` again" in done.stderr
    assert "added     weekly-seat-digest" in done.stdout  # the playbooks themselves are deployed
