"""Exporters chosen by the standard OTEL_* variables, and a batch span processor that counts what
it drops (see telemetry/__init__.py)."""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry.sdk.environment_variables import OTEL_BSP_MAX_QUEUE_SIZE
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanExportResult

from ._sdk import batch_span_queue, shutdown_batch_span_processor

log = logging.getLogger("shadowgrpc.telemetry")
_DEFAULT_MAX_QUEUE_SIZE = 2048  # OTEL_BSP_MAX_QUEUE_SIZE's default (OpenTelemetry specification)


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


def bsp_max_queue_size() -> int:
    """The span queue's bound as the SDK's BatchSpanProcessor reads it: OTEL_BSP_MAX_QUEUE_SIZE,
    else (unset or not an integer) the specification's 2048; passed to it explicitly, so known
    here without reading the processor."""
    try:
        return int(os.environ.get(OTEL_BSP_MAX_QUEUE_SIZE, _DEFAULT_MAX_QUEUE_SIZE))
    except ValueError:
        log.warning("%s: not an integer, using %d", OTEL_BSP_MAX_QUEUE_SIZE, _DEFAULT_MAX_QUEUE_SIZE)
        return _DEFAULT_MAX_QUEUE_SIZE


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


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's BatchSpanProcessor (queue bounded by OTEL_BSP_MAX_QUEUE_SIZE; the worker thread
    exports, never the event loop), counting the spans it drops because the queue is full, and
    shutting down within ``shutdown_millis`` even when the collector hangs (telemetry._sdk)."""

    def __init__(self, exporter: SpanExporter, meter_provider: Any = None) -> None:
        self.exporter = CountingExporter(exporter)
        self.max_queue_size = bsp_max_queue_size()
        super().__init__(self.exporter, max_queue_size=self.max_queue_size, meter_provider=meter_provider)
        # The SDK's deque (a full one evicts the oldest span), or None: its length from counts.
        self._span_queue = batch_span_queue(self, self.max_queue_size)
        self.queued = 0  # spans handed to the SDK's processor
        self.queue_full = 0
        self.shutdown_millis = 30_000
        self._shut = False

    def queue_length(self) -> int:
        q = self._span_queue
        if q is not None:
            return len(q)
        return max(0, self.queued - self.queue_full - self.exporter.taken)

    def on_end(self, span) -> None:
        if not span.context.trace_flags.sampled:
            return
        if not self._shut:  # after shutdown the SDK's processor ignores spans (and says so)
            q = self._span_queue
            if (len(q) if q is not None else self.queue_length()) >= self.max_queue_size:
                self.queue_full += 1
            self.queued += 1
        BatchSpanProcessor.on_end(self, span)

    def shutdown(self) -> None:
        self._shut = True
        shutdown_batch_span_processor(self, self.exporter, self.shutdown_millis)
