"""Ground truth: live/shadow prediction pairs wait (bounded) for outcomes that arrive later.

Pairs are kept only for requests that carry an id. The store is bounded by entries and by age;
evictions are counted. An outcome for an unknown, expired or already-answered id is counted, never an
error. With outcomes, both models are scored against the truth, separately:
- classifiers (a float output whose last axis has >1 class): accuracy, Brier score, expected
  calibration error (10 equal-width confidence bins on the top-1 probability), and the
  disagreement breakdown: shadow right & live wrong (improvement), live right & shadow wrong
  (regression), both wrong, both right; Wilson 95% intervals on the rates;
- other numeric outputs (regression): mean absolute error of each.
Each configured slice (slices.py) keeps the same scores per bucket (rows' buckets kept with the pair).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .stats import from_exact, to_exact

ECE_BINS = 10

_SMALL = 64  # up to this many values, checked in Python (numpy's per-call cost dominates there)
_INF = float("inf")


def valid_rows(x: np.ndarray, probabilities: bool, classes: int = 0) -> np.ndarray:
    """Per row (first axis) of an output: every value finite and, for probabilities, within
    [0, 1]; for an integer label output with ``classes``, every label within [0, classes)."""
    x2 = x.reshape(x.shape[0], -1) if x.ndim else x.reshape(1, 1)
    if _all_valid(x2, probabilities, classes):
        return np.ones(x2.shape[0], dtype=bool)
    return _row_mask(x2, probabilities, classes)


def invalid_rows(x2: np.ndarray, probabilities: bool, classes: int = 0) -> int:
    """How many rows of ``x2`` (rows x values) are not valid (see ``valid_rows``). The common case,
    every value fine, costs one pass and no per-row array."""
    if _all_valid(x2, probabilities, classes):
        return 0
    return int(x2.shape[0] - _row_mask(x2, probabilities, classes).sum())


def _all_valid(x2: np.ndarray, probabilities: bool, classes: int) -> bool:
    """Every value of ``x2`` valid: in Python for small answers (where numpy's per-call overhead
    is larger than the work), else one or two reductions."""
    kind = x2.dtype.kind
    if x2.size == 0 or (kind != "f" and not (kind in "iu" and classes)):
        return True
    if x2.size <= _SMALL:
        flat = x2.ravel().tolist()
        if kind != "f":
            return all(0 <= v < classes for v in flat)
        # NaN fails every comparison, so it never passes
        return all(0.0 <= v <= 1.0 for v in flat) if probabilities else all(-_INF < v < _INF for v in flat)
    if kind != "f":
        return bool(x2.min() >= 0 and x2.max() < classes)
    if probabilities:
        return bool(x2.min() >= 0.0 and x2.max() <= 1.0)  # NaN propagates: the comparisons fail
    return bool(np.isfinite(x2).all())


def _row_mask(x2: np.ndarray, probabilities: bool, classes: int) -> np.ndarray:
    """Per row of ``x2``: valid (the slow path, for answers that hold an invalid value)."""
    if x2.dtype.kind != "f":
        return ((x2 >= 0) & (x2 < classes)).all(axis=1)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(x2)
        if probabilities:
            ok &= (x2 >= 0.0) & (x2 <= 1.0)
    return ok.all(axis=1)


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
    invalid: int = 0  # rows whose prediction was NaN, inf or out of range (scored as wrong)

    @property
    def brier_sum(self) -> float:
        return from_exact(self.brier_fx)

    @property
    def abs_err_sum(self) -> float:
        return from_exact(self.abs_err_fx)

    @property
    def conf_sum(self) -> np.ndarray:
        return np.array([from_exact(v) for v in self.conf_fx])

    def add_classifier(self, probs: np.ndarray, labels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Score rows of class scores against ``labels``; rows not ``valid`` (NaN, inf, a
        probability outside [0, 1]) are wrong predictions, with the worst Brier score (2) and no
        calibration bin. Returns the per-row hit mask."""
        if valid is None:
            valid = valid_rows(probs, probabilities=False)
        with np.errstate(invalid="ignore"):
            pred = np.where(np.isnan(probs), -np.inf, probs).argmax(axis=1)
        hit = (pred == labels) & valid
        rows = len(labels)
        self.rows += rows
        self.correct += int(hit.sum())
        bad = rows - int(valid.sum())
        self.invalid += bad
        if bad:
            probs, labels, vhit = probs[valid], labels[valid], hit[valid]
        else:
            vhit = hit
        onehot = np.zeros(probs.shape, dtype=np.float64)
        onehot[np.arange(len(labels)), labels] = 1.0
        conf = probs.max(axis=1).astype(np.float64) if len(labels) else np.zeros(0)
        b = np.clip((conf * ECE_BINS).astype(np.int64), 0, ECE_BINS - 1)
        self.conf_count += np.bincount(b, minlength=ECE_BINS)
        self.hit_count += np.bincount(b, weights=vhit, minlength=ECE_BINS).astype(np.int64)
        for k, v in enumerate(np.bincount(b, weights=conf, minlength=ECE_BINS)):
            if v:
                self.conf_fx[k] += to_exact(v)
        self.brier_fx += to_exact(((probs - onehot) ** 2).sum() + 2.0 * bad)
        return hit

    def add_regression(self, pred: np.ndarray, values: np.ndarray) -> None:
        """Absolute errors of finite predictions; NaN/inf predictions count in ``invalid`` (their
        error is unbounded: the invalid-output gate judges them) and not in the MAE."""
        pred = pred.astype(np.float64)
        ok = np.isfinite(pred)
        self.rows += len(values)
        self.invalid += int(len(values) - ok.sum())
        self.abs_err_fx += to_exact(np.abs(pred[ok] - values[ok]).sum())

    @property
    def valid_rows(self) -> int:
        return self.rows - self.invalid

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
class PairCounts:
    """The pair store's counters (outcomes.PairStore keeps them here)."""

    waiting: int = 0
    stored: int = 0
    evicted_full: int = 0
    evicted_expired: int = 0
    max_pairs: int = 0
    ttl_s: float = 0.0
    evicted_bytes: int = 0
    bytes: int = 0
    max_bytes: int = 0
    reused_ids: int = 0


