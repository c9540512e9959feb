"""Exporters chosen by the standard OTEL_* variables, and a batch span processor that counts what
it drops (see telemetry.py)."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanExportResult


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
        from ._telemetry_otlp import FastOTLPSpanExporter  # the SDK's, with a ~4x cheaper encoding

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
    """Passes batches on; counts the spans exported and those whose export failed (dropped)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported = 0
        self.failed = 0

    def export(self, spans) -> SpanExportResult:
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
        try:
            self.inner.shutdown(timeout_millis=timeout_millis)
        except TypeError:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's BatchSpanProcessor (queue bounded by OTEL_BSP_MAX_QUEUE_SIZE; the worker thread
    exports, never the event loop), counting the spans it drops because the queue is full, and
    shutting down within ``shutdown_millis`` even when the collector hangs."""

    def __init__(self, exporter: SpanExporter, meter_provider: Any = None) -> None:
        self.exporter = CountingExporter(exporter)
        super().__init__(self.exporter, meter_provider=meter_provider)
        bp = self._batch_processor
        self._queue = bp._queue  # a deque(maxlen=max_queue_size): a full one evicts the oldest
        self.max_queue_size: int = bp._max_queue_size
        self.queue_full = 0
        self.shutdown_millis = 30_000

    def queue_length(self) -> int:
        return len(self._queue)

    def on_end(self, span) -> None:
        if not span.context.trace_flags.sampled:
            return
        if len(self._queue) >= self.max_queue_size:
            self.queue_full += 1
        self._batch_processor.emit(span)

    def shutdown(self) -> None:
        self._batch_processor.shutdown(timeout_millis=self.shutdown_millis)
