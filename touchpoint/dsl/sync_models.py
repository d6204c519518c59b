"""Inputs and results of the CRM account sync (`AccountSync` workflow and its activities).

Plain pydantic models in `touchpoint.dsl`, so the workflow sandbox passes them through. The
workflow reads the CRM one page per activity call and carries only a paging token and
counters, so its history stays small however many accounts the CRM has.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EXPIRED_TOKEN",
    "SYNC_COMPLETED_TASKS",
    "AccountSyncInput",
    "SyncPageInput",
    "SyncPageResult",
    "SyncTasksInput",
    "SyncTasksResult",
    "SyncTotals",
    "cursor_name",
]

CrmName = Literal["hubspot", "salesforce"]

SYNC_COMPLETED_TASKS = "sync_completed_tasks"
"""Activity name: CRM tasks completed since the last sync → `task.completed` events."""
EXPIRED_TOKEN = "SyncTokenExpired"
"""Error type of a paging token the CRM refused (an expired Salesforce query locator): the
workflow reads again from the start."""


def cursor_name(backend: str) -> str:
    """The store cursor holding a backend's sync high-water mark (``crm-sync/<backend>``)."""
    return f"crm-sync/{backend}"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyncTotals(_Data):
    """What a sync did, summed over its pages.

    Attributes:
        read: Accounts read from the CRM.
        created: Accounts new to Touchpoint (an upsert sent, or written with backfill).
        updated: Accounts whose CRM fields or contacts changed.
        unchanged: Accounts equal to the store's document: nothing sent.
        skipped: Accounts the CRM returned that are not valid account documents (logged).
        tasks_completed: CRM tasks created by Touchpoint and completed there, sent as
            ``task.completed``.
        pages: CRM pages read.
    """

    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    tasks_completed: int = 0
    pages: int = 0

    def add(self, other: SyncTotals) -> SyncTotals:
        """The sum of two totals."""
        return SyncTotals(**{name: getattr(self, name) + getattr(other, name) for name in SyncTotals.model_fields})


class AccountSyncInput(_Data):
    """Input of the `AccountSync` workflow (also what a Temporal Schedule starts it with).

    Attributes:
        backend: The CRM to read, ``hubspot`` or ``salesforce``; the worker's settings hold
            its credentials (``HUBSPOT_TOKEN``, ``SALESFORCE_*``).
        page_size: Accounts per CRM page (HubSpot at most 100; Salesforce 200 to 2,000).
        backfill: Write new and changed accounts straight into the store without events
            (the first import of an existing CRM: existing customers must not all start
            onboarding); completed tasks are not read.
        now: The sync's start time, used in event ids and as the completed-tasks
            high-water mark; None (a Schedule's static input) means the workflow's start time.
        token: Where to resume reading (set by continue-as-new); None reads from the start.
        totals: Counts so far (carried across continue-as-new).
        restarts: How often the read started over after an expired paging token.
    """

    backend: CrmName
    page_size: int = Field(default=100, ge=1, le=2000)
    backfill: bool = False
    now: datetime | None = None
    token: str | None = None
    totals: SyncTotals = Field(default_factory=SyncTotals)
    restarts: int = 0


class SyncPageInput(_Data):
    """One page of a sync (activity `sync_accounts_page`)."""

    backend: CrmName
    token: str | None = None
    page_size: int = 100
    backfill: bool = False
    now: datetime


class SyncPageResult(_Data):
    """What one page did, and where the next page starts (None: that was the last)."""

    next_token: str | None = None
    totals: SyncTotals = Field(default_factory=SyncTotals)


class SyncTasksInput(_Data):
    """CRM tasks completed since the cursor (activity `sync_completed_tasks`)."""

    backend: CrmName
    now: datetime
    backfill: bool = False


class SyncTasksResult(_Data):
    """How many `task.completed` events were sent, and the new high-water mark."""

    completed: int = 0
    cursor: datetime | None = None
