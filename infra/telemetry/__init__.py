"""Structured logging, Prometheus metrics and OpenTelemetry tracing."""
