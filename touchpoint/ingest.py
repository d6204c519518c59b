"""Getting events, account upserts and manual starts into Temporal: one path for API and CLI.

Each call is a signal-with-start of the account's workflow: once it returns, the event is durable
in Temporal (the store is updated from there by an activity). A start that must answer (`POST
/runs`) is an update-with-start instead.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from activities.store import deploy_generation
from touchpoint.dsl.runtime import EventIn, StartRequest
from touchpoint.dsl.schema import AccountDoc
from workflows import names
from workflows.account import account_workflow_id
from workflows.messages import AccountState, Envelope, RunControl, StartAnswer

_GENERATIONS: dict[int, tuple[float, str]] = {}


def generation(sessions: sessionmaker[Session]) -> str:
    """The current deploy generation of a store (cached for a second: deploys are rare)."""
    at, value = _GENERATIONS.get(id(sessions), (0.0, ""))
    if time.monotonic() - at > 1.0:
        with sessions() as s:
            value = deploy_generation(s)
        _GENERATIONS[id(sessions)] = (time.monotonic(), value)
    return value


async def send_event(client: Client, task_queue: str, sessions: sessionmaker[Session], account_id: str, event: EventIn, account: AccountDoc | None = None) -> str:
    """Signal-with-start the account's workflow with one event; returns the event id."""
    event.id = event.id or f"evt_{uuid.uuid4().hex}"
    event.account_id = account_id
    event.at = event.at or datetime.now(UTC)
    envelope = Envelope(event=event, account=account, generation=generation(sessions))
    await client.start_workflow(
        names.ACCOUNT,
        AccountState(account_id=account_id),
        id=account_workflow_id(account_id),
        task_queue=task_queue,
        start_signal="ingest",
        start_signal_args=[envelope],
    )
    return event.id


async def put_account(
    client: Client, task_queue: str, sessions: sessionmaker[Session], account: AccountDoc, *, event_id: str | None = None
) -> str:
    """Upsert an account document; the workflow emits account.created/updated and seats.changed.

    ``event_id`` makes a repeated upsert (a retried sync page) a no-op.
    """
    return await send_event(client, task_queue, sessions, account.id, EventIn(id=event_id, type="account.upserted"), account)


async def start_run(client: Client, task_queue: str, account_id: str, playbook: str) -> None:
    """Start a playbook for an account now (one run per account and playbook at a time)."""
    request = StartRequest(playbook=playbook, by="manual", event=EventIn(type="manual", at=datetime.now(UTC)))
    await start_request(client, task_queue, account_id, request)


async def start_now(client: Client, task_queue: str, account_id: str, playbook: str) -> StartAnswer:
    """Start a playbook for an account now and say what happened (`POST /runs`).

    An update-with-start on the account's workflow: unlike a signal, it answers with the new
    run's id, or the run already in flight, or why nothing started.
    """
    request = StartRequest(playbook=playbook, by="manual", event=EventIn(type="manual", at=datetime.now(UTC)), run_id=str(uuid.uuid4()))
    operation: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        names.ACCOUNT,
        AccountState(account_id=account_id),
        id=account_workflow_id(account_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    answer: StartAnswer = await client.execute_update_with_start_workflow("start", request, start_workflow_operation=operation, result_type=StartAnswer)
    return answer


async def start_request(client: Client, task_queue: str, account_id: str, request: StartRequest) -> None:
    """Signal-with-start the account's workflow with a start request (manual, date sweep)."""
    await client.start_workflow(
        names.ACCOUNT,
        AccountState(account_id=account_id),
        id=account_workflow_id(account_id),
        task_queue=task_queue,
        start_signal="start_playbook",
        start_signal_args=[request],
    )


async def control_run(client: Client, account_id: str, control: RunControl) -> None:
    """Pause, resume or cancel a run in its account's workflow (a signal: durable once sent)."""
    await client.get_workflow_handle(account_workflow_id(account_id)).signal("control", control)
