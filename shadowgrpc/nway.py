"""Fair N-way comparison (``routes[].identical_sample = true``): several shadows judged on the same rows.

The router admits a request of such a route to every shadow or to none, and calls
``Pairing.nway_begin`` with the legs it was sent to. Each leg's answer is then held (``NWayRequest``)
until all of them have answered; only when live and every shadow answered OK (and every answer has
live's contract) are all of them compared, else none is and the request is counted in
``NWayState.incomplete`` by its reason ("live_failed", "<target>: <gRPC status>", "<target>:
contract_mismatch", "<target>: CANCELLED", "<target>: TIMEOUT"). So every shadow's compared rows
are the same rows, and the state below compares the models with each other on exactly those:

- per shadow: rows agreeing with live (the primary output, per row: same top-1 label; a binary
  score on the same side of its threshold; a regression value within its tolerance);
- per pair of models (live and every shadow): discordant rows (b: i right and j wrong, c: the
  reverse), with the paired 95% interval on the difference of proportions (verdict.paired_delta_ci);
  "right" is "agrees with live" before ground truth and "correct" (classifiers: top-1 == label)
  once outcomes are joined (Pairing.record_outcome);
- per pair of models: the latency difference per request (each answer's arrival at the front,
  measured from the moment the request was mirrored), mean and 95% interval from the exact sums
  of d and d^2 (stats.to_exact), so replicas merge exactly.

Every figure is an integer or an exact sum: ``merge`` of replicas equals one front's state.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .outcomes import valid_rows, wilson
from .pairlog.schema import NWAY_INCOMPLETE  # noqa: F401 (re-exported: the paired log's ``pair`` of an OK answer not compared)
from .stats import from_exact, to_exact
from .verdict import Z95, paired_delta_ci

LIVE = "live"


def _square(n: int) -> list[list[int]]:
    return [[0] * n for _ in range(n)]


@dataclass(slots=True)
class NWayState:
    """One identical_sample route's N-way comparison (RouteState.nway). Model 0 is live, model k
    the route's shadow k - 1 (``names`` in route order)."""

    names: list[str]
    requests: int = 0  # requests compared on every shadow
    rows: int = 0  # their primary-output rows (the rows every figure below is about)
    incomplete: Counter[str] = field(default_factory=Counter)  # requests compared on no shadow, by reason
    agree: list[int] = field(default_factory=list)  # per shadow: rows agreeing with live
    agree_disc: list[list[int]] = field(default_factory=list)  # [i][j] (shadows): i agrees with live, j not
    lat_fx: list[list[int]] = field(default_factory=list)  # [i][j] (models): exact sum of latency_i - latency_j
    lat_sq_fx: list[list[int]] = field(default_factory=list)  # ... of its square
    truth_rows: int = 0  # rows scored against ground truth (classifiers)
    correct: list[int] = field(default_factory=list)  # per model: rows whose top-1 label is the outcome's
    correct_disc: list[list[int]] = field(default_factory=list)  # [i][j] (models): i correct, j not
    lat_sum_fx: list[int] = field(default_factory=list)  # per model: exact sum of its latency

    def __post_init__(self) -> None:
        n, m = len(self.names), len(self.names) + 1
        self.agree = self.agree or [0] * n
        self.agree_disc = self.agree_disc or _square(n)
        self.lat_fx = self.lat_fx or _square(m)
        self.lat_sq_fx = self.lat_sq_fx or _square(m)
        self.correct = self.correct or [0] * m
        self.correct_disc = self.correct_disc or _square(m)
        self.lat_sum_fx = self.lat_sum_fx or [0] * m

    @property
    def models(self) -> list[str]:
        return [LIVE, *self.names]

    # -- recording ------------------------------------------------------------------------------
    def record(self, agrees: list[np.ndarray] | None, latencies: list[float]) -> None:
        """One request compared on every shadow: per shadow the rows agreeing with live (None:
        no numeric output to judge rows by), and each model's latency (live first)."""
        self.requests += 1
        if agrees is not None and agrees:
            self.rows += len(agrees[0])
            self.agree = [a + int(x.sum()) for a, x in zip(self.agree, agrees)]
            for i, xi in enumerate(agrees):
                for j, xj in enumerate(agrees):
                    if i != j:
                        self.agree_disc[i][j] += int((xi & ~xj).sum())
        for i, li in enumerate(latencies):
            if math.isfinite(li):
                self.lat_sum_fx[i] += to_exact(li)
            for j in range(i + 1, len(latencies)):
                d = li - latencies[j]
                if math.isfinite(d):
                    self.lat_fx[i][j] += to_exact(d)
                    self.lat_sq_fx[i][j] += to_exact(d * d)

    def record_truth(self, hits: list[np.ndarray]) -> None:
        """One compared request's rows scored against its outcome: per model (live first), each
        row correct or not."""
        self.truth_rows += len(hits[0])
        self.correct = [c + int(h.sum()) for c, h in zip(self.correct, hits)]
        for i, hi in enumerate(hits):
            for j, hj in enumerate(hits):
                if i != j:
                    self.correct_disc[i][j] += int((hi & ~hj).sum())

    # -- figures --------------------------------------------------------------------------------
    def agreement(self, k: int) -> tuple[float, float, float]:
        """Shadow ``k``'s (0-based) agreement with live and its Wilson 95% interval."""
        lo, hi = wilson(self.agree[k], self.rows)
        return (self.agree[k] / self.rows if self.rows else 0.0), lo, hi

    def accuracy(self, m: int) -> tuple[float, float, float]:
        """Model ``m``'s (0 = live) accuracy against ground truth and its Wilson 95% interval."""
        lo, hi = wilson(self.correct[m], self.truth_rows)
        return (self.correct[m] / self.truth_rows if self.truth_rows else 0.0), lo, hi

    def agreement_disc(self, i: int, j: int) -> tuple[int, int]:
        """(b, c) of models ``i`` and ``j`` (0 = live, which agrees with itself on every row)."""
        if i == j:
            return 0, 0
        if i == 0:
            return self.rows - self.agree[j - 1], 0
        if j == 0:
            return 0, self.rows - self.agree[i - 1]
        return self.agree_disc[i - 1][j - 1], self.agree_disc[j - 1][i - 1]

    def paired_agreement(self, i: int, j: int) -> tuple[int, int, float, float, float]:
        """Models ``i`` vs ``j`` on agreement with live: (b, c, delta, lo, hi), delta = rate_i - rate_j."""
        b, c = self.agreement_disc(i, j)
        return (b, c, *paired_delta_ci(b, c, self.rows))

    def paired_accuracy(self, i: int, j: int) -> tuple[int, int, float, float, float]:
        """Models ``i`` vs ``j`` on ground truth: (b, c, accuracy_i - accuracy_j, lo, hi)."""
        b, c = self.correct_disc[i][j], self.correct_disc[j][i]
        return (b, c, *paired_delta_ci(b, c, self.truth_rows))

    def mean_latency(self, m: int) -> float:
        """Model ``m``'s mean latency (seconds) over the compared requests, measured from the moment
        the request was mirrored to its answer's arrival at the front."""
        return from_exact(self.lat_sum_fx[m]) / self.requests if self.requests else 0.0

    def latency_diff(self, i: int, j: int, z: float = Z95) -> tuple[float, float, float]:
        """Mean per-request latency_i - latency_j (seconds) and its 95% interval."""
        sign = 1.0
        if i > j:
            i, j, sign = j, i, -1.0
        n = self.requests
        if n == 0 or i == j:
            return 0.0, 0.0, 0.0
        s, ss = from_exact(self.lat_fx[i][j]), from_exact(self.lat_sq_fx[i][j])
        mean = s / n
        var = max(ss - s * s / n, 0.0) / (n - 1) if n > 1 else 0.0
        half = z * math.sqrt(var / n)
        lo, hi = mean - half, mean + half
        return (sign * mean, lo, hi) if sign > 0 else (-mean, -hi, -lo)

    def ranking(self) -> tuple[str, list[int]]:
        """(what ranks, model indices best first): accuracy against ground truth once outcomes were
        joined (live included), else agreement with live (shadows only; live is the reference)."""
        if self.truth_rows:
            return "accuracy", sorted(range(len(self.correct)), key=lambda m: (-self.correct[m], m))
        return "agreement", sorted(range(1, len(self.names) + 1), key=lambda m: (-self.agree[m - 1], m))

    # -- snapshots ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "names": self.names, "requests": self.requests, "rows": self.rows, "incomplete": dict(self.incomplete),
            "agree": self.agree, "agree_disc": self.agree_disc, "lat_fx": self.lat_fx, "lat_sq_fx": self.lat_sq_fx,
            "truth_rows": self.truth_rows, "correct": self.correct, "correct_disc": self.correct_disc,
            "lat_sum_fx": self.lat_sum_fx,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> NWayState:
        ints = lambda m: [[int(v) for v in row] for row in m]  # noqa: E731
        return cls(
            names=list(d["names"]), requests=int(d["requests"]), rows=int(d["rows"]), incomplete=Counter(d["incomplete"]),
            agree=[int(v) for v in d["agree"]], agree_disc=ints(d["agree_disc"]), lat_fx=ints(d["lat_fx"]),
            lat_sq_fx=ints(d["lat_sq_fx"]), truth_rows=int(d["truth_rows"]), correct=[int(v) for v in d["correct"]],
            correct_disc=ints(d["correct_disc"]), lat_sum_fx=[int(v) for v in d["lat_sum_fx"]],
        )  # fmt: skip

    def merge(self, o: NWayState) -> None:
        """Add another replica's state (ValueError when its shadows differ)."""
        if o.names != self.names:
            raise ValueError(f"identical_sample shadows differ between replicas: {self.names} vs {o.names}")
        self.requests += o.requests
        self.rows += o.rows
        self.truth_rows += o.truth_rows
        self.incomplete.update(o.incomplete)
        self.agree = [a + b for a, b in zip(self.agree, o.agree)]
        self.correct = [a + b for a, b in zip(self.correct, o.correct)]
        self.lat_sum_fx = [a + b for a, b in zip(self.lat_sum_fx, o.lat_sum_fx)]
        for mine, theirs in ((self.agree_disc, o.agree_disc), (self.lat_fx, o.lat_fx), (self.lat_sq_fx, o.lat_sq_fx), (self.correct_disc, o.correct_disc)):
            for ra, rb in zip(mine, theirs):
                for k, v in enumerate(rb):
                    ra[k] += v


