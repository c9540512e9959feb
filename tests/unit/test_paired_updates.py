"""Paired statistics (LabelAgreement, BinaryAgreement, RegressionAgreement, CosineStats): both twins
against the pure-numpy reference on random data in every layout an update can take (same counts,
same bytes, same exception types, same floating-point errors), and known values. Merge,
serialisation and the compiled twin: test_paired_merge.py."""

from __future__ import annotations

import math
import warnings
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import shadowgrpc.sketches._paired_py as ref
from tests.paired import LAYOUTS, NEW, SETTINGS, UPDATE, check_update, float_pairs, floats_st, outcome, relayout


# --- LabelAgreement ------------------------------------------------------------------------------

@SETTINGS
@given(data=st.data(), n=st.integers(1, 7), dtype=st.sampled_from([np.int64, np.int32, np.int8, np.uint8, np.float64, np.bool_]),
       layout=st.sampled_from(LAYOUTS), repeat=st.integers(1, 3))
def test_labels_match_reference(sketches_impl: ModuleType, data: st.DataObject, n: int, dtype: Any, layout: str, repeat: int) -> None:
    s, r = sketches_impl.LabelAgreement(n), ref.LabelAgreement(n)
    for _ in range(repeat):
        shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=12))
        labels = st.integers(-2, n + 2) if dtype not in (np.uint8, np.bool_) else st.integers(0, 1 if dtype == np.bool_ else n + 2)
        a = np.array(data.draw(hnp.arrays(np.int64, shape, elements=labels))).astype(dtype)
        b = np.array(data.draw(hnp.arrays(np.int64, shape, elements=labels))).astype(dtype)
        if data.draw(st.booleans()):
            b = b.reshape(-1)[: max(b.size - 1, 0)]
        check_update(s, r, "update_labels", relayout(a, layout), relayout(b, data.draw(st.sampled_from(LAYOUTS))),
                     "confusion", "invalid", "count", "agreement")


@st.composite
def prob_pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    rows = draw(st.integers(0, 9))
    lead = draw(st.sampled_from([(), (rows,), (rows, 2)]))
    k, k2 = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    ties = st.sampled_from([0.0, -0.0, 0.25, 1.0, math.nan, math.inf, -math.inf])
    return draw(float_pairs(st.just(lead + (max(k, 1),)))) if draw(st.booleans()) else (
        draw(hnp.arrays(np.float32, lead + (k,), elements=st.one_of(ties, floats_st(np.float32)))),
        draw(hnp.arrays(np.float32, lead + (k2 if draw(st.booleans()) else k,), elements=ties)),
    )


@SETTINGS
@given(case=prob_pairs(), n=st.integers(1, 7))
def test_probs_match_reference(sketches_impl: ModuleType, case: tuple[Any, Any], n: int) -> None:
    # argmax over the last axis: the first NaN, else the first maximum; labels >= n: invalid
    check_update(sketches_impl.LabelAgreement(n), ref.LabelAgreement(n), "update_probs", *case,
                 "confusion", "invalid", "count", "agreement")


def test_argmax_rule(sketches_impl: ModuleType) -> None:
    nan = math.nan
    probs = np.array([[1, 3, 3], [nan, 5, nan], [2, nan, 9], [-0.0, 0.0, 0.0], [-np.inf, -np.inf, -np.inf]])
    for dtype in (np.float32, np.float64):
        s = sketches_impl.LabelAgreement(3)
        s.update_probs(probs.astype(dtype), np.zeros((5, 3), dtype=dtype))
        assert s.confusion[:, 0].tolist() == [3, 2, 0] and s.invalid == 0  # live labels 1, 0, 1, 0, 0


def test_label_agreement_vs_numpy(sketches_impl: ModuleType) -> None:
    rng = np.random.default_rng(3)
    live = rng.integers(0, 5, 1000)
    shadow = np.where(rng.random(1000) < 0.8, live, rng.integers(0, 5, 1000))
    s = sketches_impl.LabelAgreement(5)
    s.update_labels(live[:400], shadow[:400])
    s.update_probs(np.eye(5)[live[400:]], np.eye(5)[shadow[400:]])
    s.update_labels([7, -1], [0, 0])
    want = np.zeros((5, 5), dtype=np.int64)
    np.add.at(want, (live, shadow), 1)
    assert np.array_equal(s.confusion, want)
    assert s.invalid == 2
    assert s.agreement == pytest.approx(np.mean(live == shadow))
    back = sketches_impl.LabelAgreement.from_bytes(s.to_bytes())
    assert np.array_equal(back.confusion, want) and back.to_bytes() == s.to_bytes()


