"""Streaming sketches, LatencySketch and divergences: both twins against the pure-numpy reference
(exact bytes, bit-identical divergences), merge of parts == whole, clamping, known values, and the
compiled twin really loaded. Histograms: test_sketches_histogram.py."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shadowgrpc.sketches._py as ref

# The fixture returns a module (no state), so sharing it between examples is safe.
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- LatencySketch -----------------------------------------------------------------------------

def _heavy_tailed(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lognormal = rng.lognormal(mean=math.log(2e-3), sigma=1.5, size=60_000)
    pareto = 1e-3 * (1.0 + rng.pareto(1.2, size=40_000))
    x = np.concatenate([lognormal, pareto])
    return x[(x >= 1e-6) & (x < 60.0)]


@pytest.mark.parametrize("seed", [0, 1])
def test_latency_quantiles_within_one_percent(sketches_impl: ModuleType, seed: int) -> None:
    x = _heavy_tailed(seed)
    s = sketches_impl.LatencySketch()
    s.record_many(x)
    qs = [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]
    got = np.array(s.quantiles(qs))
    exact = np.quantile(x, qs, method="inverted_cdf")
    assert np.all(np.abs(got - exact) <= 0.01 * exact), (got, exact)
    assert s.count == x.size and s.max == x.max()
    assert s.mean == pytest.approx(x.mean(), rel=1e-9)


@SETTINGS
@given(values=st.lists(st.one_of(st.floats(allow_infinity=True), st.floats(1e-7, 100.0)), max_size=200),
       cut=st.integers(0, 200), f32=st.booleans())
def test_latency_matches_reference_and_merges(sketches_impl: ModuleType, values: list[float], cut: int, f32: bool) -> None:
    with np.errstate(over="ignore"):
        x = np.array(values, dtype=np.float64).astype(np.float32 if f32 else np.float64)
    s, r = sketches_impl.LatencySketch(), ref.LatencySketch()
    s.record_many(x)
    for v in x.tolist():
        r.record(v)
    assert s.to_bytes() == r.to_bytes()
    a, b = sketches_impl.LatencySketch(), sketches_impl.LatencySketch()
    a.record_many(x[:cut])
    b.record_many(x[cut:])
    a.merge(b)
    assert a.to_bytes() == s.to_bytes()
    assert sketches_impl.LatencySketch.from_bytes(s.to_bytes()).to_bytes() == s.to_bytes()
    assert s.quantiles([0.5, 0.99]) == r.quantiles([0.5, 0.99]) or s.count == 0


@SETTINGS
@given(values=st.lists(st.one_of(st.floats(allow_infinity=True), st.floats(1e-7, 100.0), st.sampled_from([1e-6, 60.0, 0.0, -1.0])), max_size=200))
def test_latency_record_equals_record_many(sketches_impl: ModuleType, values: list[float]) -> None:
    # record() is the per-request path (the front records one latency per call).
    one, many = sketches_impl.LatencySketch(), ref.LatencySketch()
    for v in values:
        one.record(v)
    many.record_many(np.array(values, dtype=np.float64))
    assert one.to_bytes() == many.to_bytes()


def test_latency_clamping_and_errors(sketches_impl: ModuleType) -> None:
    s = sketches_impl.LatencySketch()
    s.record_many([1e-9, 0.0, 120.0, math.nan, 1e-3])
    assert (s.count, s.clamped_low, s.clamped_high, s.nan) == (4, 2, 1, 1)
    assert s.quantile(0.0) == pytest.approx(1e-6, rel=0.01)
    assert s.quantile(1.0) == pytest.approx(60.0, rel=0.01)
    assert s.max == 120.0
    assert math.isnan(sketches_impl.LatencySketch().quantile(0.5))
    with pytest.raises(ValueError):
        s.quantile(1.5)
    b = s.to_bytes()
    for corrupt in (b[:-8], b"SGSX" + b[4:], b[:6] + b"\1\0" + b[8:], b + b"\0"):
        with pytest.raises(ValueError):
            sketches_impl.LatencySketch.from_bytes(corrupt)


# --- divergences -------------------------------------------------------------------------------

@SETTINGS
@given(p=st.lists(st.integers(0, 1000), min_size=1, max_size=80), data=st.data(),
       eps=st.sampled_from([ref.DEFAULT_EPS, 0.0, 1e-9, 1.0]), with_edges=st.booleans())
def test_divergences_match_reference(sketches_impl: ModuleType, p: list[int], data: st.DataObject, eps: float, with_edges: bool) -> None:
    q = data.draw(st.lists(st.integers(0, 1000), min_size=len(p), max_size=len(p)))
    edges = np.cumsum(np.arange(1, len(p))) * 0.5 if with_edges and len(p) > 2 else None
    got = sketches_impl.divergences(np.array(p, dtype=np.int64), q, eps=eps, edges=edges)
    want = ref.divergences(p, q, eps=eps, edges=edges)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k])), k
    if math.isfinite(got["js"]):
        assert -1e-12 <= got["js"] <= 1.0 + 1e-12
        assert got["js"] == pytest.approx(sketches_impl.divergences(q, p, eps=eps)["js"], abs=1e-12)


def test_divergences_known_values(sketches_impl: ModuleType) -> None:
    d = sketches_impl.divergences
    same = d([5, 0, 7, 1], [5, 0, 7, 1])
    assert all(v == pytest.approx(0.0, abs=1e-15) for v in same.values())
    # a known shift, by hand, without smoothing
    p, q = [25, 25, 25, 25], [10, 20, 30, 40]
    r = d(p, q, eps=0.0)
    pp, qq = [0.25] * 4, [0.1, 0.2, 0.3, 0.4]
    assert r["psi"] == pytest.approx(sum((a - b) * math.log(a / b) for a, b in zip(pp, qq)), rel=1e-12)
    assert r["psi"] == pytest.approx(0.2282, abs=1e-4)
    assert r["tv"] == pytest.approx(0.2, rel=1e-12)
    assert r["w1"] == pytest.approx(0.15 + 0.2 + 0.15, rel=1e-12)
    assert r["kl_pq"] == pytest.approx(sum(a * math.log(a / b) for a, b in zip(pp, qq)), rel=1e-12)
    assert d(p, q, eps=0.0, edges=[0.0, 1.0, 3.0])["w1"] == pytest.approx(0.15 * 0.5 + 0.2 * 1.5 + 0.15 * 1.0)
    # disjoint supports: JS is 1 bit, KL infinite without smoothing, finite with it
    r = d([10, 0], [0, 10], eps=0.0)
    assert r["js"] == pytest.approx(1.0) and r["tv"] == pytest.approx(1.0) and math.isinf(r["kl_pq"])
    r = d([10, 0], [0, 10])
    assert math.isfinite(r["kl_pq"]) and 0 < r["js"] < 1
    # smoothing rule: p_i = (c_i + eps) / (N + eps * B)
    r = d([3, 0], [1, 2], eps=0.5)
    ps, qs = [3.5 / 4, 0.5 / 4], [1.5 / 4, 2.5 / 4]
    assert r["tv"] == pytest.approx(0.5 * sum(abs(a - b) for a, b in zip(ps, qs)), rel=1e-12)
    with pytest.raises(ValueError):
        d([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        d([1, 2], [1, 2], eps=-1.0)


# --- the compiled twin is really loaded -----------------------------------------------------------

@pytest.mark.c_extension
def test_sketches_c_loaded() -> None:
    import shadowgrpc.sketches._c as sketches_c
    import shadowgrpc.sketches._core_c as core_c
    import shadowgrpc.sketches._divergence_c as divergence_c
    import shadowgrpc.sketches as sketches

    assert sketches.IMPLEMENTATION == "c"
    for module in (sketches_c, core_c, divergence_c):  # the twin and the parts it re-exports
        assert module.__file__.endswith((".so", ".pyd"))
    assert sketches.Histogram is sketches_c.Histogram is core_c.Histogram
    assert sketches.LatencySketch is sketches_c.LatencySketch
    assert sketches.update_many is core_c.update_many
    assert sketches.divergences is sketches_c.divergences is divergence_c.divergences
    assert type(sketches.divergences).__name__ in ("builtin_function_or_method", "cython_function_or_method")
    assert sketches.Histogram(np.linspace(0, 1, 11)).uniform_edges
    assert not sketches.Histogram([0.0, 0.1, 1.0]).uniform_edges
