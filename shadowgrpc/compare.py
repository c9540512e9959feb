"""Live vs shadow: decode both responses' outputs (zero-copy views) and update the target's stats.

Runs in the shadow task after both answers are in, never on the live path. Outputs whose names,
datatypes or shapes differ between live and shadow are a *contract mismatch*: counted, not
compared. A float output whose last axis has more than one class is treated as a classifier
(top-label agreement per row); every other numeric output gets mean/max |live - shadow|.
"""

from __future__ import annotations

import numpy as np

from .packing import scan_response
from .sketches import Histogram
from .stats import OutputStats, ShadowStats

PROB_EDGES = np.linspace(0.0, 1.0, 21)
NUMERIC_BINS = 32
FREEZE_ROWS = 256

# KServe v2 datatype -> numpy dtype (little-endian, as Triton's raw contents are).
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def as_array(datatype: str, shape: tuple[int, ...], contents: memoryview | None) -> np.ndarray | None:
    """A read-only numpy view on a raw output; None for BYTES/unknown types or a size mismatch."""
    dt = NUMPY_DTYPES.get(datatype)
    if dt is None or contents is None:
        return None
    count = 1
    for d in shape:
        count *= d
    if count < 0 or count * dt.itemsize != len(contents):
        return None
    return np.frombuffer(contents, dtype=dt, count=count).reshape(shape)


Primary = tuple[np.ndarray, np.ndarray]


def compare_responses(live_raw: bytes, shadow_raw: bytes, stats: ShadowStats) -> Primary | None:
    """Update ``stats`` with one live/shadow pair. Returns the primary output (the first numeric
    one, as rows x values) of live and shadow, for the ground-truth join; None on a contract
    mismatch or when there is no numeric output."""
    try:
        live = scan_response(live_raw)
        shadow = scan_response(shadow_raw)
    except ValueError:
        stats.contract_mismatch += 1
        return None
    if [(n, d, s) for n, d, s, _ in live] != [(n, d, s) for n, d, s, _ in shadow]:
        # Same names in another order are still comparable; anything else is not.
        if sorted((n, d, s) for n, d, s, _ in live) != sorted((n, d, s) for n, d, s, _ in shadow):
            stats.contract_mismatch += 1
            return None
    shadow_by_name = {n: (d, s, c) for n, d, s, c in shadow}
    stats.compared += 1
    primary: Primary | None = None
    for name, dtype, shape, contents in live:
        a = as_array(dtype, shape, contents)
        sd, ss, sc = shadow_by_name[name]
        b = as_array(sd, ss, sc)
        if a is None or b is None:
            continue
        _compare_output(stats, name, a, b)
        if primary is None and a.ndim >= 1 and a.shape[0] > 0:
            primary = (a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))
    return primary


def _compare_output(stats: ShadowStats, name: str, a: np.ndarray, b: np.ndarray) -> None:
    classifier = a.ndim >= 1 and a.shape[-1] > 1 and a.dtype.kind == "f"
    out = stats.outputs.get(name)
    if out is None:
        out = stats.outputs[name] = OutputStats(kind="classifier" if classifier else "numeric")
    if out.kind == "classifier":
        la = a.reshape(-1, a.shape[-1]).argmax(axis=1)
        lb = b.reshape(-1, b.shape[-1]).argmax(axis=1)
        out.rows += int(la.size)
        out.agreed_rows += int(np.count_nonzero(la == lb))
    _bin(out, a, b)
    if a.size:
        d = np.abs(a.astype(np.float64, copy=False) - b.astype(np.float64, copy=False))
        out.values += int(d.size)
        out.abs_diff_sum += float(d.sum())
        out.abs_diff_max = max(out.abs_diff_max, float(d.max()))
        if out.kind != "classifier":
            out.rows += int(a.shape[0]) if a.ndim else 1


def _bin(out: OutputStats, a: np.ndarray, b: np.ndarray) -> None:
    """Feed the live and shadow histograms (same edges for both; see OutputStats)."""
    if a.dtype.kind != "f" or a.size == 0:
        return
    cols = a.shape[-1] if a.ndim >= 2 else 1
    a2 = a.reshape(-1, cols)
    b2 = b.reshape(-1, cols)
    if out.hist_live is None:
        if out.kind == "classifier":
            edges = PROB_EDGES
        else:
            out.pending.append((a2.copy(), b2.copy()))
            if sum(len(x) for x, _ in out.pending) < FREEZE_ROWS:
                return
            live = np.concatenate([x for x, _ in out.pending])
            finite = live[np.isfinite(live)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            pad = (hi - lo) * 0.05 or 0.5
            edges = np.linspace(lo - pad, hi + pad, NUMERIC_BINS + 1)
        out.hist_live, out.hist_shadow = Histogram(edges, cols), Histogram(edges, cols)
        for x, y in out.pending:
            out.hist_live.update(x)
            out.hist_shadow.update(y)
        out.pending.clear()
        if out.kind != "classifier":
            return
    out.hist_live.update(a2)
    out.hist_shadow.update(b2)