def test_float_labels_are_truncated(sketches_impl: ModuleType) -> None:
    s, r = sketches_impl.LabelAgreement(3), ref.LabelAgreement(3)
    live, shadow = np.array([0.9, 2.5, -0.5, np.nan, 1e30]), np.array([1.0, 2.0, 0.0, 0.0, 0.0])
    with np.errstate(invalid="ignore"):  # NaN and 1e30 cast to int64
        s.update_labels(live, shadow)
        r.update_labels(live, shadow)
    assert s.to_bytes() == r.to_bytes() and s.invalid == 2


# --- BinaryAgreement, RegressionAgreement ----------------------------------------------------------

@SETTINGS
@given(case=float_pairs(), threshold=st.sampled_from([0.5, 0.0, -0.0, 1.0, math.inf, math.nan, 0.30000001192092896]))
def test_binary_matches_reference(sketches_impl: ModuleType, case: tuple[Any, Any], threshold: float) -> None:
    check_update(sketches_impl.BinaryAgreement(threshold), ref.BinaryAgreement(threshold), "update_binary", *case,
                 "confusion", "invalid", "agreement")


@SETTINGS
@given(case=float_pairs(), atol=st.sampled_from([1e-6, 0.0, 0.1]), rtol=st.sampled_from([1e-3, 0.0, 0.1, math.inf]))
def test_regression_matches_reference(sketches_impl: ModuleType, case: tuple[Any, Any], atol: float, rtol: float) -> None:
    s, r = sketches_impl.RegressionAgreement(atol, rtol), ref.RegressionAgreement(atol, rtol)
    check_update(s, r, "update_regression", *case, "count", "within", "invalid")
    assert s.errors.to_bytes() == r.errors.to_bytes()


# --- CosineStats -------------------------------------------------------------------------------------

