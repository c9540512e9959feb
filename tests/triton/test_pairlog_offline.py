"""The paired-prediction log end to end on the real Triton: traffic with outcomes through a front
logging every pair, then ``analyze`` over the Parquet files (DuckDB) must give the online report:
counts exactly, floating figures to 1e-9 relative, the same verdict. What the log does not hold
(pass-through counts, input completeness, cost, the pair store's own counters) is left out of the
comparison, by name."""

from __future__ import annotations

import grpc
import pytest

from tests.pairlog_run import ROUTES, as_dict, diff, outcome_messages, traffic

@pytest.fixture(scope="module")
def logged_run(triton, tmp_path_factory):
    """One run of traffic with outcomes through a front logging every pair: (log folder, the
    online report, the fraud requests' features, the time half the traffic had been sent)."""
    from shadowgrpc.report import build_report
    from shadowgrpc.v1 import shadow_pb2_grpc
    from tests.frontctl import front_for

    log_dir = tmp_path_factory.mktemp("pairlog") / "log"
    ft = front_for(triton.grpc_address, ROUTES, log={"path": str(log_dir), "flush_s": 0.5, "flush_rows": 64})  # several files, however fast the traffic
    try:
        outcomes, fraud_rows = traffic(ft.address, 400)
        ft.drain()
        with grpc.insecure_channel(ft.admin_address) as ch:
            resp = shadow_pb2_grpc.ShadowControlStub(ch).RecordOutcomes(iter(outcome_messages(outcomes)), timeout=30)
        assert resp.accepted > 300 and resp.duplicate == 2 and resp.unknown > 1 and resp.rejected == 1  # unknown: basket_value samples half
        online = build_report(ft.router.state)
        ft.flush_log()
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
    files = sorted((copy / "pairs").glob("route=fraud/*/*/*.parquet"))
    assert len(files) >= 2, files  # one is torn below, the others still analysed
    torn = files[0]
    lost = pq.read_table(torn).filter(pq.read_table(torn).column("target_index").to_numpy() == 0).num_rows
    torn.write_bytes(torn.read_bytes()[:100])  # a file cut short (not the writer's doing: it renames only whole files)
    (copy / "pairs" / "route=fraud" / "notes.parquet").write_text("not parquet")
    assert main(["analyze", str(copy), "--json"]) == 0
    out = capsys.readouterr()
    assert out.err.count("skipped") == 2 and str(torn) in out.err and "notes.parquet" in out.err
    assert "2 unreadable files skipped" in out.out
    assert analyze([str(copy)]).routes["fraud"].stats.requests == total - lost > 0
