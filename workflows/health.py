"""`HealthRecompute`: every account's health score, in batches (contract section 8).

Started by a Temporal Schedule on health.yaml's cron (created by `touchpoint deploy`), or by
`touchpoint health recompute [ACCOUNT]`. The workflow only walks a cursor: each batch is one
activity call that scores a page of accounts, stores the scores and emits `health.changed`
(activities/health.py), so no account data ever enters the workflow's history. It continues as
new after `batches_per_run` batches (or when Temporal suggests it), carrying the cursor, the
totals and its clock, and returns a summary.

One recompute has one clock (`now`: the workflow's time when it started) and one id (the
workflow id plus that time, so the ticks of a Schedule are distinct): every score it writes has
that time, and every event it emits is `health:<account>:<recompute id>`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from touchpoint.dsl.health_models import (
        HEALTH_MODEL_MISSING,
        HealthBatchInput,
        HealthBatchResult,
        HealthRecomputeInput,
        HealthRecomputeResult,
    )
    from workflows import names

BATCH_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=10),
    # A page heartbeats between scoring, writing and each chunk of signals: a worker that died
    # mid-page is noticed within a minute and the page is retried (idempotently).
    "heartbeat_timeout": timedelta(minutes=1),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1), non_retryable_error_types=[HEALTH_MODEL_MISSING]),
}


def recompute_id_of(workflow_id: str, now_iso: str) -> str:
    """The id of one recompute: the workflow id and its start time."""
    return f"{workflow_id}@{now_iso}"


@workflow.defn(name=names.HEALTH_RECOMPUTE)
class HealthRecompute:
    """Walks every account (or one) in pages; see the module docs."""

    @workflow.run
    async def run(self, input: HealthRecomputeInput) -> HealthRecomputeResult:
        now = input.now or workflow.now()
        recompute_id = input.recompute_id or recompute_id_of(workflow.info().workflow_id, now.isoformat())
        after, version, totals, batches = input.after, input.model_version, input.totals, input.batches
        ran = 0
        while True:
            result = await workflow.execute_activity(
                names.RECOMPUTE_HEALTH_BATCH,
                HealthBatchInput(
                    recompute_id=recompute_id,
                    now=now,
                    after=after,
                    batch_size=input.batch_size,
                    account_id=input.account_id,
                    model_version=version,
                    emit_first=input.emit_first,
                ),
                result_type=HealthBatchResult,
                **BATCH_OPTIONS,
            )
            after, version = result.next_after, result.model_version
            totals = totals.plus(result.counts)
            batches += 1
            ran += 1
            if after is None:
                return HealthRecomputeResult(
                    recompute_id=recompute_id, now=now, model_version=version, counts=totals, batches=batches
                )
            if ran >= input.batches_per_run or workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(
                    input.model_copy(
                        update={
                            "recompute_id": recompute_id,
                            "now": now,
                            "after": after,
                            "model_version": version,
                            "totals": totals,
                            "batches": batches,
                        }
                    )
                )
