"""What a long-running process sets up once: logs, metrics (Touchpoint's and the SDK's), traces.

    telemetry = setup_process(config, role="worker")   # before the first client connects
    client = await connect(config)                     # gets telemetry's interceptors

`touchpoint.connection.connect` adds `interceptors()` to every client it makes, so workers built
on those clients trace and log with context too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from temporalio.runtime import Runtime

from touchpoint.config import Settings
from touchpoint.observability.context import ContextInterceptor
from touchpoint.observability.logs import configure_logging
from touchpoint.observability.metrics import TemporalMetrics, temporal_runtime
from touchpoint.observability.tracing import setup_tracing, tracing_interceptor

Role = Literal["dev", "worker", "api"]


@dataclass
class Telemetry:
    """What `setup_process` installed."""

    runtime: Runtime
    metrics: TemporalMetrics
    tracing: bool
    interceptors: list[Any] = field(default_factory=list)


_telemetry: Telemetry | None = None


def setup_process(config: Settings, *, role: Role, span_processor: Any = None) -> Telemetry:
    """Logs (human under `dev`, JSON otherwise), the SDK runtime with its metrics in the
    Prometheus registry (set as the default runtime), traces when configured."""
    global _telemetry
    configure_logging(config, default_format="human" if role == "dev" else "json")
    runtime, bridge = temporal_runtime()
    Runtime.set_default(runtime, error_if_already_set=False)
    tracing = setup_tracing(config, f"touchpoint-{role}", span_processor=span_processor)
    interceptors: list[Any] = [ContextInterceptor()]
    tracer = tracing_interceptor()
    if tracer is not None:
        interceptors.insert(0, tracer)
    _telemetry = Telemetry(runtime, bridge, tracing, interceptors)
    return _telemetry


def interceptors() -> list[Any]:
    """Client (and worker) interceptors of this process: none unless `setup_process` ran."""
    return list(_telemetry.interceptors) if _telemetry else []
