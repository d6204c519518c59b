"""The health recompute's one activity: score a page of accounts, store the scores, emit changes.

Each call handles one page of accounts in id order (`touchpoint.store.health`), so memory is
bounded by the page size whatever the number of accounts. Scoring rules and what counts as a
change (including an account's first score) are in `touchpoint.health`.

Idempotent under retry: every score of a recompute carries the recompute's time, and a page
retried after a crash skips the accounts that already have a score at that time (no second
row); `health.changed` goes through the account's workflow with the deterministic id
`health:<account>:<recompute id>`, which the account workflow and the store's event table
drop when repeated, so a retried batch never emits anything twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.store import account_doc, current_workspace
from touchpoint.dsl.health_models import (
    HEALTH_MODEL_MISSING,
    HealthBatchInput,
    HealthBatchResult,
    HealthCounts,
    HealthResult,
)
from touchpoint.dsl.runtime import EventIn
from touchpoint.dsl.workspace import HealthModel
from touchpoint.health import is_change, score_account
from touchpoint.ingest import send_event
from touchpoint.store import repo
from touchpoint.store.health import AccountForHealth, accounts_page_for_health, add_health_scores, scored_accounts
from workflows import names

log = logging.getLogger(__name__)

SIGNAL_CONCURRENCY = 20
"""health.changed signals in flight at once: enough to hide round trips, few enough for a small server."""


def _load_model(s: Session, version: str | None) -> tuple[HealthModel, str, str]:
    found = repo.get_deployment(s, "health", "health", version)
    if found is None:
        what = f"version {version} of health.yaml" if version else "health.yaml"
        raise ApplicationError(
            f"{what} is not deployed: add playbooks/health.yaml and run `touchpoint deploy`",
            type=HEALTH_MODEL_MISSING,
            non_retryable=True,
        )
    return HealthModel.model_validate(found.content), found.version, current_workspace(s).timezone


@dataclass(slots=True)
class _Scored:
    """One account's outcome within a page."""

    account: AccountForHealth
    result: HealthResult
    previous_score: float | None = None
    previous_tier: str | None = None


class HealthActivities:
    """Recomputes health scores for `HealthRecompute` (workflows/health.py)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def _score_page(self, input: HealthBatchInput) -> tuple[list[_Scored], str | None, str, HealthCounts]:
        # Read and score outside any write transaction: scoring a page takes a while and must
        # not hold SQLite's write lock against the account workflows' projections.
        with self.deps.sessions() as s:
            model, version, zone = _load_model(s, input.model_version)
            # One account more than the batch tells whether another page follows (no empty last page).
            page = accounts_page_for_health(
                s, input.now, after=input.after, limit=input.batch_size + 1, account_id=input.account_id
            )
        more = input.account_id is None and len(page) > input.batch_size
        page = page[: input.batch_size]
        counts = HealthCounts()
        scored: list[_Scored] = []
        for account in page:
            try:
                doc = account_doc(account.doc, account.contacts)
            except ValidationError as exc:
                counts.failed += 1
                log.warning("health: account %s skipped, its stored document is invalid: %s", account.id, exc)
                continue
            scored.append(_Scored(account, score_account(doc, model, input.now, timezone=zone)))
        return scored, (page[-1].id if more else None), version, counts

    @activity.defn(name=names.RECOMPUTE_HEALTH_BATCH)
    async def recompute_health_batch(self, input: HealthBatchInput) -> HealthBatchResult:
        """Score one page of accounts, store the scores and emit `health.changed` for changes.

        Returns:
            The cursor of the next page (None after the last one) and this page's counts.

        Raises:
            ApplicationError: ``HealthModelMissing`` (non-retryable) when no health.yaml is deployed.
        """
        activity.heartbeat("scoring")
        scored, next_after, version, counts = await asyncio.to_thread(self._score_page, input)
        counts.scored = len(scored)
        counts.missing = sum(1 for item in scored if item.result.missing)

        def write(s: Session) -> int:
            # Checked again inside the write transaction: a retry racing its own first attempt
            # (after a heartbeat timeout) still writes each score once.
            pending = [item for item in scored if not item.account.already_scored]
            done = scored_accounts(s, input.now, [item.account.id for item in pending])
            rows = [
                (item.account.id, item.result.score, item.result.tier, item.result.breakdown)
                for item in pending
                if item.account.id not in done
            ]
            return add_health_scores(s, input.now, rows)

        await self.deps.db(write)
        activity.heartbeat("emitting")

        changes: list[_Scored] = []
        for item in scored:
            account, result = item.account, item.result
            previous_score, previous_tier = account.previous_score, account.previous_tier
            first = previous_score is None and previous_tier is None
            if first:
                # Never scored here: the document's health (e.g. from a CRM import) is the previous one.
                health = account.doc.get("health") or {}
                previous_score, previous_tier = health.get("score"), health.get("tier")
                first = previous_score is None and previous_tier is None
            if not is_change(previous_score, previous_tier, result):
                continue
            counts.changed += 1
            if first and not input.emit_first:
                continue
            item.previous_score, item.previous_tier = previous_score, previous_tier
            changes.append(item)

        for start in range(0, len(changes), SIGNAL_CONCURRENCY):
            chunk = changes[start : start + SIGNAL_CONCURRENCY]
            await asyncio.gather(*(self._emit(input, item) for item in chunk))
            counts.emitted += len(chunk)
            activity.heartbeat(f"emitted {counts.emitted}/{len(changes)}")
        return HealthBatchResult(next_after=next_after, model_version=version, counts=counts)

    async def _emit(self, input: HealthBatchInput, item: _Scored) -> None:
        account, result = item.account, item.result
        data: dict[str, Any] = {
            "score": result.score,
            "previous_score": item.previous_score,
            "tier": result.tier,
            "previous_tier": item.previous_tier,
            "breakdown": result.breakdown,
        }
        event = EventIn(id=f"health:{account.id}:{input.recompute_id}", type="health.changed", at=input.now, data=data)
        # The account workflows run on this worker's queue (the activity's own), whatever the
        # settings of the process that started the recompute say.
        await send_event(self.deps.client, activity.info().task_queue, self.deps.sessions, account.id, event)
