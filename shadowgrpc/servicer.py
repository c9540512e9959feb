"""Request in, response out: the KServe v2 service as raw-bytes handlers, and ShadowControl.

No logic here: ModelInfer goes to ``Router.infer``, ModelStreamInfer to ``Router.stream_infer``,
every other method of ``inference.GRPCInferenceService`` to ``Router.unary`` (a pass-through with
Triton's exact status and message).
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import numpy as np

from .codec import SERVICE, UNARY_METHODS
from .cost import CostTracker
from .ingest import ingest_batch
from .reload import reload_rpc
from .report import build_report, pairlog_pb, target_pb
from .router import Router
from .snapshot import snapshot
from .state import CLOSED
from .telemetry import Hooks
from .v1 import shadow_pb2 as pb
from .v1 import shadow_pb2_grpc as pb_grpc

log = logging.getLogger("shadowgrpc.servicer")


def _unary(router: Router, method: str):
    async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await router.unary(method, raw, context)

    handler.__name__ = method
    return handler


class DrainGate:
    """The data port's handlers while the front stops (server.Front.stop): once ``close()`` is
    called a new call is refused with UNAVAILABLE (retry elsewhere) while the calls it accepted
    run on; ``idle(timeout)`` waits for them, then until no call was refused for ``QUIET_S`` (a
    client that sends its next call as soon as it has an answer gets UNAVAILABLE, not a call grpc
    cancels). Closing grpc's server only then leaves it almost nothing to cancel: a call it has read
    but not yet handed to a handler when it closes ends CANCELLED (grpc core), never a call accepted."""

    QUIET_S = 0.1

    def __init__(self) -> None:
        self.open = True
        self.in_flight = 0
        self.refused_at = 0.0
        self._busy = False
        self._idle: asyncio.Event | None = None

    def close(self) -> None:
        self.open = False
        self._busy = self.in_flight > 0  # no call in flight and none refused: nothing to linger for
        self._idle = asyncio.Event()
        if not self.in_flight:
            self._idle.set()

    async def idle(self, timeout: float) -> bool:
        """True when every accepted call ended (then quiet) within ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        since = time.monotonic()
        if not (self._busy or self.refused_at):
            return True
        while (wait := max(self.refused_at, since) + self.QUIET_S - time.monotonic()) > 0 and time.monotonic() + wait < deadline:
            await asyncio.sleep(wait)
        return True

    async def _refuse(self, context) -> None:
        self.refused_at = time.monotonic()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the front is shutting down: call another replica or retry")

    def _done(self) -> None:
        self.in_flight -= 1
        if not self.open and not self.in_flight:
            self._idle.set()

    def unary(self, fn):
        async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if not self.open:
                await self._refuse(context)
            self.in_flight += 1
            try:
                return await fn(raw, context)
            finally:
                self._done()

        return handler

    def stream(self, fn):
        async def handler(requests, context: grpc.aio.ServicerContext):
            if not self.open:
                await self._refuse(context)
            self.in_flight += 1
            try:
                async for r in fn(requests, context):
                    yield r
            finally:
                self._done()

        return handler


