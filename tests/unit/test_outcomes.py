"""Ground truth: the bounded pair store, the scores, and the join end to end on the real Triton."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from shadowgrpc.outcomes import OutcomeStats, PairStore, score, wilson


def test_wilson_matches_published_values():
    # Wilson 95% intervals (z = 1.96), e.g. Newcombe (1998), Table I.
    assert wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 0) == (0.0, 0.0)


def test_store_is_bounded_and_expires_and_knows_duplicates():
    s = PairStore(max_pairs=3, ttl_s=0.2)
    a = np.array([[0.9, 0.1]], np.float32)
    for i in range(5):
        s.add(f"r{i}", object(), "fraud", "v2", a, a)
    assert len(s) == 3 and s.counts.evicted_full == 2
    assert s.take("r0") == (None, "unknown")  # evicted
    p, why = s.take("r4")
    assert p is not None and why == "" and p.shadows["v2"].shape == (1, 2)
    assert s.take("r4") == (None, "duplicate")  # answered before
    time.sleep(0.25)
    assert s.take("r3") == (None, "unknown") and s.counts.evicted_expired == 2
    assert s.counts.bytes == 0


def test_a_reused_id_never_pairs_one_requests_live_with_anothers_shadow():
    s = PairStore()
    first, second = object(), object()
    live_a, shadow_a = np.array([[0.9, 0.1]], np.float32), np.array([[0.8, 0.2]], np.float32)
    live_b, shadow_b = np.array([[0.1, 0.9]], np.float32), np.array([[0.2, 0.8]], np.float32)
    s.add("txn-1", first, "fraud", "v2", live_a, shadow_a)
    s.add("txn-1", first, "fraud", "v3", live_a, shadow_a)  # the same request's second target: fine
    assert s.counts.reused_ids == 0 and set(s._pairs["txn-1"].shadows) == {"v2", "v3"}
    s.add("txn-1", second, "fraud", "v2", live_b, shadow_b)  # another request, same id
    s.add("txn-1", second, "fraud", "v3", live_b, shadow_b)
    assert s.counts.reused_ids == 1 and s.counts.bytes == 0  # counted once per request; predictions dropped
    assert s.take("txn-1") == (None, "reused")  # the outcome cannot be joined to one of them
    assert s.take("txn-1") == (None, "duplicate")


def test_store_is_bounded_in_bytes():
    s = PairStore(max_pairs=1000, max_bytes=10_000)
    a = np.zeros((100, 2), np.float32)  # 800 bytes; a pair with one shadow holds 1600
    for i in range(20):
        s.add(f"r{i}", object(), "m", "v2", a, a)
    assert s.counts.bytes <= 10_000 and s.counts.evicted_bytes == 20 - len(s) and len(s) == 6
    assert s.take("r0") == (None, "unknown") and s.take("r19")[0] is not None


def test_invalid_predictions_are_scored_wrong_and_kept_out_of_calibration():
    st = OutcomeStats()
    live = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    shadow = np.array([[np.nan, np.nan], [0.1, np.inf], [1.7, -0.7], [0.8, 0.2]])
    assert score(st, live, shadow, np.array([0, 1, 0, 0]), None, probabilities=True)
    assert st.shadow.rows == 4 and st.shadow.invalid == 3 and st.shadow.correct == 1
    assert st.shadow.conf_count.sum() == 1  # only the valid row is in a calibration bin
    assert st.live.correct == 4 and st.regressions == 3 and st.improvements == 0
    assert np.isfinite(st.shadow.brier_sum) and np.isfinite(st.shadow.ece)
    # Logits (not probabilities): values outside [0, 1] are fine, NaN is not.
    lg = OutcomeStats()
    assert score(lg, live * 5, np.array([[3.0, -2.0], [np.nan, 1.0], [4.0, 1.0], [2.0, 0.0]]), np.array([0, 1, 0, 0]), None)
    assert lg.shadow.invalid == 1 and lg.shadow.correct == 3
    # Regression: NaN predictions are invalid and stay out of the MAE sum.
    r = OutcomeStats()
    assert score(r, np.array([[1.0], [2.0]]), np.array([[np.nan], [2.5]]), None, np.array([1.0, 3.0]))
    assert r.shadow.invalid == 1 and r.shadow.abs_err_sum == pytest.approx(0.5)


def test_scores_classifier_and_regression():
    st = OutcomeStats()
    live = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    shadow = np.array([[0.7, 0.3], [0.9, 0.1], [0.3, 0.7]])
    assert score(st, live, shadow, np.array([0, 1, 1]), None)
    assert (st.live.correct, st.shadow.correct) == (2, 2)
    assert (st.improvements, st.regressions, st.both_right, st.both_wrong) == (1, 1, 1, 0)
    assert st.live.brier_sum == pytest.approx(2 * 0.01 + 2 * 0.04 + 2 * 0.36)
    # ECE: conf 0.9 (hit), 0.8 (hit), 0.6 (miss) -> |0.9-1| + |0.8-1| + |0.6-0| over 3
    assert st.live.ece == pytest.approx((0.1 + 0.2 + 0.6) / 3)
    assert not score(st, live, shadow, np.array([0, 1]), None) and st.shape_mismatch == 1
    r = OutcomeStats()
    assert score(r, np.array([[1.0], [2.0]]), np.array([[1.5], [2.0]]), None, np.array([1.0, 3.0]))
    assert r.live.abs_err_sum == pytest.approx(1.0) and r.shadow.abs_err_sum == pytest.approx(1.5)


@pytest.mark.triton
def test_ground_truth_join_end_to_end(triton):
    from shadowgrpc.client import fetch_report
    from shadowgrpc.examples.data import make_transactions, reference_fraud_probability
    from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc
    from tests.frontctl import front_for
    from tests.test_front import INFER, fraud_request

    routes = [{"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]}]
    n = 600
    feats, labels = make_transactions(n, seed=21)
    ft = front_for(triton.grpc_address, routes)
    try:
        live_probs = []
        with grpc.insecure_channel(ft.address) as ch:
            call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
            from tritonclient.grpc import service_pb2 as kserve

            for i in range(n):
                raw = call(fraud_request(feats[i : i + 1], rid=f"gt-{i}").SerializeToString(), timeout=10)
                out = kserve.ModelInferResponse.FromString(raw).raw_output_contents[0]
                live_probs.append(np.frombuffer(out, np.float32))
        ft.drain()
        live_probs = np.array(live_probs)

        def outcomes():
            for i in range(n):
                yield shadow_pb2.Outcome(request_id=f"gt-{i}", labels=[int(labels[i])])
            for i in range(50):
                yield shadow_pb2.Outcome(request_id=f"never-{i}", labels=[0])
            for i in range(10):
                yield shadow_pb2.Outcome(request_id=f"gt-{i}", labels=[int(labels[i])])

        with grpc.insecure_channel(ft.admin_address) as ch:
            stub = shadow_pb2_grpc.ShadowControlStub(ch)
            resp = stub.RecordOutcomes(outcomes(), timeout=30)
            assert (resp.received, resp.accepted, resp.unknown, resp.duplicate, resp.mismatch) == (n + 60, n, 50, 10, 0)
            # Bad outcomes are counted by reason, mixed with good ones: the stream goes on.
            bad = [
                shadow_pb2.Outcome(labels=[1]),
                shadow_pb2.Outcome(request_id="x", labels=[1], values=[1.0]),
                shadow_pb2.Outcome(request_id="x"),
                shadow_pb2.Outcome(request_id="x", values=[float("nan")]),
            ]
            resp = stub.RecordOutcomes(iter([*bad, shadow_pb2.Outcome(request_id="after-bad", labels=[1])]), timeout=10)
            assert (resp.received, resp.rejected, resp.unknown) == (5, 4, 1)
            assert dict(resp.rejected_reasons) == {"no_request_id": 1, "labels_and_values": 1, "no_labels_or_values": 1, "values_not_finite": 1}

            # A flood of unknown ids allocates nothing.
            waiting, answered = len(ft.router.pairs), len(ft.router.pairs._answered)
            flood = stub.RecordOutcomes((shadow_pb2.Outcome(request_id=f"flood-{i}", labels=[1]) for i in range(20000)), timeout=120)
            assert flood.unknown == 20000
            assert len(ft.router.pairs) == waiting and len(ft.router.pairs._answered) == answered
        rep = fetch_report(ft.admin_address)
    finally:
        ft.stop()

    g = rep.routes[0].shadows[0].ground_truth
    assert g.kind == "classifier" and g.rows == n
    rel = g.live.reliability  # the reliability diagram is the ECE's breakdown
    assert len(rel) == 10 and sum(b.rows for b in rel) == n
    assert g.live.ece == pytest.approx(sum(b.rows / n * abs(b.confidence - b.accuracy) for b in rel))
    live_hit = live_probs.argmax(1) == labels
    assert g.live.accuracy == pytest.approx(live_hit.mean())  # exactly what the caller saw
    onehot = np.eye(2)[labels]
    assert g.live.brier == pytest.approx(((live_probs - onehot) ** 2).sum(1).mean(), rel=1e-5)
    shadow_hit = reference_fraud_probability(feats, 2).argmax(1) == labels
    assert abs(g.shadow.accuracy - shadow_hit.mean()) <= 2 / n
    # v2 is better on some slices and worse on others: both must show.
    assert g.improvements > 0 and g.regressions > 0
    assert g.improvements + g.regressions + g.both_right + g.both_wrong == n
    assert g.improvement_rate.lo <= g.improvements / n <= g.improvement_rate.hi
    assert rep.outcomes.unknown == 20051 and rep.outcomes.duplicate == 10 and rep.outcomes.waiting == 0
    assert rep.outcomes.rejected == 4 and rep.outcomes.rejected_reasons["values_not_finite"] == 1
    # v2 loses more rows than it wins against the truth: the accuracy gate fails, with its numbers.
    v = rep.routes[0].shadows[0].verdict
    acc = {gt.name: gt for gt in v.gates}["accuracy"]
    assert v.decision == "FAIL" and acc.status == "FAIL" and f"{g.regressions} regressions" in acc.reason
