"""The front against the real embedded Triton: errors, every other RPC, streams, metadata, deadlines
and cancellation pass through with Triton's exact answer or status; health and reflection on the
data port. Every comparison is front vs the same Triton called directly."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc.examples.data import make_transactions
from tests.kserve import INFER, _raw, fraud_request

pytestmark = pytest.mark.triton


def test_unknown_model_and_malformed_requests_get_tritons_status(triton, front):
    chd, direct = _raw(triton.grpc_address)
    chf, via = _raw(front.address)
    feats, _ = make_transactions(2, seed=1)
    wrong_shape = fraud_request(feats[:, :5])
    wrong_type = fraud_request(feats)
    wrong_type.inputs[0].datatype = "INT32"
    missing_input = pb.ModelInferRequest(model_name="fraud", model_version="1")
    cases = {
        "unknown model": pb.ModelInferRequest(model_name="nope", id="u1").SerializeToString(),
        "unknown version": fraud_request(feats, version="7", model="basket_value").SerializeToString(),
        "wrong shape": wrong_shape.SerializeToString(),
        "wrong dtype": wrong_type.SerializeToString(),
        "no inputs": missing_input.SerializeToString(),
        "not protobuf": b"\xff\xff\xff\xff",
    }
    with chd, chf:
        for what, raw in cases.items():
            with pytest.raises(grpc.RpcError) as d:
                direct(raw, timeout=10)
            with pytest.raises(grpc.RpcError) as f:
                via(raw, timeout=10)
            assert (f.value.code(), f.value.details()) == (d.value.code(), d.value.details()), what
            if what == "unknown model":
                assert d.value.code() == grpc.StatusCode.NOT_FOUND
            if what in ("wrong shape", "wrong dtype", "no inputs"):
                assert d.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "method, request_msg",
    [
        ("ServerLive", pb.ServerLiveRequest()),
        ("ServerReady", pb.ServerReadyRequest()),
        ("ServerMetadata", pb.ServerMetadataRequest()),
        ("ModelReady", pb.ModelReadyRequest(name="basket_value")),
        ("ModelMetadata", pb.ModelMetadataRequest(name="merchant_intent", version="1")),
        ("ModelMetadata", pb.ModelMetadataRequest(name="nope")),
        ("ModelConfig", pb.ModelConfigRequest(name="fraud", version="1")),
        ("ModelStatistics", pb.ModelStatisticsRequest(name="nope")),
        ("RepositoryIndex", pb.RepositoryIndexRequest()),
        ("SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest()),
        ("SystemSharedMemoryUnregister", pb.SystemSharedMemoryUnregisterRequest(name="never-registered")),
        ("CudaSharedMemoryStatus", pb.CudaSharedMemoryStatusRequest()),
        ("CudaSharedMemoryRegister", pb.CudaSharedMemoryRegisterRequest(name="x", device_id=0, byte_size=16)),
        ("TraceSetting", pb.TraceSettingRequest()),
        ("LogSettings", pb.LogSettingsRequest()),
        ("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="no_such_model")),
    ],
)
def test_every_other_rpc_passes_through_with_exact_status(triton, front, method, request_msg):
    chd, direct = _raw(triton.grpc_address, method)
    chf, via = _raw(front.address, method)
    raw = request_msg.SerializeToString()

    response_type = getattr(pb, f"{method}Response")

    def call(fn):
        try:
            # Parsed, not raw: Triton itself serializes protobuf maps in varying order.
            return ("OK", response_type.FromString(fn(raw, timeout=10)))
        except grpc.RpcError as e:
            return (e.code(), e.details())

    with chd, chf:
        assert call(via) == call(direct)


def test_routed_model_metadata_goes_to_the_pinned_live_version(triton, front):
    client = grpcclient.InferenceServerClient(front.address)
    direct = grpcclient.InferenceServerClient(triton.grpc_address)
    try:
        assert client.get_model_metadata("fraud", as_json=True) == direct.get_model_metadata("fraud", "1", as_json=True)
        assert client.get_model_config("fraud", as_json=True) == direct.get_model_config("fraud", "1", as_json=True)
    finally:
        client.close()
        direct.close()


def test_model_stream_infer_passes_through(triton, front):
    feats, _ = make_transactions(12, seed=9)
    before = front.router.state.stream_messages

    def run(address: str) -> list[bytes]:
        import queue

        results: queue.Queue = queue.Queue()
        c = grpcclient.InferenceServerClient(address)
        c.start_stream(callback=lambda result, error: results.put((result, error)))
        for i in range(6):
            x = grpcclient.InferInput("features", [2, 8], "FP32")
            x.set_data_from_numpy(feats[2 * i : 2 * i + 2])
            c.async_stream_infer("fraud", [x], model_version="1", request_id=f"s{i}")
        out = [results.get(timeout=10) for _ in range(6)]
        c.stop_stream()
        c.close()
        assert all(err is None for _, err in out), out
        return sorted(r.get_response().SerializeToString() for r, _ in out)

    assert run(front.address) == run(triton.grpc_address)
    assert front.router.state.stream_messages == before + 6


def test_stream_error_status_passes_through(triton, front):
    import queue

    results: queue.Queue = queue.Queue()
    c = grpcclient.InferenceServerClient(front.address)
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    x = grpcclient.InferInput("features", [1, 8], "FP32")
    x.set_data_from_numpy(np.zeros((1, 8), np.float32))
    c.async_stream_infer("no_such_model", [x])
    result, err = results.get(timeout=10)
    c.stop_stream()
    c.close()
    assert result is None and "no_such_model" in str(err)


def test_metadata_and_deadline_reach_triton(triton, front):
    # A deadline shorter than fraud_sleepy's sleep: the caller gets DEADLINE_EXCEEDED quickly.
    chf, via = _raw(front.address)
    feats, _ = make_transactions(1, seed=2)
    with chf:
        t0 = time.perf_counter()
        with pytest.raises(grpc.RpcError) as e:
            via(fraud_request(feats, model="fraud_sleepy", version="").SerializeToString(), timeout=0.3)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.perf_counter() - t0 < 1.5


def test_health_reflection_and_report(front):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from shadowgrpc.client import fetch_report

    with grpc.insecure_channel(front.address) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        out = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
        names = {s.name for s in out[0].list_services_response.service}
        assert "inference.GRPCInferenceService" in names
        assert "shadowgrpc.v1.ShadowControl" not in names  # the admin API is not on the data port
    front.drain(timeout=15)  # shadow calls still in flight would not be counted in ok or errors yet
    rep = fetch_report(front.admin_address)
    routes = {r.model: r for r in rep.routes}
    fraud = routes["fraud"]
    assert fraud.requests == fraud.live_ok + sum(fraud.live_errors.values())
    for s in fraud.shadows:
        assert s.sampled == s.sent + s.shed + s.down + s.not_ready
        assert s.sent == s.ok + sum(s.errors.values())
    with pytest.raises(grpc.RpcError) as e:
        fetch_report(front.admin_address, model="nope")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_caller_cancellation_reaches_the_live_call(triton, front):
    import asyncio

    feats, _ = make_transactions(1, seed=2)
    raw = fraud_request(feats, model="fraud_sleepy", version="").SerializeToString()
    errors = front.router.routes["fraud_sleepy"].stats.live_errors

    async def go() -> None:
        async with grpc.aio.insecure_channel(front.address) as ch:
            call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)(raw, timeout=10)
            await asyncio.sleep(0.4)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

    before = errors["CANCELLED"]
    asyncio.run(go())
    deadline = time.monotonic() + 5
    while errors["CANCELLED"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert errors["CANCELLED"] == before + 1  # the front's live call was cancelled with the caller's
