"""Ground truth end to end on the real Triton: outcomes streamed to the admin port join the live and
shadow answers of the requests they name, bad and unknown outcomes are counted, and the report's
ground truth agrees with what the caller saw."""

from __future__ import annotations

import grpc
import numpy as np
import pytest


@pytest.mark.triton
def test_ground_truth_join_end_to_end(triton):
    from shadowgrpc.client import fetch_report
    from shadowgrpc.examples.data import make_transactions, reference_fraud_probability
    from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc
    from tests.frontctl import front_for
    from tests.kserve import INFER, fraud_request

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
