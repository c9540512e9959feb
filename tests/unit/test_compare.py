"""compare.py: agreement, contract mismatch and drift histograms, on synthetic responses."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc.compare import FREEZE_ROWS, NUMERIC_BINS, NUMERIC_EDGES, compare_responses
from shadowgrpc.stats import ShadowStats


def _resp(**outputs: np.ndarray) -> bytes:
    r = pb.ModelInferResponse(model_name="m")
    for name, a in outputs.items():
        r.outputs.add(name=name, datatype={"f": "FP32", "i": "INT32"}[a.dtype.kind], shape=list(a.shape))
        r.raw_output_contents.append(np.ascontiguousarray(a).tobytes())
    return r.SerializeToString()


def test_classifier_agreement_and_probability_histograms():
    s = ShadowStats()
    live = np.array([[0.92, 0.08], [0.3, 0.7], [0.55, 0.45]], np.float32)
    shadow = np.array([[0.8, 0.2], [0.6, 0.4], [0.5, 0.5]], np.float32)
    primary = compare_responses(_resp(p=live), _resp(p=shadow), s)
    assert primary is not None and primary[0].shape == (3, 2)
    o = s.outputs["p"]
    assert o.kind == "classifier" and (o.rows, o.agreed_rows) == (3, 2)
    assert o.hist_live.counts.shape == (2, 22) and o.hist_live.counts.sum() == 6
    assert o.hist_live.counts[0, 1 + 18] == 1  # 0.92 -> bin 18, [0.9, 0.95) (column 0 is underflow)


def _route(**output):
    from shadowgrpc.config import Settings

    return Settings.from_dict({"routes": [{"model": "m", "outputs": {"v": output}}]}).routes[0]


def test_numeric_edges_freeze_after_enough_live_rows_when_asked_and_keep_every_value():
    s = ShadowStats()
    route = _route(freeze_rows=64)
    rng = np.random.default_rng(0)
    total = 0
    for _ in range(64 // 8 + 3):
        a = rng.normal(10, 2, (8, 1)).astype(np.float32)
        total += 8
        compare_responses(_resp(v=a), _resp(v=a + 0.5), s, route)
    o = s.outputs["v"]
    assert o.kind == "regression" and o.hist_live is not None and len(o.hist_live.edges) == NUMERIC_BINS + 1
    assert o.hist_live.counts.sum() == o.hist_shadow.counts.sum() == total and not o.pending


def test_default_numeric_edges_are_the_same_on_every_replica_so_drift_merges_exactly():
    # Two replicas that see different first rows: the edges must not depend on them.
    assert FREEZE_ROWS == 0
    a_stats, b_stats, whole = ShadowStats(), ShadowStats(), ShadowStats()
    rng = np.random.default_rng(1)
    for i in range(40):
        a = rng.normal(1000 if i % 2 else -3, 50, (8, 1)).astype(np.float32)
        compare_responses(_resp(v=a), _resp(v=a * 1.01), a_stats if i % 2 else b_stats)
        compare_responses(_resp(v=a), _resp(v=a * 1.01), whole)
    ea, eb = a_stats.outputs["v"].hist_live.edges, b_stats.outputs["v"].hist_live.edges
    assert np.array_equal(ea, eb) and np.array_equal(ea, NUMERIC_EDGES)
    ha = a_stats.outputs["v"].hist_live
    ha.merge(b_stats.outputs["v"].hist_live)
    assert np.array_equal(ha.counts, whole.outputs["v"].hist_live.counts)
    assert not a_stats.outputs["v"].pending and ha.counts.sum() == 320


def test_contract_mismatch_is_not_compared():
    s = ShadowStats()
    a = np.zeros((2, 2), np.float32)
    assert compare_responses(_resp(p=a), _resp(p=np.zeros((2, 3), np.float32)), s) is None
    assert compare_responses(_resp(p=a), _resp(q=a), s) is None
    assert compare_responses(_resp(p=a), _resp(p=a.astype(np.int32)), s) is None
    assert (s.contract_mismatch, s.compared) == (3, 0)


def test_output_kinds_from_config():
    from shadowgrpc.config import Settings

    route = Settings.from_dict(
        {
            "routes": [
                {
                    "model": "m",
                    "outputs": {
                        "score": {"kind": "binary", "threshold": 0.7},
                        "emb": {"kind": "embedding"},
                        "v": {"kind": "regression", "atol": 0.1, "rtol": 0.0, "edges": [0, 1, 2]},
                    },
                }
            ]
        }
    ).routes[0]
    s = ShadowStats()
    score_l = np.array([[0.9], [0.6], [0.8]], np.float32)
    score_s = np.array([[0.75], [0.65], [0.5]], np.float32)
    emb_l = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    emb_s = np.array([[1, 0], [1, 0], [1, 1]], np.float32)
    v_l = np.array([[0.5], [1.5], [2.5]], np.float32)
    primary = compare_responses(_resp(score=score_l, emb=emb_l, v=v_l), _resp(score=score_s, emb=emb_s, v=v_l + 0.05), s, route)
    sc, em, v = s.outputs["score"], s.outputs["emb"], s.outputs["v"]
    assert sc.kind == "binary" and sc.paired.confusion.tolist() == [[1, 0], [1, 1]]  # at 0.7: agree, agree, differ
    assert em.kind == "embedding" and em.paired.count == 3 and em.paired.mean == pytest.approx(2 / 3)
    assert v.kind == "regression" and v.paired.within == 3 and list(v.hist_live.edges) == [0, 1, 2]
    assert v.hist_live.counts.tolist() == [[0, 1, 1, 1]]  # configured edges: no freezing wait; 2.5 overflows
    # A binary score joins ground truth as two-class probabilities.
    assert primary[0].shape == (3, 2) and primary[0][0].tolist() == pytest.approx([0.1, 0.9])
