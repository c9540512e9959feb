"""The route table as the router serves it: one immutable ``RouteEntry`` per route (the live
upstream, the live rewrite, the shadow legs), replaced whole when targets change.

A change of targets (the repository watcher: a version appeared, went away, failed its contract
check) builds a new entry and publishes it with one assignment (``Router.publish``). A request
reads its route's entry once, at arrival, and uses that entry to the end, so no request ever sees
half a change: its shadows are all the old entry's or all the new one's. A shadow answer that
arrives after a swap is still counted in the window (``state.TargetState``) it was sent for.
"""

from __future__ import annotations

from .backends import Upstream
from .completeness import Completeness
from .config import Route
from .packing import build_request
from .rules import MirrorFilter
from .state import MIRRORING, RouteState, TargetState


class ShadowLeg:
    """One shadow target of a route, as the router sends to it: its upstream, the rewrite, the
    in-flight bound. Its statistics live in the comparison state (``state``: a state.TargetState)."""

    __slots__ = ("amplify", "index", "mirroring", "name", "outcomes", "paced", "route", "slices", "state", "stats", "target", "upstream", "version")

    def __init__(self, state: TargetState, upstream: Upstream, route: Route, index: int = 0) -> None:
        self.index = index  # position in the route's shadows (the paired log's target_index)
        self.state = state
        # Fixed for this entry's life: a change of status publishes a new entry. A leg that is not
        # mirroring (NOT_READY / INCOMPATIBLE) counts its sampled requests as ``not_ready``.
        self.mirroring = state.status == MIRRORING
        self.target = state.target
        self.route = route
        self.slices = route.slices
        self.upstream = upstream
        self.stats = state.stats  # the same objects as the state tree's, for the hot path
        self.outcomes = state.outcomes
        self.name = state.target.model
        self.version = state.target.version  # "" clears the caller's version: Triton's policy picks
        self.amplify = state.target.amplify  # capacity.py: copies sent per mirrored request (1: none)
        self.paced = state.target.constant_qps > 0  # capacity.py: queued, released by the target's Pacer

    @property
    def in_flight(self) -> int:
        return self.state.in_flight


class RouteEntry:
    """One route as the router serves it: the live upstream, the live rewrite, its shadow legs,
    the input checker. Statistics live in the comparison state (``state``: a state.RouteState)."""

    __slots__ = (
        "completeness", "decoupled", "generation", "identical", "live", "live_name", "live_version", "route", "rules", "sequence_batching",
        "shadows", "state", "stats",
    )  # fmt: skip

    def __init__(
        self, state: RouteState, live: Upstream, shadows: list[ShadowLeg], completeness: Completeness | None = None,
        generation: int = 0, sequence_batching: bool = False, decoupled: bool = False,
    ) -> None:  # fmt: skip
        self.state = state
        self.route = state.route
        self.live = live
        self.stats = state.stats
        self.shadows = shadows
        # Rewrite the live request only when the route renames or pins the live model.
        route = state.route
        self.live_name = route.live.model if route.live.model != route.model else None
        self.live_version = route.live.version or None
        # Kept across swaps (it holds live's declared inputs, fetched once).
        self.completeness = completeness or Completeness(live, route.live.model, route.live.version, state.completeness)
        self.generation = generation  # counts the route's published entries
        self.sequence_batching = sequence_batching  # live's ModelConfig has a sequence batcher
        self.decoupled = decoupled  # live's ModelConfig: decoupled transaction policy
        self.rules = MirrorFilter.of(route.mirror, route.slices)  # [routes.mirror] (rules.py); None: no rules
        self.identical = route.identical_sample  # all shadows or none (router.py, nway.py)

    def explicit_other_version(self, version: str | None) -> bool:
        """The caller named a version other than the route's pinned one."""
        return bool(version) and self.live_version is not None and version != self.live_version

    def live_request(self, raw: bytes, version: str | None) -> bytes:
        """``raw`` for the live target: renamed when the route renames the model; the pinned
        version applied when the caller named none (``version`` "" or None); a version the caller
        named is kept (see the module doc)."""
        pin = self.live_version if not version else None
        if self.live_name is None and pin is None:
            return raw
        return build_request(raw, self.live_name, pin, False)
