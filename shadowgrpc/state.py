"""The comparison state: one typed tree (front -> route -> shadow target) that everything reads.

The router and the pairing stage write it while requests flow; the report (report.py), snapshots
(snapshot.py) and metrics (telemetry) read it (cost.py reads the router's upstreams, for its own
Triton calls). A snapshot loads into the same tree, and merged replicas are the same tree again,
so every reader has one shape to read:

    FrontState
      pairs: PairCounts              the ground-truth pair store's counters
      routes: {model: RouteState}
        route: Route                 its config
        stats: RouteStats            live counts and latency, the front's own added time
        completeness: InputsState    input quality of shadowed requests
        shadows: [TargetState]
          target: ShadowTarget       its config
          stats: ShadowStats         counts, latency, per-output comparison sketches
          outcomes: OutcomeStats     scores against ground truth
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from .completeness import InputsState
from .config import Route, ShadowTarget
from .outcomes import OutcomeStats, PairCounts
from .stats import RouteStats, ShadowStats


@dataclass(slots=True)
class TargetState:
    target: ShadowTarget
    stats: ShadowStats = field(default_factory=ShadowStats)
    outcomes: OutcomeStats = field(default_factory=OutcomeStats)
    in_flight: int = 0
    drift_edges_differ: int = 0  # merged snapshots only: replicas whose frozen drift edges differed


@dataclass(slots=True)
class RouteState:
    route: Route
    stats: RouteStats = field(default_factory=RouteStats)
    completeness: InputsState = field(default_factory=InputsState)
    shadows: list[TargetState] = field(default_factory=list)


@dataclass(slots=True)
class FrontState:
    started: float = field(default_factory=time.time)
    taken: float | None = None  # when a snapshot was taken; None: a live front (now)
    replicas: int = 1
    unrouted: int = 0
    unparsed: int = 0
    stream_messages: int = 0
    pairs: PairCounts = field(default_factory=PairCounts)
    outcomes_unknown: int = 0
    outcomes_duplicate: int = 0
    outcomes_mismatch: int = 0
    routes: dict[str, RouteState] = field(default_factory=dict)
    costs: dict[tuple[str, str], dict] = field(default_factory=dict)  # loaded snapshots: their compute cost
    outcomes_reused: int = 0
    outcomes_rejected: Counter[str] = field(default_factory=Counter)  # unusable outcome messages, by reason

    @property
    def as_of(self) -> float:
        """The time this state describes: the snapshot's, or now for a live front."""
        return time.time() if self.taken is None else self.taken

    @classmethod
    def for_routes(cls, routes: tuple[Route, ...], max_pairs: int, ttl_s: float, max_bytes: int) -> FrontState:
        """An empty state for a front configured with ``routes``."""
        return cls(
            pairs=PairCounts(max_pairs=max_pairs, ttl_s=ttl_s, max_bytes=max_bytes),
            routes={r.model: RouteState(r, shadows=[TargetState(t) for t in r.shadows]) for r in routes},
        )