def inference_handlers(router: Router, hooks: Hooks | None = None, gate: DrainGate | None = None) -> dict[str, grpc.RpcMethodHandler]:
    """Method name -> raw-bytes handler (no (de)serializer: bytes in, bytes out); each inside a
    SERVER span when ``hooks`` (telemetry.Hooks) trace; each behind ``gate`` (the stop's drain)."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for m in UNARY_METHODS:
        fn = router.infer if m == "ModelInfer" else _unary(router, m)
        fn = hooks.server_handler(m, fn) if hooks else fn
        handlers[m] = grpc.unary_unary_rpc_method_handler(gate.unary(fn) if gate else fn)
    stream = hooks.server_stream_handler("ModelStreamInfer", router.stream_infer) if hooks else router.stream_infer
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(gate.stream(stream) if gate else stream)
    return handlers


class ShadowControl(pb_grpc.ShadowControlServicer):
    def __init__(self, router: Router, cost: CostTracker, reload=None) -> None:
        self._router = router
        self._cost = cost
        self._reload = reload  # async (path, toml_text) -> changes: Front.reload_from

    async def GetReport(self, request: pb.GetReportRequest, context: grpc.aio.ServicerContext) -> pb.Report:
        if request.model and request.model not in self._router.routes:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no route for model '{request.model}'")
        costs = await self._cost.collect()
        rep = build_report(self._router.state, request.model, costs)
        _live_only(rep, self._router)
        if self._router.log is not None:
            rep.log.CopyFrom(pairlog_pb(self._router.log))
        if request.snapshot:
            rep.snapshot = snapshot(self._router.state, costs)
        return rep

    async def RecordOutcomes(self, request_iterator, context: grpc.aio.ServicerContext) -> pb.RecordOutcomesResponse:
        """Every outcome is accounted for: joined, or counted by why not (unknown, duplicate,
        reused, mismatch, or rejected by reason). One bad outcome never ends the stream."""
        resp = pb.RecordOutcomesResponse()
        async for o in request_iterator:
            resp.received += 1
            reason = _outcome_problem(o)
            if not reason:
                try:
                    labels = np.asarray(o.labels, dtype=np.int64) if len(o.labels) else None
                    values = np.asarray(o.values, dtype=np.float64) if len(o.values) else None
                    verdict = self._router.record_outcome(o.request_id, labels, values)
                    setattr(resp, verdict, getattr(resp, verdict) + 1)
                    continue
                except Exception:  # the front's own failure: counted, logged, the stream goes on
                    log.exception("outcome for %r could not be scored", o.request_id)
                    reason = "internal"
            self._router.reject_outcome(reason, o.request_id)
            resp.rejected += 1
            resp.rejected_reasons[reason] += 1
        return resp

    async def ReportPairs(self, request_iterator, context: grpc.aio.ServicerContext) -> pb.ReportPairsResponse:
        """Batches of pairs observed by a client-side mirror, each pair accounted like one this
        front mirrored (``ingest.ingest_batch``) or rejected by reason; counts are of pairs. One
        bad pair never ends the batch or the stream."""
        resp = pb.ReportPairsResponse()
        async for batch in request_iterator:
            resp.received += len(batch.pairs)
            accepted, rejected = await ingest_batch(self._router, batch.pairs)
            resp.accepted += accepted
            for reason, k in rejected.items():
                resp.rejected += k
                resp.rejected_reasons[reason] += k
        return resp

    async def Reload(self, request: pb.ReloadRequest, context: grpc.aio.ServicerContext) -> pb.ReloadResponse:
        if self._reload is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this ShadowControl cannot reload its config")
        return await reload_rpc(self._reload, request, context)

    async def ListRoutes(self, request: pb.ListRoutesRequest, context: grpc.aio.ServicerContext) -> pb.ListRoutesResponse:
        resp = pb.ListRoutesResponse(default_live=self._router.settings.default_live)
        for name, rs in self._router.state.routes.items():  # as served now: auto-shadow targets included, closed windows not
            resp.routes.add(model=name, live=target_pb(rs.route.live), shadows=[target_pb(ts.target) for ts in rs.shadows if ts.status != CLOSED])
        return resp


def _live_only(rep: pb.Report, router: Router) -> None:
    """Counters kept by this front's pairing stage, not in the comparison state (nor snapshots)."""
    tables = router.pairing.sequences.tables
    for rr in rep.routes:
        rr.stream_unpairable = router.pairing.stream_unpairable[rr.model]
        for sr in rr.shadows:
            t = tables.get((rr.model, sr.target.name))
            if t is not None:
                sr.sequences_seen_midway, sr.sequences_evicted, sr.sequences_over_bound = t.seen_midway, t.evicted, t.over_bound


def _outcome_problem(o: pb.Outcome) -> str:
    """Why an outcome message cannot be used ("" when it can): a reason key of
    ``rejected_reasons``."""
    if not o.request_id:
        return "no_request_id"
    if len(o.labels) and len(o.values):
        return "labels_and_values"
    if not len(o.labels) and not len(o.values):
        return "no_labels_or_values"
    if len(o.values) and not np.isfinite(np.asarray(o.values)).all():
        return "values_not_finite"
    return ""


__all__ = ["SERVICE", "ShadowControl", "inference_handlers"]
