"""The ``serve --workers N`` parent's ShadowControl (workers.py): every worker's state merged for
GetReport, each outcome to the worker that holds its pair, the other methods to one worker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

OUTCOME_BATCH = 512
PEEK = "/shadowgrpc.workers.Worker/Peek"  # private: on the workers' own admin servers only


def _add(total, r) -> None:
    for f in ("received", "accepted", "unknown", "duplicate", "mismatch", "reused", "rejected"):
        setattr(total, f, getattr(total, f) + getattr(r, f))
    for k, v in r.rejected_reasons.items():
        total.rejected_reasons[k] += v


class MergedControl:
    """ShadowControl of the parent: the workers' state merged, outcomes to the worker that holds
    the pair (see the module doc)."""

    def __init__(self, workers: list, max_message_bytes: int, interceptors=()) -> None:
        import grpc

        from .v1 import shadow_pb2_grpc

        opts = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", max(max_message_bytes, 4 << 20))]
        self.workers = workers
        self.gate = None  # the rollout gate (gate_http.GateServer) the parent serves; a reload re-reads its certificate
        self.channels = [grpc.aio.insecure_channel(w.admin_address, options=opts, interceptors=list(interceptors)) for w in workers]
        self._stubs = [shadow_pb2_grpc.ShadowControlStub(c) for c in self.channels]
        self._peeks = [c.unary_unary(PEEK, request_serializer=None, response_deserializer=None) for c in self.channels]

    async def _each(self, context, calls: list[tuple[Any, Any]]) -> list:
        """Await (worker, call) pairs; a failed call aborts the caller's, naming the worker."""
        import grpc

        results = await asyncio.gather(*(c for _, c in calls), return_exceptions=True)
        for (w, _), r in zip(calls, results):
            if isinstance(r, grpc.aio.AioRpcError):
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"worker {w.index} (pid {w.pid}): {r.code().name}: {r.details()}")
            if isinstance(r, BaseException):
                raise r
        return results

    async def GetReport(self, request, context):
        import grpc

        from .report import build_report
        from .snapshot import load, merge, snapshot
        from .v1 import shadow_pb2 as pb

        t = context.time_remaining() or 60.0
        reps = await self._each(context, [(w, s.GetReport(pb.GetReportRequest(snapshot=True), timeout=t)) for w, s in zip(self.workers, self._stubs)])
        view = merge([load(r.snapshot) for r in reps])
        if request.model and request.model not in view.routes:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no route for model '{request.model}'")
        rep = build_report(view, request.model, view.costs)
        if request.snapshot:
            rep.snapshot = snapshot(view, view.costs)
        return rep

    async def RecordOutcomes(self, request_iterator, context):
        from .v1 import shadow_pb2 as pb

        total = pb.RecordOutcomesResponse()
        batch: list = []
        async for o in request_iterator:
            batch.append(o)
            if len(batch) >= OUTCOME_BATCH:
                await self._record(batch, total, context)
                batch = []
        if batch:
            await self._record(batch, total, context)
        return total

    async def _record(self, batch: list, total, context) -> None:
        t = context.time_remaining() or 60.0
        ids = json.dumps([o.request_id for o in batch]).encode()
        claims = [json.loads(r) for r in await self._each(context, [(w, p(ids, timeout=t)) for w, p in zip(self.workers, self._peeks)])]
        per: list[list] = [[] for _ in self.workers]
        for j, o in enumerate(batch):
            per[next((i for i, c in enumerate(claims) if c[j]), 0)].append(o)
        calls = [(w, s.RecordOutcomes(iter(mine), timeout=t)) for w, s, mine in zip(self.workers, self._stubs, per) if mine]
        for r in await self._each(context, calls):
            _add(total, r)

    async def ReportPairs(self, request_iterator, context):
        i = self._pairs_to = (getattr(self, "_pairs_to", -1) + 1) % len(self.workers)
        return (await self._each(context, [(self.workers[i], self._stubs[i].ReportPairs(request_iterator, timeout=context.time_remaining()))]))[0]

    async def Reload(self, request, context):  # reload.install_parent: checked here, then applied by every worker
        return await self.reload_rpc(request, context)

    async def ListRoutes(self, request, context):
        return (await self._each(context, [(self.workers[0], self._stubs[0].ListRoutes(request, timeout=context.time_remaining() or 10.0))]))[0]
