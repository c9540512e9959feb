"""The open-loop driver of the latency-gate test (tests/triton/test_latency_gate.py, which says why
open-loop) and of benchmarks/latency_gate.py: a fresh front in front of a Triton that serves fraud
1+2 and ``fraud_slow5x`` (tests/models), ``n`` single-row requests sent at a fixed rate, and each
shadow's latency_p99 gate with the figures behind it."""

from __future__ import annotations

import time

import grpc
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc.client import fetch_report
from shadowgrpc.examples.data import make_transactions
from tests.frontctl import front_for
from tests.kserve import INFER

REQUESTS = 1000  # + 1 warm-up: p99's 95% bounds are ranks 985 and 997 of 1001 (the 5th largest)
RATE = 100.0  # requests per second: fraud_slow5x (2 instances x ~11 ms) about half busy
ROUTE = {
    "model": "fraud",
    "live": {"version": "1"},
    "shadows": [{"name": "same", "version": "2"}, {"name": "slow", "model": "fraud_slow5x"}],
}


def requests(n: int, prefix: str) -> list[bytes]:
    feats, _ = make_transactions(n, seed=29)
    out = []
    for i in range(n):
        req = pb.ModelInferRequest(model_name="fraud", model_version="1", id=f"{prefix}-{i}")
        req.inputs.add(name="features", datatype="FP32", shape=[1, 8])
        req.outputs.add(name="probability")
        req.raw_input_contents.append(feats[i : i + 1].astype("float32").tobytes())
        out.append(req.SerializeToString())
    return out


def run_pair(triton_address: str, n: int = REQUESTS, rate: float = RATE, prefix: str = "lat") -> dict[str, dict]:
    """A fresh front (ROUTE: fraud v1 live, shadows ``same`` and ``slow``), ``n`` requests sent
    open-loop at ``rate`` per second; per shadow, its latency_p99 gate and the figures behind it."""
    ft = front_for(triton_address, [ROUTE])
    try:
        reqs = requests(n + 1, prefix)
        with grpc.insecure_channel(ft.address) as ch:
            call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
            call(reqs[0], timeout=10)  # connect every path first (one sample among n + 1)
            ft.drain()
            t0 = time.perf_counter()
            futures = []
            for i, r in enumerate(reqs[1:]):
                wait = t0 + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                futures.append(call.future(r, timeout=10))
            for f in futures:
                f.result()
            took = time.perf_counter() - t0
        ft.drain()
        rep = fetch_report(ft.admin_address, timeout=30)
    finally:
        ft.stop()
    r = rep.routes[0]
    out = {}
    for s in r.shadows:
        gate = {g.name: g for g in s.verdict.gates}["latency_p99"]
        out[s.target.name] = {
            "status": gate.status,
            "reason": gate.reason,
            "value": gate.value,
            "live_p50_ms": r.live_latency.p50_ms,
            "live_p99_ms": r.live_latency.p99_ms,
            "shadow_p50_ms": s.latency.p50_ms,
            "shadow_p99_ms": s.latency.p99_ms,
            "compared": s.compared,
            "shed": s.shed,
            "errors": dict(s.errors),
            "seconds": took,
        }
    return out