@st.composite
def embedding_pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    """Rows of random embeddings (scaled, some rows zero, NaN, huge or tiny) in any layout."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = draw(st.one_of(st.tuples(st.integers(0, 6), st.integers(0, 40)), st.tuples(st.integers(0, 40)),
                           st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5)), st.just(())))
    dt = draw(st.sampled_from([np.float32, np.float64]))
    a = rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1e-3, 1e3]))
    b = a * draw(st.sampled_from([1.0, -1.0, 0.5])) + rng.standard_normal(shape) * draw(st.sampled_from([0.0, 1e-9, 0.1, 1.0]))
    if a.ndim == 2 and a.size:
        for row in draw(st.lists(st.integers(0, a.shape[0] - 1), max_size=3)):
            a[row] = draw(st.sampled_from([0.0, math.nan, math.inf, 1e200, 1e-200]))
    with np.errstate(over="ignore"):
        a, b = a.astype(dt), b.astype(draw(st.sampled_from([dt, dt, np.float64])))
    return relayout(a, draw(st.sampled_from(LAYOUTS))), relayout(b, draw(st.sampled_from(LAYOUTS)))


@SETTINGS
@given(case=embedding_pairs())
def test_cosine_matches_reference(sketches_impl: ModuleType, case: tuple[Any, Any]) -> None:
    s, r = sketches_impl.CosineStats(), ref.CosineStats()
    check_update(s, r, "update_embeddings", *case, "count", "invalid", "sum_fixed", "min", "mean")
    assert s.hist.to_bytes() == r.hist.to_bytes()


@pytest.mark.parametrize(("rows", "d"), [(1, 8191), (1, 8192), (1, 8193), (1, 20_000), (2, 8193), (3, 300), (64, 256), (200, 1)])
def test_cosine_long_rows(sketches_impl: ModuleType, rows: int, d: int) -> None:
    # numpy adds a one-row einsum and every norm in blocks of 8192; large updates run without the GIL
    rng = np.random.default_rng(rows * d)
    for dt in (np.float32, np.float64):
        a = rng.standard_normal((rows, d)).astype(dt)
        b = (a + rng.standard_normal((rows, d))).astype(dt)
        s, r = sketches_impl.CosineStats(), ref.CosineStats()
        for x, y in ((a, b), (a[0], b[0]), (a[:, ::-1], b), (relayout(a, "unaligned"), b), (a, relayout(b, "unaligned"))):
            s.update_embeddings(x, y)
            r.update_embeddings(x, y)
        assert s.to_bytes() == r.to_bytes()


def test_cosine_signed_zero_minimum(sketches_impl: ModuleType) -> None:
    # -5e-324 / 3 rounds to -0.0: the minimum is a zero of numpy.min's choosing, in both twins
    a = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 1.0]])
    b = np.array([[-5e-324, 3.0], [0.0, 1.0], [1.0, 1.0]])
    for rows in ([0, 1, 2], [1, 0, 2], [0, 2]):
        s, r = sketches_impl.CosineStats(), ref.CosineStats()
        s.update_embeddings(a[rows], b[rows])
        r.update_embeddings(a[rows], b[rows])
        assert s.to_bytes() == r.to_bytes() and s.min == 0.0


FP_CASES = [  # values whose arithmetic overflows or underflows in numpy (and the kernels)
    ("CosineStats", np.array([[1e200, 1.0], [1.0, 2.0]]), np.array([[1.0, 1.0], [3.0, 1.0]])),
    ("CosineStats", np.array([[1e-200, 1e-200]]), np.array([[1e-200, 3e-200]])),
    ("CosineStats", np.full((2, 3), 1e160, dtype=np.float64), np.full((2, 3), 1e160)),
    ("RegressionAgreement", np.array([1e308, 1.0]), np.array([-1e308, 2.0])),
    ("RegressionAgreement", np.array([1e-308, 0.5]), np.array([1e-308, 0.25])),  # rtol * |b| underflows
]


@pytest.mark.parametrize(("name", "live", "shadow"), FP_CASES)
@pytest.mark.parametrize("mode", ["warn", "raise", "ignore"])
def test_floating_point_errors_as_numpy(sketches_impl: ModuleType, name: str, live: np.ndarray, shadow: np.ndarray, mode: str) -> None:
    # np.errstate decides, as for the twin: the same warnings (or FloatingPointError), the same state
    s, r = getattr(sketches_impl, name)(*NEW[name]), getattr(ref, name)(*NEW[name])
    seen = []
    for sketch in (s, r):
        with warnings.catch_warnings(record=True) as caught, np.errstate(over=mode, under=mode):
            warnings.simplefilter("always")
            got = outcome(lambda sk=sketch: getattr(sk, UPDATE[name])(live, shadow))
        seen.append((got, [(w.category, str(w.message)) for w in caught]))
    assert seen[0] == seen[1]
    assert (seen[0][0] is FloatingPointError) == (mode == "raise") and bool(seen[0][1]) == (mode == "warn")
    assert s.to_bytes() == r.to_bytes()


@pytest.mark.c_extension
@SETTINGS
@given(data=st.data(), rows=st.integers(1, 5), d=st.one_of(st.integers(0, 300), st.sampled_from([8191, 8193, 9000])),
       dt=st.sampled_from([np.float32, np.float64]), layouts=st.sampled_from([("c", "c"), ("unaligned", "c"), ("c", "unaligned")]))
def test_cosine_kernel_is_numpy_bit_for_bit(data: st.DataObject, rows: int, d: int, dt: Any, layouts: tuple[str, str]) -> None:
    # the twin's arithmetic: float32 widened to a new float64 array, float64 as it is (einsum
    # buffers unaligned float64 and adds it in blocks of 8192, as it adds a single row)
    import shadowgrpc.sketches._paired_c as paired_c

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a = (rng.standard_normal((rows, d)) * 10.0 ** rng.integers(-5, 5, (rows, 1))).astype(dt)
    b = (a * data.draw(st.sampled_from([1.0, -1.0, 0.0])) + rng.standard_normal((rows, d))).astype(dt)
    a, b = relayout(a, layouts[0]), relayout(b, layouts[1])
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = np.einsum("ij,ij->i", a64, b64) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    assert paired_c._cosines(a, b).tobytes() == want.tobytes()


def test_binary_regression_cosine(sketches_impl: ModuleType) -> None:
    b = sketches_impl.BinaryAgreement(0.5)
    b.update_binary([0.1, 0.6, 0.7, np.nan], [0.2, 0.4, 0.9, 0.1])
    assert b.confusion.tolist() == [[1, 0], [1, 1]] and b.invalid == 1
    assert sketches_impl.BinaryAgreement.from_bytes(b.to_bytes()).to_bytes() == b.to_bytes()

    r = sketches_impl.RegressionAgreement(atol=0.01, rtol=0.1)
    r.update_regression([1.0, 2.0, 3.0, 10.0], [1.005, 2.5, np.nan, 9.5])
    assert (r.count, r.within, r.invalid) == (3, 2, 1)
    assert r.errors.quantile(1.0) == pytest.approx(0.5, rel=0.01)
    back = sketches_impl.RegressionAgreement.from_bytes(r.to_bytes())
    assert back.to_bytes() == r.to_bytes()
    r2 = sketches_impl.RegressionAgreement(atol=0.01, rtol=0.1)
    r2.merge(r)
    assert r2.to_bytes() == r.to_bytes()

    c = sketches_impl.CosineStats()
    rng = np.random.default_rng(4)
    a = rng.normal(size=(64, 16))
    e = a + rng.normal(scale=0.3, size=a.shape)
    c.update_embeddings(a, e)
    c.update_embeddings(np.zeros((1, 16)), np.ones((1, 16)))
    cos = np.sum(a * e, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(e, axis=1)
    assert c.count == 64 and c.invalid == 1
    assert c.mean == pytest.approx(cos.mean(), abs=1e-9) and c.min == pytest.approx(cos.min())
    assert sketches_impl.CosineStats.from_bytes(c.to_bytes()).to_bytes() == c.to_bytes()
