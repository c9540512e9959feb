"""Streaming sketches: both twins against the pure-numpy reference (exact counts, exact bytes,
bit-identical divergences), merge of parts == whole, serialisation, and known values."""

from __future__ import annotations

import math
import struct
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
F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


# --- strategies --------------------------------------------------------------------------------

@st.composite
def edges_st(draw: st.DrawFn) -> np.ndarray:
    if draw(st.booleans()):  # uniform (the multiply-and-correct path), sometimes far from zero
        lo = draw(st.floats(-1e6, 1e6))
        width = draw(st.floats(1e-3, 1e3))
        n = draw(st.integers(1, 300))
        return np.linspace(lo, lo + width * n, n + 1)
    vals = draw(st.lists(F32, min_size=2, max_size=40, unique=True))
    e = np.unique(np.array(vals, dtype=np.float64))
    if e.size < 2:
        e = np.array([e[0], e[0] + 1.0])
    return e


@st.composite
def values_st(draw: st.DrawFn, edges: np.ndarray) -> np.ndarray:
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    special = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0])
    edge_exact = st.sampled_from(edges.tolist())
    span = float(edges[-1] - edges[0])
    near = st.floats(float(edges[0]) - span * 0.2, float(edges[-1]) + span * 0.2)
    items = draw(st.lists(st.one_of(special, edge_exact, near, F32), max_size=200))
    with np.errstate(over="ignore"):
        a = np.array(items, dtype=np.float64).astype(dtype)
    k = draw(st.integers(0, 3))
    if k:
        rows = a.size // k
        a = a[: rows * k].reshape(rows, k)
        if draw(st.booleans()):  # a non-contiguous view
            a = np.asfortranarray(a)
    return a


def _histogram_case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    edges = draw(edges_st())
    return edges, draw(values_st(edges))


histogram_cases = st.composite(_histogram_case)


# --- Histogram -------------------------------------------------------------------------------

@SETTINGS
@given(case=histogram_cases())
def test_histogram_matches_reference(sketches_impl: ModuleType, case: tuple[np.ndarray, np.ndarray]) -> None:
    edges, values = case
    n_classes = values.shape[1] if values.ndim == 2 and values.shape[1] else 1
    h = sketches_impl.Histogram(edges, n_classes + 1)
    r = ref.Histogram(edges, n_classes + 1)
    h.update(values)
    r.update(values)
    # the rule itself, by numpy on float64: column = searchsorted(edges, x, side="right")
    v = values.astype(np.float64)
    v = v if v.ndim == 2 else v[:, None]
    for c in range(v.shape[1]):
        col = v[:, c]
        expected = np.bincount(np.searchsorted(edges, col[~np.isnan(col)], side="right"), minlength=edges.size + 1)
        assert np.array_equal(h.counts[c], expected)
        assert h.nan[c] == np.isnan(col).sum()
    assert np.array_equal(h.counts, r.counts)
    assert np.array_equal(h.nan, r.nan)
    assert h.to_bytes() == r.to_bytes()


def test_histogram_rule(sketches_impl: ModuleType) -> None:
    for edges in ([0.0, 1.0, 2.0], [0.0, 0.5, 2.0]):  # uniform and binary-search paths
        h = sketches_impl.Histogram(edges)
        h.update(np.array([-1, 0, 0.5, 1, 2, 3, np.nan, np.inf, -np.inf, 1.999], dtype=np.float32))
        if edges[1] == 1.0:
            assert h.counts.tolist() == [[2, 2, 2, 3]]
        else:
            assert h.counts.tolist() == [[2, 1, 3, 3]]
        assert h.nan.tolist() == [1]
        assert h.counts.dtype == np.int64


def test_histogram_classes_and_large(sketches_impl: ModuleType) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50_000, 3)).astype(np.float32)  # large enough to run without the GIL
    x[::97, 1] = np.nan
    for edges in (np.linspace(-2, 2, 1025), np.sort(rng.normal(size=64))):
        h, r = sketches_impl.Histogram(edges, 3), ref.Histogram(edges, 3)
        h.update(x)
        r.update(x)
        h.update(x[:, 2].astype(np.float64))
        r.update(x[:, 2].astype(np.float64))
        assert h.to_bytes() == r.to_bytes()
        assert h.counts[1].sum() + h.nan[1] == x.shape[0]