def merge_states(a: NWayState | None, b: NWayState | None) -> NWayState | None:
    """``b`` merged into ``a`` (either may be None: a replica that saw no N-way route state)."""
    if a is None:
        return b
    if b is not None:
        a.merge(b)
    return a


# -- one request's legs ------------------------------------------------------------------------------
class NWayRequest:
    """One N-way request's legs while they answer (MirroredRequest.nway). ``answers[pos]`` holds a
    leg's (response or None, status, arrival time, telemetry) until the last leg has answered; the
    outcome of every leg, for its own task to return, is ``done``'s result (a list by position)."""

    __slots__ = ("answers", "bound_at", "buckets", "done", "legs", "live_at", "positions", "t0")

    def __init__(self, legs: list, t0: float, bound_at: float) -> None:
        self.legs = legs
        self.positions = {id(leg): k for k, leg in enumerate(legs)}
        self.answers: dict[int, tuple] = {}
        self.done: asyncio.Future[list] = asyncio.get_running_loop().create_future()
        self.t0 = t0  # when the request was mirrored (perf_counter)
        self.bound_at = bound_at  # no leg can answer after this (its deadline, live's wait, a grace)
        self.live_at: float | None = None  # live's answer reached the front
        self.buckets: list = []  # the request's slice buckets (MirroredRequest.prepare), once a leg answered

    def live_answered(self, t: float) -> None:
        if self.live_at is None:
            self.live_at = t

    def missing(self) -> list[int]:
        return [k for k in range(len(self.legs)) if k not in self.answers]


