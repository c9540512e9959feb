"""OpenTelemetry without Triton: off by default, unusable OTEL_* settings refused, JSON logs with
trace and span ids (inside a traced request too), traceparent injection, the fast OTLP encoding
equal to the SDK's, a call's status from its error, the comparison attributes equal to numpy's
means. Spans as records: tests/unit/test_telemetry_records.py. Spans, metrics and logs exported
against the real Triton: tests/triton/test_telemetry_export.py."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import types

import pytest

from shadowgrpc.config import Settings
from shadowgrpc.server import Front
from shadowgrpc.telemetry import JsonFormatter, Telemetry, TelemetryError, TelemetryOptions, configure_logging

ROUTE = {"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}, {"name": "missing", "model": "no_such_model"}]}


def test_off_by_default_means_no_hooks_and_plain_handlers(monkeypatch):
    monkeypatch.delenv("SHADOWGRPC_TRACE", raising=False)
    monkeypatch.delenv("SHADOWGRPC_METRICS_PORT", raising=False)
    async def build() -> Front:  # grpc.aio servers are made inside a running loop, as `serve` does
        return Front(Settings.from_dict({"server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"}, "routes": [ROUTE]}))

    front = asyncio.run(build())
    assert front.router.telemetry is None and front.telemetry.hooks is None
    assert front.telemetry.tracer_provider is None and front.telemetry.meter_provider is None


@pytest.mark.parametrize(("var", "value"), [("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"), ("OTEL_TRACES_EXPORTER", "zipkin"),
                                            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"), ("OTEL_BSP_SCHEDULE_DELAY", "-5"), ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096")])
def test_unusable_otel_setting_is_refused_naming_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(TelemetryError, match=var):
        Telemetry(TelemetryOptions(trace=True), router=None)


def test_json_logs_carry_trace_and_span_ids():
    from opentelemetry.sdk.trace import TracerProvider

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("shadowgrpc.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("outside")
        tracer = TracerProvider().get_tracer("t")
        with tracer.start_as_current_span("s") as span:
            logger.warning("inside %d", 1)
        ctx = span.get_span_context()
    finally:
        logger.removeHandler(handler)
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert outside["level"] == "WARNING" and outside["message"] == "outside" and "trace_id" not in outside
    assert inside["message"] == "inside 1" and inside["trace_id"] == f"{ctx.trace_id:032x}" and inside["span_id"] == f"{ctx.span_id:016x}"


def test_json_logs_inside_a_traced_request_carry_its_server_span():
    """Inside a traced request the current span is the request's SERVER record (telemetry.records.CURRENT), not an attached OTel context."""
    from opentelemetry.trace import SpanKind

    from shadowgrpc.telemetry.records import CURRENT, SpanRecord

    rec = SpanRecord("inference.GRPCInferenceService/ModelInfer", SpanKind.SERVER, 0xABC, 0xDEF, 1, None, None, {}, {})
    token = CURRENT.set(rec)
    try:
        doc = json.loads(JsonFormatter().format(logging.LogRecord("x", logging.INFO, __file__, 1, "in request", None, None)))
    finally:
        CURRENT.reset(token)
    assert doc["trace_id"] == f"{0xABC:032x}" and doc["span_id"] == f"{0xDEF:016x}"


