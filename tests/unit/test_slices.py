"""Slices: bucket assignment, config errors, per-slice paired and ground-truth statistics, and the
per-slice verdict (against the real Triton, with two replicas merged:
tests/triton/test_slices_merged_replicas.py)."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as kserve

from shadowgrpc.codec import decode_request
from shadowgrpc.compare import compare_responses
from shadowgrpc.config import ConfigError, Settings, Slice
from shadowgrpc.outcomes import OutcomeStats, score
from shadowgrpc.slices import assign
from shadowgrpc.stats import RouteStats, ShadowStats
from shadowgrpc.verdict import Gates, evaluate
from tests.wire import fp32_response


def _route(slices: list[dict], **extra):
    return Settings.from_dict({"routes": [{"model": "m", "slices": slices, **extra}]}).routes[0]


def _request(x: np.ndarray, text: list[bytes] | None = None) -> bytes:
    r = kserve.ModelInferRequest(model_name="m")
    r.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    r.raw_input_contents.append(np.ascontiguousarray(x, np.float32).tobytes())
    if text is not None:
        r.inputs.add(name="t", datatype="BYTES", shape=[len(text), 1])
        r.raw_input_contents.append(b"".join(len(t).to_bytes(4, "little") + t for t in text))
    return r.SerializeToString()


def test_assign_numeric_bytes_and_missing():
    route = _route(
        [
            {"name": "amount", "input": "x", "column": 1, "edges": [1.0, 2.0]},
            {"name": "country", "input": "t", "values": ["US", "DE"]},
            {"name": "absent", "input": "nope", "edges": [0.0]},
        ]
    )
    x = np.array([[0, 0.5], [0, 1.0], [0, 2.5], [0, np.nan]], np.float32)
    b = assign(route.slices, decode_request(_request(x, [b"DE", b"US", b"FR", b""])))
    assert b[0].tolist() == [0, 1, 2, 3]  # < 1, [1, 2), >= 2, missing (NaN)
    assert route.slices[0].buckets == ("< 1", "[1, 2)", ">= 2", "missing")
    assert b[1].tolist() == [1, 0, 2, 2] and route.slices[1].buckets == ("US", "DE", "other", "missing")
    assert b[2] is None  # no such input: every row counts as missing
    assert assign(route.slices, decode_request(b"\xff\xff garbage")) == [None, None, None]


@pytest.mark.parametrize(
    "slices, message",
    [
        ([{"name": "a", "input": "x"}], "routes[0].slices[0]: set edges (numeric input) or values (BYTES input), exactly one"),
        ([{"name": "a", "input": "x", "edges": [2, 1]}], "routes[0].slices[0].edges: must be finite and strictly increasing"),
        ([{"name": "a", "input": "x", "edges": [1], "labels": ["lo"]}], "routes[0].slices[0].labels: needs 2 names"),
        ([{"name": "a", "input": "x", "values": ["u", "u"]}], "routes[0].slices[0].values: duplicate entries"),
        ([{"name": "a", "input": "x", "edges": list(range(70))}], "more than 64 slice buckets"),
        ([{"name": "a", "edges": [1]}], "routes[0].slices[0].input: required"),
        ([{"name": "a", "input": "x", "edges": [1], "labels": ["missing", "b"]}], "'missing' is reserved"),
    ],
)
def test_bad_slice_config_names_the_key(slices, message):
    with pytest.raises(ConfigError, match=None) as e:
        _route(slices)
    assert message in str(e.value)


def test_paired_and_ground_truth_statistics_per_slice_and_the_slice_gate():
    route = _route([{"name": "amount", "input": "x", "column": 0, "edges": [10.0], "labels": ["small", "big"]}])
    rng = np.random.default_rng(3)
    s, o = ShadowStats(), OutcomeStats()
    n_big = n_small = 0
    for _ in range(200):
        x = rng.uniform(0, 20, (4, 1)).astype(np.float32)
        big = x[:, 0] >= 10
        labels = rng.integers(0, 2, 4)
        live = np.eye(2, dtype=np.float32)[labels] * 0.8 + 0.1  # live always right
        shadow = live.copy()
        shadow[big] = live[big][:, ::-1]  # shadow wrong exactly on big amounts
        buckets = assign(route.slices, decode_request(_request(x)))
        primary = compare_responses(fp32_response(p=live), fp32_response(p=shadow), s, route, buckets)
        assert score(o, primary[0], primary[1], labels, None, route.slices, buckets, primary[2])
        n_big += int(big.sum())
        n_small += int((~big).sum())
    out = s.outputs["p"]
    small, big_ = out.slices[0][0], out.slices[0][1]
    assert (small.count, small.agreement) == (n_small, 1.0) and (big_.count, big_.agreement) == (n_big, 0.0)
    assert out.slices[0][2] is None  # nothing missing
    assert o.slices[0][1].regressions == n_big and o.slices[0][0].regressions == 0
    assert o.regressions == n_big and o.live.rows == 800
    decision, gates = evaluate(Gates(min_pairs=1, min_outcomes=100, slice_min_outcomes=100), RouteStats(), s, o, route.slices)
    by = {g.name: g for g in gates}
    assert by["accuracy[amount big]"].status == "FAIL" and by["accuracy[amount small]"].status == "PASS"
    assert decision == "FAIL"
    # Too few outcomes in a bucket: listed as SKIPPED, never deciding.
    _, gates = evaluate(Gates(min_pairs=1, min_outcomes=100, slice_min_outcomes=10_000), RouteStats(), s, o, route.slices)
    skipped = [g for g in gates if g.name == "accuracy[amount]"]
    assert skipped and skipped[0].status == "SKIPPED" and "small (" in skipped[0].reason


def test_per_slice_sketches_stay_within_the_memory_bound(monkeypatch):
    import shadowgrpc.compare as compare

    monkeypatch.setattr(compare, "SLICE_BUDGET_BYTES", 40_000)  # RegressionAgreement: ~14.5 KiB each
    route = _route([{"name": "v", "input": "x", "edges": list(np.arange(1.0, 20.0))}])
    s = ShadowStats()
    for v in range(21):
        x = np.full((1, 1), v + 0.5, np.float32)
        compare_responses(fp32_response(y=x), fp32_response(y=x + 1), s, route, assign(route.slices, decode_request(_request(x))))
    out = s.outputs["y"]
    kept = sum(p is not None for p in out.slices[0])
    assert s.slice_bytes <= 40_000 and kept == 2 and out.slice_rows_dropped == 21 - kept
    assert out.paired.count == 21  # the overall statistic never drops a row


def test_slice_for_a_1d_input_and_row_count_mismatch():
    sl = (Slice(name="a", input="x", edges=(0.5,), labels=("lo", "hi")),)
    b = assign(sl, decode_request(_request(np.array([0.2, 0.7, 0.9], np.float32))))
    assert b[0].tolist() == [0, 1, 1]
    from shadowgrpc.slices import rows_for

    assert rows_for(b[0], 2, 2).tolist() == [2, 2]  # outputs with other rows: all missing