@dataclass(slots=True)
class Pair:
    route: str
    token: int  # the request this pair belongs to (a per-request sequence number, never its id string)
    live: np.ndarray | None  # primary output, rows x classes (or rows x 1); None once reused
    shadows: dict[str, np.ndarray]
    born: float
    slices: list  # per route slice: each row's bucket (np.ndarray) or None (unreadable)
    probabilities: bool = False  # the primary output holds probabilities (range checked)
    nbytes: int = 0
    reused: bool = False  # another waiting request carried the same id: not joinable


# A waiting pair's cost besides its arrays (Pair, id, dict slots, headers: ~1 KB by tracemalloc in
# benchmarks/soak.py; per shadow a header and a slot), counted so that max_bytes bounds it all.
PAIR_OVERHEAD, SHADOW_OVERHEAD = 1024, 128


class PairStore:
    """request id -> Pair, at most ``max_pairs`` entries and ``max_bytes`` (predictions and their
    overhead), each at most ``ttl_s`` old; the oldest go first, counted by reason.

    A pair belongs to one request (its ``token``), never to an id string: when a second request
    arrives with an id that is still waiting, an outcome for that id could belong to either, so
    the id is marked reused (its predictions dropped, ``reused_ids`` counted) and an outcome for
    it is answered "reused" instead of scoring one request's live answer against another's."""

    def __init__(self, max_pairs: int = 50_000, ttl_s: float = 600.0, max_bytes: int = 256 << 20, counts: PairCounts | None = None) -> None:
        self.counts = counts if counts is not None else PairCounts()
        self.counts.max_pairs, self.counts.ttl_s, self.counts.max_bytes = max_pairs, ttl_s, max_bytes
        self.max_pairs = max_pairs
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._pairs: OrderedDict[str, Pair] = OrderedDict()
        self._answered: OrderedDict[str, None] = OrderedDict()  # for "duplicate", bounded likewise

    def __len__(self) -> int:
        return len(self._pairs)

    def holds(self, request_id: str) -> bool:
        """A pair waits for the id, or its outcome was taken (``serve --workers`` routes by it)."""
        return request_id in self._pairs or request_id in self._answered

    def _count_waiting(self) -> None:
        self.counts.waiting = len(self._pairs)

    def add(
        self,
        request_id: str,
        token: int,
        route: str,
        target: str,
        live: np.ndarray,
        shadow: np.ndarray,
        slices: list = (),  # type: ignore[assignment]
        probabilities: bool = False,
    ) -> None:
        now = time.monotonic()
        self._expire(now)
        p = self._pairs.get(request_id)
        if p is not None and p.token != token:
            # A second request with a waiting id: which one an outcome belongs to is unknowable.
            self.counts.reused_ids += 1
            if not p.reused:
                self._drop_arrays(p)
                p.reused = True
            p.token = token
            return
        if p is not None and p.reused:
            return
        if p is None:
            while self._pairs and len(self._pairs) >= self.max_pairs:
                self._evict_oldest()
                self.counts.evicted_full += 1
            p = self._pairs[request_id] = Pair(route, token, live.copy(), {}, now, list(slices), probabilities)
            p.nbytes = PAIR_OVERHEAD + p.live.nbytes  # type: ignore[union-attr]
            self.counts.bytes += p.nbytes
            self.counts.stored += 1
        old = p.shadows.get(target)
        if old is not None:
            p.nbytes -= SHADOW_OVERHEAD + old.nbytes
            self.counts.bytes -= SHADOW_OVERHEAD + old.nbytes
        p.shadows[target] = shadow.copy()
        p.nbytes += SHADOW_OVERHEAD + shadow.nbytes
        self.counts.bytes += SHADOW_OVERHEAD + shadow.nbytes
        while self.counts.bytes > self.max_bytes and self._pairs:
            self._evict_oldest()
            self.counts.evicted_bytes += 1
        self._count_waiting()

    def take(self, request_id: str) -> tuple[Pair | None, str]:
        """(pair, why): the pair is removed; without one, why is "duplicate" (answered before),
        "reused" (the id was carried by several requests) or "unknown"."""
        self._expire(time.monotonic())
        p = self._pairs.pop(request_id, None)
        self._count_waiting()
        if p is None:
            return None, "duplicate" if request_id in self._answered else "unknown"
        self.counts.bytes -= p.nbytes
        self._answered[request_id] = None
        while len(self._answered) > max(self.max_pairs, 1):
            self._answered.popitem(last=False)
        if p.reused:
            return None, "reused"
        return p, ""

    def _drop_arrays(self, p: Pair) -> None:  # the pair itself stays (to answer "reused")
        self.counts.bytes -= p.nbytes - PAIR_OVERHEAD
        p.nbytes = PAIR_OVERHEAD
        p.live = None
        p.shadows.clear()

    def _evict_oldest(self) -> None:
        _, p = self._pairs.popitem(last=False)
        self.counts.bytes -= p.nbytes

    def _expire(self, now: float) -> None:
        while self._pairs:
            rid, p = next(iter(self._pairs.items()))
            if now - p.born <= self.ttl_s:
                break
            del self._pairs[rid]
            self.counts.bytes -= p.nbytes
            self.counts.evicted_expired += 1
        self._count_waiting()


