"""Exporters chosen by the standard OTEL_* variables, and the exporter wrapper that counts what is
exported and what failed (the queue in front of it: ``telemetry.records``; see telemetry/__init__.py)."""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult

log = logging.getLogger("shadowgrpc.telemetry")


class TelemetryError(ValueError):
    """A telemetry setting (an OTEL_* variable or a flag) cannot be used; the message names it."""


def _choice(var: str, allowed: tuple[str, ...], default: str) -> str:
    v = os.environ.get(var, "").strip().lower() or default
    if v not in allowed:
        raise TelemetryError(f"{var}: must be one of {', '.join(allowed)} here, got {v!r}")
    return v


def _protocol(signal: str) -> str:
    """grpc or http/protobuf, from OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL, else
    OTEL_EXPORTER_OTLP_PROTOCOL, else grpc (the Python SDK's default)."""
    var = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    if not os.environ.get(var, "").strip():
        var = "OTEL_EXPORTER_OTLP_PROTOCOL"
    return _choice(var, ("grpc", "http/protobuf"), "grpc")


def check_env(trace: bool) -> None:
    """Refuse an unusable OTEL_* setting before anything is started (TelemetryError names it)."""
    if trace:
        _choice("OTEL_TRACES_EXPORTER", ("otlp", "console", "none"), "otlp")
        _choice("OTEL_METRICS_EXPORTER", ("otlp", "console", "prometheus", "none"), "otlp")
        _protocol("TRACES")
        _protocol("METRICS")


def span_exporter() -> SpanExporter | None:
    kind = _choice("OTEL_TRACES_EXPORTER", ("otlp", "console", "none"), "otlp")
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    if _protocol("TRACES") == "grpc":
        from .otlp import FastOTLPSpanExporter  # the SDK's, with a ~4x cheaper encoding

        return FastOTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def metric_readers(otlp: bool, prometheus: bool) -> tuple[list[Any], Any]:
    """The metric readers: Prometheus (its own registry, returned too) when asked for, and a
    periodic OTLP exporter when tracing is on, unless OTEL_METRICS_EXPORTER says otherwise."""
    readers: list[Any] = []
    registry = None
    if prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=True)
        readers.append(PrometheusMetricReader(registry=registry, scope_info_enabled=False))
    kind = _choice("OTEL_METRICS_EXPORTER", ("otlp", "console", "prometheus", "none"), "otlp") if otlp else "none"
    if kind in ("otlp", "console"):
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

        if kind == "console":
            exporter = ConsoleMetricExporter()
        elif _protocol("METRICS") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter()
        readers.append(PeriodicExportingMetricReader(exporter))
    return readers, registry


class CountingExporter(SpanExporter):
    """Passes batches on; counts the spans handed to it (``taken``: they left the processor's
    queue), those exported, and those whose export failed (dropped). Shuts down once."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.taken = 0
        self.exported = 0
        self.failed = 0
        self.closed = False

    def export(self, spans) -> SpanExportResult:
        self.taken += len(spans)
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug must not kill the export thread
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.inner.shutdown(timeout_millis=timeout_millis)
        except TypeError:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)
