"""Paired statistics across twins: merge of parts == whole (the twins merge with each other),
serialisation across twins, merge and constructor errors, large updates in threads, and the
compiled twin really loaded. Updates against the reference: test_paired_updates.py."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import shadowgrpc.sketches._paired_py as ref
from tests.paired import NEW, SETTINGS, UPDATE, outcome


# --- merge, serialisation, across twins -------------------------------------------------------------

def _fill(name: str, mod: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """A new ``mod.<name>`` updated with rows x, y (values, probabilities or embeddings), if any
    (CosineStats refuses no rows, as the twin: reshape(0, -1))."""
    s = getattr(mod, name)(*NEW[name])
    if len(x):
        getattr(s, UPDATE[name])(x, y)
    return s


PAIRED = ("LabelAgreement", "BinaryAgreement", "RegressionAgreement", "CosineStats")


@SETTINGS
@given(name=st.sampled_from(PAIRED), seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 40), cut=st.integers(0, 40),
       dt=st.sampled_from([np.float32, np.float64]))
def test_merge_parts_equals_whole(sketches_impl: ModuleType, name: str, seed: int, rows: int, cut: int, dt: Any) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 4)).astype(dt)
    y = (x + rng.standard_normal((rows, 4)) * 0.5).astype(dt)
    x[rng.random(rows) < 0.1] = np.nan
    cut = min(cut, rows - 1)
    whole = _fill(name, sketches_impl, x, y)
    a, b = _fill(name, sketches_impl, x[:cut + 1], y[:cut + 1]), _fill(name, sketches_impl, x[cut + 1:], y[cut + 1:])
    a.merge(b)
    assert a.to_bytes() == whole.to_bytes() == _fill(name, ref, x, y).to_bytes()
    theirs = _fill(name, ref, x[cut + 1:], y[cut + 1:])  # the twins merge with each other
    ours = _fill(name, sketches_impl, x[:cut + 1], y[:cut + 1])
    ours.merge(theirs)
    assert ours.to_bytes() == whole.to_bytes()
    theirs = _fill(name, ref, x[:cut + 1], y[:cut + 1])
    theirs.merge(_fill(name, sketches_impl, x[cut + 1:], y[cut + 1:]))
    assert theirs.to_bytes() == whole.to_bytes()


@pytest.mark.parametrize("name", PAIRED)
def test_serialisation_across_twins(sketches_impl: ModuleType, name: str) -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((50, 4))
    y = x + rng.standard_normal((50, 4))
    x[3] = np.nan
    ours, theirs = _fill(name, sketches_impl, x, y), _fill(name, ref, x, y)
    b = ours.to_bytes()
    assert b == theirs.to_bytes()
    cls, ref_cls = getattr(sketches_impl, name), getattr(ref, name)
    assert type(cls.from_bytes(b)) is cls and cls.from_bytes(b).to_bytes() == b
    assert ref_cls.from_bytes(b).to_bytes() == b and cls.from_bytes(ref_cls.from_bytes(b).to_bytes()).to_bytes() == b
    for corrupt in (b[:-1], b + b"\0", b"XXXX" + b[4:], b[:6] + b"\x09\x00" + b[8:], b"", b[:12]):
        assert outcome(lambda c=corrupt: cls.from_bytes(c)) is ValueError
        assert outcome(lambda c=corrupt: ref_cls.from_bytes(c)) is ValueError
    assert cls(*NEW[name]).to_bytes() == ref_cls(*NEW[name]).to_bytes()


def test_merge_mismatch(sketches_impl: ModuleType) -> None:
    for a, b in ((sketches_impl.LabelAgreement(2), ref.LabelAgreement(3)), (sketches_impl.BinaryAgreement(0.5), ref.BinaryAgreement(0.6)),
                 (sketches_impl.BinaryAgreement(math.nan), sketches_impl.BinaryAgreement(math.nan)),
                 (sketches_impl.RegressionAgreement(0.1, 0.1), ref.RegressionAgreement(0.1, 0.2))):
        with pytest.raises(ValueError, match="cannot merge"):
            a.merge(b)


def test_constructor_errors_and_defaults(sketches_impl: ModuleType) -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n_classes"):
            sketches_impl.LabelAgreement(bad)
    r, b = sketches_impl.RegressionAgreement(), sketches_impl.BinaryAgreement()
    assert (r.atol, r.rtol, b.threshold) == (1e-6, 1e-3, 0.5)
    c = sketches_impl.CosineStats()
    assert math.isnan(c.mean) and c.min == math.inf and c.count == 0
    assert math.isnan(sketches_impl.LabelAgreement(2).agreement) and math.isnan(b.agreement)


def test_large_updates_in_threads(sketches_impl: ModuleType) -> None:
    # updates of NOGIL_MIN values or more run without the GIL: four threads, one sketch each
    rng = np.random.default_rng(11)
    live = rng.standard_normal((4, 2048, 8)).astype(np.float32)
    shadow = (live + rng.normal(0, 0.3, live.shape)).astype(np.float32)

    def run(name: str, mod: Any, i: int) -> bytes:
        s = getattr(mod, name)(*({"LabelAgreement": (8,)}.get(name, NEW[name])))
        for _ in range(3):
            getattr(s, UPDATE[name])(live[i], shadow[i])
        return s.to_bytes()

    for name in PAIRED:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda i, n=name: run(n, sketches_impl, i), range(4)))
        assert got == [run(name, ref, i) for i in range(4)]


@pytest.mark.c_extension
def test_uninitialised_sketches_refuse_updates() -> None:
    import shadowgrpc.sketches._paired_c as paired_c

    for name in PAIRED:
        cls = getattr(paired_c, name)
        with pytest.raises(ValueError, match="__init__ was not called"):
            getattr(cls.__new__(cls), UPDATE[name])(np.ones((2, 2)), np.ones((2, 2)))


# --- the compiled twin is really loaded ---------------------------------------------------------------

@pytest.mark.c_extension
def test_sketches_paired_c_loaded() -> None:
    import shadowgrpc.sketches._paired_c as paired_c
    import shadowgrpc.sketches as sketches

    assert sketches.IMPLEMENTATION == "c"
    assert paired_c.__file__.endswith((".so", ".pyd"))
    for name in PAIRED:
        cls = getattr(sketches, name)
        assert cls is getattr(paired_c, name) and cls is not getattr(ref, name)
    assert type(sketches.RegressionAgreement().errors) is sketches.LatencySketch  # the compiled one
    assert type(sketches.CosineStats().hist) is sketches.Histogram
    assert paired_c._cosine_exact()  # embeddings take the kernel, not the twin
