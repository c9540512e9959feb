"""Snapshots: a round trip through bytes changes nothing, and the merge of two replicas' snapshots
gives the report of one front that saw all the traffic (same counts, sketches, slices, ground
truth, verdict)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shadowgrpc.codec import decode_request
from shadowgrpc.completeness import InputsState
from shadowgrpc.compare import compare_responses
from shadowgrpc.config import Settings
from shadowgrpc.outcomes import OutcomeStats, PairCounts, score
from shadowgrpc.report import build_report
from shadowgrpc.report_text import report_json
from shadowgrpc.slices import assign
from shadowgrpc.snapshot import SnapshotError, load, merge, snapshot
from shadowgrpc.state import FrontState, RouteState, TargetState
from shadowgrpc.stats import RouteStats, ShadowStats
from tests.wire import fp32_request, fp32_response

CFG = {
    "routes": [
        {
            "model": "m",
            "shadows": [{"name": "s", "version": "2"}],
            "slices": [{"name": "band", "input": "x", "edges": [0.3, 0.7]}],
            "outputs": {"value": {"kind": "regression", "edges": [-1, 0, 1, 2]}},
            "gates": {"min_pairs": 5, "min_outcomes": 5, "slice_min_outcomes": 5},
        }
    ]
}


def _view(seed_range: range) -> FrontState:
    route = Settings.from_dict(CFG).routes[0]
    st, s, o = RouteStats(), ShadowStats(), OutcomeStats()
    for seed in seed_range:
        rng = np.random.default_rng(seed)
        x = rng.random((3, 1))
        p_live, p_sh = rng.dirichlet([1, 1, 1], 3), rng.dirichlet([1, 1, 1], 3)
        v = rng.normal(0, 1, (3, 1))
        st.requests += 1
        st.live_latency.record(1e-3 * (1 + seed % 7))
        s.sent += 1
        s.latency.record(2e-3 * (1 + seed % 5))
        s.errors["DEADLINE_EXCEEDED"] += seed % 11 == 0
        buckets = assign(route.slices, decode_request(fp32_request(x=x)))
        primary = compare_responses(fp32_response(probability=p_live, value=v), fp32_response(probability=p_sh, value=v + rng.normal(0, 0.1, v.shape)), s, route, buckets)
        score(o, primary[0], primary[1], rng.integers(0, 3, 3), None, route.slices, buckets, primary[2])
    sv = TargetState(route.shadows[0], s, o, opened=0.0)  # the window's wall-clock start: fixed, so parts and whole compare
    rv = RouteState(route, st, InputsState(), [sv])
    return FrontState(0.0, 1.0, 1, 0, 0, 0, PairCounts(), 0, 0, 0, {"m": rv}, {})


def _report(v: FrontState) -> dict:
    d = json.loads(report_json(build_report(v)))
    d.pop("uptime_s")
    d.pop("replicas")
    return d


def test_round_trip_changes_nothing(sketches_impl):
    v = _view(range(40))
    assert _report(load(snapshot(v))) == _report(v)


def test_merge_of_parts_equals_the_whole(sketches_impl):
    whole = _report(_view(range(60)))
    parts = [load(snapshot(_view(r))) for r in (range(0, 17), range(17, 45), range(45, 60))]
    merged = merge(parts)
    assert merged.replicas == 3
    got = _report(merged)
    assert got == whole
    out = got["routes"][0]["shadows"][0]["outputs"]
    assert {o["kind"] for o in out} == {"classifier", "regression"} and all(o["slices"] for o in out)
    assert got["routes"][0]["shadows"][0]["ground_truth"]["slices"]


def test_bad_snapshots_and_unmergeable_configs_are_refused():
    with pytest.raises(SnapshotError, match="not JSON"):
        load(b"\x00garbage")
    with pytest.raises(SnapshotError, match="no 'format'"):
        load(b"{}")
    doc = json.loads(snapshot(_view(range(3))))
    doc["version"] = 99
    with pytest.raises(SnapshotError, match="version 99 is not supported"):
        load(json.dumps(doc).encode())
    doc["version"] = 1
    doc["routes"][0]["live_latency"]["b"] = "AAAA"
    with pytest.raises(SnapshotError, match="bad LatencySketch sketch"):
        load(json.dumps(doc).encode())
    a, b = _view(range(3)), _view(range(3))
    cfg = dict(CFG["routes"][0], gates={"min_pairs": 6})
    b.routes["m"].route = Settings.from_dict({"routes": [cfg]}).routes[0]
    with pytest.raises(SnapshotError, match="route 'm' is configured differently"):
        merge([a, b])
