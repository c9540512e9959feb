"""Budgets against the real Triton through a real front: a budget of K requests lets exactly K
shadow calls reach the shadow's Triton (its own statistics say so), never more, whatever the
concurrency; live answers every request unchanged; the report, the ledger and the verdict say the
target is paused and why; a byte budget per hour; a compute budget from Triton's statistics.

``once``: the budget is pure Python (budget.py), the same with either twin of the packing code."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as kpb

from shadowgrpc.client import fetch_report
from shadowgrpc.examples.data import make_transactions
from shadowgrpc.report_text import format_report
from tests.frontctl import front_for

pytestmark = [pytest.mark.triton, pytest.mark.once]

INFER = "/inference.GRPCInferenceService/ModelInfer"
STATS = "/inference.GRPCInferenceService/ModelStatistics"


def _requests(n: int, seed: int) -> list[bytes]:
    feats, _ = make_transactions(n, seed=seed)
    out = []
    for i in range(n):
        req = kpb.ModelInferRequest(model_name="fraud", model_version="1", id=f"budget-{seed}-{i:04d}")
        req.inputs.add(name="features", datatype="FP32", shape=[1, feats.shape[1]])
        req.raw_input_contents.append(np.ascontiguousarray(feats[i : i + 1], dtype=np.float32).tobytes())
        out.append(req.SerializeToString())
    return out


def _v2_stats(address: str) -> tuple[int, int, float]:
    """(inference count, successful requests, compute seconds) of fraud version 2 on Triton."""
    with grpc.insecure_channel(address) as ch:
        raw = ch.unary_unary(STATS)(kpb.ModelStatisticsRequest(name="fraud", version="2").SerializeToString(), timeout=10)
    (m,) = kpb.ModelStatisticsResponse.FromString(raw).model_stats
    s = m.inference_stats
    return m.inference_count, s.success.count, (s.compute_input.ns + s.compute_infer.ns + s.compute_output.ns) / 1e9


def _send(address: str, reqs: list[bytes], concurrency: int = 1) -> list[bytes]:
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary(INFER)
        if concurrency == 1:
            return [call(r, timeout=10) for r in reqs]
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(lambda r: call(r, timeout=10), reqs))


def _route(budget: dict) -> list[dict]:
    return [{"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2", "sample_rate": 1.0, "budget": budget}]}]


def _wait(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_a_budget_of_k_requests_lets_exactly_k_calls_reach_the_shadow(triton):
    k, n = 40, 100
    reqs = _requests(n, seed=51)
    direct = _send(triton.grpc_address, reqs)  # live's own answers, straight from Triton
    ft = front_for(triton.grpc_address, _route({"per": "run", "requests": k}))
    try:
        before = _v2_stats(triton.grpc_address)
        answers = _send(ft.address, reqs[:20]) + _send(ft.address, reqs[20:], concurrency=8)  # some concurrently
        ft.drain()
        after = _v2_stats(triton.grpc_address)
        rep = fetch_report(ft.admin_address)
    finally:
        ft.stop()
    assert answers == direct  # live answered all of them, unchanged
    assert after[0] - before[0] == k and after[1] - before[1] == k  # Triton's own count: exactly K, never more
    (r,) = rep.routes
    (s,) = r.shadows
    assert s.sent == k
    ledger = {row.reason: row.requests for row in r.ledger if row.target == "v2"}
    assert ledger["sent"] == k and ledger["budget"] == n - k
    b = s.budget
    assert (b.per, b.requests_limit, b.requests_used, b.refused, b.paused) == ("run", k, k, n - k, True)
    assert b.paused_reason == f"requests budget spent: {k} of {k} until the run ends" and b.period_end == 0.0
    assert b.estimate.known and b.estimate.calls_per_s > 0 and b.estimate.enough_data_in_s == -1.0
    assert b.estimate.warning.startswith("the budget runs out (spent) before min_pairs")
    gates = {g.name: g for g in s.verdict.gates}
    assert gates["budget"].status == "SKIPPED" and gates["budget"].reason == "PAUSED: " + b.paused_reason
    assert s.verdict.decision == "NOT_ENOUGH_DATA"  # 40 pairs of the 200 min_pairs, no outcomes
    assert s.verdict.reason.startswith("not enough data, and mirroring is paused by the budget until the run ends")
    text = format_report(rep)
    assert f"PAUSED: {b.paused_reason}" in text and "budget estimate: " in text and f"requests {k} of {k}" in text


def test_an_hour_byte_budget_and_a_compute_budget_from_triton_statistics(triton):
    left = 3600 - time.time() % 3600
    if left < 20:  # the UTC hour would end mid-test (the counters reset): start in the next one
        time.sleep(left + 0.5)
    reqs = _requests(40, seed=52)
    size = len(reqs[0])
    assert all(len(r) == size for r in reqs)
    fits = 20
    mb = (fits * size + 0.5) / (1024 * 1024)  # exactly `fits` requests' bytes (>= 0.001 MB, the least a budget takes)
    ft = front_for(triton.grpc_address, _route({"per": "hour", "mb": mb}))
    try:
        before = _v2_stats(triton.grpc_address)
        _send(ft.address, reqs, concurrency=4)
        ft.drain()
        after = _v2_stats(triton.grpc_address)
        rep = fetch_report(ft.admin_address)
    finally:
        ft.stop()
    assert after[1] - before[1] == fits
    b = rep.routes[0].shadows[0].budget
    assert (b.per, b.bytes_limit, b.bytes_used, b.refused, b.paused) == ("hour", fits * size, fits * size, 40 - fits, True)
    assert b.paused_until == b.period_end == b.period_start + 3600 and b.period_start % 3600 == 0
    assert b.paused_reason.startswith("bytes budget spent: ") and "this hour, until " in b.paused_reason

    # Compute: Triton's seconds for version 2, read by the watcher every poll (0.2 s here).
    ft = front_for(triton.grpc_address, _route({"per": "run", "compute_s": 1e9}), poll_s=0.2)
    try:
        bs = ft.router.state.routes["fraud"].shadows[0].budget
        before = _v2_stats(triton.grpc_address)
        _send(ft.address, _requests(40, seed=53), concurrency=4)
        ft.drain()
        after = _v2_stats(triton.grpc_address)
        want = after[2] - before[2]  # the front is version 2's only client: all of it is this target's
        assert want > 0
        assert _wait(lambda: abs(bs.compute_s - want) <= 0.02 * want), (bs.compute_s, want)
        assert not bs.paused
    finally:
        ft.stop()
    # A small compute budget: paused by the poll that sees it spent; then nothing more reaches Triton.
    limit = 0.01  # ~15 calls of this model here
    ft = front_for(triton.grpc_address, _route({"per": "run", "compute_s": limit}), poll_s=0.2)
    try:
        bs = ft.router.state.routes["fraud"].shadows[0].budget
        reqs = _requests(400, seed=54)
        sent = 0
        while not bs.paused and sent < len(reqs):  # bounded: 400 requests
            _send(ft.address, reqs[sent : sent + 5])
            sent += 5
        assert _wait(lambda: bs.paused), bs.compute_s
        assert bs.compute_s >= limit and bs.paused_reason.startswith("compute budget spent: ") and bs.paused_reason.endswith("until the run ends")
        ft.drain()
        count = _v2_stats(triton.grpc_address)[1]
        refused = bs.refused
        _send(ft.address, reqs[-10:])
        ft.drain()
        assert _v2_stats(triton.grpc_address)[1] == count and bs.refused == refused + 10
        rep = fetch_report(ft.admin_address)
    finally:
        ft.stop()
    b = rep.routes[0].shadows[0].budget
    assert b.paused and b.compute_s_limit == limit and b.compute_s_used >= limit
    assert {g.name: g.status for g in rep.routes[0].shadows[0].verdict.gates}["budget"] == "SKIPPED"


def test_serve_workers_split_the_budget_and_the_merged_report_adds_it_up(triton, tmp_path):
    """serve --workers 2: each worker gets its share (8 + 7 of 15): together exactly K calls reach
    Triton, and the parent's merged report shows the whole budget, used and paused on both."""
    import signal
    import subprocess

    from tests.serveproc import serve

    k = 15
    routes = (
        '[[routes]]\nmodel = "fraud"\nlive = { version = "1" }\n[[routes.shadows]]\nname = "v2"\nversion = "2"\n'
        f'[routes.shadows.budget]\nper = "run"\nrequests = {k}\n'
    )
    out = tmp_path / "serve.log"
    proc, port, admin = serve(tmp_path, triton.grpc_address, routes, args=("--workers", "2"), grace_s=2.0, output=out, start_s=60)
    try:
        assert f"budget fraud -> v2: per run: {k} requests (split over 2 workers)" in out.read_text()
        before = _v2_stats(triton.grpc_address)
        reqs = _requests(100, seed=55)
        for c in range(20):  # separate connections (no shared subchannel): SO_REUSEPORT spreads them over the workers
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                call = ch.unary_unary(INFER)
                for r in reqs[c * 5 : c * 5 + 5]:
                    call(r, timeout=10)
        assert _wait(lambda: fetch_report(f"127.0.0.1:{admin}", timeout=10).routes[0].shadows[0].budget.refused == 100 - k)
        assert _wait(lambda: _v2_stats(triton.grpc_address)[1] - before[1] == k)
        rep = fetch_report(f"127.0.0.1:{admin}", timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)  # the workers stop with the parent (it relays SIGTERM; EOF on their lifeline)
        try:
            assert proc.wait(30) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise
    b = rep.routes[0].shadows[0].budget
    assert (b.requests_limit, b.requests_used, b.replicas, b.replicas_paused, b.paused) == (k, k, 2, 2, True)
    assert rep.routes[0].shadows[0].sent == k
