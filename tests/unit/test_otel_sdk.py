"""The OpenTelemetry SDK internals shadowgrpc reaches (shadowgrpc/telemetry/_sdk.py), pinned: the installed
SDK is a verified version, each internal still exists with the expected type (an upgrade that
breaks one fails here, loudly), and each fallback gives the fast path's result."""

from __future__ import annotations

import collections
import os
import threading
import time
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
from opentelemetry.trace import INVALID_SPAN, SpanContext, SpanKind, TraceFlags

from shadowgrpc.telemetry import _sdk as _otel_sdk
from shadowgrpc.telemetry import export as _telemetry_export
from shadowgrpc.telemetry import otlp as _telemetry_otlp
from shadowgrpc.telemetry.export import CountingBatchSpanProcessor, bsp_max_queue_size
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
        _otel_sdk.set_span_attributes(span, {"shadowgrpc.latency_ms": 1.5 * i, "shadowgrpc.compared": bool(i % 2)})
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


def test_span_attribute_internals():
    span = _provider().get_tracer("t").start_span("s")
    a = span._attributes
    assert type(a) is BoundedAttributes
    assert type(a._dict) is dict and a._immutable is False
    assert a.max_value_len is None and (a.maxlen is None or isinstance(a.maxlen, int))
    a._dict["k"] = "v"
    assert dict(span.attributes) == {"k": "v"}
    span.end()
    assert a._immutable is True
    assert _otel_sdk.FAST_ATTRIBUTES and _otel_sdk.set_span_attributes is _otel_sdk.set_span_attributes_fast


def test_batch_processor_internals():
    keep = Keep(block_first=True)
    bsp = BatchSpanProcessor(keep, max_queue_size=8, schedule_delay_millis=3_600_000, max_export_batch_size=8)
    try:
        bp = bsp._batch_processor
        q = bp._queue
        assert type(q) is collections.deque and q.maxlen == 8
        assert _otel_sdk.batch_span_queue(bsp, 8) is q
        assert _otel_sdk.batch_span_queue(bsp, 9) is None  # another bound: not the queue we think
        assert _otel_sdk._takes(bp.shutdown, "timeout_millis")
        # emit appends left, the worker pops right, a full deque evicts the oldest: what queue_full counts
        spans = _ended_spans(18)
        for s in spans[:8]:
            bsp.on_end(s)
        assert keep.entered.wait(10) and len(q) == 0  # the 8th woke the worker: it took all 8
        for s in spans[8:]:
            bsp.on_end(s)
        assert len(q) == 8 and q[-1].name == "s10" and q[0].name == "s17"
    finally:
        keep.release.set()
        bsp.shutdown()


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


def test_our_processor_attributes_do_not_shadow_the_sdks():
    bsp = BatchSpanProcessor(Keep())
    try:
        sdk_names = set(vars(bsp)) | set(dir(BatchSpanProcessor))
    finally:
        bsp.shutdown()
    ours = CountingBatchSpanProcessor(Keep())
    try:
        assert set(vars(ours)) & sdk_names == {"_batch_processor"}  # set by the SDK's __init__ only
    finally:
        ours.shutdown()


# --- fallbacks give the fast path's result ------------------------------------------------------


def _attribute_runs(put) -> list:
    """The attributes (and dropped counts) of spans written through ``put``, under no limits, a
    count limit, a value-length limit, after end, and on a non-recording span."""
    out = []
    for limits in ({}, {"max_span_attributes": 3}, {"max_span_attribute_length": 4}):
        span = _provider(**limits).get_tracer("t").start_span("s", attributes={"a": "first"})
        put(span, {"shadowgrpc.route": "fraud", "shadowgrpc.shadowed": False, "n": 3})
        put(span, {"shadowgrpc.shadowed": True, "x": 0.25, "a": "second-long-value"})
        span.end()
        put(span, {"late": 1})  # ended: ignored
        out.append((dict(span.attributes), span.dropped_attributes))
    put(INVALID_SPAN, {"k": 1})  # non-recording: nothing, no error
    return out


def test_attribute_fallback_equals_fast_path():
    fast, public = _attribute_runs(_otel_sdk.set_span_attributes_fast), _attribute_runs(_otel_sdk.set_span_attributes_public)
    assert fast == public
    assert fast[0][0] == {"a": "second-long-value", "shadowgrpc.route": "fraud", "shadowgrpc.shadowed": True, "n": 3, "x": 0.25}
    assert fast[1][1] > 0 and fast[2][0]["a"] == "seco"  # the SDK's limits applied on both paths


def test_max_queue_size_equals_the_sdks_reading(monkeypatch):
    for value in (None, "32", "not-a-number"):
        if value is None:
            monkeypatch.delenv("OTEL_BSP_MAX_QUEUE_SIZE", raising=False)
        else:
            monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", value)
        monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8")
        bsp = BatchSpanProcessor(Keep())
        try:
            assert bsp_max_queue_size() == bsp._batch_processor._max_queue_size
        finally:
            bsp.shutdown()


def _queue_run(monkeypatch, fallback: bool) -> list:
    """Queue length, queue_full and the exporter's counts through a scenario: 3 spans queued,
    a 4th wakes the worker, whose export blocks; 12 more overflow the queue of 8; released."""
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "8")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    if fallback:
        monkeypatch.setattr(_telemetry_export, "batch_span_queue", lambda processor, capacity: None)
    keep = Keep(block_first=True)
    p = CountingBatchSpanProcessor(keep)
    assert (p._span_queue is None) is fallback
    spans = _ended_spans(16)
    seen = []
    try:
        for s in spans[:3]:
            p.on_end(s)
        seen.append((p.queue_length(), p.queue_full))
        p.on_end(spans[3])
        assert keep.entered.wait(10)
        seen.append((p.queue_length(), p.queue_full, p.exporter.taken))
        for s in spans[4:]:
            p.on_end(s)
        seen.append((p.queue_length(), p.queue_full))
        keep.release.set()
        p.force_flush()
        seen.append((p.queue_length(), p.queue_full, p.exporter.exported, [s.name for s in keep.spans]))
    finally:
        keep.release.set()
        p.shutdown()
    seen.append((p.queue_length(), keep.shutdowns))
    return seen


def test_queue_fallback_equals_fast_path(monkeypatch):
    fast = _queue_run(monkeypatch, fallback=False)
    public = _queue_run(monkeypatch, fallback=True)
    assert fast == public
    assert fast[:3] == [(3, 0), (0, 0, 4), (8, 4)]
    assert fast[3][:3] == (0, 4, 12) and fast[4] == (0, 1)


def _shutdown_run(shutdown, hang: bool) -> tuple:
    keep = Keep(hang=hang)
    exporter = _telemetry_export.CountingExporter(keep)
    bsp = BatchSpanProcessor(exporter, max_queue_size=64, schedule_delay_millis=3_600_000, max_export_batch_size=8)
    for s in _ended_spans(20):
        bsp.on_end(s)  # 2 batches go at once (the worker wakes at 8), the rest at shutdown
    t0 = time.monotonic()
    shutdown(bsp, exporter, 500)
    took = time.monotonic() - t0
    return took, exporter.closed, keep.shutdowns, (0 if hang else len(keep.spans))


def test_shutdown_fallback_equals_fast_path():
    for hang in (False, True):
        fast = _shutdown_run(_otel_sdk.shutdown_batch_span_processor, hang)
        public = _shutdown_run(_otel_sdk._shutdown_public, hang)
        assert fast[0] < 2 and public[0] < 2, (hang, fast, public)  # bounded even when the export hangs
        assert fast[1:] == public[1:] == (True, 1, 0 if hang else 20)


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
