"""Slices: bucket assignment, config errors, per-slice paired and ground-truth statistics, the
per-slice verdict, and (against the real Triton) a shadow better on average in one slice and worse
in another, seen through two replicas whose reports are merged."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as kserve

from shadowgrpc.codec import decode_request
from shadowgrpc.compare import compare_responses
from shadowgrpc.config import ConfigError, Settings
from shadowgrpc.outcomes import OutcomeStats, score
from shadowgrpc.slices import Slice, assign
from shadowgrpc.stats import RouteStats, ShadowStats
from shadowgrpc.verdict import Gates, evaluate


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


def _response(**outputs: np.ndarray) -> bytes:
    r = kserve.ModelInferResponse(model_name="m")
    for name, a in outputs.items():
        r.outputs.add(name=name, datatype="FP32", shape=list(a.shape))
        r.raw_output_contents.append(np.ascontiguousarray(a, np.float32).tobytes())
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
        primary = compare_responses(_response(p=live), _response(p=shadow), s, route, buckets)
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
        compare_responses(_response(y=x), _response(y=x + 1), s, route, assign(route.slices, decode_request(_request(x))))
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


# -- against the real Triton: two replicas, merged ------------------------------------------------
SLICES = [
    {"name": "amount", "input": "features", "column": 0, "edges": [3.3], "labels": ["under_2000", "2000_plus"]},
    {"name": "foreign", "input": "features", "column": 6, "edges": [0.5], "labels": ["domestic", "abroad"]},
]


@pytest.mark.triton
def test_v2_improves_abroad_and_regresses_on_high_amounts_across_merged_replicas(triton, tmp_path, capsys):
    from shadowgrpc.cli import main
    from shadowgrpc.examples.data import make_transactions, reference_fraud_probability, slice_masks
    from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc
    from tests.frontctl import front_for
    from tests.test_front import INFER, fraud_request

    feats, labels = make_transactions(20000, seed=5)
    m = slice_masks(feats)
    rng = np.random.default_rng(5)
    pick = np.concatenate(
        [np.flatnonzero(m["high_amount"])[:160], np.flatnonzero(m["foreign_night"])[:160], np.flatnonzero(m["rest"])[:160]]
    )
    rng.shuffle(pick)
    feats, labels = feats[pick], labels[pick]
    batch = 4
    routes = [
        {
            "model": "fraud",
            "live": {"version": "1"},
            "shadows": [{"name": "v2", "version": "2"}],
            "slices": SLICES,
            "gates": {"min_pairs": 10, "min_outcomes": 100, "slice_min_outcomes": 60},
        }
    ]
    fronts = [front_for(triton.grpc_address, routes), front_for(triton.grpc_address, routes)]
    try:
        live_probs = []
        chans = [grpc.insecure_channel(f.address) for f in fronts]
        calls = [ch.unary_unary(INFER, request_serializer=None, response_deserializer=None) for ch in chans]
        for k, i in enumerate(range(0, len(pick), batch)):
            raw = calls[k % 2](fraud_request(feats[i : i + batch], rid=f"s-{k}").SerializeToString(), timeout=10)
            out = kserve.ModelInferResponse.FromString(raw).raw_output_contents[0]
            live_probs.append(np.frombuffer(out, np.float32).reshape(-1, 2))
        for ch in chans:
            ch.close()
        for f in fronts:
            f.drain()
        n_req = len(live_probs)
        for j, f in enumerate(fronts):
            with grpc.insecure_channel(f.admin_address) as ch:
                outs = (
                    shadow_pb2.Outcome(request_id=f"s-{k}", labels=labels[k * batch : (k + 1) * batch].tolist())
                    for k in range(j, n_req, 2)
                )
                resp = shadow_pb2_grpc.ShadowControlStub(ch).RecordOutcomes(outs, timeout=60)
                assert resp.accepted == len(range(j, n_req, 2))
        save = tmp_path / "merged.snapshot"
        assert main(["report", "--target", fronts[0].admin_address, "--target", fronts[1].admin_address, "--json", "--save", str(save)]) == 0
        merged = json.loads(capsys.readouterr().out)
        assert main(["report", "--from", str(save), "--json"]) == 0
        again = json.loads(capsys.readouterr().out)
        assert main(["report", "--target", fronts[0].admin_address, "--target", fronts[1].admin_address]) == 0
        text = capsys.readouterr().out
    finally:
        for f in fronts:
            f.stop()

    assert merged["replicas"] == 2 and merged["routes"][0]["requests"] == str(n_req)
    for d in (merged, again):
        d.pop("uptime_s")
    assert again == merged  # a saved snapshot gives the same report
    sr = merged["routes"][0]["shadows"][0]
    g = sr["ground_truth"]
    assert int(g["rows"]) == len(pick)
    live_hit = np.concatenate(live_probs).argmax(1) == labels
    shadow_hit = reference_fraud_probability(feats, 2).argmax(1) == labels
    slices = {(s["slice"], s["bucket"]): s["truth"] for s in g["slices"]}
    for (name, col, edge), (lo_name, hi_name) in (
        (("amount", 0, 3.3), ("under_2000", "2000_plus")),
        (("foreign", 6, 0.5), ("domestic", "abroad")),
    ):
        hi = feats[:, col] >= edge
        for mask, bucket in ((~hi, lo_name), (hi, hi_name)):
            t = slices[(name, bucket)]
            assert int(t["rows"]) == int(mask.sum())
            assert t["live"]["accuracy"] == pytest.approx(live_hit[mask].mean())  # what callers saw
            assert abs(int(t["improvements"]) - int((shadow_hit & ~live_hit & mask).sum())) <= 2
            assert abs(int(t["regressions"]) - int((live_hit & ~shadow_hit & mask).sum())) <= 2
    high, abroad = slices[("amount", "2000_plus")], slices[("foreign", "abroad")]
    assert int(high["regressions"]) > 3 * int(high["improvements"])  # v2 lost the high-amount step
    assert int(abroad["improvements"]) > 3 * int(abroad["regressions"])  # ... and learned foreign-at-night
    gates = {x["name"]: x for x in sr["verdict"]["gates"]}
    assert gates["accuracy[amount 2000_plus]"]["status"] == "FAIL"
    assert gates["accuracy[foreign abroad]"]["status"] == "PASS"
    assert sr["verdict"]["decision"] == "FAIL"
    by_slice = {(s["slice"], s["bucket"]): s for s in sr["outputs"][0]["slices"]}
    assert int(by_slice[("amount", "2000_plus")]["rows"]) == int((feats[:, 0] >= 3.3).sum())
    assert by_slice[("amount", "2000_plus")]["agreement"] < by_slice[("amount", "under_2000")]["agreement"]
    assert "(2 replicas merged)" in text and "slice amount 2000_plus" in text
