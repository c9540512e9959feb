"""The compiled HTTP/2 client against the real Triton: every answer, status, message and trailing
metadata the same as grpc.aio's client gets, for good and bad ModelInfer requests; deadlines;
and the front itself on each data plane (``server.data_plane``)."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from shadowgrpc import h2
from shadowgrpc.config import ConfigError, Settings

pytestmark = [pytest.mark.triton, pytest.mark.c_extension]

PATH = "/inference.GRPCInferenceService/ModelInfer"


def infer_request(model: str = "fraud", version: str = "1", rows: int = 2, datatype: str = "FP32", name: str = "features", raw: bytes | None = None) -> bytes:
    req = service_pb2.ModelInferRequest(model_name=model, model_version=version, id="h2-test")
    req.inputs.add(name=name, datatype=datatype, shape=[rows, 8])
    req.raw_input_contents.append(raw if raw is not None else np.linspace(0, 1, rows * 8, dtype="<f4").tobytes())
    return req.SerializeToString()


CASES = {
    "ok": infer_request(),
    "ok v2": infer_request(version="2", rows=5),
    "unknown model": infer_request(model="nope"),
    "unknown version": infer_request(version="9"),
    "wrong datatype": infer_request(datatype="INT64"),
    "wrong input name": infer_request(name="nope"),
    "byte size mismatch": infer_request(raw=b"\x00" * 12),
    "not a protobuf": b"\xff\xff\xff",
    "empty": b"",
}


async def outcome(call, request: bytes, timeout: float):
    try:
        return await call(request, timeout)
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details(), tuple(e.trailing_metadata())


def test_same_answers_and_statuses_as_grpc_aio(triton):
    async def main():
        async with grpc.aio.insecure_channel(triton.grpc_address) as ch:
            mc = ch.unary_unary(PATH, request_serializer=None, response_deserializer=None)
            hc = h2.H2Channel(triton.grpc_address, 64 << 20)
            for name, req in CASES.items():
                g = await outcome(lambda r, t: mc(r, timeout=t), req, 10.0)
                c = await outcome(lambda r, t: hc.call(PATH.encode(), r, t), req, 10.0)
                assert g == c, (name, g, c)
                assert isinstance(c, bytes) == name.startswith("ok"), (name, c)
            # past the deadline: DEADLINE_EXCEEDED within it (fraud_sleepy sleeps 2 s)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            c = await outcome(lambda r, t: hc.call(PATH.encode(), r, t), infer_request(model="fraud_sleepy"), 0.3)
            assert c[0] is grpc.StatusCode.DEADLINE_EXCEEDED and loop.time() - t0 < 1.5
            assert hc.connects == 1
            await hc.close()

    asyncio.run(main())


def test_data_plane_key():
    base = {"server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"}}
    assert Settings.from_dict(base).data_plane == "auto"
    for v in ("nghttp2", "grpcio"):
        assert Settings.from_dict({"server": {**base["server"], "data_plane": v}}).data_plane == v
    with pytest.raises(ConfigError, match="server.data_plane: must be one of auto, nghttp2, grpcio, got 'h3'"):
        Settings.from_dict({"server": {**base["server"], "data_plane": "h3"}})
    with pytest.raises(ConfigError, match="server.data_plane: \"nghttp2\" cannot be used: server.upstream_compression = 'gzip'"):
        Settings.from_dict({"server": {**base["server"], "data_plane": "nghttp2", "upstream_compression": "gzip"}})


@pytest.mark.parametrize("plane", ["nghttp2", "grpcio"])
def test_front_on_each_data_plane_answers_like_triton_and_mirrors(triton, plane):
    """The front with ``server.data_plane`` set either way: every case answered as Triton answers
    it (bytes, or code + message), and the good ones mirrored to the shadow and compared."""
    from tests.frontctl import front_for

    routes = [{"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "v2", "model": "fraud", "version": "2"}]}]
    front = front_for(triton.grpc_address, routes, data_plane=plane, poll_s=0.5)
    try:
        assert front.router.upstreams.data_plane == plane
        assert (front.router.default.h2 is not None) == (plane == "nghttp2")

        async def ask(address: str):
            async with grpc.aio.insecure_channel(address) as ch:
                mc = ch.unary_unary(PATH, request_serializer=None, response_deserializer=None)
                return {n: await outcome(lambda r, t: mc(r, timeout=t), req, 10.0) for n, req in CASES.items()}

        want = asyncio.run(ask(triton.grpc_address))
        for _ in range(50):  # the shadow is mirrored once its contract check passed (poll_s)
            if front.router.routes["fraud"].shadows[0].mirroring:
                break
            asyncio.run(asyncio.sleep(0.1))
        got = asyncio.run(ask(front.address))
        assert got == want
        front.drain()
        s = front.router.routes["fraud"].shadows[0].stats
        # the good case ("ok v2" names another version: not mirrored) answered OK by the shadow and
        # compared; the bad ones it refuses as live does
        assert s.ok >= 1 and s.compared == s.ok and s.sent == s.ok + s.errors.total() and set(s.errors) <= {"INVALID_ARGUMENT"}, s
    finally:
        front.stop()
