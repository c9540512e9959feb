"""Spans as records (shadowgrpc/telemetry/records.py, spans.py) give what SDK spans gave: the same
names, ids, parents, attributes, status and trace context sent to Triton, through a real OTLP
receiver; the configured sampler decides as ``Tracer.start_span`` does; a full queue drops and
counts; a hung exporter cannot hold the shutdown; the export never runs on the event loop."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import types

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shadowgrpc import __version__
from shadowgrpc.telemetry import Hooks, inject
from shadowgrpc.telemetry.export import CountingExporter
from shadowgrpc.telemetry.otlp import FastOTLPSpanExporter, encode_request
from shadowgrpc.telemetry.records import RecordProcessor, RecordSpan, SpanRecord
from shadowgrpc.telemetry.spans import children_follow
from tests.otlp import OtlpReceiver

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SERVICE_NAME = "inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch):
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)


class Seq(IdGenerator):
    """Ids in sequence: two providers given one each draw the same ids in the same order."""

    def __init__(self) -> None:
        self.n = 0

    def generate_span_id(self) -> int:
        self.n += 1
        return self.n

    def generate_trace_id(self) -> int:
        self.n += 1
        return (0x5D << 120) | (self.n * 0x9E3779B97F4A7C15 & ((1 << 64) - 1))  # spread over the ratio's 64 bits

    def is_trace_id_random(self) -> bool:
        return True


class Keep(SpanExporter):
    def __init__(self, block_first: bool = False, hang: bool = False) -> None:
        self.spans: list = []
        self.calls: list = []
        self.entered, self.release, self.closed = threading.Event(), threading.Event(), threading.Event()
        self.block_first, self.hang, self.shutdowns = block_first, hang, 0

    def export(self, spans):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self.calls.append((threading.get_ident(), loop, len(spans)))
        self.entered.set()
        if self.hang:
            self.closed.wait(30)
            return SpanExportResult.FAILURE
        if self.block_first and len(self.calls) == 1:
            self.release.wait(30)
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        self.shutdowns += 1
        self.closed.set()


class Ctx:
    """What the handler wrapper reads of a grpc.aio ServicerContext."""

    def __init__(self, md: tuple = ()) -> None:
        self.md = md

    def invocation_metadata(self):
        return self.md

    def code(self):
        return None


def _target(name: str, model: str):
    return types.SimpleNamespace(name=name, model=model, address="127.0.0.1:8001", version="2" if name != "live" else "1", noise_floor=False)


def _route():
    stats = [types.SimpleNamespace(sampled=0, shed=0, down=0, sent=0, compared=0, contract_mismatch=0) for _ in range(2)]
    shadows = [types.SimpleNamespace(stats=stats[0], target=_target("v2", "fraud")), types.SimpleNamespace(stats=stats[1], target=_target("faulty", "fraud_faulty"))]
    return types.SimpleNamespace(route=types.SimpleNamespace(model="fraud", live=_target("live", "fraud")), shadows=shadows)


async def _request(hooks: Hooks, md: tuple, sent: dict) -> None:
    """One routed ModelInfer through the hooks as the router drives them: the live call, two
    shadows in tasks created by the handler (one fails INTERNAL), ending after the server span."""
    import grpc

    rs = _route()
    tasks = []

    async def shadow(ss, fail: bool):
        sc = hooks.shadow(ss, "fraud", 0.5)
        if sc is None:
            return
        async def infer(request, *, timeout, metadata):
            sent[ss.target.name] = dict(metadata)
            if fail:
                raise grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), "boom")
            return b"ok"
        try:
            await sc.wrap(infer)(b"req", timeout=0.5, metadata=md)
            m = sc.mark(ss.stats)
            ss.stats.compared += 1
            sc.compared(ss.stats, m, None)
        except grpc.aio.AioRpcError:
            pass
        finally:
            sc.end()

    async def fn(raw, context):
        lc = hooks.live(rs, "1", "rid-1")
        sent["live"] = dict(lc.inject(md, 2.0)) if lc is not None else dict(hooks.pass_through(md) or ())
        for i, ss in enumerate(rs.shadows):
            ss.stats.sampled += 1
            ss.stats.sent += 1
            tasks.append(asyncio.get_running_loop().create_task(shadow(ss, fail=i == 1)))
        if lc is not None:
            lc.mirrored()
            lc.end(None)
        return b"answer"

    handler = hooks.server_handler("ModelInfer", fn)
    assert await handler(b"raw", Ctx(md)) == b"answer"
    await asyncio.gather(*tasks)  # the shadows end after the server span


def _reference(provider: TracerProvider, md: tuple, sent: dict) -> None:
    """The same request as SDK spans, as the front made them before records (the old telemetry.spans)."""
    tracer = provider.get_tracer("shadowgrpc", __version__)
    carrier = {k: v for k, v in md if k in ("traceparent", "tracestate")}
    parent = TraceContextTextMapPropagator().extract(carrier) if carrier else None
    server = tracer.start_span(SERVICE_NAME, parent, SpanKind.SERVER, attributes={"rpc.system": "grpc", "rpc.method": "ModelInfer"})
    if not server.get_span_context().trace_flags.sampled:
        sent["live"] = dict(md)
        return
    server.set_attributes({"shadowgrpc.route": "fraud", "shadowgrpc.model": "fraud", "shadowgrpc.version": "1", "shadowgrpc.request_id": "rid-1",
                           "shadowgrpc.shadowed": False})
    ctx = set_span_in_context(server, parent)
    base = {"server.address": "127.0.0.1:8001"}
    live = tracer.start_span("ModelInfer live fraud", ctx, SpanKind.CLIENT, attributes={
        "shadowgrpc.role": "live", "shadowgrpc.target": "live", "shadowgrpc.target.model": "fraud", **base, "shadowgrpc.target.version": "1"})
    live.set_attributes({"shadowgrpc.deadline_ms": 2000.0})
    sent["live"] = dict(inject(md, live))
    shadows = []
    for name, model in (("v2", "fraud"), ("faulty", "fraud_faulty")):
        s = tracer.start_span(f"ModelInfer shadow {name}", ctx, SpanKind.CLIENT, attributes={
            "shadowgrpc.role": "shadow", "shadowgrpc.target": name, "shadowgrpc.target.model": model, **base, "shadowgrpc.target.version": "2",
            "shadowgrpc.shadow": True, "shadowgrpc.route": "fraud", "shadowgrpc.deadline_ms": 500.0})
        sent[name] = dict(inject(md, s))
        shadows.append(s)
    server.set_attributes({"shadowgrpc.shadow.sent": 2, "shadowgrpc.shadowed": True})
    live.set_attributes({"rpc.grpc.status_code": 0, "shadowgrpc.latency_ms": 1.0})
    if live.get_span_context().trace_flags.sampled:
        live.end()
    server.set_attributes({"rpc.grpc.status_code": 0})
    server.end()
    v2, faulty = shadows
    v2.set_attributes({"shadowgrpc.latency_ms": 1.0, "shadowgrpc.compared": True, "rpc.grpc.status_code": 0})
    v2.end()
    faulty.set_attributes({"rpc.grpc.status_code": 13})
    faulty.set_status(Status(StatusCode.ERROR, "INTERNAL"))
    faulty.end()


def _normal(req):
    """An ExportTraceServiceRequest with times zeroed, latencies set to 1.0, spans in span-id order,
    attributes in key order (an OTLP span's attributes are a map)."""
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            spans = sorted(ss.spans, key=lambda s: s.span_id)
            for s in spans:
                s.start_time_unix_nano = s.end_time_unix_nano = 0
                for a in s.attributes:
                    if a.key == "shadowgrpc.latency_ms":
                        assert a.value.double_value > 0
                        a.value.double_value = 1.0
                attrs = sorted(s.attributes, key=lambda a: a.key)
                del s.attributes[:]
                s.attributes.extend(attrs)
            del ss.spans[:]
            ss.spans.extend(spans)
    return req


MD = (("traceparent", CALLER), ("tracestate", "vendor=x"), ("x-user", "a"))


@pytest.mark.parametrize("md", [MD, (("x-user", "a"),)], ids=["caller-trace", "own-root"])
def test_records_export_the_spans_sdk_spans_gave(md):
    resource = Resource.create({"service.name": "front-under-test"})
    ref_keep = Keep()
    ref = TracerProvider(resource=resource, id_generator=Seq())
    ref.add_span_processor(SimpleSpanProcessor(ref_keep))
    want_sent: dict = {}
    _reference(ref, md, want_sent)
    provider = TracerProvider(resource=resource)
    with OtlpReceiver() as rx:
        exporter = CountingExporter(FastOTLPSpanExporter(endpoint=rx.grpc_endpoint, insecure=True))
        proc = RecordProcessor(exporter, resource, InstrumentationScope("shadowgrpc", __version__, None, None))
        keep = []
        hooks = Hooks(provider.sampler, Seq(), lambda r: (keep.append(r), proc.emit(r)))
        sent: dict = {}
        asyncio.run(_request(hooks, md, sent))
        proc.shutdown()
        got = rx.wait_for(lambda s: s if len(s) == 4 else None)
    assert sent == want_sent  # the trace context Triton gets (traceparent, tracestate), the caller's other keys kept
    assert exporter.exported == 4 and not exporter.failed and proc.queue_full == 0
    assert "tracestate" in sent["live"] if md is MD else "tracestate" not in sent["live"]
    # the same request message, bit for bit, but for times and latencies
    mine = [proc._convert(r) for r in keep]
    assert str(_normal(encode_spans(mine))) == str(_normal(encode_spans(ref_keep.spans)))
    assert all(type(m) is RecordSpan for m in mine) and ExportTraceServiceRequest.FromString(encode_request(mine)) == encode_spans(mine)
    by_name = {s.name: s for s in got}
    server = by_name[SERVICE_NAME]
    assert server.parent_span_id == ("00f067aa0ba902b7" if md is MD else "") and server.kind == "SERVER"
    assert {by_name[n].parent_span_id for n in by_name if n != SERVICE_NAME} == {server.span_id}
    assert {s.trace_id for s in got} == {f"{ref_keep.spans[0].context.trace_id:032x}"} and server.service == "front-under-test"
    assert by_name["ModelInfer shadow faulty"].status == 2 and by_name["ModelInfer shadow v2"].attributes["shadowgrpc.compared"] is True
    assert sent["live"]["traceparent"] == f"00-{server.trace_id}-{by_name['ModelInfer live fraud'].span_id}-{'01' if md is MD else '03'}"


def test_the_record_encoding_equals_the_sdk_encoder(monkeypatch):
    """telemetry.otlp's encoding of record spans (static attributes cached per dict, floats
    uncached, status and flags cached) against the SDK's encoder: a remote parent with a trace
    state, a local one, errors, every value type, a key in both dicts, limits that bound them."""
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    resource = Resource.create({"service.name": "x"})
    scope = InstrumentationScope("shadowgrpc", __version__, None, None)
    remote = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, TraceFlags(1), TraceState([("v", "1")]))
    static = {"shadowgrpc.role": "shadow", "n": 3, "b": True, "f": 0.5}
    server = SpanRecord(SERVICE_NAME, SpanKind.SERVER, remote.trace_id, 11, 1, remote.trace_state, remote, {"rpc.system": "grpc"}, {"code": 0})
    recs = [server,
            SpanRecord("live", SpanKind.CLIENT, remote.trace_id, 12, 1, remote.trace_state, server, static, {"lat": 1.25, "neg": -3, "s": "é"}),
            SpanRecord("dup", SpanKind.CLIENT, remote.trace_id, 13, 1, None, server, static, {"n": 4, "x": 2**40}),
            SpanRecord("root", SpanKind.SERVER, 7, 14, 3, None, None, static, {})]
    recs[1].error = "INTERNAL"
    recs[2].error = "DEADLINE_EXCEEDED"
    for r in recs:
        r.end = r.start + 1000
    for limits in ({}, {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "1"}):
        for k, v in limits.items():
            monkeypatch.setenv(k, v)
        proc = RecordProcessor(CountingExporter(Keep()), resource, scope)
        try:
            spans = [proc._convert(r) for r in recs]
        finally:
            proc.shutdown()
        assert all(type(x) is RecordSpan for x in spans) is not limits
        for _ in range(2):  # the second time from the caches
            assert ExportTraceServiceRequest.FromString(encode_request(spans)) == encode_spans(spans)
    assert dict(spans[2].attributes)["n"] == 4 and dict(spans[1].attributes)["shadowgrpc.role"] == "s"  # bounded: the SDK's limit applied


