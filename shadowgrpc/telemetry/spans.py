"""Spans of the request path: the SERVER span around each KServe v2 handler, the live and shadow
CLIENT spans the router opens through ``Hooks`` (see the package doc, telemetry/__init__.py, for what they carry)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import numpy as np
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..codec import SERVICE
from ._sdk import set_span_attributes
SERVER, CLIENT = trace.SpanKind.SERVER, trace.SpanKind.CLIENT
# gRPC codes that are the server's fault (OpenTelemetry RPC semantic conventions).
_SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})
_TRACE_KEYS = frozenset({"traceparent", "tracestate"})
_W3C = TraceContextTextMapPropagator()
_perf = time.perf_counter
_CODES = {c.name: c.value[0] for c in grpc.StatusCode}


# ``span.set_attributes(attrs)`` for the attributes this module builds (str, bool, int, float),
# on the event loop's thread: written straight into the SDK's attribute dict while the span
# records, which skips the per-value validation (about a third of a span's cost here); the
# public call where that would not give the same result (see telemetry._sdk).
_put = set_span_attributes


def _traceparent(span: trace.Span) -> str:
    c = span.get_span_context()
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}"


def inject(metadata: tuple | None, span: trace.Span) -> tuple:
    """``metadata`` (forwarded from the caller) with its trace context replaced by ``span``'s."""
    md = tuple(kv for kv in metadata if kv[0] not in _TRACE_KEYS) if metadata else ()
    md += (("traceparent", _traceparent(span)),)
    state = span.get_span_context().trace_state
    return md + (("tracestate", state.to_header()),) if state else md


def _grpc_code(err: BaseException | None) -> str:
    if err is None:
        return "OK"
    if isinstance(err, grpc.aio.AioRpcError):
        return err.code().name
    return "CANCELLED" if isinstance(err, asyncio.CancelledError) else "UNAVAILABLE"


def _rpc_attrs(method: str) -> dict[str, str]:
    return {"rpc.system": "grpc", "rpc.method": method}  # rpc.service: in the span name


def _target_attrs(role: str, name: str, t: Any) -> dict[str, Any]:
    """The fixed attributes of a CLIENT span (few: each one costs ~2-3 us to export)."""
    a = {"shadowgrpc.role": role, "shadowgrpc.target": name, "shadowgrpc.target.model": t.model, "server.address": t.address}
    if t.version:
        a["shadowgrpc.target.version"] = t.version
    return a


class Hooks:
    """Called by the router (``router.telemetry``, when tracing is on) and wraps the servicer's
    handlers. A request that is not sampled gets no client span objects: ``live``/``shadow``
    return None."""

    __slots__ = ("tracer", "_attrs")

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self._attrs: dict[tuple, dict] = {}

    # server side
    def server_handler(self, method: str, fn):
        """``fn`` (a raw unary handler) inside a SERVER span that continues the caller's trace."""
        tracer = self.tracer
        name, attrs = f"{SERVICE}/{method}", _rpc_attrs(method)

        async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            parent = _extract(context)
            span = tracer.start_span(name, parent, SERVER)
            if not span.is_recording():
                return await fn(raw, context)
            _put(span, attrs)
            token = otel_context.attach(trace.set_span_in_context(span, parent))
            try:
                return await fn(raw, context)
            finally:
                otel_context.detach(token)
                _end_server(span, context)

        handler.__name__ = method
        return handler

    def server_stream_handler(self, method: str, fn):
        tracer = self.tracer
        name, attrs = f"{SERVICE}/{method}", _rpc_attrs(method)

        async def handler(requests, context: grpc.aio.ServicerContext):
            span = tracer.start_span(name, _extract(context), SERVER)
            if span.is_recording():
                _put(span, attrs)
            try:
                async for response in fn(requests, context):
                    yield response
            finally:
                _end_server(span, context)

        return handler

    def pass_through(self, metadata: tuple | None) -> tuple | None:
        """Metadata for a call passed through unchanged (unrouted model, other KServe RPCs): the
        trace context of this request's SERVER span, so Triton's spans hang under the front's."""
        span = trace.get_current_span()
        if not span.get_span_context().trace_flags.sampled:
            return metadata
        return inject(metadata, span)

    # client side
    def _static(self, key: tuple, make) -> dict:
        a = self._attrs.get(key)
        if a is None:
            a = self._attrs[key] = make()
        return a

    def live(self, rs: Any, version: str | None, request_id: str) -> LiveCall | None:
        """Before the live call of a routed ModelInfer: its CLIENT span, if the request is sampled."""
        server = trace.get_current_span()
        if not server.get_span_context().trace_flags.sampled:
            return None
        r = rs.route
        _put(server, {"shadowgrpc.route": r.model, "shadowgrpc.model": r.model, "shadowgrpc.version": version or "",
                      "shadowgrpc.request_id": request_id, "shadowgrpc.shadowed": False})
        span = self.tracer.start_span(f"ModelInfer live {r.live.model}", kind=CLIENT)
        _put(span, self._static(("live", r.model), lambda: _target_attrs("live", "live", r.live)))
        return LiveCall(rs, span, server)

    def shadow(self, ss: Any, route: str, deadline: float) -> ShadowCall | None:
        """In a shadow task, before its call: the shadow CLIENT span, parented on the context the
        task was created with (the request's server span), never made current."""
        parent = otel_context.get_current()
        if not trace.get_current_span(parent).get_span_context().trace_flags.sampled:
            return None
        t = ss.target
        span = self.tracer.start_span(f"ModelInfer shadow {t.name}", parent, CLIENT)
        attrs = self._static(("shadow", route, t.name), lambda: {
            **_target_attrs("shadow", t.name, t), "shadowgrpc.shadow": True, "shadowgrpc.route": route,
            **({"shadowgrpc.noise_floor": True} if t.noise_floor else {})})
        _put(span, {**attrs, "shadowgrpc.deadline_ms": deadline * 1e3})
        return ShadowCall(span)


