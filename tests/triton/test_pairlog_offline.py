"""The paired-prediction log end to end on the real Triton: traffic with outcomes through a front
logging every pair, then ``analyze`` over the Parquet files (DuckDB) must give the online report:
counts exactly, floating figures to 1e-9 relative, the same verdict. What the log does not hold
(pass-through counts, input completeness, cost, the pair store's own counters) is left out of the
comparison, by name."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest
from google.protobuf import json_format

# Report fields the log does not carry (analysis/rebuild.py says why), by path suffix.
NOT_LOGGED = {
    "uptime_s", "unrouted_requests", "unparsed_requests", "stream_messages", "snapshot",
    "outcomes.waiting", "outcomes.stored", "outcomes.evicted_full", "outcomes.evicted_expired",
    "outcomes.max_pairs", "outcomes.ttl_s", "outcomes.evicted_bytes", "outcomes.bytes",
    "outcomes.max_bytes", "outcomes.reused_ids",
    "inputs", "inputs_not_checked", "inputs_metadata_error", "cost", "in_flight",
}  # fmt: skip


def diff(a, b, path: str = "") -> list[str]:
    """Differences between two report dicts: ints/strings exactly, floats to 1e-9 relative."""
    if path.split(".")[-1].split("[")[0] in NOT_LOGGED or path in NOT_LOGGED:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items online, {len(b)} offline"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        x, y = float(a or 0.0), float(b or 0.0)
        if math.isnan(x) and math.isnan(y):
            return []
        return [] if x == y or abs(x - y) <= 1e-9 * max(abs(x), abs(y)) else [f"{path}: {a!r} online, {b!r} offline"]
    return [] if a == b else [f"{path}: {a!r} online, {b!r} offline"]


def as_dict(rep) -> dict:
    return json_format.MessageToDict(rep, preserving_proto_field_name=True)


ROUTES = [
    {
        "model": "fraud",
        "live": {"version": "1"},
        "shadows": [{"name": "v2", "version": "2"}, {"name": "nan", "model": "fraud_nan"}],
        "slices": [
            {"name": "amount", "input": "features", "column": 0, "edges": [3.3], "labels": ["under_2000", "2000_plus"]},
            {"name": "foreign", "input": "features", "column": 6, "edges": [0.5], "labels": ["domestic", "abroad"]},
        ],
        "gates": {"min_pairs": 50, "min_outcomes": 50},
    },
    {"model": "merchant_intent", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]},
    {"model": "basket_value", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2", "sample_rate": 0.5}]},
]


def _traffic(address: str, n: int):
    from shadowgrpc.examples.data import make_baskets, make_merchant_texts, make_transactions
    from tests.kserve import INFER, fraud_request, intent_request
    from tritonclient.grpc import service_pb2 as kserve

    feats, flabels = make_transactions(n, seed=31)
    texts, ilabels = make_merchant_texts(n // 2, seed=31)
    baskets, values = make_baskets(n // 2, seed=31)
    outcomes = []
    fraud_rows = []  # the features of each fraud request
    rng = np.random.default_rng(31)
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        i = 0
        while i < n:
            k = int(rng.integers(1, 5))  # 1..4 rows per request
            rid = f"fr-{i}" if i % 17 else ""  # some callers set no id (sampled at random)
            call(fraud_request(feats[i : i + k], rid=rid).SerializeToString(), timeout=10)
            fraud_rows.append(feats[i : i + k])
            if rid:
                outcomes.append((rid, [int(x) for x in flabels[i : i + k]], None))
            i += k
        for j in range(n // 2):
            call(intent_request([texts[j].encode()], rid=f"mi-{j}").SerializeToString(), timeout=10)
            outcomes.append((f"mi-{j}", [int(ilabels[j])], None))
            req = kserve.ModelInferRequest(model_name="basket_value", id=f"bv-{j}")
            req.inputs.add(name="features", datatype="FP32", shape=[1, 4])
            req.raw_input_contents.append(baskets[j : j + 1].tobytes())
            call(req.SerializeToString(), timeout=10)
            outcomes.append((f"bv-{j}", None, [float(values[j])]))
    return outcomes, fraud_rows


@pytest.fixture(scope="module")
def logged_run(triton, tmp_path_factory):
    """One run of traffic with outcomes through a front logging every pair: (log folder, the
    online report, the fraud requests' features, the time half the traffic had been sent)."""
    from shadowgrpc.report import build_report
    from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc
    from tests.frontctl import front_for

    log_dir = tmp_path_factory.mktemp("pairlog") / "log"
    ft = front_for(triton.grpc_address, ROUTES, log={"path": str(log_dir), "flush_s": 0.5})
    try:
        outcomes, fraud_rows = _traffic(ft.address, 400)
        ft.drain()
        msgs = [shadow_pb2.Outcome(request_id=r, labels=lb or [], values=v or []) for r, lb, v in outcomes]
        msgs += [shadow_pb2.Outcome(request_id=outcomes[0][0], labels=outcomes[0][1])]  # a duplicate
        msgs += [shadow_pb2.Outcome(request_id="never-sent", labels=[1])]  # unknown
        msgs += [shadow_pb2.Outcome(request_id="x", labels=[1], values=[1.0])]  # rejected
        msgs += [shadow_pb2.Outcome(request_id="mi-0", labels=[1, 2])]  # rows do not fit: mismatch... after accepted: duplicate
        with grpc.insecure_channel(ft.admin_address) as ch:
            resp = shadow_pb2_grpc.ShadowControlStub(ch).RecordOutcomes(iter(msgs), timeout=30)
        assert resp.accepted > 300 and resp.duplicate == 2 and resp.unknown > 1 and resp.rejected == 1  # unknown: basket_value samples half
        online = build_report(ft.router.state)
        ft.call(_flush(ft))
    finally:
        ft.stop()
    return log_dir, online, fraud_rows


@pytest.mark.triton
def test_offline_report_equals_online(logged_run):
    from shadowgrpc.analysis import analyze
    from shadowgrpc.report import build_report

    log_dir, online, _ = logged_run
    offline = build_report(analyze([str(log_dir)]))
    on, off = as_dict(online), as_dict(offline)
    assert diff(on, off) == []
    # The comparison is not vacuous: the figures it compared are there.
    fraud = next(r for r in on["routes"] if r["model"] == "fraud")
    v2 = fraud["shadows"][0]
    assert int(v2["compared"]) > 100 and int(v2["ground_truth"]["rows"]) > 300
    assert {s["slice"] for s in v2["outputs"][0]["slices"]} == {"amount", "foreign"}
    assert int(fraud["shadows"][1]["outputs"][0]["shadow_invalid_rows"]) > 0  # fraud_nan's NaN rows
    basket = next(r for r in on["routes"] if r["model"] == "basket_value")
    assert 0 < int(basket["shadows"][0]["sampled"]) < int(basket["requests"])  # sample_rate 0.5
    assert on["routes"][0]["shadows"][0]["verdict"]["decision"] == off["routes"][0]["shadows"][0]["verdict"]["decision"]
    # And it would catch a difference: one row fewer offline is seen.
    off["routes"][0]["requests"] = str(int(off["routes"][0]["requests"]) - 1)
    assert diff(on, off) != []


async def _flush(ft):
    import asyncio

    await asyncio.to_thread(ft.front.pairlog.flush, 10.0)


@pytest.mark.triton
def test_filters_the_online_report_cannot_apply(logged_run, capsys):
    from shadowgrpc.analysis import analyze, where_clause
    from shadowgrpc.cli import main

    log_dir, online, fraud_rows = logged_run
    total = analyze([str(log_dir)])
    fraud = total.routes["fraud"].stats.requests
    assert fraud == len(fraud_rows)
    # A time window: the requests before and after any instant add up to all of them.
    import duckdb

    mid = duckdb.connect().execute(f"SELECT median(arrival) FROM read_parquet('{log_dir}/pairs/**/*.parquet', hive_partitioning = true) WHERE route = 'fraud'").fetchall()[0][0]
    t = mid.strftime("%Y-%m-%d %H:%M:%S.%f")
    before = analyze([str(log_dir)], where_clause(until=t)).routes["fraud"].stats.requests
    after = analyze([str(log_dir)], where_clause(since=t)).routes["fraud"].stats.requests
    assert 0 < before < fraud and before + after == fraud
    # A slice: requests whose rows all have amount feature < 3.3 ("under_2000").
    under = analyze([str(log_dir)], slices=["amount=under_2000"])
    expected = sum(1 for rows in fraud_rows if (rows[:, 0] < 3.3).all())
    assert under.routes["fraud"].stats.requests == expected < fraud
    assert under.routes["fraud"].shadows[0].stats.compared == expected
    assert under.routes["merchant_intent"].stats.requests == 0  # no such slice there
    # Any SQL predicate over the columns: only the v2 target's rows.
    v2 = analyze([str(log_dir)], where_clause(["target = 'v2'"])).routes["fraud"]
    assert v2.shadows[0].stats.compared == total.routes["fraud"].shadows[0].stats.compared and v2.shadows[1].stats.sent == 0
    # The command line: bad filters are refused with the reason, exit 2.
    assert main(["analyze", str(log_dir), "--slice", "amount=nope"]) == 2
    assert "no such slice bucket" in capsys.readouterr().err
    assert main(["analyze", str(log_dir), "--where", "no_such_column = 1"]) == 2
    assert "no_such_column" in capsys.readouterr().err
    assert main(["analyze", str(log_dir / "nowhere")]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert main(["analyze", str(log_dir), "--json", "--model", "fraud"]) == 0
    assert '"model": "fraud"' in capsys.readouterr().out


@pytest.mark.triton
def test_a_torn_or_foreign_file_is_skipped_and_named_never_the_analysis(logged_run, tmp_path, capsys):
    import shutil

    import pyarrow.parquet as pq

    from shadowgrpc.analysis import analyze
    from shadowgrpc.cli import main

    log_dir, _, _ = logged_run
    copy = tmp_path / "log"
    shutil.copytree(log_dir, copy)
    total = analyze([str(copy)]).routes["fraud"].stats.requests
    torn = sorted((copy / "pairs").glob("route=fraud/*/*/*.parquet"))[0]
    lost = pq.read_table(torn).filter(pq.read_table(torn).column("target_index").to_numpy() == 0).num_rows
    torn.write_bytes(torn.read_bytes()[:100])  # a file cut short (not the writer's doing: it renames only whole files)
    (copy / "pairs" / "route=fraud" / "notes.parquet").write_text("not parquet")
    assert main(["analyze", str(copy), "--json"]) == 0
    out = capsys.readouterr()
    assert out.err.count("skipped") == 2 and str(torn) in out.err and "notes.parquet" in out.err
    assert "2 unreadable files skipped" in out.out
    assert analyze([str(copy)]).routes["fraud"].stats.requests == total - lost > 0
