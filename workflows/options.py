"""What the interpreters share: activity options for side effects and the exceptions that unwind a run.

Passed through the sandbox (deterministic, no state), so the account workflow and `ScheduleRun` see the
same classes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

from workflows import names

EFFECT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=[names.CONFIGURATION_ERROR, "Rejected"],
)
EFFECT_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60),
    # Transient failures (timeouts, 429, 5xx) retry with back-off for up to 24 hours.
    "schedule_to_close_timeout": timedelta(hours=24),
    "retry_policy": EFFECT_RETRY,
}


DRAFT_OPTIONS: dict[str, Any] = {
    **EFFECT_OPTIONS,
    # A model may take minutes for a long text (`TOUCHPOINT_AI_TIMEOUT` is at most 280 s).
    "start_to_close_timeout": timedelta(minutes=5),
}
OPTIONS_BY_KIND: dict[str, dict[str, Any]] = {names.DRAFT_TEXT: DRAFT_OPTIONS}
"""Activity options of the effects whose options differ from `EFFECT_OPTIONS`."""


class RunEnded(Exception):
    """Unwinds the interpreter when the run ends early (exit, goal, exit_when, cancel)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class StepFailed(Exception):
    """A step failed for good after its retries."""

STORE_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1)),
}
"""Store steps are local activities: short, idempotent, and each a server round trip cheaper
than a regular activity."""