def test_histogram_float32_paths(sketches_impl: ModuleType) -> None:
    # contiguous float32 (all-float32 path), float64 and strided (float64 paths), values on and
    # next to every edge, for edges that are not float32 numbers and edges far from zero
    for edges in (np.linspace(0.1, 0.7, 1025), np.linspace(-3e4, 3e4, 65), np.linspace(1e6, 1e6 + 64, 65)):
        e32 = edges.astype(np.float32)
        x = np.concatenate([e32, np.nextafter(e32, np.float32(np.inf)), np.nextafter(e32, np.float32(-np.inf)),
                            np.random.default_rng(5).uniform(edges[0] - 1, edges[-1] + 1, 20_000).astype(np.float32),
                            np.array([np.nan, np.inf, -np.inf], dtype=np.float32)])
        for values in (x, x.astype(np.float64), np.repeat(x, 2)[::2]):
            h, r = sketches_impl.Histogram(edges), ref.Histogram(edges)
            h.update(values)
            r.update(values)
            assert h.to_bytes() == r.to_bytes()
            for i in range(0, values.size, 7):  # a few values per update (no block loop)
                h.update(values[i : i + 7])
            r.update(values)
            assert h.to_bytes() == r.to_bytes()


def _layouts(rng: np.random.Generator, rows: int) -> list[object]:
    """Value arrays of every layout that selects a different path into the compiled kernels."""
    x = rng.uniform(-0.2, 1.2, size=(rows, 2))
    x[::5, 0] = np.nan
    out: list[object] = []
    for dt in (np.float32, np.float64):
        a = np.ascontiguousarray(x, dtype=dt)
        raw = bytearray(a.nbytes + 1)
        unaligned = np.frombuffer(raw, dtype=dt, count=a.size, offset=1).reshape(a.shape)
        unaligned[...] = a
        meta = a.astype(np.dtype(dt, metadata={"unit": "s"}))  # an equal dtype, not numpy's own
        out += [a, a[:, 0].copy(), a[:, 1],                     # C-contiguous 2-D and 1-D; strided
                np.asfortranarray(a), unaligned,
                np.frombuffer(a.tobytes(), dtype=dt).reshape(a.shape),  # read-only
                a.view(type("Sub", (np.ndarray,), {})), meta, memoryview(a), a.tolist()]
    return out


@pytest.mark.parametrize("rows", [0, 1, 7, 15, 16, 17, 300, 5000])
def test_histogram_layouts(sketches_impl: ModuleType, rows: int) -> None:
    rng = np.random.default_rng(rows)
    layouts = _layouts(rng, rows)
    for edges in (np.linspace(0.0, 1.0, 65), np.linspace(0.0, 1.0, 65) ** 2):  # uniform; search
        many = [sketches_impl.Histogram(edges, 2) for _ in range(3)]
        whole = ref.Histogram(edges, 2)
        for values in layouts:
            h, r = sketches_impl.Histogram(edges, 2), ref.Histogram(edges, 2)
            h.update(values)
            r.update(values)
            assert h.to_bytes() == r.to_bytes()
            sketches_impl.update_many(tuple(many), (values, values, values))
            whole.update(values)
        assert all(m.to_bytes() == whole.to_bytes() for m in many)


def test_histogram_layout_errors(sketches_impl: ModuleType) -> None:
    h = sketches_impl.Histogram([0.0, 1.0], 2)
    for bad, error in ((np.zeros((4, 3), dtype=np.float32), ValueError), (np.zeros((2, 2, 2)), ValueError),
                       (np.float32(0.5), ValueError), (np.zeros(4, dtype=np.float16), TypeError),
                       (np.zeros(4, dtype=">f4" if np.little_endian else "<f4"), TypeError)):
        with pytest.raises(error):
            h.update(bad)
        with pytest.raises(error):
            sketches_impl.update_many([h], [bad])
    for not_histogram in (object(), None):
        with pytest.raises((TypeError, AttributeError)):  # compiled: not a Histogram; Python: no .update
            sketches_impl.update_many([not_histogram], [np.zeros(2)])
    assert h.counts.sum() == 0 and h.nan.sum() == 0


