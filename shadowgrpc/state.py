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
        auto: AutoState | None       its auto-shadow policy's candidates (routes[].shadow)
        shadows: [TargetState]       every comparison window, open and closed
          target: ShadowTarget       its config (an auto target's is made by repository.py)
          status, window             MIRRORING / NOT_READY / INCOMPATIBLE / CLOSED, and why
          contract, parity           the checks before traffic (parity.py)
          stats: ShadowStats         counts, latency, per-output comparison sketches
          outcomes: OutcomeStats     scores against ground truth
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .completeness import InputsState
from .coverage import CoverageState
from .config import Route, ShadowTarget
from .outcomes import OutcomeStats, PairCounts
from .stats import RouteStats, ShadowStats


MIRRORING = "MIRRORING"
NOT_READY = "NOT_READY"  # not READY on its Triton, or its metadata unreadable: not sent
INCOMPATIBLE = "INCOMPATIBLE"  # the contract check before traffic refused it: not sent
CLOSED = "CLOSED"  # its comparison window ended (auto-shadow: another version, or this one went away)


@dataclass(slots=True)
class TargetState:
    target: ShadowTarget
    stats: ShadowStats = field(default_factory=ShadowStats)
    outcomes: OutcomeStats = field(default_factory=OutcomeStats)
    in_flight: int = 0
    drift_edges_differ: int = 0  # merged snapshots only: replicas whose frozen drift edges differed
    # Not checked yet: a front sends nothing to a target before its contract check (repository.py).
    status: str = NOT_READY
    reason: str = "not checked yet"
    opened: float = field(default_factory=time.time)  # the comparison window
    closed: float = 0.0
    closed_reason: str = ""
    auto: bool = False  # opened by the route's auto-shadow policy
    contract: list[str] = field(default_factory=list)  # why INCOMPATIBLE
    parity: list | None = None  # parity.Mismatch list; None: the configs could not be read
    parity_error: str = ""
    honours_shadow: bool | None = None  # the model's config declares it skips side effects for shadows
    budget: Any = None  # budget.BudgetState when the target has a [routes.shadows.budget] (Router.publish)
    capacity: Any = None  # capacity.CapacityState when the target has amplify > 1 or constant_qps (Router.publish)
    pacer: Any = None  # capacity.Pacer when the target has constant_qps (Router.publish)


@dataclass(slots=True)
class Candidate:
    """A version the auto-shadow policy has seen on the shadow's Triton, and what became of it."""

    version: str
    state: str = ""  # Triton's (READY, UNAVAILABLE, UNLOADING, ...)
    decision: str = ""  # shadowed, refused, failed_to_load, removed, not_selected, live
    reason: str = ""
    seen: float = field(default_factory=time.time)
    decided: float = 0.0


@dataclass(slots=True)
class AutoState:
    policy: str
    poll_s: float
    load: bool
    last_poll: float = 0.0
    last_error: str = ""
    swaps: int = 0  # route tables published for this route
    last_load_s: float = 0.0  # how long Triton's last RepositoryModelLoad took
    candidates: dict[str, Candidate] = field(default_factory=dict)


@dataclass(slots=True)
class RouteState:
    route: Route
    stats: RouteStats = field(default_factory=RouteStats)
    completeness: InputsState = field(default_factory=InputsState)
    shadows: list[TargetState] = field(default_factory=list)
    auto: AutoState | None = None
    coverage: CoverageState = field(default_factory=CoverageState)  # per slice bucket, estimated (coverage.py)
    nway: Any = None  # nway.NWayState when the route has identical_sample (Router.publish)


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
            routes={r.model: RouteState(r, shadows=[TargetState(t) for t in r.shadows], auto=_auto(r)) for r in routes},
        )


def _auto(r: Route) -> AutoState | None:
    return None if r.auto is None else AutoState(r.auto.policy, 0.0, r.auto.load)
