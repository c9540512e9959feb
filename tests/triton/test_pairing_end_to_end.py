"""The after-both-answers stage against the real Triton, and the defects it once had, each with a
test that failed before: invalid (NaN) shadow outputs judged, reused request ids, metadata
failures, shadow answers counted in the buffer, streams mixing models, the shadow's default
version, internal errors after an OK answer, and a caller's explicit live version on a pinned
route. The stage's unit tests: tests/unit/test_pairing.py."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from shadowgrpc import pairing
from shadowgrpc.examples.data import make_transactions
from shadowgrpc.report import build_report
from tests.frontctl import front_for
from tests.kserve import _raw, fraud_request

FRAUD_V1_V2 = [{"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]}]


def nan_rows(features: np.ndarray) -> np.ndarray:
    """The rule of tests/models/fraud_nan (its model.py cannot be imported here: it needs Triton's
    Python backend); the NaN test checks the counts it predicts against what the model did."""
    q = np.round(np.asarray(features, np.float32).astype(np.float64) * 1e4).astype(np.int64)
    h = (q * np.arange(1, q.shape[1] + 1, dtype=np.int64) * 2654435761).sum(axis=1)
    return (np.abs(h) % 50) == 0


def _send(ft, feats: np.ndarray, prefix: str, batch: int = 4, model: str = "fraud", version: str = "1") -> list[bytes]:
    ch, call = _raw(ft.address)
    out = []
    with ch:
        for i in range(len(feats) // batch):
            out.append(call(fraud_request(feats[i * batch : (i + 1) * batch], rid=f"{prefix}-{i}", version=version, model=model).SerializeToString(), timeout=10))
    ft.drain()
    return out


def _record(ft, outcomes) -> object:
    from shadowgrpc.v1 import shadow_pb2_grpc

    with grpc.insecure_channel(ft.admin_address) as ch:
        return shadow_pb2_grpc.ShadowControlStub(ch).RecordOutcomes(iter(outcomes), timeout=60)


@pytest.mark.triton
def test_a_shadow_emitting_nan_is_judged_fail_and_every_outcome_is_accounted_for(triton):
    from shadowgrpc.examples.data import reference_fraud_probability
    from shadowgrpc.v1 import shadow_pb2

    batch, n_req = 4, 300
    feats, labels = make_transactions(batch * n_req, seed=31)
    expected_nan = int(nan_rows(feats).sum())
    assert 0.01 * len(feats) < expected_nan < 0.04 * len(feats)  # ~2% of rows
    routes = [{"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "nan", "model": "fraud_nan"}]}]
    ft = front_for(triton.grpc_address, routes)
    try:
        _send(ft, feats, "nan")
        # Without outcomes the invalid outputs already fail the shadow.
        v = build_report(ft.router.state).routes[0].shadows[0].verdict
        gates = {g.name: g for g in v.gates}
        assert v.decision == "FAIL" and gates["invalid_outputs"].status == "FAIL"
        assert f"{expected_nan / len(feats):.2%}" in gates["invalid_outputs"].reason
        outcomes = [shadow_pb2.Outcome(request_id=f"nan-{i}", labels=[int(x) for x in labels[i * batch : (i + 1) * batch]]) for i in range(n_req)]
        outcomes.insert(5, shadow_pb2.Outcome(request_id="nan-bad", values=[float("nan")]))  # one bad item mid-stream
        resp = _record(ft, outcomes)
        rep = build_report(ft.router.state)
    finally:
        ft.stop()
    assert resp.received == n_req + 1 and resp.accepted == n_req and resp.rejected == 1  # none lost
    s = rep.routes[0].shadows[0]
    out = {o.name: o for o in s.outputs}["probability"]
    assert out.shadow_invalid_rows == expected_nan and out.live_invalid_rows == 0 and out.probabilities
    g = s.ground_truth
    assert g.rows == len(feats) and g.shadow.invalid_rows == expected_nan and g.live.invalid_rows == 0
    assert sum(b.rows for b in g.shadow.reliability) == len(feats) - expected_nan  # NaN rows kept out of calibration
    # NaN rows are scored as wrong: the shadow's hits are v2's hits on the other rows only.
    v2_hit = (reference_fraud_probability(feats, 2).argmax(1) == labels) & ~nan_rows(feats)
    assert abs(round(g.shadow.accuracy * g.rows) - int(v2_hit.sum())) <= 2
    assert s.verdict.decision == "FAIL"


@pytest.mark.triton
def test_a_reused_request_id_is_counted_and_never_joined_across_requests(triton):
    from shadowgrpc.v1 import shadow_pb2

    feats, labels = make_transactions(8, seed=5)
    ft = front_for(triton.grpc_address, FRAUD_V1_V2)
    try:
        ch, call = _raw(ft.address)
        with ch:
            for rows in (feats[:4], feats[4:]):  # two different requests, one id
                call(fraud_request(rows, rid="same-id").SerializeToString(), timeout=10)
                ft.drain()
        assert ft.router.state.pairs.reused_ids == 1
        resp = _record(ft, [shadow_pb2.Outcome(request_id="same-id", labels=[int(x) for x in labels[4:]])])
        rep = build_report(ft.router.state)
    finally:
        ft.stop()
    assert (resp.received, resp.reused, resp.accepted) == (1, 1, 0)
    assert rep.outcomes.reused_ids == 1 and rep.outcomes.reused == 1 and rep.routes[0].shadows[0].ground_truth.rows == 0
    assert rep.routes[0].shadows[0].compared == 2  # each request still compared with its own live answer


@pytest.mark.triton
def test_mirroring_goes_on_when_reading_model_metadata_fails_in_an_unexpected_way(triton):
    feats, _ = make_transactions(40, seed=6)
    ft = front_for(triton.grpc_address, FRAUD_V1_V2)
    try:
        comp = ft.router.routes["fraud"].completeness

        async def broken(raw, timeout=None):
            raise ValueError("injected: not an AioRpcError")

        comp._upstream = type("Up", (), {"unary": {"ModelMetadata": broken}})()
        _send(ft, feats, "meta")
        ss = ft.router.routes["fraud"].shadows[0]
        assert ss.in_flight == 0 and ss.stats.compared == 10 and ss.stats.ok == 10
        assert "injected" in comp.metadata_error and comp.inputs["features"].requests == 10
    finally:
        ft.stop()


@pytest.mark.triton
def test_failures_after_an_ok_answer_are_the_fronts_not_the_shadows(triton, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("injected compare failure")

    monkeypatch.setattr(pairing, "compare_responses", boom)
    feats, _ = make_transactions(40, seed=8)
    ft = front_for(triton.grpc_address, FRAUD_V1_V2)
    try:
        _send(ft, feats, "internal")
        s = ft.router.routes["fraud"].shadows[0].stats
        assert (s.sent, s.ok, sum(s.errors.values()), s.internal_errors) == (10, 10, 0, 10)
        gates = {g.name: g for g in build_report(ft.router.state).routes[0].shadows[0].verdict.gates}
        assert "0.00%" in gates["error_rate"].reason or gates["error_rate"].status == "NOT_ENOUGH_DATA"
    finally:
        ft.stop()


@pytest.mark.triton
def test_a_held_shadow_answer_counts_in_the_shadow_buffer(triton):
    # Live is slow (fraud_sleepy, 2 s), the shadow fast: its answer waits for live's, and is counted.
    routes = [{"model": "fraud_sleepy", "live": {"version": "1"}, "shadows": [{"name": "fast", "model": "fraud", "version": "2"}]}]
    ft = front_for(triton.grpc_address, routes)
    try:
        feats, _ = make_transactions(1, seed=1)
        raw = fraud_request(feats, rid="held", model="fraud_sleepy").SerializeToString()
        ch, call = _raw(ft.address)
        with ch:
            fut = call.future(raw, timeout=10)
            deadline = time.monotonic() + 1.5
            while ft.router.routes["fraud_sleepy"].shadows[0].stats.ok == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            held = ft.router._shadow_bytes
            fut.result()
        ft.drain()
        assert held > len(raw)  # the request and the shadow's answer
        assert ft.router._shadow_bytes == 0
    finally:
        ft.stop()


@pytest.mark.triton
def test_a_stream_mixing_models_routes_each_message_by_its_own_model(triton):
    # The first message's route renames its model; before, every later message was renamed too.
    routes = [{"model": "fraud-front", "live": {"model": "fraud", "version": "1"}}, FRAUD_V1_V2[0]]
    ft = front_for(triton.grpc_address, routes)
    import queue

    results: queue.Queue = queue.Queue()
    c = grpcclient.InferenceServerClient(ft.address)
    try:
        c.start_stream(callback=lambda result, error: results.put((result, error)))
        f = grpcclient.InferInput("features", [1, 8], "FP32")
        f.set_data_from_numpy(make_transactions(1, seed=3)[0])
        b = grpcclient.InferInput("features", [1, 4], "FP32")
        b.set_data_from_numpy(np.ones((1, 4), np.float32))
        c.async_stream_infer("fraud-front", [f], request_id="a")
        c.async_stream_infer("basket_value", [b], request_id="b")
        c.async_stream_infer("fraud", [f], request_id="c")
        got = {}
        for _ in range(3):
            r, err = results.get(timeout=10)
            assert err is None, (err.status(), err.message())
            resp = r.get_response()
            got[resp.id] = (resp.model_name, resp.model_version)
        c.stop_stream()
    finally:
        c.close()
        ft.stop()
    assert got == {"a": ("fraud", "1"), "b": ("basket_value", "2"), "c": ("fraud", "1")}
    assert ft.router.state.stream_messages == 3


def _inferences(triton, model: str, version: str) -> int:
    with triton.client() as c:
        st = c.get_inference_statistics(model, version, as_json=True)
    return int(st["model_stats"][0]["inference_count"]) if st.get("model_stats") else 0


@pytest.mark.triton
def test_a_shadow_without_a_version_gets_tritons_policy_whatever_the_caller_named(triton):
    # README: a shadow's version defaults to Triton's version policy (newest: fraud 2), even when
    # the caller names version 1 (which live, pinned to 1, serves).
    routes = [{"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "default-version"}]}]
    feats, _ = make_transactions(40, seed=12)
    ft = front_for(triton.grpc_address, routes)
    try:
        v2 = _inferences(triton, "fraud", "2")
        _send(ft, feats, "dv", version="1")
        assert ft.router.routes["fraud"].shadows[0].stats.ok == 10
        assert _inferences(triton, "fraud", "2") - v2 == 40  # 10 requests of 4 rows, all on version 2
    finally:
        ft.stop()


@pytest.mark.triton
def test_an_explicit_caller_version_on_a_pinned_route_is_what_triton_would_answer(triton):
    feats, _ = make_transactions(4, seed=13)
    ft = front_for(triton.grpc_address, FRAUD_V1_V2)
    try:
        chd, direct = _raw(triton.grpc_address)
        chf, via = _raw(ft.address)
        with chd, chf:
            for version in ("99", "abc"):
                raw = fraud_request(feats, version=version).SerializeToString()
                with pytest.raises(grpc.RpcError) as d:
                    direct(raw, timeout=10)
                with pytest.raises(grpc.RpcError) as f:
                    via(raw, timeout=10)
                assert (f.value.code(), f.value.details()) == (d.value.code(), d.value.details())
            raw2 = fraud_request(feats, version="2").SerializeToString()
            assert via(raw2, timeout=10) == direct(raw2, timeout=10)  # version 2's answer, as named
            raw0 = fraud_request(feats, version="").SerializeToString()
            assert via(raw0, timeout=10) == direct(fraud_request(feats, version="1").SerializeToString(), timeout=10)
        ft.drain()
        st = ft.router.routes["fraud"].stats
        assert st.explicit_version_not_mirrored == 3  # 99, abc, 2: not mirrored
        assert ft.router.routes["fraud"].shadows[0].stats.sent == 1  # only the unversioned request
    finally:
        ft.stop()
