"""Traces: OpenTelemetry over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

One trace follows an event: the API's server span (FastAPI instrumentation), the client's
signal-with-start, the account workflow, the activities it runs and the provider calls they
make (`touchpoint.observability.metrics.provider_call` opens a span per call), carried across
processes in Temporal headers by `temporalio.contrib.opentelemetry.TracingInterceptor`.

The exporter reads the standard `OTEL_*` variables itself (headers, timeout, protocol details);
`OTEL_SERVICE_NAME` overrides the service name given here.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace

from touchpoint.config import Settings

_enabled = False


def tracing_enabled() -> bool:
    """True once `setup_tracing` installed a tracer provider in this process."""
    return _enabled


def setup_tracing(config: Settings, service_name: str, *, span_processor: Any = None) -> bool:
    """Install a tracer provider exporting to `OTEL_EXPORTER_OTLP_ENDPOINT` (or to
    ``span_processor``, for tests). Returns whether tracing is on."""
    global _enabled
    if span_processor is None and not config.otel_endpoint:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}))
    if span_processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        span_processor = BatchSpanProcessor(OTLPSpanExporter())
    provider.add_span_processor(span_processor)
    trace.set_tracer_provider(provider)
    _enabled = True
    return True


def tracing_interceptor() -> Any:
    """Temporal's tracing interceptor for `Client.connect` (None when tracing is off)."""
    if not _enabled:
        return None
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return TracingInterceptor()


def instrument_app(app: Any) -> None:
    """Server spans for every request of a FastAPI app (when tracing is on)."""
    if _enabled:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")


def shutdown_tracing() -> None:
    """Flush spans still buffered (process exit)."""
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "shutdown", None)
    if _enabled and flush is not None:
        flush()