class KindSampler(Sampler):
    """Samples SERVER spans only: its children are not sampled (the sampler is asked for them)."""

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None):
        return SamplingResult(Decision.RECORD_AND_SAMPLE if kind is SpanKind.SERVER else Decision.DROP, {"sampler.kind": str(kind)})

    def get_description(self) -> str:
        return "KindSampler"


SAMPLERS = [("always_on", None), ("always_off", None), ("traceidratio", "0.5"), ("parentbased_traceidratio", "0.5"),
            ("parentbased_always_off", None), ("parentbased_always_on", None), ("custom", None)]


@pytest.mark.parametrize(("name", "arg"), SAMPLERS)
def test_the_configured_sampler_decides_as_start_span_does(monkeypatch, name, arg):
    if name != "custom":
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
        if arg is not None:
            monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)

    def provider() -> TracerProvider:
        return TracerProvider(resource=Resource.get_empty(), id_generator=Seq(), **({"sampler": KindSampler()} if name == "custom" else {}))

    ref, mine = provider(), provider()
    assert children_follow(mine.sampler) is (name not in ("custom", "always_off"))
    ref_keep, emitted = Keep(), []
    ref.add_span_processor(SimpleSpanProcessor(ref_keep))
    hooks = Hooks(mine.sampler, mine.id_generator, emitted.append)
    parents = [(), (("traceparent", CALLER),), (("traceparent", CALLER[:-2] + "00"),), (("traceparent", CALLER[:-2] + "03"), ("tracestate", "a=1"))]
    for i in range(40):
        md = parents[i % 4]
        want, got = {}, {}
        _reference(ref, md, want)
        asyncio.run(_request(hooks, md, got))
        assert got == want, (i, md)
    by_id = {r.span_id: r for r in emitted}
    assert sorted(by_id) == sorted(s.context.span_id for s in ref_keep.spans)  # the same spans sampled and exported
    for s in ref_keep.spans:
        r = by_id[s.context.span_id]
        assert (r.name, r.kind, r.trace_id, r.flags, r.span_context().trace_state) == (s.name, s.kind, s.context.trace_id, s.context.trace_flags, s.context.trace_state)
    if arg == "0.5":  # both outcomes seen
        assert 0 < len({r.trace_id for r in emitted}) < 40


