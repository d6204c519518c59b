"""CRM account sync: accounts and contacts in, `task.completed` for tasks done in the CRM.

One page at a time, so memory stays bounded however many accounts the CRM has:

- each CRM account becomes an account document (``doc_from_crm``): the CRM's fields and
  contacts over the stored document, keeping what Touchpoint computes (health, metrics,
  other properties);
- unchanged (equal to the store's document, segment aside) → nothing is sent;
- new or changed → an upsert to the account's workflow (as ``touchpoint.ingest.put_account``,
  with an id stable across retries), which derives ``account.created``/``account.updated``/
  ``seats.changed`` and projects the store;
- with ``backfill`` the document is written to the store directly and no event is emitted:
  the first import of an existing CRM must not start onboarding for every customer.

The same functions serve the `AccountSync` workflow's activities (``SyncActivities``) and
`touchpoint accounts sync` in-process (``run_sync``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.crm import _remote_error
from activities.deps import Deps, crm_backend_from
from activities.store import account_doc, current_workspace
from touchpoint.crm.base import AccountPager, CrmBackend, SyncedAccount
from touchpoint.crm.errors import CrmError, CrmRejected, CrmTransientError
from touchpoint.dsl.accounts import AccountDoc, Contact
from touchpoint.dsl.runtime import EventIn, segment_of
from touchpoint.dsl.sync_models import (
    EXPIRED_TOKEN,
    SYNC_COMPLETED_TASKS,
    SyncPageInput,
    SyncPageResult,
    SyncTasksInput,
    SyncTasksResult,
    SyncTotals,
    cursor_name,
)
from touchpoint.dsl.workspace import Workspace
from touchpoint.ingest import put_account, send_event
from touchpoint.store import repo
from touchpoint.store.models import Task
from workflows import names

__all__ = ["SyncActivities", "doc_from_crm", "run_sync", "sync_completed_tasks", "sync_page"]

log = logging.getLogger(__name__)

TASKS_OVERLAP = timedelta(minutes=10)
"""CRM search indexes lag writes: each sync re-reads this much before the last one."""
FIRST_SYNC = datetime(2000, 1, 1, tzinfo=UTC)
"""`since` of the first sync: tasks Touchpoint created cannot be older."""
_SCALARS = ("renewal_date", "arr", "country", "timezone", "plan")


class Backend(CrmBackend, AccountPager, Protocol):
    """What a sync needs of a backend: the CRM protocol plus page-at-a-token reads."""


def doc_from_crm(account: SyncedAccount, stored: AccountDoc | None) -> AccountDoc:
    """The account document for a CRM account: its CRM fields over the stored document.

    The account's id is its CRM id (also kept in ``properties.crm_id``, where task, note
    and update steps look for it). Fields the CRM has no value for keep their stored
    value; health, metrics, locale, region and properties the CRM does not send are kept.
    The CRM's contact list replaces the stored one; a contact keeps its stored role,
    locale, time zone and country where the CRM has none. The segment is left to the
    account workflow (or ``backfill``) to compute from workspace.yaml.

    Raises:
        pydantic.ValidationError: The CRM's values do not make a valid account document.
    """
    base: dict[str, Any] = stored.model_dump(mode="json") if stored else {}
    fields = account.fields
    doc: dict[str, Any] = {**base, "id": account.crm_id, "name": account.name, "segment": None}
    for key in _SCALARS:
        if key in fields:
            doc[key] = fields[key]
    if isinstance(seats := fields.get("seats"), dict):
        doc["seats"] = {**(base.get("seats") or {}), **seats}
    for key in ("csm", "owner"):
        if key in fields:
            doc[key] = fields[key]
    extra = fields.get("properties")
    doc["properties"] = {
        **(base.get("properties") or {}),
        **(extra if isinstance(extra, dict) else {}),
        "crm_id": account.crm_id,
    }
    known = {c["email"].lower(): c for c in base.get("contacts") or []}
    contacts: dict[str, dict[str, Any]] = {}
    for contact in account.contacts:
        email = contact.email.strip().lower()
        before = known.get(email, {})
        merged = {k: v if v is not None else before.get(k) for k, v in contact.model_dump().items()}
        merged["email"] = email
        contacts[email] = merged
    valid = []
    for item in contacts.values():
        try:
            Contact.model_validate(item)
        except ValidationError as exc:
            log.warning("account %s: contact %s left out: %s", account.crm_id, item["email"], exc.errors()[0]["msg"])
            continue
        valid.append(item)
    doc["contacts"] = valid
    return AccountDoc.model_validate(doc)


def _view(doc: AccountDoc) -> dict[str, Any]:
    # The segment is computed from workspace.yaml, not sent by the CRM: not a change.
    return doc.model_dump(mode="json", exclude={"segment"})


def _stored_docs(s: Session, ids: list[str]) -> dict[str, AccountDoc | None]:
    rows = repo.get_accounts(s, ids)
    return {i: account_doc(*rows[i]) if i in rows else None for i in ids}


def _compare(
    accounts: list[SyncedAccount], stored: dict[str, AccountDoc | None], totals: SyncTotals
) -> list[tuple[AccountDoc, bool]]:
    """The (document, is_new) pairs to write; counts read/unchanged/skipped into ``totals``."""
    changed: list[tuple[AccountDoc, bool]] = []
    for account in accounts:
        totals.read += 1
        before = stored.get(account.crm_id)
        try:
            doc = doc_from_crm(account, before)
        except ValidationError as exc:
            log.warning("CRM account %s is not a valid account document, skipped: %s", account.crm_id, exc)
            totals.skipped += 1
            continue
        if before is not None and _view(doc) == _view(before):
            totals.unchanged += 1
            continue
        changed.append((doc, before is None))
    return changed


def _backfill_doc(doc: AccountDoc, workspace: Workspace, now: datetime) -> AccountDoc:
    # What the account workflow would do on an upsert: default time zone, computed segment.
    if doc.timezone is None:
        doc = doc.model_copy(update={"timezone": workspace.timezone})
    if workspace.segments:
        doc = doc.model_copy(update={"segment": segment_of(doc, workspace, now)})
    return doc


async def sync_page(
    deps: Deps,
    backend: Backend,
    input: SyncPageInput,
    *,
    client: Client | None,
    task_queue: str,
    heartbeat: Callable[[], None] = lambda: None,
) -> SyncPageResult:
    """Read one CRM page and bring its new and changed accounts into Touchpoint.

    Idempotent: a retry re-reads the same page; accounts already applied compare equal
    (or reach their workflow again with the same event id, which it ignores).

    Args:
        deps: The store (and settings).
        backend: The CRM.
        input: Page token, size, backfill flag and the sync's start time.
        client: Temporal client for upserts; unused with ``backfill``.
        task_queue: Where account workflows run.
        heartbeat: Called between slow steps (the activity's heartbeat).

    Raises:
        CrmError: The CRM call failed.
    """
    page = await backend.accounts_page(token=input.token, page_size=input.page_size)
    heartbeat()
    totals = SyncTotals(pages=1)
    ids = [a.crm_id for a in page.accounts]
    if input.backfill:

        def write(s: Session) -> None:
            workspace = current_workspace(s)
            for doc, is_new in _compare(page.accounts, _stored_docs(s, ids), totals):
                data = _backfill_doc(doc, workspace, input.now).model_dump(mode="json")
                repo.upsert_account(s, data, data.pop("contacts"))
                totals.created += is_new
                totals.updated += not is_new

        await deps.db(write)
        return SyncPageResult(next_token=page.next_token, totals=totals)
    if client is None:
        raise ValueError("a sync without backfill needs a Temporal client to send upserts")
    stored = await deps.read(lambda s: _stored_docs(s, ids))
    prefix = f"crm-sync:{backend.name}:{input.now.isoformat()}"
    for i, (doc, is_new) in enumerate(_compare(page.accounts, stored, totals)):
        await put_account(client, task_queue, deps.sessions, doc, event_id=f"{prefix}:{doc.id}")
        totals.created += is_new
        totals.updated += not is_new
        if i % 20 == 19:
            heartbeat()
    return SyncPageResult(next_token=page.next_token, totals=totals)


def _find_task(s: Session, key: str | None, crm_id: str) -> Task | None:
    task = repo.get_task(s, key) if key else None
    if task is None:
        task = s.scalars(select(Task).where(Task.crm_id == crm_id)).first()
    return task


async def sync_completed_tasks(
    deps: Deps,
    backend: Backend,
    input: SyncTasksInput,
    *,
    client: Client | None,
    task_queue: str,
) -> SyncTasksResult:
    """Send ``task.completed`` for Touchpoint's tasks completed in the CRM since the cursor.

    Each event's id is ``crm-task:<crm id>`` (a repeat is a no-op), the store's task is
    marked completed, and the cursor ``crm-sync/<backend>`` moves to ``input.now``. With
    ``backfill`` nothing is read: the cursor is only set when there is none, so the first
    regular sync does not walk the CRM's whole task history.

    Raises:
        CrmError: The CRM call failed.
    """
    name = cursor_name(backend.name)
    cursor = await deps.read(lambda s: repo.get_cursor(s, name))
    last = cursor.at if cursor is not None else None
    if input.backfill:
        if last is None:
            await deps.db(lambda s: repo.set_cursor(s, name, at=input.now, value={"backfill": True}))
        return SyncTasksResult(completed=0, cursor=last or input.now)
    if client is None:
        raise ValueError("sending task.completed needs a Temporal client")
    since = (last - TASKS_OVERLAP) if last is not None else FIRST_SYNC
    completed = 0
    for status in await backend.completed_tasks(since=since):
        task = await deps.read(lambda s, st=status: _find_task(s, st.key, st.crm_id))  # type: ignore[misc]
        if task is None or task.status == "completed" or not task.account_id:
            continue  # made by hand in the CRM, already completed, or not about one account
        at = status.completed_at or input.now
        data = {"task_id": task.id, "playbook": task.playbook_id, "step": task.step}
        await send_event(
            client,
            task_queue,
            deps.sessions,
            task.account_id,
            EventIn(id=f"crm-task:{status.crm_id}", type="task.completed", at=at, data=data),
        )
        await deps.db(lambda s, task_id=task.id, when=at: repo.complete_task(s, task_id, when))  # type: ignore[misc]
        completed += 1
    await deps.db(lambda s: repo.set_cursor(s, name, at=input.now, value={"tasks_completed": completed}))
    return SyncTasksResult(completed=completed, cursor=input.now)


class SyncActivities:
    """The `AccountSync` workflow's activities, with one backend per CRM name."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._backends: dict[str, Backend] = {}

    def backend(self, name: str) -> Backend:
        """The worker's backend when it is ``name``, else one built from the settings."""
        configured = self.deps.crm_backend
        if (
            configured is not None
            and getattr(configured, "name", None) == name
            and isinstance(configured, AccountPager)
        ):
            return configured  # type: ignore[return-value]
        if name not in self._backends:
            self._backends[name] = make_backend(self.deps, name)
        return self._backends[name]

    @activity.defn(name=names.SYNC_ACCOUNTS_PAGE)
    async def sync_accounts_page(self, input: SyncPageInput) -> SyncPageResult:
        """One page of the account sync (see ``sync_page``); heartbeats while it works."""
        try:
            return await sync_page(
                self.deps,
                self.backend(input.backend),
                input,
                client=self.deps.client,
                task_queue=activity.info().task_queue,
                heartbeat=activity.heartbeat,
            )
        except CrmRejected as exc:
            if input.token is not None and exc.code == "INVALID_QUERY_LOCATOR":
                raise ApplicationError(str(exc), type=EXPIRED_TOKEN, non_retryable=True) from None
            raise _remote_error(exc) from None
        except CrmError as exc:
            raise _remote_error(exc) from None

    @activity.defn(name=SYNC_COMPLETED_TASKS)
    async def sync_completed_tasks(self, input: SyncTasksInput) -> SyncTasksResult:
        """Completed CRM tasks → `task.completed` (see ``sync_completed_tasks``)."""
        try:
            return await sync_completed_tasks(
                self.deps,
                self.backend(input.backend),
                input,
                client=self.deps.client,
                task_queue=activity.info().task_queue,
            )
        except CrmError as exc:
            raise _remote_error(exc) from None


def make_backend(deps: Deps, name: str) -> Backend:
    """A HubSpot or Salesforce backend from the settings' credentials."""
    backend: Backend = crm_backend_from(deps.settings, name)
    return backend


async def run_sync(
    deps: Deps,
    backend: Backend,
    *,
    client: Client | None,
    task_queue: str,
    page_size: int = 100,
    backfill: bool = False,
    now: datetime | None = None,
    on_page: Callable[[SyncTotals], None] = lambda totals: None,
    max_attempts: int = 8,
) -> SyncTotals:
    """A whole sync in this process (`touchpoint accounts sync`): pages, then completed tasks.

    Transient CRM errors (429, 5xx, timeouts) retry each call up to ``max_attempts`` times,
    waiting what the CRM asked for (else 1, 2, 4... seconds, at most a minute).

    Args:
        deps: The store.
        backend: The CRM.
        client: Temporal client (None only with ``backfill``).
        task_queue: Where account workflows run.
        page_size: Accounts per CRM page.
        backfill: Write the store directly, without events (first import).
        now: The sync's start time (default: now).
        on_page: Called with the running totals after each page (progress display).
        max_attempts: Tries per CRM call before giving up.

    Raises:
        CrmError: A call still failed after its retries, or failed for good.
    """
    start = now or datetime.now(UTC)
    totals = SyncTotals()
    token: str | None = None
    restarted = False
    while True:
        page_input = SyncPageInput(backend=backend.name, token=token, page_size=page_size, backfill=backfill, now=start)  # type: ignore[arg-type]
        try:
            result = await _retrying(
                partial(sync_page, deps, backend, page_input, client=client, task_queue=task_queue), max_attempts
            )
        except CrmRejected as exc:
            if token is None or exc.code != "INVALID_QUERY_LOCATOR" or restarted:
                raise
            restarted, token = True, None  # the paging token expired: read again from the start
            continue
        totals = totals.add(result.totals)
        on_page(totals)
        token = result.next_token
        if token is None:
            break
    tasks_input = SyncTasksInput(backend=backend.name, now=start, backfill=backfill)  # type: ignore[arg-type]
    done = await _retrying(
        partial(sync_completed_tasks, deps, backend, tasks_input, client=client, task_queue=task_queue), max_attempts
    )
    return totals.model_copy(update={"tasks_completed": done.completed})


async def _retrying(call: Callable[[], Any], max_attempts: int) -> Any:
    for attempt in range(1, max_attempts + 1):
        try:
            return await call()
        except CrmTransientError as exc:
            if attempt == max_attempts:
                raise
            delay = exc.retry_after if exc.retry_after is not None else min(60.0, 2.0 ** (attempt - 1))
            log.info("CRM busy (%s); retrying in %.1f s", exc.message, delay)
            await asyncio.sleep(min(delay, 300.0))
    raise AssertionError("unreachable")
