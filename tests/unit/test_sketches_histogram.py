"""Streaming sketches, Histogram: both twins against the pure-numpy reference (exact counts, exact
bytes) in every layout, merge of parts == whole, serialisation, errors and the memory bound.
LatencySketch and divergences: test_sketches_latency_divergences.py."""

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
