"""The OpenTelemetry SDK internals shadowgrpc reaches (shadowgrpc/telemetry/_sdk.py), pinned: the installed
SDK is a verified version, each internal still exists with the expected type (an upgrade that
breaks one fails here, loudly), and each fallback gives the fast path's result. Also what
telemetry.records reads through public names as the SDK reads it (the OTEL_BSP_* settings)."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from types import MappingProxyType

import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from shadowgrpc.telemetry import _sdk as _otel_sdk
from shadowgrpc.telemetry import otlp as _telemetry_otlp
from shadowgrpc.telemetry.records import RecordProcessor, SpanRecord, bsp_settings
from shadowgrpc.telemetry.export import CountingExporter
from tests.otlp import OtlpReceiver


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch):
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)


class Keep(SpanExporter):
    """Keeps what it is given; optionally blocks its first export until ``release`` is set, or
    every export until ``shutdown`` (a hung collector that the exporter's shutdown aborts)."""

    def __init__(self, block_first: bool = False, hang: bool = False) -> None:
        self.spans: list = []
        self.calls = 0
        self.entered, self.release, self.closed = threading.Event(), threading.Event(), threading.Event()
        self.block_first, self.hang = block_first, hang
        self.shutdowns = 0

    def export(self, spans):
        self.calls += 1
        self.entered.set()
        if self.hang:
            self.closed.wait(30)
            return SpanExportResult.FAILURE
        if self.block_first and self.calls == 1:
            self.release.wait(30)
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        self.shutdowns += 1
        self.closed.set()


def _provider(**limits) -> TracerProvider:
    return TracerProvider(sampler=ALWAYS_ON, resource=Resource.get_empty(), shutdown_on_exit=False,
                          span_limits=SpanLimits(**limits) if limits else None)


def _ended_spans(n: int, provider: TracerProvider | None = None) -> list[ReadableSpan]:
    keep = Keep()
    p = provider or _provider()
    p.add_span_processor(SimpleSpanProcessor(keep))
    tracer = p.get_tracer("t", "1")
    for i in range(n):
        span = tracer.start_span(f"s{i}", kind=SpanKind.CLIENT, attributes={"shadowgrpc.i": i, "shadowgrpc.role": "shadow"})
        span.set_attributes({"shadowgrpc.latency_ms": 1.5 * i, "shadowgrpc.compared": bool(i % 2)})
        span.end()
    return keep.spans


# --- the pin ------------------------------------------------------------------------------------


def test_installed_sdk_is_a_verified_version():
    v = _otel_sdk.sdk_version()
    assert _otel_sdk.sdk_verified(), (
        f"opentelemetry-sdk {v} is outside _otel_sdk.VERIFIED_SDK_VERSIONS {_otel_sdk.VERIFIED_SDK_VERSIONS}: run this "
        "file's other tests; when they pass, widen the range (else fix or drop the internal that broke)")
    exporter = _otel_sdk.otlp_grpc_exporter_version()
    assert _otel_sdk.sdk_verified(exporter), f"opentelemetry-exporter-otlp-proto-grpc {exporter} is outside the verified range"
    lo, hi = _otel_sdk.VERIFIED_SDK_VERSIONS
    assert _otel_sdk.sdk_verified(lo) and _otel_sdk.sdk_verified(hi)
    assert not _otel_sdk.sdk_verified("1.0.0") and not _otel_sdk.sdk_verified("99.0.0")


def test_otlp_exporter_encoding_hook():
    assert _otel_sdk.otlp_encoding_hook_works(OTLPSpanExporter)
    fast = _telemetry_otlp.FastOTLPSpanExporter
    assert fast is not OTLPSpanExporter and issubclass(fast, OTLPSpanExporter) and fast.__name__ == "FastOTLPSpanExporter"
    assert fast._translate_data is not OTLPSpanExporter._translate_data


def test_readable_span_attribute_internals():
    s = _ended_spans(1)[0]
    a = s._attributes
    assert type(a) is BoundedAttributes and a._immutable is True and type(a._dict) is dict
    assert _otel_sdk.span_attributes(s) is a._dict and list(a._dict.items()) == list(s.attributes.items())


def test_suppress_instrumentation_marks_the_export_thread_only():
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value

    seen = []

    class Look(Keep):
        def export(self, spans):
            seen.append((get_value(_SUPPRESS_INSTRUMENTATION_KEY), threading.current_thread().name))
            return super().export(spans)

    p = RecordProcessor(CountingExporter(Look()), Resource.get_empty(), None)
    try:
        p.emit(SpanRecord("r", SpanKind.SERVER, 1, 2, 1, None, None, {}, {}))
        assert p.force_flush() is True  # here, on this thread: not marked
        p.emit(SpanRecord("r", SpanKind.SERVER, 1, 3, 1, None, None, {}, {}))
    finally:
        p.shutdown()  # the rest: the export thread, marked
    assert seen == [(None, threading.current_thread().name), (True, "shadowgrpc-span-export")]
    assert get_value(_SUPPRESS_INSTRUMENTATION_KEY) is None


@pytest.mark.parametrize(("queue", "delay", "batch"), [(None, None, None), ("32", "100", "8"), ("not-a-number", "x", "y"),
                                                       ("4", "100", "8"), ("0", "100", "1"), ("8", "-1", "4")])
def test_bsp_settings_equal_the_sdks_reading(monkeypatch, queue, delay, batch):
    for var, v in (("OTEL_BSP_MAX_QUEUE_SIZE", queue), ("OTEL_BSP_SCHEDULE_DELAY", delay), ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", batch)):
        if v is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, v)
    try:
        bsp = BatchSpanProcessor(Keep())
    except ValueError as e:
        with pytest.raises(ValueError) as ours:
            bsp_settings()
        assert str(ours.value) == str(e)
        return
    try:
        bp = bsp._batch_processor
        assert bsp_settings() == (bp._schedule_delay_millis, bp._max_queue_size, bp._max_export_batch_size)
    finally:
        bsp.shutdown()


def test_fast_path_is_taken_and_requests_reach_a_collector():
    """The installed exporter calls the hook: spans exported through ``with_request_encoder``
    arrive at a real OTLP receiver, built by the encoder given."""
    calls = []

    def translate(spans):
        calls.append(len(spans))
        return _telemetry_otlp.translate(spans)

    spans = _ended_spans(5, _provider())
    with OtlpReceiver() as rx:
        cls = _otel_sdk.with_request_encoder(OTLPSpanExporter, translate, "Probe")
        exporter = cls(endpoint=rx.grpc_endpoint, insecure=True)
        try:
            assert exporter.export(spans) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        got = rx.wait_for(lambda s: s if len(s) == 5 else None)
    assert calls == [5] and sorted(s.name for s in got) == [f"s{i}" for i in range(5)]


def test_encoding_hook_fallback_equals_fast_path(monkeypatch):
    spans = _ended_spans(4)
    fast = _telemetry_otlp.FastOTLPSpanExporter()
    monkeypatch.setattr(_otel_sdk, "otlp_encoding_hook_works", lambda cls: False)
    plain_cls = _otel_sdk.with_request_encoder(OTLPSpanExporter, _telemetry_otlp.translate, "FastOTLPSpanExporter")
    assert plain_cls is OTLPSpanExporter
    plain = plain_cls()
    try:
        assert fast._translate_data(spans) == plain._translate_data(spans) == encode_spans(spans)
    finally:
        fast.shutdown()
        plain.shutdown()


def test_encoding_hook_probe_refuses_what_it_cannot_use():
    class Renamed(OTLPSpanExporter):
        def _export(self, data):  # builds its request some other way
            return SpanExportResult.SUCCESS

    class OtherSignature(OTLPSpanExporter):
        def _translate_data(self, data, extra):
            return encode_spans(data)

    assert not _otel_sdk.otlp_encoding_hook_works(Renamed)
    assert not _otel_sdk.otlp_encoding_hook_works(OtherSignature)
    assert not _otel_sdk.otlp_encoding_hook_works(object)
    assert _otel_sdk.with_request_encoder(Renamed, _telemetry_otlp.translate, "X") is Renamed


def test_span_attributes_fallback_equals_fast_path():
    """A span without the SDK's dict (here a ReadableSpan built on another Mapping) is read
    through the public ``attributes``: the same items, the same encoding."""

    class Plain(Mapping):
        def __init__(self, d):
            self.d = d

        def __getitem__(self, k):
            return self.d[k]

        def __iter__(self):
            return iter(self.d)

        def __len__(self):
            return len(self.d)

    spans = _ended_spans(3)
    resource, scope = spans[0].resource, spans[0].instrumentation_scope
    ctx = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=False, trace_flags=TraceFlags(1))
    attrs = {"s": "v", "b": True, "i": 7, "f": 0.5}

    def span(a):
        return ReadableSpan("r", ctx, resource=resource, attributes=a, instrumentation_scope=scope, start_time=1, end_time=2)

    sdk = span(BoundedAttributes(attributes=attrs))
    other = span(Plain(attrs))
    assert _otel_sdk.span_attributes(sdk) is sdk._attributes._dict
    assert type(_otel_sdk.span_attributes(other)) is MappingProxyType
    assert list(_otel_sdk.span_attributes(other).items()) == list(_otel_sdk.span_attributes(sdk).items())
    a = ExportTraceServiceRequest.FromString(_telemetry_otlp.encode_request([sdk]))
    b = ExportTraceServiceRequest.FromString(_telemetry_otlp.encode_request([other]))
    assert a == b == encode_spans([sdk])
