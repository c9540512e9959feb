"""Spans of the request path: the SERVER span around each KServe v2 handler, the live and shadow
CLIENT spans the router opens through ``Hooks`` (see the package doc, telemetry/__init__.py, for
what they carry), each a ``records.SpanRecord`` turned into an SDK span off the request path.

Sampling is the configured sampler's: ``should_sample`` of the tracer provider's sampler decides
every SERVER span (with the caller's extracted context as parent, as ``Tracer.start_span`` does),
and a CLIENT span too unless the sampler samples a sampled local parent's children by construction
(``children_follow``: always-on, trace-id ratio, and parent-based ones whose local-sampled branch
is always-on: every sampler the OTEL_TRACES_SAMPLER names build), where the call cannot change
the result. The request's SERVER record is the "current span" (``records.CURRENT``, a context
variable, copied into the shadow tasks a request creates) instead of an attached OTel context."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import grpc
import numpy as np
from opentelemetry import trace
from opentelemetry.sdk.trace import sampling
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..codec import SERVICE
from .records import CURRENT, SpanRecord

SERVER, CLIENT = trace.SpanKind.SERVER, trace.SpanKind.CLIENT
# gRPC codes that are the server's fault (OpenTelemetry RPC semantic conventions).
_SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})
_TRACE_KEYS = frozenset({"traceparent", "tracestate"})
_W3C = TraceContextTextMapPropagator()
_perf = time.perf_counter
_now = time.time_ns
_CODES = {c.name: c.value[0] for c in grpc.StatusCode}
_STATIC_MAX = 4096


def inject(metadata: tuple | None, span: Any) -> tuple:
    """``metadata`` (forwarded from the caller) with its trace context replaced by ``span``'s (a
    SpanRecord, or any OpenTelemetry span)."""
    if type(span) is SpanRecord:
        tp, state = span.traceparent(), span.trace_state
    else:
        c = span.get_span_context()
        tp, state = f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}", c.trace_state
    md = tuple(kv for kv in metadata if kv[0] not in _TRACE_KEYS) if metadata else ()
    md += (("traceparent", tp),)
    return md + (("tracestate", state.to_header()),) if state else md


def children_follow(sampler: Any) -> bool:
    """Whether ``sampler`` samples every span whose local parent it sampled, by construction (the
    SDK's own classes, not subclassed): then a child's ``should_sample`` is skipped, its result
    known. Always-on; trace-id ratio (the child has the parent's trace id, and the ratio decided
    the parent); parent-based with an always-on local-sampled branch (its public description)."""
    t = type(sampler)
    if t.should_sample is sampling.StaticSampler.should_sample and t.__module__ == sampling.__name__:
        return sampler.get_description() == "AlwaysOnSampler"
    if t is sampling.TraceIdRatioBased:
        return True
    if t.__module__ == sampling.__name__ and t.should_sample is sampling.ParentBased.should_sample:
        return "localParentSampled:AlwaysOnSampler," in sampler.get_description()
    return False


def _grpc_code(err: BaseException | None) -> str:
    if err is None:
        return "OK"
    if isinstance(err, grpc.RpcError):  # grpc.aio.AioRpcError, or any upstream client's RpcError with a code()
        code = err.code() if callable(getattr(err, "code", None)) else None
        if isinstance(code, grpc.StatusCode):
            return code.name
    return "CANCELLED" if isinstance(err, asyncio.CancelledError) else "UNAVAILABLE"


def _target_attrs(role: str, name: str, t: Any) -> dict[str, Any]:
    """The fixed attributes of a CLIENT span (few: each one costs ~2-3 us to export)."""
    a = {"shadowgrpc.role": role, "shadowgrpc.target": name, "shadowgrpc.target.model": t.model, "server.address": t.address}
    if t.version:
        a["shadowgrpc.target.version"] = t.version
    return a


class Hooks:
    """Called by the router (``router.telemetry``, when tracing is on) and wraps the servicer's
    handlers. A request that is not sampled gets no records: ``live``/``shadow`` return None.
    ``emit``: where ended, sampled records go (``RecordProcessor.emit``; a no-op without exporter)."""

    __slots__ = ("sampler", "emit", "follow", "_trace_id", "_span_id", "_random", "_static")

    def __init__(self, sampler: Any, id_generator: Any, emit: Any) -> None:
        self.sampler, self.emit = sampler, emit
        self.follow = children_follow(sampler)
        self._trace_id, self._span_id = id_generator.generate_trace_id, id_generator.generate_span_id
        self._random = 2 if id_generator.is_trace_id_random() else 0
        self._static: dict[tuple, tuple[str, dict]] = {}

    def _root(self, name: str, parent: Any, static: dict) -> SpanRecord | None:
        """A SERVER record, as ``Tracer.start_span(name, parent, SERVER)`` decides it, or None
        when not sampled."""
        pc = trace.get_current_span(parent).get_span_context()
        if pc is None or not pc.is_valid:
            pc, trace_id, flags = None, self._trace_id(), self._random
        else:
            trace_id, flags = pc.trace_id, pc.trace_flags & 2
        res = self.sampler.should_sample(parent, trace_id, name, SERVER)
        span_id = self._span_id()  # drawn either way, as start_span does
        if not res.decision.is_sampled():
            return None
        return SpanRecord(name, SERVER, trace_id, span_id, flags | 1, res.trace_state, pc, static, dict(res.attributes) if res.attributes else {})

    def _child(self, server: SpanRecord, name: str, static: dict, attrs: dict) -> SpanRecord:
        """A CLIENT record under ``server`` (sampled); not sampled only if the sampler says so."""
        if self.follow:
            return SpanRecord(name, CLIENT, server.trace_id, self._span_id(), server.flags, server.trace_state, server, static, attrs)
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(server.span_context()))
        res = self.sampler.should_sample(ctx, server.trace_id, name, CLIENT)
        if res.attributes:
            attrs = {**res.attributes, **attrs}
        flags = (server.flags & 2) | (1 if res.decision.is_sampled() else 0)
        return SpanRecord(name, CLIENT, server.trace_id, self._span_id(), flags, res.trace_state, server, static, attrs)

    # server side
    def server_handler(self, method: str, fn):
        """``fn`` (a raw unary handler) inside a SERVER span that continues the caller's trace."""
        name, static, root, emit = f"{SERVICE}/{method}", _rpc_attrs(method), self._root, self.emit

        async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            rec = root(name, _extract(context), static)
            if rec is None:
                return await fn(raw, context)
            token = CURRENT.set(rec)
            try:
                return await fn(raw, context)
            finally:
                CURRENT.reset(token)
                _end_server(rec, context, emit)

        handler.__name__ = method
        return handler

    def server_stream_handler(self, method: str, fn):
        """The stream's SERVER span (not made current: its requests get no client spans)."""
        name, static, root, emit = f"{SERVICE}/{method}", _rpc_attrs(method), self._root, self.emit

        async def handler(requests, context: grpc.aio.ServicerContext):
            rec = root(name, _extract(context), static)
            try:
                async for response in fn(requests, context):
                    yield response
            finally:
                if rec is not None:
                    _end_server(rec, context, emit)

        return handler

    def pass_through(self, metadata: tuple | None) -> tuple | None:
        """Metadata for a call passed through unchanged (unrouted model, other KServe RPCs): the
        trace context of this request's SERVER span, so Triton's spans hang under the front's."""
        server = CURRENT.get()
        return metadata if server is None else inject(metadata, server)

    # client side
    def _cached(self, key: tuple, make) -> tuple[str, dict]:
        v = self._static.get(key)
        if v is None:
            if len(self._static) >= _STATIC_MAX:
                self._static.clear()
            v = self._static[key] = make()
        return v

    def live(self, rs: Any, version: str | None, request_id: str) -> LiveCall | None:
        """Before the live call of a routed ModelInfer: its CLIENT span, if the request is sampled."""
        server = CURRENT.get()
        if server is None:
            return None
        r = rs.route
        t = r.live
        a = server.attrs
        a["shadowgrpc.route"] = a["shadowgrpc.model"] = r.model
        a["shadowgrpc.version"] = version or ""
        a["shadowgrpc.request_id"] = request_id
        a["shadowgrpc.shadowed"] = False
        name, static = self._cached(("live", r.model, t.model, t.address, t.version),
                                    lambda: (f"ModelInfer live {t.model}", _target_attrs("live", "live", t)))
        return LiveCall(rs, self._child(server, name, static, {}), server, self.emit)

    def shadow(self, ss: Any, route: str, deadline: float) -> ShadowCall | None:
        """In a shadow task, before its call: the shadow CLIENT span, parented on the request's
        SERVER span (the task's copy of the current record), never made current."""
        server = CURRENT.get()
        if server is None:
            return None
        t = ss.target
        name, static = self._cached(("shadow", route, t.name, t.model, t.address, t.version, bool(t.noise_floor)), lambda: (
            f"ModelInfer shadow {t.name}",
            {**_target_attrs("shadow", t.name, t), "shadowgrpc.shadow": True, "shadowgrpc.route": route,
             **({"shadowgrpc.noise_floor": True} if t.noise_floor else {})}))
        return ShadowCall(self._child(server, name, static, {"shadowgrpc.deadline_ms": deadline * 1e3}), self.emit)


def _rpc_attrs(method: str) -> dict[str, str]:
    return {"rpc.system": "grpc", "rpc.method": method}  # rpc.service: in the span name


def _extract(context: grpc.aio.ServicerContext):
    md = context.invocation_metadata()
    if not md:
        return None
    carrier = {k: v for k, v in md if k in _TRACE_KEYS}
    return _W3C.extract(carrier) if carrier else None


def _end_server(rec: SpanRecord, context: grpc.aio.ServicerContext, emit) -> None:
    code = context.code()
    name = code.name if isinstance(code, grpc.StatusCode) else "OK"
    rec.attrs["rpc.grpc.status_code"] = _CODES[name]
    if name in _SERVER_ERRORS:
        rec.error = name
    rec.end = _now()
    emit(rec)


def _end_client(rec: SpanRecord, code: str, latency_s: float | None, emit) -> None:
    a = rec.attrs
    a["rpc.grpc.status_code"] = _CODES.get(code, 2)
    if latency_s is not None:
        a["shadowgrpc.latency_ms"] = latency_s * 1e3
    if code != "OK":
        rec.error = code
    rec.end = _now()
    if rec.flags & 1:
        emit(rec)


class LiveCall:
    __slots__ = ("rs", "rec", "server", "emit", "t0", "counts")

    def __init__(self, rs: Any, rec: SpanRecord, server: SpanRecord, emit) -> None:
        self.rs, self.rec, self.server, self.emit = rs, rec, server, emit
        self.counts = _mirror_counts(rs) if rs.shadows else None
        self.t0 = _perf()

    def inject(self, metadata: tuple | None, timeout: float | None) -> tuple:
        if timeout is not None:
            self.rec.attrs["shadowgrpc.deadline_ms"] = timeout * 1e3
        return inject(metadata, self.rec)

    def mirrored(self) -> None:
        """After ``Router._mirror`` (no await in between): what happened to each shadow target."""
        if self.counts is None:
            return
        (s0, sh0, d0, n0), (s1, sh1, d1, n1) = self.counts, _mirror_counts(self.rs)
        counts = {"sent": n1 - n0, "shed": sh1 - sh0, "down": d1 - d0, "not_sampled": len(self.rs.shadows) - (s1 - s0)}
        a = self.server.attrs
        for k, v in counts.items():
            if v:  # targets per outcome
                a[f"shadowgrpc.shadow.{k}"] = v
        a["shadowgrpc.shadowed"] = counts["sent"] > 0

    def end(self, err: BaseException | None) -> None:
        _end_client(self.rec, _grpc_code(err), _perf() - self.t0 if err is None else None, self.emit)

    def trace_id(self) -> str | None:
        """The request's trace id (32 hex digits), for the paired log."""
        return f"{self.rec.trace_id:032x}"


def _mirror_counts(rs: Any) -> tuple[int, int, int, int]:
    sampled = shed = down = sent = 0
    for ss in rs.shadows:
        s = ss.stats
        sampled += s.sampled
        shed += s.shed
        down += s.down
        sent += s.sent
    return sampled, shed, down, sent


class ShadowCall:
    __slots__ = ("rec", "emit", "code")

    def __init__(self, rec: SpanRecord, emit) -> None:
        self.rec, self.emit = rec, emit
        self.code = ""

    def wrap(self, fn):
        """``fn`` (the shadow upstream's raw ModelInfer, ``fn(request, *, timeout, metadata)``
        returning an awaitable) sending this span's traceparent and recording its status and latency."""

        async def call(request: bytes, *, timeout: float, metadata: tuple):
            t0 = _perf()
            try:
                response = await fn(request, timeout=timeout, metadata=inject(metadata, self.rec))
            except BaseException as e:
                self.code = _grpc_code(e)
                raise
            self.code = "OK"
            self.rec.attrs["shadowgrpc.latency_ms"] = (_perf() - t0) * 1e3
            return response

        return call

    def mark(self, s: Any) -> tuple[int, int]:
        """Before the comparison of this pair: the target's cumulative comparison counts."""
        return s.compared, s.contract_mismatch

    def compared(self, s: Any, mark: tuple[int, int], primary: tuple | None) -> None:
        """After the comparison (no await in between): whether this pair was compared or broke the
        contract and, from its primary output (live, shadow: rows x values, as compare_responses
        returns it), the top-label agreement of its rows (more than one value per row) and the
        mean |live - shadow|, this pair's contribution to the target's divergence."""
        a = self.rec.attrs
        a["shadowgrpc.compared"] = s.compared > mark[0]
        if s.contract_mismatch > mark[1]:
            a["shadowgrpc.contract_mismatch"] = True
        if primary is not None and primary[0].size:
            x, y = primary[0], primary[1]
            n = x.shape[0]
            a["shadowgrpc.rows"] = n
            if x.shape[1] > 1 and x.dtype.kind == "f":  # np.mean of the matches, without its Python-level overhead
                a["shadowgrpc.agreement"] = np.count_nonzero(x.argmax(axis=1) == y.argmax(axis=1)) / n
            d = np.abs(x.astype(np.float64) - y)
            total = float(d.sum())  # what d.mean() sums; finite: no NaN/inf to leave out
            if math.isfinite(total):
                a["shadowgrpc.mean_abs_diff"] = total / d.size
            else:
                d = d[np.isfinite(d)]
                if d.size:  # NaN/inf rows: the target's invalid-row counts say so, not a NaN attribute
                    a["shadowgrpc.mean_abs_diff"] = float(d.mean())

    def end(self) -> None:  # no code: the task ended before its call did (cancelled at shutdown)
        _end_client(self.rec, self.code or "CANCELLED", None, self.emit)
