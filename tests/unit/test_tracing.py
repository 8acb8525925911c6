"""Tracing follows the standard OTEL_* variables: off by default, console or OTLP on demand."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.contrib.opentelemetry import TracingInterceptor

from infra.telemetry.tracing import (
    client_interceptors,
    instrument_http_client,
    shutdown_tracing,
    tracer_provider_from_env,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def providers() -> Iterator[list[TracerProvider]]:
    """Providers a test made, shut down afterwards (their batch threads must not linger)."""
    made: list[TracerProvider] = []
    yield made
    for provider in made:
        shutdown_tracing(provider)


def exporter_types(provider: TracerProvider) -> list[type]:
    processors = provider._active_span_processor._span_processors
    return [type(p.span_exporter) for p in processors]  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [None, "", "none"])
def test_off_unless_an_exporter_is_named(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is not None:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)
    assert tracer_provider_from_env("platform-worker") is None
    assert client_interceptors(None) == ()


def test_sdk_disabled_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracer_provider_from_env("platform-worker") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("console", [ConsoleSpanExporter]),
        ("otlp", [OTLPSpanExporter]),
        ("otlp, console", [OTLPSpanExporter, ConsoleSpanExporter]),
    ],
)
def test_named_exporters_give_a_provider(
    monkeypatch: pytest.MonkeyPatch,
    providers: list[TracerProvider],
    value: str,
    expected: list[type],
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)
    provider = tracer_provider_from_env("platform-worker")
    assert provider is not None
    providers.append(provider)
    assert exporter_types(provider) == expected
    assert provider.resource.attributes["service.name"] == "platform-worker"
    (interceptor,) = client_interceptors(provider)
    assert isinstance(interceptor, TracingInterceptor)


def test_otlp_exporter_reads_the_standard_endpoint_variable(
    monkeypatch: pytest.MonkeyPatch, providers: list[TracerProvider]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    provider = tracer_provider_from_env("platform-worker")
    assert provider is not None
    providers.append(provider)
    (processor,) = provider._active_span_processor._span_processors
    exporter = processor.span_exporter  # type: ignore[attr-defined]
    assert exporter._endpoint == "http://collector:4318/v1/traces"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_SERVICE_NAME", "tenants-worker-eu"),
        ("OTEL_RESOURCE_ATTRIBUTES", "service.name=tenants-worker-eu,deployment.environment=prod"),
    ],
)
def test_service_name_from_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, providers: list[TracerProvider], variable: str, value: str
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv(variable, value)
    provider = tracer_provider_from_env("platform-worker")
    assert provider is not None
    providers.append(provider)
    assert provider.resource.attributes["service.name"] == "tenants-worker-eu"


def test_unknown_exporter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with pytest.raises(ValueError, match="jaeger"):
        tracer_provider_from_env("platform-worker")


async def test_instrumented_http_client_sends_traceparent_of_its_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("traceparent"))
        return httpx.Response(200, json={"version": "1"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as plain:
        await plain.get("http://svc/plain")
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as traced:
        instrument_http_client(traced, provider)
        await traced.post("http://svc/internal/tenants/acme/migrate")

    assert seen[0] is None
    (span,) = exporter.get_finished_spans()
    context = span.get_span_context()
    assert context is not None
    assert seen[1] is not None
    assert seen[1].split("-")[1:3] == [f"{context.trace_id:032x}", f"{context.span_id:016x}"]
