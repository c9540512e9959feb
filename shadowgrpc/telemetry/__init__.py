"""OpenTelemetry for the front: one trace per request through the live and shadow Triton calls,
metrics read from the router's own counters, JSON logs carrying trace and span ids.

What to turn on comes from ``serve --trace / --metrics-port P / --log-format json`` (or
``SHADOWGRPC_TRACE=1``, ``SHADOWGRPC_METRICS_PORT``, ``SHADOWGRPC_METRICS_HOST``); everything else
from the standard ``OTEL_*`` variables, read by the SDK and its exporters (constructed with no
arguments): ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (``Resource.create()``; the
service name defaults to ``shadowgrpc``), ``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_ENDPOINT``,
``..._PROTOCOL`` (``grpc``, the default, or ``http/protobuf``), ``OTEL_TRACES_SAMPLER`` and
``_ARG`` (e.g. ``parentbased_traceidratio`` / ``0.01``), ``OTEL_TRACES_EXPORTER`` /
``OTEL_METRICS_EXPORTER`` (``otlp``, ``console`` or ``none``), ``OTEL_BSP_*``,
``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_EXPORTER_OTLP_TIMEOUT``.

Spans (tracing on):
- SERVER ``inference.GRPCInferenceService/<Method>`` per call of the KServe v2 service (health and
  ShadowControl are not traced), continuing the caller's W3C ``traceparent``; for ModelInfer:
  ``shadowgrpc.route/model/version/request_id``, ``shadowgrpc.shadowed`` and, per request, how
  many shadow targets were ``sent``, ``shed``, ``down`` or ``not_sampled``.
- CLIENT ``ModelInfer live <model>`` and ``ModelInfer shadow <target>``, children of the server
  span. A shadow span is started from the parent context its task was created with (never made
  current) and may end after the server span; it carries ``shadowgrpc.role=shadow`` and
  ``shadowgrpc.shadow=true`` (filter on either), and after the comparison the pair's agreement,
  mean |live - shadow| and contract mismatch. Both carry target, address, deadline, gRPC status
  and latency, and send their own ``traceparent`` to Triton, whose OpenTelemetry trace mode then
  puts its spans under them.
- Cheap on the request path (``telemetry.records``): each span is a compact record (ids, times,
  status, a reference to the target's cached attributes and a few per-request values) appended to
  a bounded queue; a background thread turns batches of records into the SDK's ``ReadableSpan``
  and hands them to the configured exporter's public ``export`` (over gRPC: the SDK's exporter
  with a ~4x cheaper encoding of the same request, ``telemetry.otlp``), batching as the SDK's
  ``BatchSpanProcessor`` (``OTEL_BSP_SCHEDULE_DELAY``, ``_MAX_QUEUE_SIZE``, ``_MAX_EXPORT_BATCH_SIZE``).
  Sampling is the configured sampler's (``OTEL_TRACES_SAMPLER``). A dead or hung collector costs
  the live path nothing; spans past the queue or in failed exports are dropped and counted
  (``shadowgrpc.telemetry.spans.dropped``, and a log line at shutdown). The few OpenTelemetry SDK
  internals this takes (for speed, or where no public API exists) are all in ``telemetry._sdk``, each
  with a public fallback, pinned to the SDK versions verified by ``tests/unit/test_otel_sdk.py``.

Metrics (``telemetry.metrics``) are read from the router's stats when a reader collects: no
per-request cost. With tracing off the router sees ``telemetry = None``: one ``is None`` test
per request, no span objects.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .. import __version__
from .export import CountingExporter, TelemetryError, check_env, metric_readers, span_exporter
from .logs import JsonFormatter, configure_logging
from .metrics import RouterMetrics
from .records import RecordProcessor, SpanRecord, bsp_settings
from .spans import Hooks, LiveCall, ShadowCall, inject

log = logging.getLogger("shadowgrpc.telemetry")


@dataclasses.dataclass(frozen=True)
class TelemetryOptions:
    trace: bool = False  # spans (and OTLP metrics unless OTEL_METRICS_EXPORTER=none)
    metrics_port: int | None = None  # Prometheus scrape endpoint; 0 = a free port
    metrics_host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, trace_if_otlp_endpoint: bool = False) -> TelemetryOptions:
        """SHADOWGRPC_TRACE / _METRICS_PORT / _METRICS_HOST; with ``trace_if_otlp_endpoint`` (the
        demo) tracing is also on when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set."""
        e = os.environ if env is None else env
        port = e.get("SHADOWGRPC_METRICS_PORT", "").strip()
        if port and not (port.isdigit() and int(port) < 65536):
            raise TelemetryError(f"SHADOWGRPC_METRICS_PORT: must be a port number, got {port!r}")
        endpoint = trace_if_otlp_endpoint and any(e.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        return cls(
            trace=endpoint or e.get("SHADOWGRPC_TRACE", "").strip().lower() in ("1", "true", "yes", "on"),
            metrics_port=int(port) if port else None,
            metrics_host=e.get("SHADOWGRPC_METRICS_HOST", "").strip() or "127.0.0.1",
        )


def make_resource() -> Resource:
    r = Resource.create()
    extra = {}
    if str(r.attributes.get("service.name", "")).startswith("unknown_service"):
        extra["service.name"] = "shadowgrpc"
    if "service.version" not in r.attributes:
        extra["service.version"] = __version__
    return r.merge(Resource(extra)) if extra else r


_BSP_VARS = {"max_queue_size": "OTEL_BSP_MAX_QUEUE_SIZE", "schedule_delay_millis": "OTEL_BSP_SCHEDULE_DELAY",
             "max_export_batch_size": "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"}


def _discard(record: SpanRecord) -> None:
    """OTEL_TRACES_EXPORTER=none: spans are made (trace context still sent to Triton), not exported."""


class Telemetry:
    """Providers, exporters and the Prometheus endpoint of one Front. ``hooks`` is what the
    router calls: None unless tracing is on (metrics read the router's stats when collected)."""

    def __init__(self, options: TelemetryOptions, router: Any) -> None:
        self.options = options
        self.metrics_port: int | None = None
        self.tracer_provider: TracerProvider | None = None
        self.processor: RecordProcessor | None = None
        self.hooks: Hooks | None = None
        self._http = None
        if not options.trace and options.metrics_port is None:
            self.meter_provider = None
            return
        check_env(options.trace)
        if options.trace:
            try:
                bsp_settings()
            except ValueError as e:  # the SDK's words, which name the processor's arguments
                names = [v for k, v in _BSP_VARS.items() if k in str(e)]
                raise TelemetryError(f"{' / '.join(names) or 'OTEL_BSP_*'}: {e}") from None
        resource = make_resource()
        readers, self.registry = metric_readers(options.trace, options.metrics_port is not None)
        self.meter_provider = None
        if readers:
            from opentelemetry.sdk.metrics import MeterProvider

            self.meter_provider = MeterProvider(metric_readers=readers, resource=resource)
        if options.trace:
            # The provider: the configured sampler (OTEL_TRACES_SAMPLER), id generator and resource;
            # spans never go through it (records do, telemetry.records), so no span processor.
            self.tracer_provider = p = TracerProvider(resource=resource)
            exporter = span_exporter()
            if exporter is not None:
                self.processor = RecordProcessor(CountingExporter(exporter), p.resource, InstrumentationScope("shadowgrpc", __version__, None, None))
            self.hooks = Hooks(p.sampler, p.id_generator, self.processor.emit if self.processor is not None else _discard)
        if self.meter_provider is not None:
            RouterMetrics(self.meter_provider.get_meter("shadowgrpc", __version__), router, self)

    def start(self) -> None:
        """Serve /metrics for Prometheus when a metrics port was asked for."""
        if self.options.metrics_port is None:
            return
        from prometheus_client import start_http_server

        try:
            self._http, _ = start_http_server(self.options.metrics_port, addr=self.options.metrics_host, registry=self.registry)
        except OSError as e:
            raise OSError(f"--metrics-port: cannot listen on {self.options.metrics_host}:{self.options.metrics_port}: {e.strerror or e}") from None
        self.metrics_port = self._http.server_address[1]

    def spans_dropped(self) -> dict[str, int]:
        p = self.processor
        if p is None:
            return {"queue_full": 0, "export_failed": 0}
        return {"queue_full": p.queue_full, "export_failed": p.exporter.failed}

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the Prometheus endpoint, flush metrics, then spans (last), each bounded by
        ``timeout_s``: a dead or hung collector cannot hold the shutdown longer."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        ms = max(int(timeout_s * 1000), 100)
        if self.meter_provider is not None:
            self.meter_provider.shutdown(timeout_millis=ms)
        if self.tracer_provider is not None:
            if self.processor is not None:
                self.processor.shutdown_millis = ms
                self.processor.shutdown()
            self.tracer_provider.shutdown()
            d = self.spans_dropped()
            exported = self.processor.exporter.exported if self.processor else 0
            (log.warning if sum(d.values()) else log.info)(
                "telemetry: %d spans exported, %d dropped (queue full %d, export failed %d)",
                exported, sum(d.values()), d["queue_full"], d["export_failed"],
            )


__all__ = ["Hooks", "JsonFormatter", "LiveCall", "ShadowCall", "Telemetry", "TelemetryError", "TelemetryOptions", "configure_logging", "inject", "make_resource"]
