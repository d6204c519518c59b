"""Messages of the health recompute (contract section 8): workflow input/output and activity I/O.

Plain pydantic models in `touchpoint.dsl`, so the `HealthRecompute` workflow gets them through
the sandbox's pass-through like the other runtime models. The scoring itself lives in
`touchpoint.health`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from touchpoint.dsl.runtime import Data

HEALTH_MODEL_MISSING = "HealthModelMissing"
"""Error type of a recompute with no health.yaml deployed: non-retryable, only a deploy fixes it."""


class HealthResult(Data):
    """One account's score: `breakdown` maps metric id to {value, points, weight, missing}."""

    score: int
    tier: str
    breakdown: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        """The metrics that counted as zero because their value was missing."""
        return [name for name, item in self.breakdown.items() if item.get("missing")]


class HealthCounts(Data):
    """What a recompute did, summed over its batches."""

    scored: int = 0
    """Accounts that got a score."""
    changed: int = 0
    """Accounts whose score or tier differs from their previous one (a first score counts)."""
    emitted: int = 0
    """`health.changed` events sent (a retried batch sends the same event ids again)."""
    missing: int = 0
    """Accounts with at least one missing metric (counted as zero)."""
    failed: int = 0
    """Accounts whose stored document could not be read as an account (skipped, logged)."""

    def plus(self, other: HealthCounts) -> HealthCounts:
        """The sum of two counts."""
        return HealthCounts(**{name: getattr(self, name) + getattr(other, name) for name in HealthCounts.model_fields})


class HealthRecomputeInput(Data):
    """Input of the `HealthRecompute` workflow.

    A Temporal Schedule (or `touchpoint health recompute`) starts it with the defaults, or with
    ``account_id`` for one account. The fields below the line are carried across
    continue-as-new and are not meant to be set by callers (tests set them to replay a run).
    """

    account_id: str | None = None
    """Score this account only (else every account, in id order)."""
    batch_size: int = Field(default=500, ge=1, le=10_000)
    """Accounts per activity call: bounds the activity's memory and the time between heartbeats."""
    batches_per_run: int = Field(default=100, ge=1)
    """Continue-as-new after this many batches (or earlier, when Temporal suggests it)."""
    emit_first: bool = True
    """Emit `health.changed` for an account's first score (previous_score none). Turn off for
    a first recompute over a large imported book, to start no account workflows."""
    # ---- carried across continue-as-new
    recompute_id: str | None = None
    """Names this recompute in event ids (`health:<account>:<recompute id>`); default: the
    workflow id and the time the recompute started, so each Schedule tick is distinct."""
    now: datetime | None = None
    """The recompute's clock: every score of one recompute has this time (default: the
    workflow's time when it started)."""
    after: str | None = None
    """Cursor: the last account id done."""
    model_version: str | None = None
    """The health.yaml version the first batch used: later batches keep it across a deploy."""
    totals: HealthCounts = Field(default_factory=HealthCounts)
    batches: int = 0


class HealthRecomputeResult(Data):
    """What a recompute did."""

    recompute_id: str
    now: datetime
    model_version: str | None
    counts: HealthCounts
    batches: int


class HealthBatchInput(Data):
    """Input of the `recompute_health_batch` activity: one page of accounts."""

    recompute_id: str
    now: datetime
    after: str | None = None
    batch_size: int = 500
    account_id: str | None = None
    model_version: str | None = None
    emit_first: bool = True


class HealthBatchResult(Data):
    """Output of `recompute_health_batch`: where to go on, and what the page did."""

    next_after: str | None
    """The cursor for the next page, or None when this was the last one."""
    model_version: str
    counts: HealthCounts = Field(default_factory=HealthCounts)
