"""Counters and a log-bucketed latency histogram for the first comparison report.

The histogram covers 1 us .. 60 s in buckets 1% wide (relative), so a quantile read from it is
within 1% of the true value; everything outside is clamped into the end buckets. Recording is one
``math.log`` and one list increment: cheap enough for the live path. Histograms merge exactly
(bucket-wise sums), so reports from several replicas combine.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_MIN_S = 1e-6
_MAX_S = 60.0
_GROWTH = 1.01
_LOG_GROWTH = math.log(_GROWTH)
_NBUCKETS = int(math.ceil(math.log(_MAX_S / _MIN_S) / _LOG_GROWTH)) + 1


class LatencyHistogram:
    """Bucket i holds values in [MIN * g**i, MIN * g**(i+1)); quantiles report the bucket's
    geometric midpoint, so the relative error is at most sqrt(1.01) - 1 (~0.5%)."""

    __slots__ = ("counts", "n", "total", "max")

    def __init__(self) -> None:
        self.counts = [0] * _NBUCKETS
        self.n = 0
        self.total = 0.0
        self.max = 0.0

    def record(self, seconds: float) -> None:
        if seconds <= _MIN_S:
            i = 0
        else:
            i = int(math.log(seconds / _MIN_S) / _LOG_GROWTH)
            if i >= _NBUCKETS:
                i = _NBUCKETS - 1
        self.counts[i] += 1
        self.n += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: LatencyHistogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.n += other.n
        self.total += other.total
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float:
        """Seconds at quantile q in [0, 1]; 0.0 when empty."""
        if self.n == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return min(_MIN_S * _GROWTH ** (i + 0.5), self.max)
        return self.max

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0


@dataclass(slots=True)
class OutputStats:
    """Per output tensor: top-label agreement (classifier) or absolute differences (numeric),
    and live/shadow histograms on the same edges for the drift divergences. Classifier outputs
    (probabilities) use 20 bins on [0, 1], one row per class; numeric outputs freeze their edges
    from the first ``FREEZE_ROWS`` live rows (32 bins over their range, padded 5%), buffering
    those rows' pairs until then."""

    kind: str
    rows: int = 0
    agreed_rows: int = 0
    abs_diff_sum: float = 0.0
    abs_diff_max: float = 0.0
    values: int = 0
    hist_live: Any = None
    hist_shadow: Any = None
    pending: list = field(default_factory=list)


@dataclass(slots=True)
class ShadowStats:
    sampled: int = 0
    sent: int = 0
    ok: int = 0
    shed: int = 0
    down: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    compared: int = 0
    contract_mismatch: int = 0
    live_failed: int = 0
    outputs: dict[str, OutputStats] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass(slots=True)
class RouteStats:
    requests: int = 0
    live_ok: int = 0
    live_errors: Counter[str] = field(default_factory=Counter)
    shm_not_mirrored: int = 0
    live_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