def test_configure_logging_json_sets_level_and_formatter():
    root = logging.getLogger()
    saved = (root.level, [h.formatter for h in root.handlers])
    try:
        configure_logging("json", "DEBUG")
        assert root.level == logging.DEBUG and all(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    finally:
        root.setLevel(saved[0])
        for h, f in zip(root.handlers, saved[1], strict=True):
            h.setFormatter(f)


def test_traceparent_injection_replaces_the_callers():
    from opentelemetry.sdk.trace import TracerProvider

    from shadowgrpc.telemetry import inject

    span = TracerProvider().get_tracer("t").start_span("x")
    md = inject((("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"), ("x-user", "a")), span)
    c = span.get_span_context()
    assert md == (("x-user", "a"), ("traceparent", f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}"))


def test_serve_refuses_an_unusable_otel_setting(tmp_path):
    cfg = tmp_path / "front.toml"
    cfg.write_text('[server]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\n')
    env = {**os.environ, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    proc = subprocess.run([sys.executable, "-m", "shadowgrpc", "serve", "--config", str(cfg), "--trace"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert "bad telemetry setting: OTEL_EXPORTER_OTLP_PROTOCOL" in proc.stderr


def test_fast_otlp_encoding_equals_the_sdk_encoder():
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState, set_span_in_context

    from shadowgrpc.telemetry.otlp import FastOTLPSpanExporter, encode_request

    class Keep(SpanExporter):
        spans: list = []

        def export(self, spans):
            self.spans.extend(spans)
            return SpanExportResult.SUCCESS

    providers = [TracerProvider(resource=Resource.create({"service.name": n})) for n in ("a", "b")]
    for p in providers:
        p.add_span_processor(SimpleSpanProcessor(Keep()))
    remote = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True, trace_flags=TraceFlags(1),
                         trace_state=TraceState([("vendor", "x")]))
    for i, p in enumerate(providers):
        tracer = p.get_tracer("t", "1.2", schema_url="https://schema.example/1" if i else None)
        with tracer.start_as_current_span("root", context=set_span_in_context(NonRecordingSpan(remote)), kind=SpanKind.SERVER,
                                          attributes={"s": "é", "b": True, "i": -3, "f": 0.25, "big": 2**40}) as root:
            child = tracer.start_span("child", kind=SpanKind.CLIENT, attributes={"n": 0})
            child.set_status(Status(StatusCode.ERROR, "NOT_FOUND"))
            child.end()
            root.set_status(Status(StatusCode.OK))
    spans = list(Keep.spans)
    assert ExportTraceServiceRequest.FromString(encode_request(spans)) == encode_spans(spans)
    with_event = providers[0].get_tracer("t").start_span("e")
    with_event.add_event("boom")
    with_event.end()
    exporter = FastOTLPSpanExporter()
    try:  # a span the fast path leaves alone: the SDK's encoder takes the batch
        assert exporter._translate_data([*spans, Keep.spans[-1]]) == encode_spans([*spans, Keep.spans[-1]])
    finally:
        exporter.shutdown()


def test_status_of_a_call_from_its_error():
    """A span's gRPC status: grpc.aio's error, any RpcError with a code() (another upstream client),
    a cancelled task, anything else UNAVAILABLE."""
    import grpc

    from shadowgrpc.telemetry.spans import _grpc_code

    class Other(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.RESOURCE_EXHAUSTED

    aio = grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), "late")
    assert [_grpc_code(e) for e in (None, aio, Other(), asyncio.CancelledError(), OSError("reset"), grpc.RpcError())] == [
        "OK", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED", "UNAVAILABLE", "UNAVAILABLE"]


def test_comparison_attributes_equal_numpys_means():
    """A shadow span's agreement and mean |live - shadow| (computed without np.mean's overhead) are
    numpy's means; non-finite differences are left out, none at all leaves no attribute."""
    import numpy as np
    from opentelemetry.trace import SpanKind

    from shadowgrpc.telemetry.records import SpanRecord
    from shadowgrpc.telemetry.spans import ShadowCall

    rng = np.random.default_rng(7)
    stats = types.SimpleNamespace(compared=1, contract_mismatch=0)
    x = rng.random((5, 3)).astype(np.float32)
    y = rng.random((5, 3))
    bad = y.copy()
    bad[1, 1], bad[2, 0] = np.nan, np.inf
    for live, shadow in ((x, y), (x, bad), (x, np.full_like(y, np.nan)), (x[:, :1], y[:, :1])):
        sc = ShadowCall(SpanRecord("s", SpanKind.CLIENT, 1, 2, 1, None, None, {}, {}), None)
        sc.compared(stats, (0, 0), (live, shadow))
        a = sc.rec.attrs
        d = np.abs(live.astype(np.float64) - shadow)
        d = d[np.isfinite(d)]
        assert a["shadowgrpc.rows"] == 5 and a["shadowgrpc.compared"] is True
        assert a.get("shadowgrpc.mean_abs_diff") == (float(d.mean()) if d.size else None)
        want = float(np.mean(live.argmax(axis=1) == shadow.argmax(axis=1))) if live.shape[1] > 1 else None
        assert a.get("shadowgrpc.agreement") == want
        assert all(type(v) in (int, float, bool) for v in a.values())
