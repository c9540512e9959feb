"""Counters of the first comparison report. Latencies go to ``sketches.LatencySketch``
(1 us .. 60 s, 1% buckets, compiled, mergeable across replicas)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .sketches import LatencySketch


# Sums of floats merged across replicas must not depend on the order of addition: each response's
# partial sum (computed the same way on whichever replica sees it) is added exactly, as an integer
# count of 2**-1074 (every finite float64 is one), and read back correctly rounded.
_EXACT_SHIFT = 1074


def to_exact(x: float) -> int:
    """``x`` (finite) as an exact integer multiple of 2**-1074."""
    n, d = float(x).as_integer_ratio()
    return n << (_EXACT_SHIFT + 1 - d.bit_length())


def from_exact(v: int) -> float:
    return v / (1 << _EXACT_SHIFT)  # int / int: correctly rounded


@dataclass(slots=True)
class OutputStats:
    """Per output tensor of one shadow target (see compare.py for the rules):
    - ``paired``: the kind's paired sketch (classifier: LabelAgreement, the live x shadow confusion
      matrix; binary: BinaryAgreement at the threshold; regression: RegressionAgreement, within
      tolerance and |live - shadow| quantiles; embedding: CosineStats);
    - ``slices[i][b]``: the same sketch for the rows in bucket ``b`` of the route's slice ``i``
      (None until a row lands there, or when the memory bound refused it: ``slice_rows_dropped``);
    - mean/max |live - shadow| over all values;
    - ``hist_live``/``hist_shadow``: drift histograms on the same edges (``pending`` holds the
      first rows until numeric edges freeze)."""

    kind: str
    paired: Any = None
    values: int = 0
    abs_diff_fx: int = 0  # exact sum of finite |live - shadow| (to_exact); NaN/inf pairs not summed
    abs_diff_max: float = 0.0
    hist_live: Any = None
    hist_shadow: Any = None
    pending: list = field(default_factory=list)
    slices: list[list[Any]] = field(default_factory=list)
    slice_rows_dropped: int = 0
    shadow_invalid: int = 0  # rows of the shadow's answer: NaN, inf, or a probability outside [0, 1]
    live_invalid: int = 0  # the same for live's answer
    probabilities: bool = False  # values are probabilities (config kind, else the first live answer)
    # kind "text", streams: the paired sketch per response position (index i: position i, the last
    # index text.STREAM_POSITIONS: that position and beyond); None until a pair lands there.
    positions: list[Any] = field(default_factory=list)

    @property
    def abs_diff_sum(self) -> float:
        return from_exact(self.abs_diff_fx)

    @property
    def rows(self) -> int:
        return paired_rows(self.paired)

    @property
    def agreed_rows(self) -> int:
        return paired_agreed(self.paired)


def paired_rows(p: Any) -> int:
    """Rows a paired sketch has seen (invalid ones included)."""
    if p is None:
        return 0
    if hasattr(p, "confusion"):
        return int(p.confusion.sum()) + p.invalid
    return p.count + p.invalid


def paired_agreed(p: Any) -> int:
    """Rows on which live and shadow agree: same top label, same side of the threshold, within
    tolerance; for embeddings, the rows compared (see the mean cosine instead)."""
    if p is None:
        return 0
    if hasattr(p, "confusion"):
        return int(np.trace(p.confusion))
    return p.within if hasattr(p, "within") else p.count


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
    internal_errors: int = 0  # the front's own failures after an OK answer (not shadow errors)
    slice_bytes: int = 0  # per-slice sketches held (bounded by compare.SLICE_BUDGET_BYTES)
    not_ready: int = 0  # sampled while the target was NOT_READY or INCOMPATIBLE: not sent
    not_sampled: int = 0  # the coverage ledger (router.py): not chosen by the sample (hash of the id vs sample_rate)
    budget: int = 0  # sampled while the target's budget was spent (budget.py): not sent
    held_back: int = 0  # identical_sample: this target could take it, another could not: sent to none
    qps_queued: int = 0  # constant_qps: in the pacer's queue now (released: counted as sent, shed, ...)
    qps_dropped: int = 0  # constant_qps: dropped from the pacer's queue (oldest first when full, or at shutdown)
    sequences_mirrored: int = 0  # sequence batcher: sequences whose start was mirrored
    sequences_shed_midway: int = 0  # ... of which a later request could not be sent: excluded
    sequence_requests_excluded: int = 0  # requests of excluded sequences kept out of the comparison
    stream_requests: int = 0  # ModelStreamInfer requests mirrored on a shadow stream
    stream_responses_paired: int = 0
    stream_response_count_mismatch: int = 0  # decoupled: live and shadow gave different numbers of responses
    stream_not_sent: Counter[str] = field(default_factory=Counter)  # stream messages sampled, not sent: not_ready, shed, down, budget
    stream_position: int = -1  # streams.py: the response position of the pair being compared (-1: not a stream pair); not counted
    outputs: dict[str, OutputStats] = field(default_factory=dict)
    latency: LatencySketch = field(default_factory=LatencySketch)


@dataclass(slots=True)
class RouteStats:
    requests: int = 0
    live_ok: int = 0
    live_errors: Counter[str] = field(default_factory=Counter)
    shm_not_mirrored: int = 0
    explicit_version_not_mirrored: int = 0  # caller named a version other than the pinned one
    sequences: int = 0  # sequence batcher: sequences started (by sequence id)
    mirrored: int = 0  # requests sent to at least one shadow target
    too_large: int = 0  # larger than [routes.mirror] max_request_mb or the whole shadow buffer: not mirrored
    excluded: Counter[str] = field(default_factory=Counter)  # [routes.mirror] rules: not mirrored, by reason (rules.py)
    stream_not_mirrored: Counter[str] = field(default_factory=Counter)  # stream messages not mirrored, by reason (streams.py)
    stream_requests: int = 0  # ModelStreamInfer requests for this route
    live_latency: LatencySketch = field(default_factory=LatencySketch)
    front_added: LatencySketch = field(default_factory=LatencySketch)  # handler time - live call time