# -- per-row agreement ---------------------------------------------------------------------------------
def agreeing_rows(live: np.ndarray, shadow: np.ndarray, kind: str, spec: Any) -> np.ndarray:
    """Per row of the primary output (rows x values, as compare_responses returns it): does the
    shadow agree with live? classifier: same top-1 label; binary (two columns, 1 - p and p): p on
    the same side of the threshold; otherwise every value within atol + rtol * |shadow|. A row with a
    NaN never agrees."""
    a = live.astype(np.float64, copy=False)
    b = shadow.astype(np.float64, copy=False)
    with np.errstate(invalid="ignore"):
        if kind == "binary" and a.shape[1] == 2:
            t = spec.threshold
            return ((a[:, 1] >= t) == (b[:, 1] >= t)) & np.isfinite(a[:, 1]) & np.isfinite(b[:, 1])
        if a.shape[1] > 1 and kind in ("classifier", "binary"):
            ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
            return (np.where(np.isnan(a), -np.inf, a).argmax(axis=1) == np.where(np.isnan(b), -np.inf, b).argmax(axis=1)) & ok
        return (np.abs(a - b) <= spec.atol + spec.rtol * np.abs(b)).all(axis=1)


def correct_rows(pred: np.ndarray, labels: np.ndarray, probabilities: bool) -> np.ndarray:
    """Per row: the top-1 label of ``pred`` (rows x classes) is the outcome's; a row that is not
    valid (NaN, inf, a probability outside [0, 1]) is wrong, as outcomes.Scores scores it."""
    with np.errstate(invalid="ignore"):
        top = np.where(np.isnan(pred), -np.inf, pred).argmax(axis=1)
    return (top == labels) & valid_rows(pred, probabilities)
