"""Wiring only: the client, the data converter, the sandbox's pass-through list, workflows, activities.

Run a worker against any Temporal cluster with ``python worker.py`` (or ``python -m worker``),
which is `touchpoint worker` with its defaults; `touchpoint dev` runs the same worker in-process
beside the embedded server.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.workflow import SandboxImportNotificationPolicy

from activities.approvals import ApprovalActivities
from activities.crm import CrmActivities
from activities.deps import Deps
from activities.drafts import DraftActivities
from activities.email import EmailActivities
from activities.health import HealthActivities
from activities.schedule import ScheduleActivities
from activities.store import AccountActivities
from activities.sweep import SweepActivities
from activities.sync import SyncActivities
from activities.webhook import WebhookActivities
from touchpoint.config import Settings
from workflows.account import AccountWorkflow
from workflows.health import HealthRecompute
from workflows.schedule_run import ScheduleRun
from workflows.sweep import DateSweep
from workflows.sync import AccountSync

WORKFLOWS: Sequence[type] = (AccountWorkflow, ScheduleRun, HealthRecompute, DateSweep, AccountSync)

#: Deterministic modules shared by every workflow run: imported once, not per run. Jinja2 and
#: markupsafe must be here (imported inside the sandbox, Jinja2 fails or deadlocks).
PASSTHROUGH = (
    "touchpoint.dsl",
    "touchpoint.engine",
    "workflows.enrolling",
    "workflows.messages",
    "workflows.names",
    "workflows.options",
    "jinja2",
    "markupsafe",
    "croniter",
    "dateutil",
    "holidays",
    "yaml",
)


def sandbox_runner(*, strict_imports: bool = False) -> SandboxedWorkflowRunner:
    """The sandbox with our pass-through list; ``strict_imports`` fails a task on any other import."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    if strict_imports:
        restrictions = restrictions.with_import_notification_policy(
            SandboxImportNotificationPolicy.RAISE_ON_UNINTENTIONAL_PASSTHROUGH
        )
    return SandboxedWorkflowRunner(restrictions=restrictions)


def activities_for(deps: Deps) -> list[Any]:
    """Every activity, bound to one set of dependencies."""
    email, crm, hook = EmailActivities(deps), CrmActivities(deps), WebhookActivities(deps)
    accounts = AccountActivities(deps)
    schedule = ScheduleActivities(deps, email, hook)
    sync = SyncActivities(deps)
    return [
        accounts.load_context,
        accounts.apply_event,
        accounts.apply_first,
        accounts.prepare_starts,
        accounts.project_runs,
        email.send_email,
        email.reserve_send_slot,
        ApprovalActivities(deps, crm).request_approval,
        crm.create_task,
        crm.add_note,
        crm.update_fields,
        sync.sync_accounts_page,
        sync.sync_completed_tasks,
        hook.call_webhook,
        DraftActivities(deps).draft_text,
        HealthActivities(deps).recompute_health_batch,
        SweepActivities(deps).sweep_date_triggers,
        schedule.begin_schedule_tick,
        schedule.evaluate_schedule,
        schedule.schedule_recipients,
        schedule.send_schedule_email,
        schedule.call_schedule_webhook,
        schedule.finish_schedule_tick,
    ]


async def connect(config: Settings) -> Client:
    """A client with the pydantic data converter (the same on every client and worker), the
    settings' TLS or API key and this process's interceptors (`touchpoint.connection`)."""
    from touchpoint import connection

    return await connection.connect(config)


def build_worker(
    client: Client,
    deps: Deps,
    *,
    task_queue: str,
    strict_imports: bool = False,
    sandbox: bool = False,
    max_cached_workflows: int = 1000,
    fail_fast: bool = False,
    build_id: str | None = None,
    max_concurrent_activities: int = 200,
    graceful_shutdown_timeout: timedelta = timedelta(),
) -> Worker:
    """A worker for every Touchpoint workflow and activity on ``task_queue``.

    Args:
        client: Connected with the pydantic data converter.
        deps: The activities' store and backends.
        task_queue: The queue to poll.
        strict_imports: Run workflows in the SDK's sandbox and fail a workflow task on any
            import not passed through (the tests and the replay tests).
        sandbox: Run workflows in the SDK's sandbox (`TOUCHPOINT_WORKFLOW_SANDBOX`). Off by
            default: the sandbox re-imports the account workflow's module for every new account
            and wraps every activation, about 15% of a worker's CPU per enrollment (README,
            "Benchmarks"). Its value is catching non-deterministic calls in workflow code, which
            the tests and the replay of recorded histories do with it on (``strict_imports``);
            playbooks never run Python, so it guards no user input.
        max_cached_workflows: Bounds worker memory; evicted runs replay from history.
        fail_fast: Fail workflows on unexpected exceptions instead of retrying the task (tests).
        build_id: Skips the SDK's hashing of every loaded module (0.2 s) where no versioning
            is used: `touchpoint simulate` passes a fixed one.
        max_concurrent_activities: Activities this worker runs at once.
        graceful_shutdown_timeout: On shutdown, how long running activities may finish before
            they are cancelled (`touchpoint worker` drains for `TOUCHPOINT_SHUTDOWN_GRACE`).
    """
    if deps.client is None:
        deps.client = client
    runner: WorkflowRunner = (
        sandbox_runner(strict_imports=strict_imports) if strict_imports or sandbox else UnsandboxedWorkflowRunner()
    )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=activities_for(deps),
        workflow_runner=runner,
        max_cached_workflows=max_cached_workflows,
        max_concurrent_activities=max_concurrent_activities,
        graceful_shutdown_timeout=graceful_shutdown_timeout,
        # In tests a bug in workflow code fails the workflow at once instead of retrying its task.
        workflow_failure_exception_types=[Exception] if fail_fast else [],
        build_id=build_id,
    )


def main() -> None:
    """`touchpoint worker` with its defaults: settings from the environment, until SIGTERM."""
    from touchpoint.cli.main import main as cli

    sys.argv = [sys.argv[0], "worker", *sys.argv[1:]]
    cli()


if __name__ == "__main__":
    main()
