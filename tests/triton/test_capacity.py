"""Capacity shadow against the real Triton through a real front (issue 15 item 2): amplify = 3 gives
the candidate's Triton exactly 3x the mirrored requests (its own statistics, and the recorder model
sees every request id three times), the copies are never compared; constant_qps = Q holds the
candidate at Q req/s (Triton's statistics over a window) and drops the oldest when live outpaces Q.
The copies' x-shadow-copy metadata: tests/unit/test_capacity.py (the model cannot see metadata
without --grpc-header-forward-pattern)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc.examples.data import make_transactions
from shadowgrpc.report import build_report
from tests.frontctl import front_for
from tests.kserve import _raw, fraud_request

pytestmark = [pytest.mark.triton, pytest.mark.once]

QPS = 40.0


@pytest.fixture(scope="module")
def cap_front(triton):
    routes = [
        {"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "amp", "model": "fraud_recorder", "amplify": 3, "max_in_flight": 1024}]},
        {"model": "basket_value", "live": {"version": "1"},
         "shadows": [{"name": "paced", "version": "2", "constant_qps": QPS, "qps_queue": 4}]},
    ]  # fmt: skip
    ft = front_for(triton.grpc_address, routes)
    yield ft
    ft.stop()


def _basket(rows: np.ndarray, rid: str) -> bytes:
    req = pb.ModelInferRequest(model_name="basket_value", id=rid)
    req.inputs.add(name="features", datatype="FP32", shape=list(rows.shape))
    req.raw_input_contents.append(rows.tobytes())
    return req.SerializeToString()


def _successes(client: grpcclient.InferenceServerClient, model: str, version: str) -> int:
    st = client.get_inference_statistics(model, version, as_json=False, client_timeout=10)
    return sum(m.inference_stats.success.count for m in st.model_stats)


def _until(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_amplify_3_sends_exactly_three_times_and_compares_once(triton, cap_front):
    client = grpcclient.InferenceServerClient(triton.grpc_address)
    live0, shadow0 = _successes(client, "fraud", "1"), _successes(client, "fraud_recorder", "1")
    feats, _ = make_transactions(200, seed=21)
    tag = f"amp-{time.time_ns()}"
    ch, infer = _raw(cap_front.address)
    with ch:
        for i in range(200):
            infer(fraud_request(feats[i : i + 1], rid=f"{tag}-{i}").SerializeToString(), timeout=10)
    ts = cap_front.router.state.routes["fraud"].shadows[0]
    cap = ts.capacity
    assert _until(lambda: ts.in_flight == 0 and _successes(client, "fraud_recorder", "1") - shadow0 >= 600, 20.0), (
        ts.in_flight, ts.stats, cap.copies_sent, cap.copies_shed, dict(cap.copies_errors))
    assert _successes(client, "fraud", "1") - live0 == 200
    assert _successes(client, "fraud_recorder", "1") - shadow0 == 600  # exactly 3x: nothing shed
    client.close()
    s = ts.stats
    assert (s.sent, s.ok, s.compared, s.latency.count) == (200, 200, 200, 200)  # copies are not compared
    assert (cap.copies_sent, cap.copies_ok, cap.copies_shed, dict(cap.copies_errors)) == (400, 400, 0, {})
    seen: dict[str, int] = {}
    for line in triton.recorder_path.read_text().splitlines():
        rec = json.loads(line)
        if str(rec.get("request_id", "")).startswith(tag):
            seen[rec["request_id"]] = seen.get(rec["request_id"], 0) + 1
            assert rec["parameters"].get("shadow") is True
    assert len(seen) == 200 and set(seen.values()) == {3}
    # The report: every answer in a load level once the last window has ended; nearly all at 3x.
    assert _until(lambda: (cap.roll(), sum(lv.answered for lv in cap.levels if lv is not None))[1] == 600, 3.0)
    rep = build_report(cap_front.router.state, "fraud")
    c = rep.routes[0].shadows[0].capacity
    assert c.amplify == 3 and c.copies_sent == 400
    three = [lv for lv in c.levels if lv.label == "3x"]
    assert three and three[0].answered >= 0.9 * 600 and 2.9 <= three[0].measured_multiple <= 3.1, [(lv.label, lv.answered) for lv in c.levels]


def test_constant_qps_holds_the_rate_and_drops_oldest(triton, cap_front):
    client = grpcclient.InferenceServerClient(triton.grpc_address)
    rows = np.linspace(0, 1, 4, dtype=np.float32).reshape(1, 4)
    ch, infer = _raw(cap_front.address)
    cap = None
    marks = []
    with ch:
        t_end = time.monotonic() + 2.5
        i = 0
        while time.monotonic() < t_end:  # ~100 req/s offered: live outpaces Q = 40
            infer(_basket(rows, f"qps-{i}"), timeout=10)
            i += 1
            if i == 50:  # the pacer is running: measure the candidate's rate from here
                marks.append((time.monotonic(), _successes(client, "basket_value", "2")))
            time.sleep(0.01)
        marks.append((time.monotonic(), _successes(client, "basket_value", "2")))
    (t0, n0), (t1, n1) = marks
    rate = (n1 - n0) / (t1 - t0)
    assert abs(rate - QPS) <= 0.15 * QPS, rate
    ts = cap_front.router.state.routes["basket_value"].shadows[0]
    cap = ts.capacity
    assert cap.qps_dropped > 0 and cap.qps_queued == i
    assert ts.stats.compared == ts.stats.ok <= cap.qps_released
    # Live stopped: the queue empties and the pacer keeps Q with fill copies (never compared).
    assert _until(lambda: ts.pacer.waiting == 0 and cap.qps_filled > 0 and ts.stats.compared == ts.stats.sent, 3.0)
    compared = ts.stats.compared
    assert _until(lambda: cap.qps_filled >= 10 and cap.copies_ok >= 10, 3.0), (cap.qps_filled, dict(cap.copies_errors))
    assert ts.stats.compared == compared
    cap_front.drain()  # the pacer stops; what it still held is dropped
    assert cap.qps_queued == cap.qps_released + cap.qps_not_started + cap.qps_dropped
    assert (ts.stats.qps_queued, ts.stats.qps_dropped) == (0, cap.qps_dropped)  # the router's ledger agrees
    client.close()
