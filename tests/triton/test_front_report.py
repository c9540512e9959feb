"""The front's report against the real embedded Triton: the shadows' compute cost from Triton's
statistics, and an A/A noise-floor target next to the real shadow."""

from __future__ import annotations

import grpc
import pytest

from shadowgrpc.examples.data import make_transactions
from tests.frontctl import front_for
from tests.kserve import INFER, fraud_request

pytestmark = pytest.mark.triton


def test_report_has_the_shadows_compute_cost_from_triton_statistics(triton):
    from shadowgrpc.client import fetch_report

    routes = [
        {
            "model": "fraud",
            "live": {"version": "1"},
            "shadows": [{"name": "v2", "version": "2"}, {"name": "half", "model": "fraud_recorder", "sample_rate": 0.5}, {"name": "gone", "address": "127.0.0.1:1"}],
        }
    ]
    ft = front_for(triton.grpc_address, routes)
    try:
        feats, _ = make_transactions(40, seed=12)
        with grpc.insecure_channel(ft.address) as ch:
            call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
            for i in range(40):
                call(fraud_request(feats[i : i + 1], rid=f"cost-{i}").SerializeToString(), timeout=10)
        ft.drain()
        rep = fetch_report(ft.admin_address)
    finally:
        ft.stop()
    shadows = {s.target.name: s for s in rep.routes[0].shadows}
    v2, half, gone = shadows["v2"].cost, shadows["half"].cost, shadows["gone"].cost
    assert v2.available and v2.live_inferences == 40 and v2.shadow_inferences == 40
    assert v2.live_compute_ms > 0 and 0.2 < v2.extra_compute_fraction < 5  # v1 and v2 cost about the same
    assert half.available and half.shadow_inferences == shadows["half"].ok < 40
    assert not gone.available and "UNAVAILABLE" in gone.reason


def test_a_noise_floor_target_is_reported_next_to_the_real_shadow(triton):
    from shadowgrpc.client import fetch_report
    from shadowgrpc.report_text import format_report

    routes = [
        {
            "model": "fraud",
            "live": {"version": "1"},
            "shadows": [{"name": "v2", "version": "2"}, {"name": "aa", "version": "1", "noise_floor": True}],
        }
    ]
    ft = front_for(triton.grpc_address, routes)
    try:
        feats, _ = make_transactions(200, seed=13)
        with grpc.insecure_channel(ft.address) as ch:
            call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
            for i in range(0, 200, 4):
                call(fraud_request(feats[i : i + 4], rid=f"aa-{i}").SerializeToString(), timeout=10)
        ft.drain()
        rep = fetch_report(ft.admin_address)
    finally:
        ft.stop()
    shadows = {s.target.name: s for s in rep.routes[0].shadows}
    aa, v2 = shadows["aa"].outputs[0], shadows["v2"].outputs[0]
    assert shadows["aa"].target.noise_floor and aa.rows == v2.rows == 200
    assert aa.agreement == 1.0 and aa.max_abs_diff == 0.0  # a deterministic model has no jitter
    assert v2.agreement < 1.0 and v2.mean_abs_diff > 0.0
    # Drift on the same 20 probability bins: zero for the replica, positive for v2.
    assert list(aa.drift.edges) == list(v2.drift.edges) and len(v2.drift.edges) == 21
    assert aa.drift.binned == v2.drift.binned == 400  # 200 rows x 2 classes
    assert aa.drift.psi == aa.drift.js == aa.drift.tv == 0.0 and v2.drift.psi > 0 and 0 < v2.drift.js <= 1
    assert "[A/A noise floor: agreement 100.00%, mean |diff| 0, PSI 0.0000]" in format_report(rep)
    # The front's own time per request (two shadows scheduled) is counted and well below live's.
    r = rep.routes[0]
    assert r.front_added.count == r.live_latency.count == 50
    assert 0 < r.front_added.p50_ms < r.live_latency.p50_ms and r.front_added.p50_ms <= r.front_added.p999_ms
