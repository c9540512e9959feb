"""The front against the real embedded Triton: the promises of DESIGN.md that the first issue
touches. Every comparison is front vs the same Triton called directly."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc.examples.data import make_transactions
from tests.frontctl import front_for

pytestmark = pytest.mark.triton

INFER = "/inference.GRPCInferenceService/ModelInfer"
BIG = 200 * 1024 * 1024


def _raw(address: str, method: str = "ModelInfer"):
    ch = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)])
    return ch, ch.unary_unary(f"/inference.GRPCInferenceService/{method}", request_serializer=None, response_deserializer=None)


def fraud_request(rows: np.ndarray, rid: str = "", version: str = "1", model: str = "fraud") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, model_version=version, id=rid)
    req.inputs.add(name="features", datatype="FP32", shape=list(rows.shape))
    req.outputs.add(name="probability")
    req.raw_input_contents.append(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
    return req


def intent_request(texts: list[bytes], rid: str = "", version: str = "1") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="merchant_intent", model_version=version, id=rid)
    req.inputs.add(name="text", datatype="BYTES", shape=[len(texts), 1])
    req.raw_input_contents.append(b"".join(len(t).to_bytes(4, "little") + t for t in texts))
    return req


@pytest.fixture(scope="module")
def front(triton):
    routes = [
        {
            "model": "fraud",
            "live": {"version": "1"},
            "shadows": [
                {"name": "v2", "version": "2"},
                {"name": "recorder", "model": "fraud_recorder"},
                {"name": "faulty", "model": "fraud_faulty"},
                {"name": "sleepy", "model": "fraud_sleepy", "max_in_flight": 4},
                {"name": "missing", "model": "no_such_model"},
                {"name": "garbage", "model": "fraud_garbage"},
            ],
        },
        {"model": "merchant_intent", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]},
        {"model": "basket_value", "shadows": [{"name": "v2", "version": "2", "sample_rate": 0.5}]},
        {"model": "fraud_sleepy"},
    ]
    ft = front_for(triton.grpc_address, routes)
    yield ft
    ft.stop()


def _shadow_stats(front, model: str) -> dict:
    return {ss.target.name: ss.stats for ss in front.router.routes[model].shadows}


def test_live_bytes_identical_to_direct_triton_numeric_and_bytes(triton, front):
    feats, _ = make_transactions(64, seed=3)
    chd, direct = _raw(triton.grpc_address)
    chf, via = _raw(front.address)
    with chd, chf:
        cases = [fraud_request(feats[i : i + 4], rid=f"same-{i}").SerializeToString() for i in range(0, 64, 4)]
        cases.append(intent_request([b"SKYJET AIRLINES", b"LUCKY SPIN CASINO"], rid="bytes-1").SerializeToString())
        cases.append(intent_request([b""], rid="").SerializeToString())
        b = pb.ModelInferRequest(model_name="basket_value", id="bv")
        b.inputs.add(name="features", datatype="FP32", shape=[2, 4])
        b.raw_input_contents.append(np.linspace(0, 1, 8, dtype=np.float32).tobytes())
        cases.append(b.SerializeToString())
        for raw in cases:
            want = direct(raw, timeout=10)
            got = via(raw, timeout=10)
            assert got == want
            resp = pb.ModelInferResponse.FromString(got)
            assert resp.raw_output_contents and all(len(c) > 0 for c in resp.raw_output_contents)  # never silently empty


def test_shadow_receives_the_same_inputs_observed_from_the_model(triton, front):
    feats, _ = make_transactions(6, seed=11)
    sent = {}
    client = grpcclient.InferenceServerClient(front.address)
    for i in range(3):
        rows = feats[2 * i : 2 * i + 2]
        x = grpcclient.InferInput("features", list(rows.shape), "FP32")
        x.set_data_from_numpy(rows)
        rid = f"observe-{time.time_ns()}-{i}"
        client.infer("fraud", [x], request_id=rid, client_timeout=10)
        sent[rid] = rows.tobytes()
    client.close()
    front.drain()
    seen = {}
    for line in triton.recorder_path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("request_id") in sent:
            seen[rec["request_id"]] = rec
    assert set(seen) == set(sent)
    for rid, rec in seen.items():
        assert base64.b64decode(rec["data_b64"]) == sent[rid]
        assert rec["shape"] == [2, 8] and rec["dtype"] == "float32"
        assert rec["parameters"].get("shadow") is True


def test_broken_slow_and_missing_shadows_leave_live_identical(triton, front):
    feats, _ = make_transactions(400, seed=5)
    reqs = [fraud_request(feats[i : i + 4], rid=f"broken-{i}").SerializeToString() for i in range(0, 400, 4)]
    chd, direct = _raw(triton.grpc_address)
    want = [direct(r, timeout=10) for r in reqs]
    before = front.router.routes["fraud"].stats.live_errors.copy()
    chf, via = _raw(front.address)
    with chd, chf, ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda r: via(r, timeout=1.0), reqs))
    assert got == want
    assert front.router.routes["fraud"].stats.live_errors == before
    front.drain(timeout=15)
    st = _shadow_stats(front, "fraud")
    assert st["faulty"].ok == 0 and sum(st["faulty"].errors.values()) >= len(reqs)
    assert st["missing"].ok == 0 and set(st["missing"].errors) == {"NOT_FOUND"}
    assert st["sleepy"].errors["DEADLINE_EXCEEDED"] >= 1 and st["sleepy"].shed >= 1
    assert st["garbage"].contract_mismatch >= 1 and st["garbage"].compared == 0
    assert st["v2"].compared >= len(reqs) and st["v2"].outputs["probability"].kind == "classifier"
    agree = st["v2"].outputs["probability"]
    assert 0.5 < agree.agreed_rows / agree.rows < 1.0  # v2 really differs from v1, and mostly agrees


def test_side_effect_file_holds_only_live_writes(triton, front):
    before = triton.preference_cache.read_text().splitlines() if triton.preference_cache.exists() else []
    client = grpcclient.InferenceServerClient(front.address)
    ids = []
    for i in range(10):
        x = grpcclient.InferInput("text", [1, 1], "BYTES")
        x.set_data_from_numpy(np.array([[b"FRESHMART GROCERY %d" % i]], dtype=np.object_))
        ids.append(f"pref-{time.time_ns()}-{i}")
        client.infer("merchant_intent", [x], request_id=ids[-1], client_timeout=10)
    client.close()
    front.drain()
    st = _shadow_stats(front, "merchant_intent")["v2"]
    assert st.ok >= 10  # the shadow really ran...
    after = triton.preference_cache.read_text().splitlines()
    new = [json.loads(line) for line in after[len(before) :]]
    assert sorted(r["request_id"] for r in new) == sorted(ids)  # ...but wrote nothing
    assert {str(r.get("model_version", r.get("version"))) for r in new} == {"1"}


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


def _sampled_id(rate: float, prefix: str) -> str:
    from shadowgrpc.packing import sample_key

    return next(f"{prefix}-{i}" for i in range(1000) if sample_key(f"{prefix}-{i}") < rate)


def test_messages_of_64_mib_go_through_and_are_mirrored(triton, front):
    # 64 MiB of input that Triton then rejects for its shape: the bytes crossed the front both
    # ways (request in, Triton's own INVALID_ARGUMENT back) exactly as they do direct, and the
    # shadow got the same 64 MiB (its Triton rejected them the same way). The id is one the
    # 50% sampler picks.
    n = 64 * 1024 * 1024 // 4 // 8
    req = pb.ModelInferRequest(model_name="basket_value", id=_sampled_id(0.5, "big"))
    req.inputs.add(name="features", datatype="FP32", shape=[n, 8])
    req.raw_input_contents.append(bytes(n * 8 * 4))
    raw = req.SerializeToString()
    assert len(raw) >= 64 * 1024 * 1024
    s = _shadow_stats(front, "basket_value")["v2"]
    sent, rejected = s.sent, s.errors["INVALID_ARGUMENT"]
    chd, direct = _raw(triton.grpc_address)
    chf, via = _raw(front.address)
    with chd, chf:
        with pytest.raises(grpc.RpcError) as d:
            direct(raw, timeout=60)
        with pytest.raises(grpc.RpcError) as f:
            via(raw, timeout=60)
    assert (f.value.code(), f.value.details()) == (d.value.code(), d.value.details())
    assert f.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
    front.drain()
    assert s.sent == sent + 1 and s.errors["INVALID_ARGUMENT"] == rejected + 1


def test_shadow_buffer_mb_sheds_what_does_not_fit(triton):
    # 1 MiB for all in-flight shadow requests: a 2 MiB request is served, not mirrored (shed).
    routes = [{"model": "basket_value", "shadows": [{"name": "v2", "version": "2"}]}]
    ft = front_for(triton.grpc_address, routes, shadow_buffer_mb=1)
    try:
        n = 2 * 1024 * 1024 // 4 // 8
        big = pb.ModelInferRequest(model_name="basket_value", id="two-mib")
        big.inputs.add(name="features", datatype="FP32", shape=[n, 8])
        big.raw_input_contents.append(bytes(n * 8 * 4))
        small = pb.ModelInferRequest(model_name="basket_value", id="small")
        small.inputs.add(name="features", datatype="FP32", shape=[1, 4])
        small.raw_input_contents.append(bytes(16))
        chf, via = _raw(ft.address)
        with chf:
            with pytest.raises(grpc.RpcError):  # Triton refuses the shape; what matters is the shadow side
                via(big.SerializeToString(), timeout=30)
            via(small.SerializeToString(), timeout=30)
        ft.drain()
        s = ft.router.routes["basket_value"].shadows[0].stats
        assert (s.sampled, s.shed, s.sent, s.ok) == (2, 1, 1, 1)
        assert ft.router._shadow_bytes == 0
    finally:
        ft.stop()


def test_shared_memory_requests_are_served_not_mirrored(triton, front):
    import tritonclient.utils.shared_memory as shm

    feats, _ = make_transactions(2, seed=4)
    name = f"sg-test-{time.time_ns()}"
    handle = shm.create_shared_memory_region(name, f"/{name}", feats.nbytes)
    client = grpcclient.InferenceServerClient(front.address)
    direct = grpcclient.InferenceServerClient(triton.grpc_address)
    try:
        shm.set_shared_memory_region(handle, [feats])
        client.register_system_shared_memory(name, f"/{name}", feats.nbytes)
        x = grpcclient.InferInput("features", [2, 8], "FP32")
        x.set_shared_memory(name, feats.nbytes)
        before = front.router.routes["fraud"].stats.shm_not_mirrored
        sent_before = _shadow_stats(front, "fraud")["v2"].sent
        got = client.infer("fraud", [x], client_timeout=10).as_numpy("probability")
        y = grpcclient.InferInput("features", [2, 8], "FP32")
        y.set_data_from_numpy(feats)
        want = direct.infer("fraud", [y], model_version="1").as_numpy("probability")
        np.testing.assert_array_equal(got, want)
        assert front.router.routes["fraud"].stats.shm_not_mirrored == before + 1
        assert _shadow_stats(front, "fraud")["v2"].sent == sent_before
    finally:
        client.unregister_system_shared_memory(name)
        client.close()
        direct.close()
        shm.destroy_shared_memory_region(handle)


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
    rep = fetch_report(front.admin_address)
    routes = {r.model: r for r in rep.routes}
    fraud = routes["fraud"]
    assert fraud.requests == fraud.live_ok + sum(fraud.live_errors.values())
    for s in fraud.shadows:
        assert s.sampled == s.sent + s.shed + s.down
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


def test_compressed_requests_and_upstream_compression(triton):
    routes = [{"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]}]
    ft = front_for(triton.grpc_address, routes, upstream_compression="gzip")
    try:
        feats, _ = make_transactions(4, seed=8)
        raw = fraud_request(feats, rid="gz").SerializeToString()
        with grpc.insecure_channel(triton.grpc_address) as chd, grpc.insecure_channel(ft.address) as chf:
            want = chd.unary_unary(INFER, request_serializer=None, response_deserializer=None)(raw, timeout=10)
            got = chf.unary_unary(INFER, request_serializer=None, response_deserializer=None)(raw, timeout=10, compression=grpc.Compression.Gzip)
        assert got == want
        ft.drain()
        s = ft.router.routes["fraud"].shadows[0].stats
        assert s.ok == 1 and s.compared == 1
    finally:
        ft.stop()


def test_report_has_the_shadows_compute_cost_from_triton_statistics(triton):
    from shadowgrpc.client import fetch_report

    routes = [
        {
            "model": "fraud",
            "live": {"version": "1"},
            "shadows": [{"name": "v2", "version": "2"}, {"name": "half", "model": "fraud_recorder", "sample_rate": 0.5}, {"name": "gone", "address": "127.0.0.1:1"}],
        }
    ]
    ft = front_for(triton.grpc_address, routes)
    try:
        feats, _ = make_transactions(40, seed=12)
        with grpc.insecure_channel(ft.address) as ch:
            call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
            for i in range(40):
                call(fraud_request(feats[i : i + 1], rid=f"cost-{i}").SerializeToString(), timeout=10)
        ft.drain()
        rep = fetch_report(ft.admin_address)
    finally:
        ft.stop()
    shadows = {s.target.name: s for s in rep.routes[0].shadows}
    v2, half, gone = shadows["v2"].cost, shadows["half"].cost, shadows["gone"].cost
    assert v2.available and v2.live_inferences == 40 and v2.shadow_inferences == 40
    assert v2.live_compute_ms > 0 and 0.2 < v2.extra_compute_fraction < 5  # v1 and v2 cost about the same
    assert half.available and half.shadow_inferences == shadows["half"].ok < 40
    assert not gone.available and "UNAVAILABLE" in gone.reason


def test_a_noise_floor_target_is_reported_next_to_the_real_shadow(triton):
    from shadowgrpc.client import fetch_report
    from shadowgrpc.report import format_report

    routes = [
        {
            "model": "fraud",
            "live": {"version": "1"},
            "shadows": [{"name": "v2", "version": "2"}, {"name": "aa", "version": "1", "noise_floor": True}],
        }
    ]
    ft = front_for(triton.grpc_address, routes)
    try:
        feats, _ = make_transactions(200, seed=13)
        with grpc.insecure_channel(ft.address) as ch:
            call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
            for i in range(0, 200, 4):
                call(fraud_request(feats[i : i + 4], rid=f"aa-{i}").SerializeToString(), timeout=10)
        ft.drain()
        rep = fetch_report(ft.admin_address)
    finally:
        ft.stop()
    shadows = {s.target.name: s for s in rep.routes[0].shadows}
    aa, v2 = shadows["aa"].outputs[0], shadows["v2"].outputs[0]
    assert shadows["aa"].target.noise_floor and aa.rows == v2.rows == 200
    assert aa.agreement == 1.0 and aa.max_abs_diff == 0.0  # a deterministic model has no jitter
    assert v2.agreement < 1.0 and v2.mean_abs_diff > 0.0
    # Drift on the same 20 probability bins: zero for the replica, positive for v2.
    assert list(aa.drift.edges) == list(v2.drift.edges) and len(v2.drift.edges) == 21
    assert aa.drift.binned == v2.drift.binned == 400  # 200 rows x 2 classes
    assert aa.drift.psi == aa.drift.js == aa.drift.tv == 0.0 and v2.drift.psi > 0 and 0 < v2.drift.js <= 1
    assert "[A/A noise floor: agreement 100.00%, mean |diff| 0, PSI 0.0000]" in format_report(rep)
    # The front's own time per request (two shadows scheduled) is counted and well below live's.
    r = rep.routes[0]
    assert r.front_added.count == r.live_latency.count == 50
    assert 0 < r.front_added.p50_ms < r.live_latency.p50_ms and r.front_added.p50_ms <= r.front_added.p999_ms
