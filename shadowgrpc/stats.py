"""Counters of the first comparison report. Latencies go to ``sketches.LatencySketch``
(1 us .. 60 s, 1% buckets, compiled, mergeable across replicas)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .sketches import LatencySketch


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
    latency: LatencySketch = field(default_factory=LatencySketch)


@dataclass(slots=True)
class RouteStats:
    requests: int = 0
    live_ok: int = 0
    live_errors: Counter[str] = field(default_factory=Counter)
    shm_not_mirrored: int = 0
    live_latency: LatencySketch = field(default_factory=LatencySketch)
