"""The latency histogram behind the report's percentiles: 1% relative error, exact merge."""

from __future__ import annotations

import numpy as np
import pytest

from shadowgrpc.stats import LatencyHistogram


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantiles_within_one_percent_on_heavy_tailed_latencies(seed):
    rng = np.random.default_rng(seed)
    xs = np.concatenate([rng.lognormal(np.log(2e-3), 1.0, 20000), rng.pareto(1.5, 500) * 0.05 + 0.01])
    xs = xs[(xs > 1e-6) & (xs < 60)]
    h = LatencyHistogram()
    for x in xs:
        h.record(float(x))
    for q in (0.5, 0.9, 0.95, 0.99, 0.999):
        true = float(np.quantile(xs, q, method="inverted_cdf"))
        assert abs(h.quantile(q) - true) / true <= 0.01, q
    assert h.n == xs.size and h.max == pytest.approx(xs.max())


def test_merge_of_parts_equals_whole():
    rng = np.random.default_rng(5)
    xs = rng.lognormal(-6, 1.5, 3000)
    whole, a, b = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i, x in enumerate(xs):
        whole.record(float(x))
        (a if i % 3 else b).record(float(x))
    a.merge(b)
    assert a.counts == whole.counts and a.n == whole.n and a.max == whole.max
    assert a.total == pytest.approx(whole.total)


def test_out_of_range_values_are_clamped_and_empty_is_zero():
    h = LatencyHistogram()
    assert h.quantile(0.99) == 0.0 and h.mean == 0.0
    h.record(0.0)
    h.record(1e6)
    assert h.n == 2 and h.counts[0] == 1 and h.counts[-1] == 1
