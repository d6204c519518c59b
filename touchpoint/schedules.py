"""Temporal Schedules for the work that runs on a clock, kept in line with what is deployed.

`touchpoint deploy` (and `touchpoint dev`) call `sync_schedules` after publishing a folder:

| Schedule id (``touchpoint/<task queue>/...``) | cron | starts |
|---|---|---|
| ``playbook/<id>`` | the playbook's `schedule` trigger (workspace zone) | `ScheduleRun` for that playbook |
| ``date-sweep`` | hourly, when a playbook has a `date` trigger | `DateSweep` |
| ``health`` | `health.yaml` `schedule` (workspace zone) | `HealthRecompute` |
| ``crm-sync`` | workspace `crm.sync`, when a CRM backend is configured | `AccountSync` |

Schedules of this task queue that the folder no longer asks for are deleted. Every Schedule
skips a tick while the previous one still runs (``SKIP``); a missed sweep or recompute is made
up by the next one, which reads its window from the store. The Java time-skipping test server
has no Schedules: tests start these workflows directly, and this module on the dev server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from touchpoint.dsl.health_models import HealthRecomputeInput
from touchpoint.dsl.schedule import ScheduleRunInput
from touchpoint.dsl.schema import ScheduleTrigger
from touchpoint.dsl.sweep_models import DateSweepInput
from touchpoint.dsl.sync_models import AccountSyncInput
from touchpoint.dsl.validate import Project
from workflows import names

HOURLY = "0 * * * *"


@dataclass(frozen=True)
class Planned:
    """One Schedule the deployed folder asks for."""

    id: str
    cron: str
    timezone: str
    workflow: str
    arg: Any
    what: str

    def schedule(self, task_queue: str) -> Schedule:
        return Schedule(
            action=ScheduleActionStartWorkflow(self.workflow, self.arg, id=self.id, task_queue=task_queue),
            spec=ScheduleSpec(cron_expressions=[self.cron], time_zone_name=self.timezone),
            # A tick missed while the server was down still runs if it is less than an hour late.
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(hours=1)),
        )


def prefix(task_queue: str) -> str:
    """Schedule ids of one deployment start with this (one server may serve several queues)."""
    return f"touchpoint/{task_queue}/"


def planned_schedules(project: Project, *, task_queue: str, crm_backend: str = "local") -> list[Planned]:
    """The Schedules a validated folder asks for, by id."""
    base = prefix(task_queue)
    tz = project.workspace.timezone
    plans: list[Planned] = []
    dated = False
    for playbook_id, loaded in sorted(project.playbooks.items()):
        trigger = loaded.playbook.trigger
        kind = loaded.playbook.trigger_kind
        if isinstance(trigger, ScheduleTrigger):
            plans.append(Planned(f"{base}playbook/{playbook_id}", trigger.schedule, tz, names.SCHEDULE_RUN, ScheduleRunInput(playbook=playbook_id), f"playbook {playbook_id}"))
        dated = dated or kind == "date"
    if dated:
        plans.append(Planned(f"{base}date-sweep", HOURLY, "UTC", names.DATE_SWEEP, DateSweepInput(), "date triggers"))
    if project.health is not None:
        plans.append(Planned(f"{base}health", project.health.schedule, tz, names.HEALTH_RECOMPUTE, HealthRecomputeInput(), "health scores"))
    sync = project.workspace.crm.sync
    if sync and crm_backend in ("hubspot", "salesforce"):
        plans.append(Planned(f"{base}crm-sync", sync, tz, names.ACCOUNT_SYNC, AccountSyncInput(backend=crm_backend), f"{crm_backend} sync"))
    return plans


async def sync_schedules(client: Client, project: Project, *, task_queue: str, crm_backend: str = "local", prune: bool = True) -> list[str]:
    """Create or update the folder's Schedules, and delete this queue's others.

    Returns:
        One line per Schedule for the CLI, e.g. ``schedule  weekly-seat-digest  '0 8 * * mon'
        America/New_York  created``.
    """
    lines: list[str] = []
    plans = planned_schedules(project, task_queue=task_queue, crm_backend=crm_backend)
    for plan in plans:
        wanted = plan.schedule(task_queue)
        try:
            await client.create_schedule(plan.id, wanted)
            state = "created"
        except ScheduleAlreadyRunningError:

            def replace(_: ScheduleUpdateInput, wanted: Schedule = wanted) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=wanted)

            await client.get_schedule_handle(plan.id).update(replace)
            state = "updated"
        lines.append(f"schedule  {plan.what:<28} '{plan.cron}' {plan.timezone}  {state}")
    if prune:
        keep = {p.id for p in plans}
        async for listed in await client.list_schedules():
            if listed.id.startswith(prefix(task_queue)) and listed.id not in keep:
                try:
                    await client.get_schedule_handle(listed.id).delete()
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise
                    continue  # the listing trails deletes: already gone
                lines.append(f"schedule  {listed.id[len(prefix(task_queue)):]:<28} removed")
    return lines
