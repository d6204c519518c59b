"""Prometheus metrics: Touchpoint's own (`touchpoint_*`) and the Temporal SDK's (`temporal_*`).

Touchpoint's counters are module-level `prometheus_client` metrics in the default registry,
incremented where things happen (the email activity, provider calls, the API). The SDK's
runtime metrics arrive through a `temporalio.runtime.MetricBuffer` that `TemporalMetrics`
drains into the same registry, so each process serves one `/metrics`:

    runtime, bridge = temporal_runtime()
    Runtime.set_default(runtime)      # before any client connects
    prometheus_client.generate_latest()   # both families

Numbers that live in the store (enrollments, outcomes, pending approvals) are read at scrape
time by `StoreMetrics`, which only the API registers: every API answers the same totals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_HISTOGRAM,
    BufferedMetricUpdate,
    LogForwardingConfig,
    LoggingConfig,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

# `*_created` samples double every counter's lines for no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]

EVENTS_ACCEPTED = Counter(
    "touchpoint_events_accepted", "Events the API accepted (2xx), by event type and route.", ["type", "path"]
)
EMAILS = Counter(
    "touchpoint_emails",
    "Emails by playbook, step and status: an outcome (sent, suppressed, failed, uncertain), skipped (a step with no "
    "recipient, a schedule step's `when` false for a CSM's book) or held (waited for a send window, holiday or "
    "frequency cap before its outcome, which it also counts under).",
    ["playbook", "step", "status"],
)
PROVIDER_CALLS = Counter(
    "touchpoint_provider_calls", "Calls to email, CRM and webhook providers by HTTP (or SMTP) status.", ["provider", "status"]
)
PROVIDER_LATENCY = Histogram(
    "touchpoint_provider_call_seconds",
    "Wall time of provider calls.",
    ["provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
_TRACER = trace.get_tracer("touchpoint")
SCHEDULE_TICK_LAG = "touchpoint_schedule_tick_lag"
"""Histogram (seconds) recorded from workflow code through the SDK meter: how late a Schedule's
workflow started after its scheduled time."""

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def email_outcome(playbook: str, step: str, status: str, *, session: Session | None = None) -> None:
    """Count one email by status; with ``session``, once its transaction commits (a rolled-back
    attempt is retried and counted then, never twice)."""
    counter = EMAILS.labels(playbook=playbook, step=step, status=status)
    if session is None:
        counter.inc()
    else:
        from touchpoint.store.db import on_commit

        on_commit(session, counter.inc)


@dataclass
class ProviderCall:
    """Set ``status`` to the answer's status code; an exception leaves it as the error's."""

    status: int | str | None = None


@contextmanager
def provider_call(provider: str) -> Iterator[ProviderCall]:
    """Time one provider call, count it by ``provider`` and status (``error`` without an
    answer), and trace it as a client span (a no-op unless tracing is on)."""
    call = ProviderCall()
    started = time.perf_counter()
    with _TRACER.start_as_current_span(f"{provider} call", kind=trace.SpanKind.CLIENT) as span:
        try:
            yield call
        except BaseException as exc:
            if call.status is None:
                call.status = getattr(exc, "status_code", None) or getattr(exc, "status", None) or "error"
            raise
        finally:
            status = str(call.status if call.status is not None else "error")
            span.set_attribute("touchpoint.provider", provider)
            span.set_attribute("touchpoint.provider.status", status)
            PROVIDER_LATENCY.labels(provider=provider).observe(time.perf_counter() - started)
            PROVIDER_CALLS.labels(provider=provider, status=status).inc()


@dataclass
class _Series:
    value: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    count: int = 0
    total: float = 0.0


@dataclass
class _Family:
    name: str
    kind: int
    description: str
    series: dict[tuple[tuple[str, str], ...], _Series] = field(default_factory=dict)


class TemporalMetrics(Collector):
    """Drains the SDK's metric buffer and serves its metrics in Prometheus' format.

    Counters accumulate their deltas, gauges keep the last value, histograms (durations in
    seconds) count into `DURATION_BUCKETS`. A thread drains the buffer every second so that it
    never fills between scrapes; a scrape drains it first too.
    """

    def __init__(self, buffer: MetricBuffer, *, interval: float = 1.0) -> None:
        self._buffer = buffer
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="temporal-metrics", daemon=True)

    def start(self) -> None:
        """Begin draining in the background (the runtime must exist)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the background drain."""
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.drain()

    def drain(self) -> None:
        """Fold every buffered update into the families."""
        updates = self._buffer.retrieve_updates()
        with self._lock:
            for update in updates:
                self._apply(update)

    def _apply(self, update: BufferedMetricUpdate) -> None:
        metric = update.metric
        family = self._families.get(metric.name)
        if family is None:
            family = self._families[metric.name] = _Family(metric.name, int(metric.kind), metric.description or metric.name)
        key = tuple(sorted((str(k), str(v)) for k, v in update.attributes.items()))
        series = family.series.setdefault(key, _Series())
        value = float(update.value)
        if family.kind == BUFFERED_METRIC_KIND_COUNTER:
            series.value += value
        elif family.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
            series.count += 1
            series.total += value
            for i, bound in enumerate(DURATION_BUCKETS):
                if value <= bound:
                    series.buckets[i] += 1
        else:
            series.value = value

    def collect(self) -> Iterator[Metric]:
        """Prometheus families for every SDK metric seen so far."""
        self.drain()
        with self._lock:
            for family in self._families.values():
                yield _to_metric(family)


def _to_metric(family: _Family) -> Metric:
    name = family.name.removesuffix("_total")
    if family.kind == BUFFERED_METRIC_KIND_COUNTER:
        metric = Metric(name, family.description, "counter")
        for key, series in family.series.items():
            metric.add_sample(f"{name}_total", dict(key), series.value)
    elif family.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
        metric = Metric(name, family.description, "histogram")
        for key, series in family.series.items():
            labels = dict(key)
            # `_apply` counts each value in every bucket it fits: the counts are cumulative.
            for bound, count in zip(DURATION_BUCKETS, series.buckets, strict=True):
                metric.add_sample(f"{name}_bucket", {**labels, "le": _bound(bound)}, count)
            metric.add_sample(f"{name}_bucket", {**labels, "le": "+Inf"}, series.count)
            metric.add_sample(f"{name}_count", labels, series.count)
            metric.add_sample(f"{name}_sum", labels, series.total)
    else:
        metric = Metric(name, family.description, "gauge")
        for key, series in family.series.items():
            metric.add_sample(name, dict(key), series.value)
    return metric


def _bound(value: float) -> str:
    return repr(float(value))


_installed: TemporalMetrics | None = None


def core_logging() -> LoggingConfig:
    """The SDK core's warnings through Python logging (the `temporalio.core` logger), formatted
    and routed like every other record, instead of the core's own lines on stdout."""
    return LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )


