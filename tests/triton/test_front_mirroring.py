"""The front against the real embedded Triton: live answers untouched and shadows mirrored, the
promises of DESIGN.md that the first issue touches. Every comparison is front vs the same Triton
called directly. Pass-through RPCs and statuses: test_front_passthrough.py; the report:
test_front_report.py."""

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
from tests.kserve import INFER, _raw, fraud_request, intent_request

pytestmark = pytest.mark.triton


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
    # Refused before traffic (repository.py): never sent, each sampled request counted not_ready.
    targets = {ss.target.name: ss.state for ss in front.router.routes["fraud"].shadows}
    assert targets["missing"].status == "NOT_READY" and "no_such_model" in targets["missing"].reason
    assert st["missing"].sent == 0 and st["missing"].not_ready == st["missing"].sampled >= len(reqs)
    assert targets["garbage"].status == "INCOMPATIBLE" and st["garbage"].sent == 0 and st["garbage"].not_ready >= len(reqs)
    assert any("probability" in p and "INT32" in p for p in targets["garbage"].contract), targets["garbage"].contract
    # The per-answer check is the second line: a declared contract that passes, answers that do not.
    assert st["loose"].contract_mismatch >= len(reqs) and st["loose"].compared == 0
    assert st["sleepy"].errors["DEADLINE_EXCEEDED"] >= 1 and st["sleepy"].shed >= 1
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


def test_shadow_buffer_mb_keeps_what_can_never_fit_on_live(triton):
    # 1 MiB for all in-flight shadow requests: a 2 MiB request is served, not mirrored: it could
    # never fit, so the ledger says too_large (shed is for what does not fit now).
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
        rs = ft.router.routes["basket_value"]
        s = rs.shadows[0].stats
        assert (s.sampled, s.shed, s.sent, s.ok) == (1, 0, 1, 1)
        assert (rs.stats.requests, rs.stats.too_large, rs.stats.mirrored) == (2, 1, 1)
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
