"""Getting events, account upserts and manual starts into Temporal: one path for API and CLI.

An event takes one of two paths (contract section 9). A **quiet** event, one that nothing
deployed can react to (`touchpoint.dsl.listening`, as this process knows the deploys:
`touchpoint.deployed`), is recorded in the store and reaches no workflow: durable once the
store's transaction commits. Every other event is a signal-with-start of the account's
workflow: durable in Temporal once the call returns (the store is updated from there by an
activity). Event ids are unique across both paths: the store keeps one row per id, a quiet
event whose id is stored is a no-op, and the account workflow drops an event whose id the store
already holds. A start that must answer (`POST /runs`)
is an update-with-start instead.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from touchpoint.deployed import deployed
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn, StartRequest
from touchpoint.namespace import forget, has_search_attributes
from touchpoint.store import repo, write_tx
from workflows import names, search
from workflows.account import account_workflow_id
from workflows.messages import AccountState, Envelope, RunControl, StartAnswer

BATCH_SIGNALS = 32
"""Signals of one batch in flight at once (accounts side by side; one account's in order)."""

Route = Literal["quiet", "workflow", "repeat"]
T = TypeVar("T")


@dataclass
class Sent:
    """What became of one event of a batch.

    Attributes:
        id: The event's id (given, or made here).
        route: ``quiet`` (recorded in the store only), ``workflow`` (signalled to the account's
            workflow) or ``repeat`` (its id came earlier in the same batch: a no-op).
        error: Why it was not taken (then it is not durable anywhere: send it again).
    """

    id: str
    route: Route
    error: str | None = None


def generation(sessions: sessionmaker[Session]) -> str:
    """The current deploy generation of a store, as this process knows it (`touchpoint.deployed`)."""
    return deployed(sessions).generation


def _stamp(event: EventIn, account_id: str) -> EventIn:
    event.id = event.id or f"evt_{uuid.uuid4().hex}"
    event.account_id = account_id
    event.at = event.at or datetime.now(UTC)
    return event


def record_quiet(sessions: sessionmaker[Session], events: Sequence[EventIn]) -> None:
    """Store quiet events in one transaction (a stored id is skipped: a repeat is a no-op)."""
    rows = [{"id": e.id, "account_id": e.account_id, "type": e.type, "at": e.at, "data": e.data} for e in events]
    with write_tx(sessions) as s:
        repo.record_events(s, rows)


async def _with_start(client: Client, account_id: str, account: AccountDoc | None, call: Callable[[TypedSearchAttributes | None], Awaitable[T]]) -> T:
    """``call`` with the search attributes to start the account's workflow with.

    They are named only when the namespace has them (`touchpoint.namespace`): a fresh workflow
    then needs no upsert to be found (`workflows.search`). When the server refuses them (they
    were removed since it was asked), the call is made again without them: a refused start did
    nothing, and the event must not be lost.
    """
    if not await has_search_attributes(client):
        return await call(None)
    try:
        return await call(search.at_start(account_id, account))
    except RPCError as err:
        if err.status != RPCStatusCode.INVALID_ARGUMENT:
            raise
        forget(client)
        return await call(None)


async def _signal_with_start(client: Client, task_queue: str, account_id: str, account: AccountDoc | None, signal: str, arg: Any) -> None:
    """Signal the account's workflow, starting it if need be (with its search attributes)."""

    async def call(attributes: TypedSearchAttributes | None) -> None:
        await client.start_workflow(
            names.ACCOUNT,
            AccountState(account_id=account_id),
            id=account_workflow_id(account_id),
            task_queue=task_queue,
            start_signal=signal,
            start_signal_args=[arg],
            search_attributes=attributes,
        )

    await _with_start(client, account_id, account, call)


async def _signal(client: Client, task_queue: str, envelope: Envelope) -> None:
    await _signal_with_start(client, task_queue, envelope.event.account_id or "", envelope.account, "ingest", envelope)


async def send_event(client: Client, task_queue: str, sessions: sessionmaker[Session], account_id: str, event: EventIn, account: AccountDoc | None = None) -> str:
    """Record a quiet event, or signal-with-start the account's workflow with it; returns its id.

    An upsert (``account``) always goes to the workflow.

    Raises:
        StoreUnavailable: the deploys could not be read (nothing was done).
    """
    _stamp(event, account_id)
    now = deployed(sessions)
    if account is None and now.listening.quiet(event.type):
        await asyncio.to_thread(record_quiet, sessions, [event])
        return event.id or ""
    await _signal(client, task_queue, Envelope(event=event, account=account, generation=now.generation))
    return event.id or ""


async def send_events(client: Client, task_queue: str, sessions: sessionmaker[Session], events: Sequence[EventIn]) -> list[Sent]:
    """Send a batch of events (each with its ``account_id``), each on its path; one result per event.

    The quiet ones are recorded in one transaction; the others are signalled, the events of one
    account in batch order, accounts side by side. An id repeated within the batch is a no-op
    after its first. A failure rejects only the events it concerns: every quiet one when the
    store's write fails; for a signal that fails, that event and the account's later ones (so
    that a resend keeps their order).

    Raises:
        StoreUnavailable: the deploys could not be read (nothing was done).
    """
    now = deployed(sessions)
    results: list[Sent] = []
    first: dict[str, int] = {}
    quiet: list[tuple[int, EventIn]] = []
    by_account: dict[str, list[tuple[int, EventIn]]] = {}
    for index, event in enumerate(events):
        _stamp(event, event.account_id or "")
        event_id = event.id or ""
        if event_id in first:
            results.append(Sent(id=event_id, route="repeat"))
            continue
        first[event_id] = index
        if now.listening.quiet(event.type):
            results.append(Sent(id=event_id, route="quiet"))
            quiet.append((index, event))
        else:
            results.append(Sent(id=event_id, route="workflow"))
            by_account.setdefault(event.account_id or "", []).append((index, event))

    gate = asyncio.Semaphore(BATCH_SIGNALS)

    async def deliver(items: list[tuple[int, EventIn]]) -> None:
        async with gate:
            for position, (index, event) in enumerate(items):
                try:
                    await _signal(client, task_queue, Envelope(event=event, generation=now.generation))
                except Exception as exc:
                    results[index].error = f"Temporal did not take it ({type(exc).__name__}): send it again"
                    for later, _ in items[position + 1 :]:
                        results[later].error = "not sent: an earlier event of this account in the batch was not taken; send both again"
                    return

    async def store() -> None:
        if not quiet:
            return
        try:
            await asyncio.to_thread(record_quiet, sessions, [event for _, event in quiet])
        except Exception as exc:
            for index, _ in quiet:
                results[index].error = f"the store did not take it ({type(exc).__name__}): send it again"

    await asyncio.gather(store(), *(deliver(items) for items in by_account.values()))
    for sent in results:
        if sent.route == "repeat":
            sent.error = results[first[sent.id]].error
    return results


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

    It names no search attributes (the workflow sets them, `workflows.search`): when the server
    refuses an update-with-start, the SDK leaves the refusal in a future nobody reads, and its
    report at garbage collection can land inside another parse (Python 3.11's traceback carets
    parse source), so the retry of `_with_start` is not worth it for a start the API answers.
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
    await _signal_with_start(client, task_queue, account_id, None, "start_playbook", request)


async def control_run(client: Client, account_id: str, control: RunControl) -> None:
    """Pause, resume or cancel a run in its account's workflow (a signal: durable once sent)."""
    await client.get_workflow_handle(account_workflow_id(account_id)).signal("control", control)
