"""Streaming sketches, pure-numpy reference, part 3: paired statistics of live vs shadow, row by
row (``LabelAgreement``, ``BinaryAgreement``, ``RegressionAgreement``, ``CosineStats``).

The compiled twin (ext/shadowgrpc/sketches/_paired_c.pyx) counts contiguous float / int inputs in
nogil kernels that repeat these numpy calls operation for operation, and runs this module's own
methods on its objects for everything else (``merge``, ``to_bytes``, ``from_bytes``, ``count``,
``agreement``, ``mean``, and updates of other inputs): so these methods read only the attributes
in ``__slots__`` and assign only those they assign now, as the compiled classes allow."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from ._core_py import (
    KIND_BINARY,
    KIND_COSINE,
    KIND_LABELS,
    KIND_REGRESSION,
    Histogram,
    LatencySketch,
    check_end,
    check_preamble,
    preamble,
    take,
)


def _without_nan(live: Any, shadow: Any, what: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int]:
    """``live`` and ``shadow`` flattened to float64, less the rows that are NaN on either side, and
    the number of those rows."""
    a = np.asarray(live, dtype=np.float64).reshape(-1)
    b = np.asarray(shadow, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"live and shadow have {a.size} and {b.size} {what}")
    ok = ~(np.isnan(a) | np.isnan(b))
    return a[ok], b[ok], int(a.size - ok.sum())


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
        a, b, invalid = _without_nan(live, shadow, "scores")
        self.invalid += invalid
        ia = (a >= self.threshold).astype(np.int64)
        ib = (b >= self.threshold).astype(np.int64)
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
        a, b, invalid = _without_nan(live, shadow, "values")
        self.invalid += invalid
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
