"""Resource cost: what a shadow adds to Triton's compute, from Triton's own statistics API.

Triton counts, per model and version, inferences and the time spent computing them
(``compute_input + compute_infer + compute_output``) and queueing. The front snapshots these
counters when it starts (for every live and shadow target) and again when a report is asked for;
the deltas over that window give live's and each shadow's compute, and the shadow's *extra*
compute as a fraction of live's ("shadow roughly doubles inference compute: report by how much").

The counters are Triton's, not the front's: other clients of the same model/version count too.
When live is not pinned to a version, versions that a shadow of the same model uses are excluded
from live's total (and vice versa for an unpinned shadow).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2 as kserve

from .backends import Upstream
from .router import Router

STATS_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Usage:
    inferences: int = 0
    compute_ns: int = 0
    queue_ns: int = 0

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.inferences - other.inferences, self.compute_ns - other.compute_ns, self.queue_ns - other.queue_ns)

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.inferences + other.inferences, self.compute_ns + other.compute_ns, self.queue_ns + other.queue_ns)


Snapshot = dict[str, Usage]  # version -> usage, for one (address, model)


async def fetch_usage(upstream: Upstream, model: str, timeout: float = STATS_TIMEOUT_S) -> Snapshot:
    """Per-version usage of ``model`` on ``upstream`` (all versions Triton reports)."""
    raw = await upstream.unary["ModelStatistics"](kserve.ModelStatisticsRequest(name=model).SerializeToString(), timeout=timeout)
    out: Snapshot = {}
    for m in kserve.ModelStatisticsResponse.FromString(raw).model_stats:
        s = m.inference_stats
        out[m.version] = Usage(
            inferences=m.inference_count,
            compute_ns=s.compute_input.ns + s.compute_infer.ns + s.compute_output.ns,
            queue_ns=s.queue.ns,
        )
    return out


def _pick(snap: Snapshot, version: str, exclude: set[str]) -> Usage:
    if version:
        return snap.get(version, Usage())
    total = Usage()
    for v, u in snap.items():
        if v not in exclude:
            total = total + u
    return total


class CostTracker:
    """Baseline at start, deltas at report time; one ModelStatistics call per (address, model)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.baseline: dict[tuple[str, str], Snapshot] = {}
        self.baseline_time: dict[tuple[str, str], float] = {}
        self._keys: dict[tuple[str, str], Upstream] = {}
        for rs in router.routes.values():
            if not rs.shadows:
                continue
            self._keys[(rs.route.live.address, rs.route.live.model)] = rs.live
            for ss in rs.shadows:
                self._keys[(ss.target.address, ss.target.model)] = ss.upstream

    async def _snapshot(self) -> dict[tuple[str, str], Snapshot | str]:
        keys = list(self._keys)
        results = await asyncio.gather(*(fetch_usage(self._keys[k], k[1]) for k in keys), return_exceptions=True)
        out: dict[tuple[str, str], Snapshot | str] = {}
        for k, r in zip(keys, results):
            if isinstance(r, grpc.aio.AioRpcError):
                out[k] = f"ModelStatistics({k[1]}) at {k[0]}: {r.code().name}: {r.details()}"
            elif isinstance(r, BaseException):
                out[k] = f"ModelStatistics({k[1]}) at {k[0]}: {r!r}"
            else:
                out[k] = r
        return out

    async def start(self) -> None:
        """Take the baseline; targets that do not answer get theirs at the first report."""
        self._adopt(await self._snapshot())

    def _adopt(self, snap: dict[tuple[str, str], Snapshot | str]) -> None:
        now = time.monotonic()
        for k, v in snap.items():
            if k not in self.baseline and not isinstance(v, str):
                self.baseline[k] = v
                self.baseline_time[k] = now

    async def collect(self) -> dict[tuple[str, str], dict]:
        """(route model, shadow name) -> fields of shadowgrpc.v1.ComputeCost."""
        now_snap = await self._snapshot()
        now = time.monotonic()
        fresh = {k for k in now_snap if k not in self.baseline}
        self._adopt(now_snap)
        out: dict[tuple[str, str], dict] = {}
        for name, rs in self.router.routes.items():
            live = rs.route.live
            lkey = (live.address, live.model)
            for ss in rs.shadows:
                t = ss.target
                skey = (t.address, t.model)
                problem = next((now_snap[k] for k in (lkey, skey) if isinstance(now_snap.get(k), str)), None)
                if problem is None and (lkey in fresh or skey in fresh):
                    problem = "baseline taken just now (Triton's statistics were unavailable before): ask again later"
                if problem is not None:
                    out[(name, t.name)] = {"available": False, "reason": problem}
                    continue
                # Same model on the same Triton: an unpinned side leaves out the other's version.
                same_model = lkey == skey
                live_excl = {t.version} if same_model and t.version else set()
                sh_excl = {live.version} if same_model and live.version else set()
                live_u = _pick(now_snap[lkey], live.version, live_excl) - _pick(self.baseline[lkey], live.version, live_excl)
                sh_u = _pick(now_snap[skey], t.version, sh_excl) - _pick(self.baseline[skey], t.version, sh_excl)
                out[(name, t.name)] = {
                    "available": True,
                    "live_inferences": live_u.inferences,
                    "shadow_inferences": sh_u.inferences,
                    "live_compute_ms": live_u.compute_ns / 1e6,
                    "shadow_compute_ms": sh_u.compute_ns / 1e6,
                    "live_queue_ms": live_u.queue_ns / 1e6,
                    "shadow_queue_ms": sh_u.queue_ns / 1e6,
                    "extra_compute_fraction": (sh_u.compute_ns / live_u.compute_ns) if live_u.compute_ns > 0 else 0.0,
                    "window_s": now - min(self.baseline_time[lkey], self.baseline_time[skey]),
                }
        return out
