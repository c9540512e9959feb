"""Streaming sketches, pure-numpy reference, part 1: ``Histogram`` (with ``update_many``),
``LatencySketch`` and the byte format that every sketch shares (preamble, framing helpers).

The rules are in ``shadowgrpc.sketches._py``, which re-exports the public names; the compiled twin
``ext/shadowgrpc/sketches/_core_c.pyx`` shares this module's validation, bucket tables and
(de)serialisation, so its bytes are identical by construction.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

MAGIC = b"SGSK"
VERSION = 1
KIND_HISTOGRAM, KIND_LATENCY, KIND_LABELS, KIND_BINARY, KIND_REGRESSION, KIND_COSINE = 1, 2, 3, 4, 5, 6
_PREAMBLE = struct.Struct("<4sHH")
_HIST_HEADER = struct.Struct("<II")  # n_edges, n_classes
_LAT_HEADER = struct.Struct("<Iqqqqdq")  # n_buckets, count, clamped_low, clamped_high, nan, max, sum_ns

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
