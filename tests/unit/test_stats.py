"""The latency sketch behind the report's percentiles, fed one request at a time as the front
feeds it: 1% relative error, exact merge, clamping, and an empty report."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from shadowgrpc.report import latency_summary
from shadowgrpc.stats import RouteStats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantiles_within_one_percent_on_heavy_tailed_latencies(sketches_impl: ModuleType, seed):
    rng = np.random.default_rng(seed)
    xs = np.concatenate([rng.lognormal(np.log(2e-3), 1.0, 20000), rng.pareto(1.5, 500) * 0.05 + 0.01])
    xs = xs[(xs > 1e-6) & (xs < 60)]
    h = sketches_impl.LatencySketch()
    for x in xs:
        h.record(float(x))
    for q in (0.5, 0.9, 0.95, 0.99, 0.999):
        true = float(np.quantile(xs, q, method="inverted_cdf"))
        assert abs(h.quantile(q) - true) / true <= 0.01, q
    assert h.count == xs.size and h.max == pytest.approx(xs.max())


def test_merge_of_parts_equals_whole(sketches_impl: ModuleType):
    rng = np.random.default_rng(5)
    xs = rng.lognormal(-6, 1.5, 3000)
    whole, a, b = sketches_impl.LatencySketch(), sketches_impl.LatencySketch(), sketches_impl.LatencySketch()
    for i, x in enumerate(xs):
        whole.record(float(x))
        (a if i % 3 else b).record(float(x))
    a.merge(b)
    assert (a.counts == whole.counts).all() and a.count == whole.count and a.max == whole.max
    assert a.mean == pytest.approx(whole.mean)


def test_out_of_range_values_are_clamped_and_empty_is_zero(sketches_impl: ModuleType):
    h = sketches_impl.LatencySketch()
    assert latency_summary(RouteStats().live_latency) == latency_summary(h) and latency_summary(h).p99_ms == 0.0
    h.record(0.0)
    h.record(1e6)
    assert h.count == 2 and h.counts[0] == 1 and h.counts[-1] == 1
    assert (h.clamped_low, h.clamped_high) == (1, 1)
    s = latency_summary(h)
    assert s.count == 2 and s.p99_ms <= s.max_ms  # never above the largest value seen