def _extract(context: grpc.aio.ServicerContext):
    md = context.invocation_metadata()
    if not md:
        return None
    carrier = {k: v for k, v in md if k in _TRACE_KEYS}
    return _W3C.extract(carrier) if carrier else None


def _end_server(span: trace.Span, context: grpc.aio.ServicerContext) -> None:
    code = context.code()
    name = code.name if isinstance(code, grpc.StatusCode) else "OK"
    _put(span, {"rpc.grpc.status_code": _CODES[name]})
    if name in _SERVER_ERRORS:
        span.set_status(trace.Status(trace.StatusCode.ERROR, name))
    span.end()


def _end_client(span: trace.Span, code: str, latency_s: float | None) -> None:
    _put(span, {"rpc.grpc.status_code": _CODES.get(code, 2)} if latency_s is None else
         {"rpc.grpc.status_code": _CODES.get(code, 2), "shadowgrpc.latency_ms": latency_s * 1e3})
    if code != "OK":
        span.set_status(trace.Status(trace.StatusCode.ERROR, code))
    span.end()


class LiveCall:
    __slots__ = ("rs", "span", "server", "t0", "counts")

    def __init__(self, rs: Any, span: trace.Span, server: trace.Span) -> None:
        self.rs, self.span, self.server = rs, span, server
        self.counts = _mirror_counts(rs) if rs.shadows else None
        self.t0 = _perf()

    def inject(self, metadata: tuple | None, timeout: float | None) -> tuple:
        if timeout is not None:
            _put(self.span, {"shadowgrpc.deadline_ms": timeout * 1e3})
        return inject(metadata, self.span)

    def mirrored(self) -> None:
        """After ``Router._mirror`` (no await in between): what happened to each shadow target."""
        if self.counts is None:
            return
        (s0, sh0, d0, n0), (s1, sh1, d1, n1) = self.counts, _mirror_counts(self.rs)
        counts = {"sent": n1 - n0, "shed": sh1 - sh0, "down": d1 - d0, "not_sampled": len(self.rs.shadows) - (s1 - s0)}
        attrs: dict[str, Any] = {f"shadowgrpc.shadow.{k}": v for k, v in counts.items() if v}  # targets per outcome
        attrs["shadowgrpc.shadowed"] = counts["sent"] > 0
        _put(self.server, attrs)

    def end(self, err: BaseException | None) -> None:
        _end_client(self.span, _grpc_code(err), _perf() - self.t0 if err is None else None)

    def trace_id(self) -> str | None:
        """The request's trace id (32 hex digits), for the paired log."""
        c = self.span.get_span_context()
        return f"{c.trace_id:032x}" if c.is_valid else None


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
    __slots__ = ("span", "code")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.code = ""

    def wrap(self, fn):
        """``fn`` (the shadow upstream's raw ModelInfer) sending this span's traceparent and
        recording its status and latency."""

        async def call(request: bytes, *, timeout: float, metadata: tuple):
            t0 = _perf()
            try:
                response = await fn(request, timeout=timeout, metadata=inject(metadata, self.span))
            except BaseException as e:
                self.code = _grpc_code(e)
                raise
            self.code = "OK"
            _put(self.span, {"shadowgrpc.latency_ms": (_perf() - t0) * 1e3})
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
        attrs: dict[str, Any] = {"shadowgrpc.compared": s.compared > mark[0]}
        if s.contract_mismatch > mark[1]:
            attrs["shadowgrpc.contract_mismatch"] = True
        if primary is not None and primary[0].size:
            a, b = primary[0], primary[1]
            attrs["shadowgrpc.rows"] = a.shape[0]
            if a.shape[1] > 1 and a.dtype.kind == "f":
                attrs["shadowgrpc.agreement"] = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
            d = np.abs(a.astype(np.float64) - b)
            d = d[np.isfinite(d)]
            if d.size:  # NaN/inf rows: the target's invalid-row counts say so, not a NaN attribute
                attrs["shadowgrpc.mean_abs_diff"] = float(d.mean())
        _put(self.span, attrs)

    def end(self) -> None:  # no code: the task ended before its call did (cancelled at shutdown)
        _end_client(self.span, self.code or "CANCELLED", None)
