"""Strategies and comparison helpers of the paired-statistics tests (tests/unit/test_paired_*.py):
random live/shadow arrays in every layout an update can take, and ``check_update``, which runs an
update on a twin and on the pure-numpy reference and compares exceptions, bytes and attributes."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# The sketches_impl fixture returns a module (no state), so sharing it between examples is safe.
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0, 0.5, 1.0, -1.0]
LAYOUTS = ("c", "f", "strided", "unaligned", "list", "big-endian", "memoryview")


# --- strategies --------------------------------------------------------------------------------

def floats_st(dtype: Any) -> st.SearchStrategy[float]:
    width = 32 if dtype == np.float32 else 64
    return st.one_of(st.sampled_from(SPECIAL), st.floats(-1e3, 1e3, width=width),
                     st.floats(width=width, allow_nan=True, allow_infinity=True))


def relayout(a: np.ndarray, layout: str) -> Any:
    """The values of ``a`` in another layout (each takes a different path into the compiled twin)."""
    if layout == "f":
        return np.asfortranarray(a)
    if layout == "strided":
        return np.stack([a, a], axis=-1)[..., 1]
    if layout == "unaligned":
        out = np.frombuffer(bytearray(a.nbytes + 1), dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
        out[...] = a
        return out
    if layout == "list":
        return a.tolist()
    if layout == "big-endian":
        return a.astype(a.dtype.newbyteorder(">"))
    if layout == "memoryview":
        return memoryview(np.ascontiguousarray(a))
    return a


@st.composite
def float_pairs(draw: st.DrawFn, shapes: st.SearchStrategy[tuple[int, ...]] | None = None) -> tuple[Any, Any]:
    """live and shadow: float32 or float64 (sometimes one of each), of one shape (sometimes of
    different sizes), in any layout."""
    shape = draw(shapes if shapes is not None else hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9))
    da, db = draw(st.sampled_from([(np.float32, np.float32), (np.float64, np.float64), (np.float32, np.float64)]))
    a = draw(hnp.arrays(da, shape, elements=floats_st(da)))
    b = draw(hnp.arrays(db, shape, elements=floats_st(db)))
    if draw(st.integers(0, 15)) == 0:
        b = b.reshape(-1)[: max(b.size - 1, 0)]
    return relayout(a, draw(st.sampled_from(LAYOUTS))), relayout(b, draw(st.sampled_from(LAYOUTS)))


def outcome(fn: Callable[[], Any]) -> Any:
    """What ``fn()`` returns, or the type of what it raises."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the type is compared
        return type(e)


def check_update(impl: Any, twin: Any, method: str, live: Any, shadow: Any, *same: str) -> None:
    """``method(live, shadow)`` on both, twice: the same exception type, or none, then the same
    bytes and the same attributes ``same``."""
    for _ in range(2):
        assert outcome(lambda: getattr(impl, method)(live, shadow)) == outcome(lambda: getattr(twin, method)(live, shadow))
        assert impl.to_bytes() == twin.to_bytes()
    for name in same:
        got, want = getattr(impl, name), getattr(twin, name)
        assert np.array_equal(got, want, equal_nan=isinstance(want, float)), name


# Each paired statistic's constructor arguments and update method.
NEW = {"LabelAgreement": (4,), "BinaryAgreement": (0.1,), "RegressionAgreement": (0.01, 0.1), "CosineStats": ()}
UPDATE = {"LabelAgreement": "update_probs", "BinaryAgreement": "update_binary", "RegressionAgreement": "update_regression",
          "CosineStats": "update_embeddings"}
