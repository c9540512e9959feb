"""identical_sample end to end on the real Triton (issue 15 target: "every shadow's compared row set
is identical"): a real front with three shadows of live fraud v1 — fraud v2, fraud_nan (v2 with
NaN rows) and fraud_sentinel (a constant answer; it fails every request holding a row whose first
feature is -4242) — and the paired log on. After the traffic and the outcomes:
- the paired log (read with DuckDB) shows the same set of compared request ids for every shadow,
  exactly the requests fraud_sentinel answered; on the others, the requests it failed are logged
  ``nway_incomplete``, never ``compared``;
- the report's N-way block counts those requests, the same for every shadow and for each target's
  own ``compared``, names why the rest were not compared, and ranks the models on ground truth
  (RecordOutcomes) with paired intervals that agree with the answers the caller and the log saw.

Not ``once``: the comparison runs the compiled sketches (or their pure-Python twins)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

pytestmark = pytest.mark.triton

N = 120
TRIGGER_EVERY = 8  # every 8th request holds a row fraud_sentinel fails
ROWS = 2


def test_every_shadow_compares_the_same_requests_and_the_report_ranks_them(triton, tmp_path):
    import duckdb
    from tritonclient.grpc import service_pb2 as kserve

    from shadowgrpc.client import fetch_report
    from shadowgrpc.examples.data import make_transactions
    from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc
    from tests.frontctl import front_for
    from tests.kserve import INFER, fraud_request

    log_dir = tmp_path / "log"
    routes = [{
        "model": "fraud", "live": {"version": "1"}, "identical_sample": True,
        "shadows": [{"name": "v2", "version": "2"}, {"name": "nan", "model": "fraud_nan"}, {"name": "sentinel", "model": "fraud_sentinel"}],
    }]  # fmt: skip
    feats, labels = make_transactions(N * ROWS, seed=33)
    feats, labels = feats.reshape(N, ROWS, -1).copy(), labels.reshape(N, ROWS)
    feats[::TRIGGER_EVERY, 1, 0] = -4242.0  # fraud_sentinel: SENTINEL_ERROR for these requests
    failing = {f"is-{i}" for i in range(0, N, TRIGGER_EVERY)}
    ft = front_for(triton.grpc_address, routes, log={"path": str(log_dir), "flush_s": 0.2})
    try:
        live = {}
        with grpc.insecure_channel(ft.address) as ch:
            call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
            for i in range(N):
                raw = call(fraud_request(feats[i], rid=f"is-{i}").SerializeToString(), timeout=10)
                r = kserve.ModelInferResponse.FromString(raw)
                live[f"is-{i}"] = np.frombuffer(r.raw_output_contents[0], np.float32).reshape(ROWS, 2)
        assert ft.drain() == 0
        ft.flush_log()
        with grpc.insecure_channel(ft.admin_address) as ch:
            stub = shadow_pb2_grpc.ShadowControlStub(ch)
            outcomes = (shadow_pb2.Outcome(request_id=f"is-{i}", labels=[int(v) for v in labels[i]]) for i in range(N))
            resp = stub.RecordOutcomes(outcomes, timeout=30)
        rep = fetch_report(ft.admin_address)
    finally:
        ft.stop()

    # The paired log: one row per (request, target); the compared ids are the same set for all three.
    rows = duckdb.sql(
        f"SELECT target, request_id, shadow_status, pair FROM read_parquet('{log_dir}/pairs/**/*.parquet', hive_partitioning = true)"
    ).fetchall()
    assert len(rows) == 3 * N
    compared = {t: {rid for tt, rid, _, p in rows if tt == t and p == "compared"} for t in ("v2", "nan", "sentinel")}
    everyone = {f"is-{i}" for i in range(N)}
    assert compared["v2"] == compared["nan"] == compared["sentinel"] == everyone - failing
    held_back = {(t, s, p) for t, rid, s, p in rows if rid in failing}
    assert held_back == {("v2", "OK", "nway_incomplete"), ("nan", "OK", "nway_incomplete"), ("sentinel", "INTERNAL", None)}, held_back

    # The report: the same count for every shadow, equal to the log's; why the others were not compared.
    r = rep.routes[0]
    nw = r.nway
    ok_ids = sorted(everyone - failing, key=lambda s: int(s[3:]))
    assert (nw.requests, nw.rows) == (len(ok_ids), ROWS * len(ok_ids))
    assert [s.compared for s in r.shadows] == [nw.requests] * 3
    assert sum(nw.incomplete.values()) == len(failing) and all(k.startswith("sentinel: ") for k in nw.incomplete), dict(nw.incomplete)

    # Ground truth on the same rows: every outcome joined; accuracy per model as the caller's answers say.
    assert resp.accepted == len(ok_ids) and resp.unknown == len(failing)  # failed requests left no pair
    assert nw.truth_rows == nw.rows and nw.ranked_by == "accuracy"
    truth = np.concatenate([labels[int(rid[3:])] for rid in ok_ids])
    live_hit = np.concatenate([live[rid].argmax(1) for rid in ok_ids]) == truth
    by = {m.name: m for m in nw.ranking}
    assert by["live"].correct == int(live_hit.sum())  # exactly what the caller saw
    assert by["sentinel"].correct == int((truth == 1).sum())  # its constant answer is class 1
    assert [m.rank for m in nw.ranking] == [1, 2, 3, 4] and nw.ranking[-1].name == "sentinel"
    pairs = {(p.a, p.b, p.metric): p for p in nw.pairs}
    ls = pairs[("live", "sentinel", "accuracy")]
    assert ls.n == nw.truth_rows and ls.ci.lo > 0 and ls.delta == pytest.approx((by["live"].correct - by["sentinel"].correct) / nw.truth_rows)
    assert ls.a_only - ls.b_only == by["live"].correct - by["sentinel"].correct  # paired: discordant rows only
    lv = pairs[("live", "v2", "agreement")]
    assert lv.a_only == nw.rows - by["v2"].agree_rows and lv.b_only == 0
    assert all(pairs[(a, b, "latency_s")].n == nw.requests for a, b, _ in pairs)
    # Each shadow's own sketches saw exactly these rows too.
    assert [sum(o.rows for o in s.outputs if o.name == "probability") for s in r.shadows] == [nw.rows] * 3
