"""Streaming sketches, pure-numpy reference: the test oracle and the source of types.

``ext/shadowgrpc/_sketches_c.pyx`` is the compiled twin of ``Histogram``, ``LatencySketch`` and
``divergences``; both give identical counts and identical bytes (``tests/test_sketches.py``).
The paired statistics (``LabelAgreement``, ``BinaryAgreement``, ``RegressionAgreement``,
``CosineStats``) live here only and are re-exported by the compiled twin.

Rules shared by both twins:

- ``Histogram(edges, n_classes)``: ``edges`` float64, finite, strictly increasing, at least 2.
  Column 0 is underflow (x < edges[0]), column i+1 is bin i (edges[i] <= x < edges[i+1]), the last
  column is overflow (x >= edges[-1], +inf included); i.e. the column is
  ``searchsorted(edges, x, side="right")``. NaN is counted in ``nan`` (per class), never binned.
  float32 values are widened to float64 (exactly) before comparing. Memory: 8 * n_classes *
  (len(edges) + 2) bytes of counts plus 8 * len(edges) of edges (1024 bins, one class: ~16 KiB).
- ``LatencySketch``: bucket i holds [1e-6 * 1.01**i, 1e-6 * 1.01**(i+1)) seconds, 1801 buckets up to
  60 s (14.4 KiB). Values below 1 us go to bucket 0 and values >= 60 s to the last bucket, counted in
  ``clamped_low`` / ``clamped_high``; NaN is counted in ``nan`` and ignored. ``quantile(q)`` is the
  bucket of the k-th smallest recorded value with k = max(1, ceil(q * count)) (numpy's
  ``inverted_cdf``), reported as the bucket's geometric midpoint: relative error <= sqrt(1.01) - 1
  (0.499%) inside the range. ``mean`` is of the clamped values, summed exactly as integer
  nanoseconds (``rint(v * 1e9)``), so merges are exact; ``max`` is the largest raw value.
- ``divergences``: see its docstring.
- Serialisation: ``MAGIC`` (4 bytes) + uint16 version + uint16 kind, then a kind-specific
  little-endian header and payload; ``from_bytes`` raises ValueError on a wrong magic, version or
  kind, and on truncated or trailing bytes.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = (
    "DEFAULT_EPS",
    "BinaryAgreement",
    "CosineStats",
    "Histogram",
    "LabelAgreement",
    "LatencySketch",
    "RegressionAgreement",
    "divergences",
    "update_many",
)

MAGIC = b"SGSK"
VERSION = 1
KIND_HISTOGRAM, KIND_LATENCY, KIND_LABELS, KIND_BINARY, KIND_REGRESSION, KIND_COSINE = 1, 2, 3, 4, 5, 6
_PREAMBLE = struct.Struct("<4sHH")
_HIST_HEADER = struct.Struct("<II")  # n_edges, n_classes
_LAT_HEADER = struct.Struct("<Iqqqqdq")  # n_buckets, count, clamped_low, clamped_high, nan, max, sum_ns

DEFAULT_EPS = 0.5  # additive smoothing, in counts: p_i = (c_i + eps) / (N + eps * B)

LAT_MIN_S = 1e-6
LAT_MAX_S = 60.0
LAT_GROWTH = 1.01
LAT_NBUCKETS = int(math.ceil(math.log(LAT_MAX_S / LAT_MIN_S) / math.log(LAT_GROWTH)))
# Bucket boundaries and midpoints: computed once here and used by both twins, so bucket choice
# and reported quantiles are bit-identical.
LAT_BOUNDS = np.array([LAT_MIN_S * LAT_GROWTH**i for i in range(LAT_NBUCKETS + 1)], dtype=np.float64)
LAT_BOUNDS[-1] = max(LAT_BOUNDS[-1], LAT_MAX_S)
LAT_MID = np.sqrt(LAT_BOUNDS[:-1] * LAT_BOUNDS[1:])
_LAT_BOUNDS_LIST = LAT_BOUNDS.tolist()  # for the scalar path: bisect on floats, same rule


def preamble(kind: int) -> bytes:
    return _PREAMBLE.pack(MAGIC, VERSION, kind)


def check_preamble(b: bytes, kind: int) -> int:
    """Validates the preamble of ``b``; returns the offset after it."""
    if len(b) < _PREAMBLE.size:
        raise ValueError("truncated sketch: no header")
    magic, version, k = _PREAMBLE.unpack_from(b, 0)
    if magic != MAGIC:
        raise ValueError(f"not a shadowgrpc sketch: bad magic {magic!r}")
    if version != VERSION:
        raise ValueError(f"unsupported sketch version {version} (expected {VERSION})")
    if k != kind:
        raise ValueError(f"wrong sketch kind {k} (expected {kind})")
    return _PREAMBLE.size


def take(b: bytes, pos: int, n: int, what: str) -> tuple[bytes, int]:
    if n < 0 or pos + n > len(b):
        raise ValueError(f"truncated sketch: {what}")
    return b[pos : pos + n], pos + n


def check_end(b: bytes, pos: int) -> None:
    if pos != len(b):
        raise ValueError(f"{len(b) - pos} trailing bytes after sketch")


def validate_edges(edges: Any) -> npt.NDArray[np.float64]:
    e = np.array(edges, dtype=np.float64, copy=True).reshape(-1) if np.ndim(edges) <= 1 else None
    if e is None:
        raise ValueError("edges must be 1-D")
    if e.size < 2:
        raise ValueError(f"edges must have at least 2 values, got {e.size}")
    if not np.all(np.isfinite(e)):
        raise ValueError("edges must be finite (no NaN or inf)")
    if not np.all(e[1:] > e[:-1]):
        raise ValueError("edges must be strictly increasing")
    return e


def as_values(values: Any, n_classes: int) -> npt.NDArray[np.float64]:
    """float32/float64 values as a 2-D float64 [rows, n_classes] array (1-D: class 0)."""
    v = np.asarray(values)
    if v.dtype not in (np.float32, np.float64):
        raise TypeError(f"values must be float32 or float64, got {v.dtype}")
    if v.ndim == 1:
        v = v[:, None]
    elif v.ndim != 2:
        raise ValueError(f"values must be 1-D or 2-D, got {v.ndim}-D")
    if v.shape[1] > n_classes:
        raise ValueError(f"values have {v.shape[1]} columns but the histogram has {n_classes} classes")
    return v.astype(np.float64, copy=False)


class Histogram:
    """Fixed-edge histogram with underflow/overflow columns, one row per class (see module doc)."""

    __slots__ = ("_counts", "_edges", "_nan")

    def __init__(self, edges: Any, n_classes: int = 1) -> None:
        if int(n_classes) < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self._edges = validate_edges(edges)
        self._counts = np.zeros((int(n_classes), self._edges.size + 1), dtype=np.int64)
        self._nan = np.zeros(int(n_classes), dtype=np.int64)

    @property
    def edges(self) -> npt.NDArray[np.float64]:
        return self._edges.copy()

    @property
    def n_classes(self) -> int:
        return int(self._counts.shape[0])

    @property
    def counts(self) -> npt.NDArray[np.int64]:
        """int64 [n_classes, nbins + 2]: column 0 underflow, last column overflow."""
        return self._counts.copy()

    @property
    def nan(self) -> npt.NDArray[np.int64]:
        return self._nan.copy()

    @property
    def nbytes(self) -> int:
        return int(self._counts.nbytes + self._nan.nbytes + self._edges.nbytes)

    def update(self, values: Any) -> None:
        v = as_values(values, self.n_classes)
        ncol = self._edges.size + 1
        for c in range(v.shape[1]):
            col = v[:, c]
            isnan = np.isnan(col)
            self._nan[c] += int(isnan.sum())
            idx = np.searchsorted(self._edges, col[~isnan], side="right")
            self._counts[c] += np.bincount(idx, minlength=ncol)

    def merge(self, other: Histogram) -> None:
        if self._counts.shape != other.counts.shape or not np.array_equal(self._edges, other.edges):
            raise ValueError("cannot merge histograms with different edges or classes")
        self._counts += other.counts
        self._nan += other.nan

    def to_bytes(self) -> bytes:
        return pack_histogram(self._edges, self._counts, self._nan)

    @classmethod
    def from_bytes(cls, b: bytes) -> Histogram:
        edges, counts, nan = unpack_histogram(b)
        h = cls(edges, counts.shape[0])
        h._set_state(counts, nan)
        return h

    def _set_state(self, counts: npt.NDArray[np.int64], nan: npt.NDArray[np.int64]) -> None:
        self._counts[...] = counts
        self._nan[...] = nan


def update_many(histograms: Sequence[Histogram], values: Sequence[Any]) -> None:
    """``histograms[i].update(values[i])`` for every i, in one call (one response's outputs)."""
    if len(values) != len(histograms):
        raise ValueError(f"{len(histograms)} histograms but {len(values)} value arrays")
    for h, v in zip(histograms, values):
        h.update(v)


def pack_histogram(edges: npt.NDArray[np.float64], counts: npt.NDArray[np.int64], nan: npt.NDArray[np.int64]) -> bytes:
    return b"".join((
        preamble(KIND_HISTOGRAM),
        _HIST_HEADER.pack(edges.size, counts.shape[0]),
        edges.astype("<f8").tobytes(),
        counts.astype("<i8").tobytes(),
        nan.astype("<i8").tobytes(),
    ))


def unpack_histogram(b: bytes) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    b = bytes(b)
    pos = check_preamble(b, KIND_HISTOGRAM)
    raw, pos = take(b, pos, _HIST_HEADER.size, "histogram header")
    ne, nc = _HIST_HEADER.unpack(raw)
    if ne < 2 or nc < 1:
        raise ValueError(f"bad histogram header: {ne} edges, {nc} classes")
    raw, pos = take(b, pos, 8 * ne, "edges")
    edges = np.frombuffer(raw, dtype="<f8").astype(np.float64)
    raw, pos = take(b, pos, 8 * nc * (ne + 1), "counts")
    counts = np.frombuffer(raw, dtype="<i8").astype(np.int64).reshape(nc, ne + 1)
    raw, pos = take(b, pos, 8 * nc, "nan counts")
    nan = np.frombuffer(raw, dtype="<i8").astype(np.int64)
    check_end(b, pos)
    return validate_edges(edges), counts, nan


class LatencySketch:
    """Log-bucketed latency histogram, 1 us .. 60 s, 1% buckets (see module doc)."""

    __slots__ = ("_counts", "clamped_high", "clamped_low", "count", "max", "nan", "sum_ns")

    def __init__(self) -> None:
        self._counts = np.zeros(LAT_NBUCKETS, dtype=np.int64)
        self.count = 0
        self.clamped_low = 0
        self.clamped_high = 0
        self.nan = 0
        self.max = 0.0
        self.sum_ns = 0

    @property
    def counts(self) -> npt.NDArray[np.int64]:
        return self._counts.copy()

    @property
    def nbytes(self) -> int:
        return int(self._counts.nbytes) + 64

    @property
    def mean(self) -> float:
        return float(self.sum_ns) / self.count / 1e9 if self.count else math.nan

    def record(self, seconds: float) -> None:
        # Scalar path (one latency per request, on the live path): the rule of record_many
        # without its array allocations (34 us per call through record_many, ~1 us here).
        v = float(seconds)
        if v != v:
            self.nan += 1
            return
        if v < LAT_MIN_S:
            self.clamped_low += 1
        elif v >= LAT_MAX_S:
            self.clamped_high += 1
        if v > self.max:
            self.max = v
        i = bisect.bisect_right(_LAT_BOUNDS_LIST, v) - 1
        self._counts[0 if i < 0 else min(i, LAT_NBUCKETS - 1)] += 1
        self.sum_ns += round(min(max(v, LAT_MIN_S), LAT_MAX_S) * 1e9)  # half-even, as np.rint
        self.count += 1

    def record_many(self, values: Any) -> None:
        v = np.asarray(values)
        if v.dtype not in (np.float32, np.float64):
            v = v.astype(np.float64)
        v = v.reshape(-1).astype(np.float64, copy=False)
        isnan = np.isnan(v)
        self.nan += int(isnan.sum())
        v = v[~isnan]
        if v.size == 0:
            return
        low = v < LAT_MIN_S
        high = v >= LAT_MAX_S
        self.clamped_low += int(low.sum())
        self.clamped_high += int(high.sum())
        self.max = max(self.max, float(v.max()))
        idx = np.clip(np.searchsorted(LAT_BOUNDS, v, side="right") - 1, 0, LAT_NBUCKETS - 1)
        self._counts += np.bincount(idx, minlength=LAT_NBUCKETS)
        clamped = np.minimum(np.maximum(v, LAT_MIN_S), LAT_MAX_S)
        self.sum_ns += int(np.rint(clamped * 1e9).astype(np.int64).sum())
        self.count += int(v.size)

    def quantile(self, q: float) -> float:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            return math.nan
        k = max(1, min(self.count, math.ceil(q * self.count)))
        i = int(np.searchsorted(np.cumsum(self._counts), k, side="left"))
        return float(LAT_MID[i])

    def quantiles(self, qs: Any) -> list[float]:
        return [self.quantile(float(q)) for q in qs]

    def merge(self, other: LatencySketch) -> None:
        self._counts += other.counts
        self.count += other.count
        self.clamped_low += other.clamped_low
        self.clamped_high += other.clamped_high
        self.nan += other.nan
        self.max = max(self.max, other.max)
        self.sum_ns += other.sum_ns

    def to_bytes(self) -> bytes:
        return pack_latency(self._counts, self.count, self.clamped_low, self.clamped_high, self.nan, self.max, self.sum_ns)

    @classmethod
    def from_bytes(cls, b: bytes) -> LatencySketch:
        counts, count, low, high, nan, mx, sum_ns = unpack_latency(b)
        s = cls()
        s._set_state(counts, count, low, high, nan, mx, sum_ns)
        return s

    def _set_state(self, counts: Any, count: int, low: int, high: int, nan: int, mx: float, sum_ns: int) -> None:
        self._counts[...] = counts
        self.count, self.clamped_low, self.clamped_high, self.nan, self.max, self.sum_ns = count, low, high, nan, mx, sum_ns


def pack_latency(counts: Any, count: int, low: int, high: int, nan: int, mx: float, sum_ns: int) -> bytes:
    return b"".join((
        preamble(KIND_LATENCY),
        _LAT_HEADER.pack(LAT_NBUCKETS, count, low, high, nan, mx, sum_ns),
        np.asarray(counts).astype("<i8").tobytes(),
    ))


def unpack_latency(b: bytes) -> tuple[Any, int, int, int, int, float, int]:
    b = bytes(b)
    pos = check_preamble(b, KIND_LATENCY)
    raw, pos = take(b, pos, _LAT_HEADER.size, "latency header")
    nb, count, low, high, nan, mx, sum_ns = _LAT_HEADER.unpack(raw)
    if nb != LAT_NBUCKETS:
        raise ValueError(f"latency sketch has {nb} buckets, expected {LAT_NBUCKETS}")
    raw, pos = take(b, pos, 8 * nb, "latency buckets")
    check_end(b, pos)
    counts = np.frombuffer(raw, dtype="<i8").astype(np.int64)
    if int(counts.sum()) != count:
        raise ValueError("corrupt latency sketch: bucket counts do not add up to count")
    return counts, count, low, high, nan, mx, sum_ns


def divergences(p_counts: Any, q_counts: Any, eps: float = DEFAULT_EPS, edges: Any = None) -> dict[str, float]:
    """Divergences between two histograms' counts (1-D, all B columns incl. underflow/overflow).

    Both are smoothed: p_i = (c_i + eps) / (N + eps * B) (eps in counts, default 0.5; eps = 0
    gives raw frequencies and may yield inf). Then, natural log except JS:
    ``kl_pq`` = sum p ln(p/q); ``kl_qp`` = sum q ln(q/p); ``js`` = Jensen-Shannon divergence in
    bits (base 2, in [0, 1]) with m = (p+q)/2; ``psi`` = sum (p-q) ln(p/q); ``tv`` = sum |p-q| / 2;
    ``w1`` = sum_{k<B-1} |P_k - Q_k| * (x_{k+1} - x_k), P, Q the cumulative sums, x_k = k without
    ``edges``; with ``edges`` (len B-1) the underflow column sits at edges[0], bin i at its midpoint
    and overflow at edges[-1]. Terms with p_i = 0 (or q_i = 0) contribute 0 to sums of x ln(x/y);
    x ln(x/y) is computed as x * (ln x - ln y) (three logs per bin).
    Bins are summed left to right in this exact order in both twins.
    """
    p = np.ascontiguousarray(p_counts, dtype=np.float64).reshape(-1)
    q = np.ascontiguousarray(q_counts, dtype=np.float64).reshape(-1)
    if p.size != q.size or p.size == 0:
        raise ValueError(f"histograms must have the same non-zero number of bins, got {p.size} and {q.size}")
    pos = positions(p.size, edges)
    return divergences_ref(p.tolist(), q.tolist(), float(eps), pos.tolist())


def positions(nb: int, edges: Any) -> npt.NDArray[np.float64]:
    if edges is None:
        return np.arange(nb, dtype=np.float64)
    e = validate_edges(edges)
    if e.size != nb - 1:
        raise ValueError(f"edges must have {nb - 1} values for {nb} columns, got {e.size}")
    return np.concatenate(([e[0]], (e[:-1] + e[1:]) * 0.5, [e[-1]]))


def divergences_ref(p: list[float], q: list[float], eps: float, pos: list[float]) -> dict[str, float]:
    if eps < 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    b = len(p)
    np_ = 0.0
    nq = 0.0
    for i in range(b):
        np_ += p[i]
        nq += q[i]
    dp = 1.0 / (np_ + eps * b) if np_ + eps * b > 0 else 0.0
    dq = 1.0 / (nq + eps * b) if nq + eps * b > 0 else 0.0
    kl_pq = kl_qp = js = psi = tv = w1 = 0.0
    cp = cq = 0.0
    inf = math.inf
    for i in range(b):
        pi = (p[i] + eps) * dp
        qi = (q[i] + eps) * dq
        mi = 0.5 * (pi + qi)
        lp = math.log(pi) if pi > 0.0 else 0.0
        lq = math.log(qi) if qi > 0.0 else 0.0
        lm = math.log(mi) if mi > 0.0 else 0.0
        if pi > 0.0:
            kl_pq += pi * (lp - lq) if qi > 0.0 else inf
            js += pi * (lp - lm)
        if qi > 0.0:
            kl_qp += qi * (lq - lp) if pi > 0.0 else inf
            js += qi * (lq - lm)
        if pi > 0.0 and qi > 0.0:
            psi += (pi - qi) * (lp - lq)
        elif pi != qi:
            psi = inf
        tv += abs(pi - qi)
        cp += pi
        cq += qi
        if i + 1 < b:
            w1 += abs(cp - cq) * (pos[i + 1] - pos[i])
    return {"kl_pq": kl_pq, "kl_qp": kl_qp, "js": js * 0.5 / math.log(2.0), "psi": psi, "tv": 0.5 * tv, "w1": w1}



# --- paired statistics (live vs shadow, row by row) ----------------------------------------------

_I64 = struct.Struct("<q")


class LabelAgreement:
    """Classifier top-1 agreement: live x shadow confusion matrix, int64 [n, n] (8 * n**2 bytes).
    Rows whose label is outside [0, n) on either side are counted in ``invalid``."""

    __slots__ = ("confusion", "invalid")

    def __init__(self, n_classes: int) -> None:
        if int(n_classes) < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.confusion = np.zeros((int(n_classes), int(n_classes)), dtype=np.int64)
        self.invalid = 0

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def agreement(self) -> float:
        n = self.count
        return float(np.trace(self.confusion)) / n if n else math.nan

    def update_labels(self, live: Any, shadow: Any) -> None:
        a = np.asarray(live).reshape(-1).astype(np.int64)
        b = np.asarray(shadow).reshape(-1).astype(np.int64)
        if a.shape != b.shape:
            raise ValueError(f"live and shadow have {a.size} and {b.size} labels")
        n = self.confusion.shape[0]
        ok = (a >= 0) & (a < n) & (b >= 0) & (b < n)
        self.invalid += int(a.size - ok.sum())
        self.confusion += np.bincount(a[ok] * n + b[ok], minlength=n * n).reshape(n, n)

    def update_probs(self, live_probs: Any, shadow_probs: Any) -> None:
        """argmax over the last axis (first maximum wins, as numpy.argmax)."""
        self.update_labels(np.argmax(np.asarray(live_probs), axis=-1), np.argmax(np.asarray(shadow_probs), axis=-1))

    def merge(self, other: LabelAgreement) -> None:
        if other.confusion.shape != self.confusion.shape:
            raise ValueError("cannot merge label agreements with different class counts")
        self.confusion += other.confusion
        self.invalid += other.invalid

    def to_bytes(self) -> bytes:
        n = self.confusion.shape[0]
        return preamble(KIND_LABELS) + struct.pack("<Iq", n, self.invalid) + self.confusion.astype("<i8").tobytes()

    @classmethod
    def from_bytes(cls, b: bytes) -> LabelAgreement:
        b = bytes(b)
        pos = check_preamble(b, KIND_LABELS)
        raw, pos = take(b, pos, 12, "label header")
        n, invalid = struct.unpack("<Iq", raw)
        if n < 1:
            raise ValueError("bad label agreement header")
        raw, pos = take(b, pos, 8 * n * n, "confusion matrix")
        check_end(b, pos)
        s = cls(n)
        s.confusion[...] = np.frombuffer(raw, dtype="<i8").reshape(n, n)
        s.invalid = invalid
        return s


class BinaryAgreement:
    """Thresholded agreement of binary scores: 2x2 confusion of (live >= t, shadow >= t); rows with
    NaN on either side are counted in ``invalid`` (48 bytes)."""

    __slots__ = ("confusion", "invalid", "threshold")

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = float(threshold)
        self.confusion = np.zeros((2, 2), dtype=np.int64)
        self.invalid = 0

    @property
    def agreement(self) -> float:
        n = int(self.confusion.sum())
        return float(self.confusion[0, 0] + self.confusion[1, 1]) / n if n else math.nan

    def update_binary(self, live: Any, shadow: Any) -> None:
        a = np.asarray(live, dtype=np.float64).reshape(-1)
        b = np.asarray(shadow, dtype=np.float64).reshape(-1)
        if a.shape != b.shape:
            raise ValueError(f"live and shadow have {a.size} and {b.size} scores")
        ok = ~(np.isnan(a) | np.isnan(b))
        self.invalid += int(a.size - ok.sum())
        ia = (a[ok] >= self.threshold).astype(np.int64)
        ib = (b[ok] >= self.threshold).astype(np.int64)
        self.confusion += np.bincount(ia * 2 + ib, minlength=4).reshape(2, 2)

    def merge(self, other: BinaryAgreement) -> None:
        if other.threshold != self.threshold:
            raise ValueError("cannot merge binary agreements with different thresholds")
        self.confusion += other.confusion
        self.invalid += other.invalid

    def to_bytes(self) -> bytes:
        return preamble(KIND_BINARY) + struct.pack("<dq", self.threshold, self.invalid) + self.confusion.astype("<i8").tobytes()

    @classmethod
    def from_bytes(cls, b: bytes) -> BinaryAgreement:
        b = bytes(b)
        pos = check_preamble(b, KIND_BINARY)
        raw, pos = take(b, pos, 16 + 32, "binary agreement")
        check_end(b, pos)
        t, invalid = struct.unpack_from("<dq", raw)
        s = cls(t)
        s.invalid = invalid
        s.confusion[...] = np.frombuffer(raw[16:], dtype="<i8").reshape(2, 2)
        return s


class RegressionAgreement:
    """Rows with |live - shadow| <= atol + rtol * |shadow| (``within`` of ``count``; NaN on either
    side counts in ``invalid``), and a LatencySketch of |live - shadow| for error quantiles
    (1e-6 .. 60 output units, 1% buckets, clamped outside; ~14.5 KiB)."""

    __slots__ = ("atol", "count", "errors", "invalid", "rtol", "within")

    def __init__(self, atol: float = 1e-6, rtol: float = 1e-3) -> None:
        self.atol, self.rtol = float(atol), float(rtol)
        self.count = self.within = self.invalid = 0
        self.errors = LatencySketch()

    def update_regression(self, live: Any, shadow: Any) -> None:
        a = np.asarray(live, dtype=np.float64).reshape(-1)
        b = np.asarray(shadow, dtype=np.float64).reshape(-1)
        if a.shape != b.shape:
            raise ValueError(f"live and shadow have {a.size} and {b.size} values")
        ok = ~(np.isnan(a) | np.isnan(b))
        self.invalid += int(a.size - ok.sum())
        a, b = a[ok], b[ok]
        with np.errstate(invalid="ignore"):
            err = np.abs(a - b)
            self.within += int((err <= self.atol + self.rtol * np.abs(b)).sum())
        self.count += int(a.size)
        self.errors.record_many(err)

    def merge(self, other: RegressionAgreement) -> None:
        if (other.atol, other.rtol) != (self.atol, self.rtol):
            raise ValueError("cannot merge regression agreements with different tolerances")
        self.count += other.count
        self.within += other.within
        self.invalid += other.invalid
        self.errors.merge(other.errors)

    def to_bytes(self) -> bytes:
        return preamble(KIND_REGRESSION) + struct.pack("<ddqqq", self.atol, self.rtol, self.count, self.within, self.invalid) + self.errors.to_bytes()

    @classmethod
    def from_bytes(cls, b: bytes) -> RegressionAgreement:
        b = bytes(b)
        pos = check_preamble(b, KIND_REGRESSION)
        raw, pos = take(b, pos, 40, "regression header")
        atol, rtol, count, within, invalid = struct.unpack("<ddqqq", raw)
        s = cls(atol, rtol)
        s.count, s.within, s.invalid = count, within, invalid
        s.errors = LatencySketch.from_bytes(b[pos:])
        return s


_COS_SCALE = 2.0**32  # cosines summed exactly in fixed point (2**-32 units): mean error < 2.4e-10


class CosineStats:
    """Embedding cosine similarity per row: count, exact mean (fixed-point sum), min, and a
    200-bin Histogram over [-1, 1] (~1.7 KiB). Rows with a zero norm or NaN count in ``invalid``."""

    __slots__ = ("count", "hist", "invalid", "min", "sum_fixed")

    def __init__(self) -> None:
        self.count = self.invalid = self.sum_fixed = 0
        self.min = math.inf
        self.hist = Histogram(np.linspace(-1.0, 1.0, 201))

    @property
    def mean(self) -> float:
        return self.sum_fixed / _COS_SCALE / self.count if self.count else math.nan

    def update_embeddings(self, live: Any, shadow: Any) -> None:
        a = np.asarray(live, dtype=np.float64)
        b = np.asarray(shadow, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"live and shadow shapes differ: {a.shape} vs {b.shape}")
        a = a.reshape(a.shape[0] if a.ndim > 1 else 1, -1)
        b = b.reshape(a.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        ok = np.isfinite(cos)
        self.invalid += int(cos.size - ok.sum())
        cos = np.clip(cos[ok], -1.0, 1.0)
        if cos.size:
            self.count += int(cos.size)
            self.min = min(self.min, float(cos.min()))
            self.sum_fixed += int(np.rint(cos * _COS_SCALE).astype(np.int64).sum())
            self.hist.update(cos)

    def merge(self, other: CosineStats) -> None:
        self.count += other.count
        self.invalid += other.invalid
        self.sum_fixed += other.sum_fixed
        self.min = min(self.min, other.min)
        self.hist.merge(other.hist)

    def to_bytes(self) -> bytes:
        return preamble(KIND_COSINE) + struct.pack("<qqqd", self.count, self.invalid, self.sum_fixed, self.min) + self.hist.to_bytes()

    @classmethod
    def from_bytes(cls, b: bytes) -> CosineStats:
        b = bytes(b)
        pos = check_preamble(b, KIND_COSINE)
        raw, pos = take(b, pos, 32, "cosine header")
        s = cls()
        s.count, s.invalid, s.sum_fixed, s.min = struct.unpack("<qqqd", raw)
        s.hist = Histogram.from_bytes(b[pos:])
        return s