def logging_runtime() -> Runtime:
    """A runtime without metrics whose core logs go to Python logging (`core_logging`), for a
    one-shot command whose stdout is its output (`touchpoint simulate --on-server`)."""
    return Runtime(telemetry=TelemetryConfig(logging=core_logging()))


def temporal_runtime() -> tuple[Runtime, TemporalMetrics]:
    """A runtime whose SDK metrics land in the default Prometheus registry and whose core
    warnings go to the `temporalio.core` logger (once per process).

    Set it with `Runtime.set_default` before the first client connects.
    """
    global _installed
    buffer = MetricBuffer(100_000, duration_format=MetricBufferDurationFormat.SECONDS)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer, logging=core_logging()))
    bridge = TemporalMetrics(buffer)
    if _installed is not None:
        REGISTRY.unregister(_installed)
        _installed.stop()
    REGISTRY.register(bridge)
    _installed = bridge
    bridge.start()
    return runtime, bridge


class StoreMetrics(Collector):
    """Enrollments, run outcomes and pending approvals, counted in the store at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[Metric]:
        """Query the store; a store that does not answer yields nothing (the scrape still works)."""
        from touchpoint.store.models import Run

        try:
            with self._sessions() as s:
                by_status = s.execute(select(Run.playbook_id, Run.status, Run.outcome, func.count()).group_by(Run.playbook_id, Run.status, Run.outcome)).all()
                pending = _pending_approvals(s)
        except Exception:
            return
        enrollments = Metric("touchpoint_enrollments", "Runs started, by playbook (from the store).", "counter")
        active = Metric("touchpoint_runs_active", "Runs not ended, by playbook and status.", "gauge")
        outcomes = Metric("touchpoint_run_outcomes", "Ended runs by playbook and outcome.", "counter")
        started: dict[str, int] = {}
        running: dict[tuple[str, str], int] = {}
        ended: dict[tuple[str, str], int] = {}
        for playbook, status, outcome, count in by_status:
            started[playbook] = started.get(playbook, 0) + count
            if status == "ended":
                ended[(playbook, outcome or "none")] = ended.get((playbook, outcome or "none"), 0) + count
            else:
                running[(playbook, status)] = running.get((playbook, status), 0) + count
        for playbook, count in started.items():
            enrollments.add_sample("touchpoint_enrollments_total", {"playbook": playbook}, count)
        for (playbook, status), count in running.items():
            active.add_sample("touchpoint_runs_active", {"playbook": playbook, "status": status}, count)
        for (playbook, outcome), count in ended.items():
            outcomes.add_sample("touchpoint_run_outcomes_total", {"playbook": playbook, "outcome": outcome}, count)
        approvals = Metric("touchpoint_approvals_pending", "Emails held for an approval decision.", "gauge")
        approvals.add_sample("touchpoint_approvals_pending", {}, pending)
        yield from (enrollments, active, outcomes, approvals)


def _pending_approvals(s: Session) -> float:
    """Rows of an `approvals` table with status `pending`, when the store has one."""
    bind: Any = s.get_bind()
    if not inspect(bind).has_table("approvals"):
        return 0.0
    return float(s.execute(text("SELECT count(*) FROM approvals WHERE status = 'pending'")).scalar_one())
