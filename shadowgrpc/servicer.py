"""Request in, response out: the KServe v2 service as raw-bytes handlers, and ShadowControl.

No logic here: ModelInfer goes to ``Router.infer``, ModelStreamInfer to ``Router.stream_infer``,
every other method of ``inference.GRPCInferenceService`` to ``Router.unary`` (a pass-through with
Triton's exact status and message).
"""

from __future__ import annotations

import grpc
import numpy as np

from .backends import SERVICE, UNARY_METHODS
from .cost import CostTracker
from .report import build_report, target_pb
from .router import Router
from .state import snapshot
from .telemetry import Hooks
from .v1 import shadow_pb2 as pb
from .v1 import shadow_pb2_grpc as pb_grpc


def _unary(router: Router, method: str):
    async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await router.unary(method, raw, context)

    handler.__name__ = method
    return handler


def inference_handlers(router: Router, hooks: Hooks | None = None) -> dict[str, grpc.RpcMethodHandler]:
    """Method name -> raw-bytes handler (no (de)serializer: bytes in, bytes out); each inside a
    SERVER span when ``hooks`` (telemetry.Hooks) trace."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for m in UNARY_METHODS:
        fn = router.infer if m == "ModelInfer" else _unary(router, m)
        handlers[m] = grpc.unary_unary_rpc_method_handler(hooks.server_handler(m, fn) if hooks else fn)
    stream = hooks.server_stream_handler("ModelStreamInfer", router.stream_infer) if hooks else router.stream_infer
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(stream)
    return handlers


class ShadowControl(pb_grpc.ShadowControlServicer):
    def __init__(self, router: Router, cost: CostTracker) -> None:
        self._router = router
        self._cost = cost

    async def GetReport(self, request: pb.GetReportRequest, context: grpc.aio.ServicerContext) -> pb.Report:
        if request.model and request.model not in self._router.routes:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no route for model '{request.model}'")
        costs = await self._cost.collect()
        rep = build_report(self._router, request.model, costs)
        if request.snapshot:
            rep.snapshot = snapshot(self._router, costs)
        return rep

    async def RecordOutcomes(self, request_iterator, context: grpc.aio.ServicerContext) -> pb.RecordOutcomesResponse:
        resp = pb.RecordOutcomesResponse()
        async for o in request_iterator:
            i = resp.received
            problem = _outcome_problem(o, i)
            if problem:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            labels = np.asarray(o.labels, dtype=np.int64) if len(o.labels) else None
            values = np.asarray(o.values, dtype=np.float64) if len(o.values) else None
            verdict = self._router.record_outcome(o.request_id, labels, values)
            resp.received += 1
            setattr(resp, verdict, getattr(resp, verdict) + 1)
        return resp

    async def ListRoutes(self, request: pb.ListRoutesRequest, context: grpc.aio.ServicerContext) -> pb.ListRoutesResponse:
        resp = pb.ListRoutesResponse(default_live=self._router.settings.default_live)
        for r in self._router.settings.routes:
            resp.routes.add(model=r.model, live=target_pb(r.live), shadows=[target_pb(s) for s in r.shadows])
        return resp


def _outcome_problem(o: pb.Outcome, i: int) -> str:
    where = f"outcomes[{i}]"
    if not o.request_id:
        return f"{where}.request_id: required"
    if len(o.labels) and len(o.values):
        return f"{where}: set labels (classifier) or values (regression), not both"
    if not len(o.labels) and not len(o.values):
        return f"{where}: labels (classifier) or values (regression) required"
    if len(o.values) and not np.isfinite(np.asarray(o.values)).all():
        return f"{where}.values: must be finite"
    return ""


__all__ = ["SERVICE", "ShadowControl", "inference_handlers"]
