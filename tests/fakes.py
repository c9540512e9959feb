"""In-process fake Triton (KServe v2 servicer) for unit tests of plumbing only: timeouts,
shedding, metadata. Every promise is also tested against the real Triton
(tests/triton/test_front_*.py).

Behaviour by model name: "echo*" answers with the request's first raw input as output "out";
"slow*" sleeps ``slow_s`` then echoes; "fail*" aborts INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc


class FakeTriton(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, slow_s: float = 1.0) -> None:
        self.slow_s = slow_s
        self.requests: list[tuple[pb.ModelInferRequest, dict[str, str], float | None]] = []
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def start(self) -> str:
        self.server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)

    def by_model(self, name: str) -> list[pb.ModelInferRequest]:
        return [r for r, _, _ in self.requests if r.model_name == name]

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=request.name != "missing")

    async def ModelMetadata(self, request, context):
        if request.name == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.name}' is not found")
        return pb.ModelMetadataResponse(name=request.name, versions=[request.version or "1"], platform="fake")

    async def ModelInfer(self, request: pb.ModelInferRequest, context):
        md = {k: v for k, v in context.invocation_metadata()}
        self.requests.append((request, md, context.time_remaining()))
        name = request.model_name
        if name.startswith("fail"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"[request id: {request.id}] fake failure in {name}")
        if name.startswith("slow"):
            await asyncio.sleep(self.slow_s)
        resp = pb.ModelInferResponse(model_name=name, model_version=request.model_version or "1", id=request.id)
        if request.inputs:
            t = request.inputs[0]
            resp.outputs.add(name="out", datatype=t.datatype, shape=t.shape)
            resp.raw_output_contents.append(request.raw_input_contents[0] if request.raw_input_contents else b"")
        return resp
