"""Slices against the real Triton: a shadow better on average in one slice and worse in another,
seen through two replicas whose reports are merged (the slices' unit tests: tests/unit/test_slices.py)."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as kserve


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
    from tests.kserve import INFER, fraud_request

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
