"""`DateSweep`: the hourly sweep that starts date-triggered playbooks (contract section 3).

An hourly Temporal Schedule (created by `touchpoint deploy`) starts this workflow with
`DateSweepInput()`. It calls the `sweep_date_triggers` activity page by page, for every deployed
date-triggered playbook in turn, until the activity says the sweep is done, and returns the
totals. The window, `catch_up`, `when` and once-per-date-value rules live with the activity
(`activities/sweep.py`); the accounts never enter this workflow's history, only counts do.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from touchpoint.dsl.sweep_models import (
        DateSweepInput,
        DateSweepResult,
        PlaybookSweep,
        SweepInput,
        SweepPage,
        SweepPageResult,
    )
    from workflows import names

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
PAGE_TIMEOUT = timedelta(minutes=10)
PAGE_HEARTBEAT = timedelta(minutes=1)
"""A page reads and signals up to `limit` accounts, heartbeating after each signal."""
PAGE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))


@workflow.defn(name=names.DATE_SWEEP)
class DateSweep:
    """Sweeps every date-triggered playbook once, as of one moment."""

    @workflow.run
    async def run(self, input: DateSweepInput) -> DateSweepResult:
        # The Schedule's scheduled time, not the start time: a sweep started late still sweeps
        # up to its hour (and the next one covers the rest, from the cursor).
        now = input.now or workflow.info().typed_search_attributes.get(SCHEDULED_START) or workflow.now()
        summary = DateSweepResult(now=now)
        page: SweepPage | None = None
        while True:
            result: SweepPageResult = await workflow.execute_activity(
                names.SWEEP_DATE_TRIGGERS,
                SweepInput(now=now, playbook=input.playbook, page=page, limit=input.limit),
                result_type=SweepPageResult,
                start_to_close_timeout=PAGE_TIMEOUT,
                heartbeat_timeout=PAGE_HEARTBEAT,
                retry_policy=PAGE_RETRY,
            )
            if result.playbook is not None:
                totals = summary.playbooks.setdefault(result.playbook, PlaybookSweep(window_start=result.window_start))
                totals.pages += 1
                totals.scanned += result.scanned
                totals.due += result.due
                totals.fired += result.fired
                totals.skipped += result.skipped
            if result.next is None:
                return summary
            page = result.next
