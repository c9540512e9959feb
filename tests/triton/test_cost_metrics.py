"""Resource cost from the real embedded Triton's metrics endpoint: it agrees with Triton's
statistics, and the Prometheus parser reads Triton's real exposition as prometheus_client does
(the parser and CostTracker against a fake Triton: tests/unit/test_cost.py)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as kpb

from shadowgrpc import _prometheus
from shadowgrpc.report_text import format_report


@pytest.mark.triton
def test_metrics_cost_from_the_real_triton_agrees_with_its_statistics(triton):
    from prometheus_client.parser import text_string_to_metric_families

    from shadowgrpc.client import fetch_report
    from shadowgrpc.examples.data import make_transactions
    from tests.frontctl import front_for

    routes = [
        {
            "model": "fraud",
            "live": {"version": "1", "metrics_url": triton.server.metrics_url},
            "shadows": [{"name": "v2", "version": "2"}, {"name": "half", "model": "fraud_recorder", "sample_rate": 0.5}],
        }
    ]
    n = 40
    ft = front_for(triton.grpc_address, routes)
    try:
        feats, _ = make_transactions(n, seed=21)
        with grpc.insecure_channel(ft.address) as ch:
            call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None, response_deserializer=None)
            for i in range(n):
                req = kpb.ModelInferRequest(model_name="fraud", model_version="1", id=f"metrics-{i}")
                req.inputs.add(name="features", datatype="FP32", shape=[1, feats.shape[1]])
                req.raw_input_contents.append(np.ascontiguousarray(feats[i : i + 1], dtype=np.float32).tobytes())
                call(req.SerializeToString(), timeout=10)
        ft.drain()
        rep = fetch_report(ft.admin_address)
    finally:
        ft.stop()
    shadows = {s.target.name: s for s in rep.routes[0].shadows}
    for name in ("v2", "half"):
        c = shadows[name].cost
        m = c.metrics
        assert c.available and m.available, (c.reason, m.reason)
        # The same inferences by both of Triton's accounts, and compute seen by both.
        assert m.live_inferences == c.live_inferences == n and m.shadow_inferences == c.shadow_inferences
        assert m.live_compute_ms > 0 and m.shadow_compute_ms > 0 and m.extra_compute_fraction > 0
        # The metrics count whole microseconds per request: at most 3 us (input, infer, output) less.
        for got, want, calls in ((m.live_compute_ms, c.live_compute_ms, n), (m.shadow_compute_ms, c.shadow_compute_ms, c.shadow_inferences)):
            assert want - 0.003 * calls - 1e-6 <= got <= want + 1e-6
    assert shadows["half"].cost.metrics.shadow_inferences == shadows["half"].ok < n
    (host,) = shadows["v2"].cost.metrics.hosts
    assert host.metrics_url == triton.server.metrics_url and host.serves == "live, shadow" and not host.reason
    assert host.HasField("cpu_utilization")
    text = format_report(rep)
    assert "compute (Triton metrics, " in text
    if not host.gpus:  # the embedded Triton on a host without a GPU
        assert "no GPU metrics" in text
    # The parser reads Triton's real exposition as prometheus_client does.
    body = _prometheus.fetch(triton.server.metrics_url, 5.0)
    ours, bad = _prometheus.parse(body)
    # (prometheus_client names a counter's samples NAME_total even where the text says NAME)
    theirs = {
        (s.name if s.name in ours else s.name.removesuffix("_total"), tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body)
        for s in f.samples
    }
    assert bad == 0 and {(k, lab): v for k, series in ours.items() for lab, v in series.items()} == theirs
