"""Request in, response out: the KServe v2 service as raw-bytes handlers, and ShadowControl.

No logic here: ModelInfer goes to ``Router.infer``, ModelStreamInfer to ``Router.stream_infer``,
every other method of ``inference.GRPCInferenceService`` to ``Router.unary`` (a pass-through with
Triton's exact status and message).
"""

from __future__ import annotations

import grpc

from .backends import SERVICE, UNARY_METHODS
from .cost import CostTracker
from .report import build_report
from .router import Router
from .v1 import shadow_pb2 as pb
from .v1 import shadow_pb2_grpc as pb_grpc


def _unary(router: Router, method: str):
    async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await router.unary(method, raw, context)

    handler.__name__ = method
    return handler


def inference_handlers(router: Router) -> dict[str, grpc.RpcMethodHandler]:
    """Method name -> raw-bytes handler (no (de)serializer: bytes in, bytes out)."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for m in UNARY_METHODS:
        fn = router.infer if m == "ModelInfer" else _unary(router, m)
        handlers[m] = grpc.unary_unary_rpc_method_handler(fn)
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(router.stream_infer)
    return handlers


class ShadowControl(pb_grpc.ShadowControlServicer):
    def __init__(self, router: Router, cost: CostTracker) -> None:
        self._router = router
        self._cost = cost

    async def GetReport(self, request: pb.GetReportRequest, context: grpc.aio.ServicerContext) -> pb.Report:
        if request.model and request.model not in self._router.routes:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no route for model '{request.model}'")
        return build_report(self._router, request.model, await self._cost.collect())

    async def ListRoutes(self, request: pb.ListRoutesRequest, context: grpc.aio.ServicerContext) -> pb.ListRoutesResponse:
        from .report import target_pb

        resp = pb.ListRoutesResponse(default_live=self._router.settings.default_live)
        for r in self._router.settings.routes:
            resp.routes.add(model=r.model, live=target_pb(r.live), shadows=[target_pb(s) for s in r.shadows])
        return resp


__all__ = ["SERVICE", "ShadowControl", "inference_handlers"]
