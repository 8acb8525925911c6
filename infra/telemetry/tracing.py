"""OpenTelemetry tracing across API -> workflow -> activities -> downstream HTTP.

Off unless `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`, or both
comma-separated); the OTLP/HTTP exporter reads the standard `OTEL_EXPORTER_OTLP_*` variables
itself. The provider is never installed globally (that can be done once per process):
each instrumented piece receives it explicitly through the helpers below.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import httpx
from fastapi import FastAPI
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from temporalio.client import Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor

TRACER_NAME = "platform-service"
# Probes and scrapes would drown the traces that matter.
UNTRACED_API_PATHS = "/healthz,/readyz,/metrics"


def _exporters(names: str) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in (n.strip().lower() for n in names.split(",")):
        if name in ("", "none"):
            continue
        if name == "otlp":
            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER={names!r}: supported exporters are otlp, console, none"
            )
    return exporters


def tracer_provider_from_env(service_name: str) -> TracerProvider | None:
    """A provider exporting to what `OTEL_TRACES_EXPORTER` names, or None when tracing is
    off. `service_name` applies unless `OTEL_SERVICE_NAME` (or `service.name` in
    `OTEL_RESOURCE_ATTRIBUTES`) sets one."""
    # The standard OTel variables, read where the OTel SDK reads them, not platform settings.
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporters = _exporters(os.environ.get("OTEL_TRACES_EXPORTER", ""))
    if not exporters:
        return None
    from_env = OTELResourceDetector().detect().attributes
    provider = TracerProvider(
        resource=Resource.create({} if SERVICE_NAME in from_env else {SERVICE_NAME: service_name})
    )
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def client_interceptors(provider: TracerProvider | None) -> Sequence[Interceptor]:
    """Interceptors for `connect_client`: Temporal spans, and the trace context carried in
    workflow and activity headers. A worker on such a client traces its workflows too."""
    if provider is None:
        return ()
    return (TracingInterceptor(tracer=provider.get_tracer(TRACER_NAME)),)


def instrument_http_client(client: httpx.AsyncClient, provider: TracerProvider | None) -> None:
    """Give outbound calls a client span and a `traceparent` header."""
    if provider is not None:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)


def instrument_fastapi(app: FastAPI, provider: TracerProvider | None) -> None:
    """Give every API request a server span; call before the app serves its first request."""
    if provider is not None:
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=provider, excluded_urls=UNTRACED_API_PATHS
        )


def shutdown_tracing(provider: TracerProvider | None) -> None:
    """Flush the spans still batched; call once when the process stops."""
    if provider is not None:
        provider.shutdown()
