"""`AccountSync`: pull accounts from the CRM page by page, then completed tasks.

Started by a Temporal Schedule (or `touchpoint accounts sync --on-server`). Each page is one
activity call that returns the next paging token and counts, so the workflow holds only a
token and totals; it continues as new when Temporal suggests, carrying both.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from touchpoint.dsl.sync_models import (
        EXPIRED_TOKEN,
        SYNC_COMPLETED_TASKS,
        AccountSyncInput,
        SyncPageInput,
        SyncPageResult,
        SyncTasksInput,
        SyncTasksResult,
        SyncTotals,
    )
    from workflows import names

MAX_RESTARTS = 2
START_TO_CLOSE = timedelta(minutes=10)
HEARTBEAT = timedelta(minutes=2)
# Rate limits and outages: retry for up to a day (the contract's budget for transient
# failures), honouring the CRM's Retry-After through next_retry_delay.
RETRY = RetryPolicy(maximum_interval=timedelta(minutes=5))
SCHEDULE_TO_CLOSE = timedelta(hours=24)


@workflow.defn(name=names.ACCOUNT_SYNC)
class AccountSync:
    """One sync of a CRM into Touchpoint; returns what it did."""

    @workflow.run
    async def run(self, input: AccountSyncInput) -> SyncTotals:
        now = input.now or workflow.now()
        totals = input.totals
        token = input.token
        restarts = input.restarts
        first = token is None and totals.pages == 0
        while first or token is not None:
            first = False
            try:
                result = await workflow.execute_activity(
                    names.SYNC_ACCOUNTS_PAGE,
                    SyncPageInput(
                        backend=input.backend, token=token, page_size=input.page_size, backfill=input.backfill, now=now
                    ),
                    result_type=SyncPageResult,
                    start_to_close_timeout=START_TO_CLOSE,
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=RETRY,
                    schedule_to_close_timeout=SCHEDULE_TO_CLOSE,
                )
            except ActivityError as exc:
                cause = exc.cause
                if (
                    not (isinstance(cause, ApplicationError) and cause.type == EXPIRED_TOKEN)
                    or restarts >= MAX_RESTARTS
                ):
                    raise
                workflow.logger.warning("CRM paging token expired; reading %s again from the start", input.backend)
                restarts += 1
                token, first = None, True
                continue
            totals = totals.add(result.totals)
            token = result.next_token
            if token is not None and workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(
                    input.model_copy(update={"now": now, "token": token, "totals": totals, "restarts": restarts})
                )
        done = await workflow.execute_activity(
            SYNC_COMPLETED_TASKS,
            SyncTasksInput(backend=input.backend, now=now, backfill=input.backfill),
            result_type=SyncTasksResult,
            start_to_close_timeout=START_TO_CLOSE,
            retry_policy=RETRY,
            schedule_to_close_timeout=SCHEDULE_TO_CLOSE,
        )
        return totals.model_copy(update={"tasks_completed": totals.tasks_completed + done.completed})
