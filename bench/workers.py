"""Workers for both sides, built the same way, and Touchpoint's store for one measurement."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.deps import Deps
from bench.baseline import WORKFLOWS, BareActivities
from touchpoint.config import Settings, load_settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.validate import Project, load_project
from touchpoint.store import write_tx
from worker import build_worker

#: The workflow cache of both sides: Touchpoint's default (`TOUCHPOINT_WORKER_CACHE`).
CACHE = Settings.model_fields["worker_cache"].default
#: Whether Touchpoint's production worker runs workflows in the SDK's sandbox; the baseline follows it.
SANDBOX: bool = bool(Settings.model_fields["workflow_sandbox"].default)


def touchpoint_deps(home: Path) -> Deps:
    """The embedded default's store (SQLite file) and outbox under ``home``."""
    settings = load_settings(home=home, database_url=f"sqlite:///{home}/touchpoint.db", email_backend="outbox", crm_backend="local")
    home.mkdir(parents=True, exist_ok=True)
    return Deps.from_settings(settings)


def store_file(home: Path) -> Path:
    """The store's SQLite file for ``home``."""
    return home / "touchpoint.db"


def deploy(deps: Deps, folder: Path) -> Project:
    """Validate and deploy a playbooks folder.

    Raises:
        ContractError: the bench's own playbooks are invalid (a bug in the bench).
    """
    project = load_project(folder)
    project.raise_for_problems()
    with write_tx(deps.sessions) as s:  # the write lock first: the worker may be writing
        deploy_project(s, project)
    return project


def touchpoint_worker(client: Client, deps: Deps, queue: str, *, cache: int = CACHE) -> Worker:
    """Touchpoint's production worker (every workflow; outside the SDK's sandbox, its default)."""
    return build_worker(client, deps, task_queue=queue, max_cached_workflows=cache)


def baseline_worker(client: Client, database: Path, queue: str, *, cache: int = CACHE) -> Worker:
    """A bare worker with the SDK's defaults but the same cache, activity slots and workflow runner
    as Touchpoint's: outside the sandbox unless `Settings.workflow_sandbox` defaults to it, so
    neither side is measured with a cost the other does not pay."""
    return Worker(
        client,
        task_queue=queue,
        workflows=WORKFLOWS,
        activities=BareActivities(database).all(),
        max_cached_workflows=cache,
        max_concurrent_activities=200,
        workflow_runner=SandboxedWorkflowRunner() if SANDBOX else UnsandboxedWorkflowRunner(),
    )
