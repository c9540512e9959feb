"""Ground truth: live/shadow prediction pairs wait (bounded) for outcomes that arrive later.

Pairs are kept only for requests that carry an id. The store is bounded by entries and by age;
evictions are counted. An outcome for an unknown, expired or already-answered id is counted, never
an error. With outcomes, both models are scored against the truth, separately:
- classifiers (a float output whose last axis has >1 class): accuracy, Brier score, expected
  calibration error (10 equal-width confidence bins on the top-1 probability), and the
  disagreement breakdown: shadow right & live wrong (improvement), live right & shadow wrong
  (regression), both wrong, both right; Wilson 95% intervals on the rates;
- other numeric outputs (regression): mean absolute error of each.
Each configured slice (slices.py) keeps the same scores per bucket, from the bucket of each row
recorded with the pair when it was compared.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .stats import from_exact, to_exact

ECE_BINS = 10


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95% by default); (0, 0) when n == 0."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(slots=True)
class Scores:
    """One model's score against the truth (classifier or regression). Float sums are kept
    exact (``stats.to_exact``) so that replicas merge to the same numbers as one front."""

    rows: int = 0
    correct: int = 0
    brier_fx: int = 0
    abs_err_fx: int = 0
    conf_count: np.ndarray = field(default_factory=lambda: np.zeros(ECE_BINS, np.int64))
    conf_fx: list[int] = field(default_factory=lambda: [0] * ECE_BINS)
    hit_count: np.ndarray = field(default_factory=lambda: np.zeros(ECE_BINS, np.int64))

    @property
    def brier_sum(self) -> float:
        return from_exact(self.brier_fx)

    @property
    def abs_err_sum(self) -> float:
        return from_exact(self.abs_err_fx)

    @property
    def conf_sum(self) -> np.ndarray:
        return np.array([from_exact(v) for v in self.conf_fx])

    def add_classifier(self, probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        pred = probs.argmax(axis=1)
        hit = pred == labels
        onehot = np.zeros_like(probs, dtype=np.float64)
        onehot[np.arange(len(labels)), labels] = 1.0
        conf = probs.max(axis=1).astype(np.float64)
        b = np.minimum((conf * ECE_BINS).astype(np.int64), ECE_BINS - 1)
        self.conf_count += np.bincount(b, minlength=ECE_BINS)
        self.hit_count += np.bincount(b, weights=hit, minlength=ECE_BINS).astype(np.int64)
        for k, v in enumerate(np.bincount(b, weights=conf, minlength=ECE_BINS)):
            if v:
                self.conf_fx[k] += to_exact(v)
        self.rows += len(labels)
        self.correct += int(hit.sum())
        self.brier_fx += to_exact(((probs - onehot) ** 2).sum())
        return hit

    def add_regression(self, pred: np.ndarray, values: np.ndarray) -> None:
        self.rows += len(values)
        self.abs_err_fx += to_exact(np.abs(pred.astype(np.float64) - values).sum())

    @property
    def ece(self) -> float:
        n = self.conf_count.sum()
        if n == 0:
            return 0.0
        nz = self.conf_count > 0
        gaps = np.abs(self.conf_sum[nz] - self.hit_count[nz])  # = count * |mean conf - accuracy|
        return float(gaps.sum() / n)


@dataclass(slots=True)
class OutcomeStats:
    """Per (route, shadow target)."""

    kind: str = ""
    live: Scores = field(default_factory=Scores)
    shadow: Scores = field(default_factory=Scores)
    improvements: int = 0  # shadow right, live wrong
    regressions: int = 0  # live right, shadow wrong
    both_right: int = 0
    both_wrong: int = 0
    shape_mismatch: int = 0  # outcome rows != prediction rows
    slices: list[list[OutcomeStats | None]] = field(default_factory=list)  # [slice][bucket]

    def bucket(self, i: int, b: int, n_buckets: int) -> OutcomeStats:
        while len(self.slices) <= i:
            self.slices.append([])
        row = self.slices[i]
        if not row:
            row.extend([None] * n_buckets)
        o = row[b]
        if o is None:
            o = row[b] = OutcomeStats()
        return o


@dataclass(slots=True)
class Pair:
    route: str
    live: np.ndarray  # primary output, rows x classes (or rows x 1)
    shadows: dict[str, np.ndarray]
    born: float
    slices: list  # per route slice: each row's bucket (np.ndarray) or None (unreadable)


class PairStore:
    """request id -> Pair, at most ``max_pairs`` entries, each at most ``ttl_s`` old."""

    def __init__(self, max_pairs: int = 50_000, ttl_s: float = 600.0) -> None:
        self.max_pairs = max_pairs
        self.ttl_s = ttl_s
        self._pairs: OrderedDict[str, Pair] = OrderedDict()
        self._answered: OrderedDict[str, None] = OrderedDict()  # for "duplicate", bounded likewise
        self.evicted_full = 0
        self.evicted_expired = 0
        self.stored = 0

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, request_id: str, route: str, target: str, live: np.ndarray, shadow: np.ndarray, slices: list = ()) -> None:
        now = time.monotonic()
        self._expire(now)
        p = self._pairs.get(request_id)
        if p is None or p.route != route:
            if p is None:
                while len(self._pairs) >= self.max_pairs:
                    self._pairs.popitem(last=False)
                    self.evicted_full += 1
            p = self._pairs[request_id] = Pair(route, live.copy(), {}, now, list(slices))
            self.stored += 1
        p.shadows[target] = shadow.copy()

    def take(self, request_id: str) -> tuple[Pair | None, bool]:
        """(pair, duplicate): the pair is removed; ``duplicate`` when it was answered before."""
        self._expire(time.monotonic())
        p = self._pairs.pop(request_id, None)
        if p is None:
            return None, request_id in self._answered
        self._answered[request_id] = None
        while len(self._answered) > self.max_pairs:
            self._answered.popitem(last=False)
        return p, False

    def _expire(self, now: float) -> None:
        while self._pairs:
            rid, p = next(iter(self._pairs.items()))
            if now - p.born <= self.ttl_s:
                break
            del self._pairs[rid]
            self.evicted_expired += 1


def score(
    stats: OutcomeStats,
    live: np.ndarray,
    shadow: np.ndarray,
    labels: np.ndarray | None,
    values: np.ndarray | None,
    slices: tuple = (),
    buckets: list = (),
) -> bool:
    """Score one pair against its outcome, overall and per slice bucket (``slices``: the route's
    Slice configs; ``buckets``: the pair's bucket per row for each); False when the outcome's rows
    or classes do not fit the predictions."""
    if not _score(stats, live, shadow, labels, values):
        return False
    rows = live.shape[0]
    for i, sl in enumerate(slices):
        n = len(sl.buckets)
        b = buckets[i] if i < len(buckets) else None
        if b is None or len(b) != rows:
            b = np.full(rows, n - 1, dtype=np.int16)  # "missing"
        for k in np.unique(b):
            m = b == k
            _score(
                stats.bucket(i, int(k), n),
                live[m],
                shadow[m],
                labels[m] if labels is not None else None,
                values[m] if values is not None else None,
            )
    return True


def _score(stats: OutcomeStats, live: np.ndarray, shadow: np.ndarray, labels: np.ndarray | None, values: np.ndarray | None) -> bool:
    """Score one pair against its outcome; False when the outcome's rows do not match."""
    rows = live.shape[0]
    classifier = live.ndim == 2 and live.shape[1] > 1
    if classifier:
        if labels is None or len(labels) != rows or labels.min(initial=0) < 0 or labels.max(initial=0) >= live.shape[1]:
            stats.shape_mismatch += 1
            return False
        stats.kind = "classifier"
        lh = stats.live.add_classifier(live, labels)
        sh = stats.shadow.add_classifier(shadow, labels)
        stats.improvements += int((sh & ~lh).sum())
        stats.regressions += int((lh & ~sh).sum())
        stats.both_right += int((lh & sh).sum())
        stats.both_wrong += int((~lh & ~sh).sum())
        return True
    truth = values if values is not None else (labels.astype(np.float64) if labels is not None else None)
    if truth is None or len(truth) != rows:
        stats.shape_mismatch += 1
        return False
    stats.kind = "regression"
    stats.live.add_regression(live.reshape(rows, -1)[:, 0], truth)
    stats.shadow.add_regression(shadow.reshape(rows, -1)[:, 0], truth)
    return True