def test_a_full_queue_drops_and_counts(monkeypatch):
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "8")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    keep = Keep(block_first=True)
    p = RecordProcessor(CountingExporter(keep), Resource.get_empty(), None)
    recs = [SpanRecord(f"s{i}", SpanKind.CLIENT, 7, i + 1, 1, None, None, {"k": "v"}, {"i": i}) for i in range(16)]
    try:
        for r in recs[:3]:
            p.emit(r)
        assert p.queue_length() == 3 and not keep.entered.wait(0.2)  # under a batch: the worker sleeps
        p.emit(recs[3])
        assert keep.entered.wait(10)  # a batch: woken, exporting (blocked)
        for r in recs[4:]:
            p.emit(r)
        assert (p.queue_length(), p.queue_full) == (8, 4)
        keep.release.set()
        assert p.force_flush()
        assert p.queue_length() == 0 and p.exporter.exported == 12 and [s.name for s in keep.spans] == [f"s{i}" for i in range(12)]
        assert dict(keep.spans[5].attributes) == {"k": "v", "i": 5}
    finally:
        keep.release.set()
        p.shutdown()
    assert keep.shutdowns == 1 and p.queue_full == 4


def test_a_hung_exporter_cannot_hold_the_shutdown(monkeypatch):
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    keep = Keep(hang=True)
    p = RecordProcessor(CountingExporter(keep), Resource.get_empty(), None)
    p.shutdown_millis = 500
    for i in range(20):
        p.emit(SpanRecord("s", SpanKind.CLIENT, 7, i + 1, 1, None, None, {}, {}))
    assert keep.entered.wait(10)
    t0 = time.monotonic()
    p.shutdown()
    assert time.monotonic() - t0 < 2
    p.thread.join(5)
    assert not p.thread.is_alive() and keep.shutdowns == 1
    assert p.exporter.exported == 0 and p.exporter.failed == 20  # the hung batch and the 12 never sent


def test_the_export_thread_never_runs_on_the_event_loop(monkeypatch):
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    keep = Keep()
    p = RecordProcessor(CountingExporter(keep), Resource.get_empty(), None)
    hooks = Hooks(TracerProvider().sampler, Seq(), p.emit)

    async def many() -> int:
        for i in range(50):
            await _request(hooks, MD, {})
            if i % 10 == 0:
                await asyncio.sleep(0.06)  # let a scheduled export happen while the loop runs
        return threading.get_ident()

    loop_thread = asyncio.run(many())
    p.shutdown()
    assert len(keep.spans) == 200 and len(keep.calls) > 1
    assert all(t != loop_thread and loop is None for t, loop, _ in keep.calls)