def score(
    stats: OutcomeStats,
    live: np.ndarray,
    shadow: np.ndarray,
    labels: np.ndarray | None,
    values: np.ndarray | None,
    slices: tuple = (),
    buckets: list = (),  # type: ignore[assignment]
    probabilities: bool = False,
) -> bool:
    """Score one pair against its outcome, overall and per slice bucket (``slices``: the route's
    Slice configs; ``buckets``: the pair's bucket per row for each); False when the outcome's rows
    or classes do not fit the predictions. Prediction rows that are NaN, inf or (``probabilities``)
    outside [0, 1] are scored as wrong and kept out of the calibration bins."""
    lv, sv = valid_rows(live, probabilities), valid_rows(shadow, probabilities)
    if not _score(stats, live, shadow, labels, values, lv, sv):
        return False
    rows = live.shape[0]
    for i, sl in enumerate(slices):
        n = len(sl.buckets)
        b = buckets[i] if i < len(buckets) else None
        if b is None or len(b) != rows:
            b = np.full(rows, n - 1, dtype=np.int16)  # "missing"
        for k in np.unique(b):
            m = b == k
            lab, val = labels[m] if labels is not None else None, values[m] if values is not None else None
            _score(stats.bucket(i, int(k), n), live[m], shadow[m], lab, val, lv[m], sv[m])
    return True


def _score(
    stats: OutcomeStats,
    live: np.ndarray,
    shadow: np.ndarray,
    labels: np.ndarray | None,
    values: np.ndarray | None,
    live_valid: np.ndarray,
    shadow_valid: np.ndarray,
) -> bool:
    """Score one pair against its outcome; False when the outcome's rows do not match."""
    rows = live.shape[0]
    classifier = live.ndim == 2 and live.shape[1] > 1
    if classifier:
        if labels is None or len(labels) != rows or labels.min(initial=0) < 0 or labels.max(initial=0) >= live.shape[1]:
            stats.shape_mismatch += 1
            return False
        stats.kind = "classifier"
        lh = stats.live.add_classifier(live, labels, live_valid)
        sh = stats.shadow.add_classifier(shadow, labels, shadow_valid)
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
