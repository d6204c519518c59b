"""A worker interceptor that says what each activity is about, and times schedule ticks.

- Activities: the account, playbook, run and step are read from the activity's input (any
  object with ``run.id``/``run.playbook``, ``step``, ``account.id`` or ``account_id``, the
  shapes of Touchpoint's activity inputs) and from an ``account/<id>`` workflow id. They go to
  `LOG_CONTEXT` for log lines and onto the activity's span when tracing is on.
- Workflows started by a Temporal Schedule record how late they started after their scheduled
  time (`touchpoint_schedule_tick_lag`, seconds) through the SDK's replay-safe metric meter.
"""

from __future__ import annotations

from typing import Any

import temporalio.client
from temporalio import activity, workflow
from temporalio.common import SearchAttributeKey
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from touchpoint.observability.logs import LOG_CONTEXT
from touchpoint.observability.metrics import SCHEDULE_TICK_LAG

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


def describe(args: Any, workflow_id: str = "") -> dict[str, str]:
    """account, playbook, run and step found in activity arguments (duck-typed, best effort)."""
    found: dict[str, str] = {}
    first = args[0] if args else None
    run = getattr(first, "run", None)
    pairs = (
        ("run", getattr(run, "id", None) or getattr(first, "run_id", None)),
        ("playbook", getattr(run, "playbook", None) or getattr(first, "playbook_id", None)),
        ("step", getattr(first, "step", None)),
        ("account", getattr(getattr(first, "account", None), "id", None) or getattr(first, "account_id", None)),
    )
    for key, value in pairs:
        if isinstance(value, str) and value:
            found[key] = value
    if "account" not in found and workflow_id.startswith("account/"):
        found["account"] = workflow_id.removeprefix("account/")
    return found


class _ActivityContext(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        context = describe(input.args, info.workflow_id or "")
        token = LOG_CONTEXT.set(context)
        try:
            if context:
                _annotate_span(context)
            return await super().execute_activity(input)
        finally:
            LOG_CONTEXT.reset(token)


def _annotate_span(context: dict[str, str]) -> None:
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        for key, value in context.items():
            span.set_attribute(f"touchpoint.{key}", value)


class _ScheduleLag(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        info = workflow.info()
        scheduled = info.typed_search_attributes.get(SCHEDULED_START)
        if scheduled is not None:
            lag = max(0.0, (info.start_time - scheduled).total_seconds())
            histogram = workflow.metric_meter().create_histogram_float(
                SCHEDULE_TICK_LAG, "How late a Schedule's workflow started after its scheduled time.", "s"
            )
            histogram.record(lag, {"workflow_type": info.workflow_type})
        return await super().execute_workflow(input)


class ContextInterceptor(temporalio.client.Interceptor, Interceptor):
    """Log context for activities and schedule lag for workflows (see the module docstring).

    Given to `Client.connect`, it applies to every worker built on that client.
    """

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap activities."""
        return _ActivityContext(next)

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor] | None:
        """Wrap workflows."""
        return _ScheduleLag