def test_update_many(sketches_impl: ModuleType) -> None:
    hs = [sketches_impl.Histogram(np.linspace(0, 1, 9)) for _ in range(3)]
    vals = [np.float32([0.1, 0.2]), np.array([0.9, 2.0]), [np.nan, -1.0]]
    sketches_impl.update_many(hs, vals)
    for h, v in zip(hs, vals):
        r = ref.Histogram(np.linspace(0, 1, 9))
        r.update(v)
        assert h.to_bytes() == r.to_bytes()
    with pytest.raises(ValueError, match="histograms but"):
        sketches_impl.update_many(hs, vals[:2])


@pytest.mark.parametrize(
    ("edges", "message"),
    [([1.0], "at least 2"), ([0.0, np.nan], "finite"), ([0.0, np.inf], "finite"),
     ([0.0, 0.0, 1.0], "strictly increasing"), ([2.0, 1.0], "strictly increasing")],
)
def test_histogram_bad_edges(sketches_impl: ModuleType, edges: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sketches_impl.Histogram(edges)


def test_histogram_bad_values(sketches_impl: ModuleType) -> None:
    h = sketches_impl.Histogram([0.0, 1.0], 2)
    with pytest.raises(TypeError):
        h.update(np.array([1, 2], dtype=np.int32))
    with pytest.raises(ValueError, match="columns"):
        h.update(np.zeros((2, 3), dtype=np.float32))
    h.update([0.5, 2.0])  # a list is taken as float64
    assert h.counts.tolist() == [[0, 1, 1], [0, 0, 0]]


@SETTINGS
@given(case=histogram_cases(), cut=st.integers(0, 200))
def test_histogram_merge_parts_equals_whole(sketches_impl: ModuleType, case: tuple[np.ndarray, np.ndarray], cut: int) -> None:
    edges, values = case
    k = values.shape[1] if values.ndim == 2 and values.shape[1] else 1
    whole, a, b, c = (sketches_impl.Histogram(edges, k) for _ in range(4))
    whole.update(values)
    cut = min(cut, values.shape[0])
    a.update(values[:cut])
    b.update(values[cut:])
    c.merge(b)
    c.merge(a)  # (empty + b) + a == whole, in any order
    a.merge(b)
    assert a.to_bytes() == whole.to_bytes() == c.to_bytes()
    other = ref.Histogram(edges, k)  # the twins merge with each other
    other.update(values)
    d = sketches_impl.Histogram(edges, k)
    d.merge(other)
    assert d.to_bytes() == whole.to_bytes()


def test_histogram_merge_mismatch(sketches_impl: ModuleType) -> None:
    h = sketches_impl.Histogram([0.0, 1.0, 2.0])
    for other in (sketches_impl.Histogram([0.0, 1.0, 3.0]), sketches_impl.Histogram([0.0, 1.0, 2.0], 2)):
        with pytest.raises(ValueError, match="different edges"):
            h.merge(other)


def test_histogram_serialisation(sketches_impl: ModuleType) -> None:
    h = sketches_impl.Histogram(np.linspace(0, 1, 11), 2)
    h.update(np.random.default_rng(2).uniform(-0.2, 1.2, size=(1000, 2)))
    b = h.to_bytes()
    assert b[:4] == b"SGSK" and struct.unpack_from("<HH", b, 4) == (1, 1)
    back = sketches_impl.Histogram.from_bytes(b)
    assert back.to_bytes() == b
    assert np.array_equal(back.edges, h.edges)
    assert ref.Histogram.from_bytes(b).to_bytes() == b
    bad = [b"XXXX" + b[4:], b[:4] + struct.pack("<H", 2) + b[6:], b[:4] + struct.pack("<HH", 1, 2) + b[8:],
           b[:-1], b[:10], b"", b + b"\0"]
    for corrupt in bad:
        with pytest.raises(ValueError):
            sketches_impl.Histogram.from_bytes(corrupt)


def test_default_memory(sketches_impl: ModuleType) -> None:
    assert sketches_impl.Histogram(np.linspace(0, 1, 1025)).nbytes <= 17 * 1024
    assert sketches_impl.LatencySketch().nbytes <= 15 * 1024


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
