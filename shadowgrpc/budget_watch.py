"""``BudgetWatcher``: the budgets' background task (started and stopped by server.Front), and the
rows of the budget gauges (``metric_rows``, telemetry/metrics.py).

Every ``server.poll_s`` (every ``budget.COMPUTE_POLL_S`` at most while a compute budget exists)
it starts due periods (so a pause ends on time without traffic), reads Triton's statistics for
the targets with a compute budget (one ModelStatistics call per shadow address and model, as
cost.py does) and charges each its compute, and logs each budgeted target's estimate once a
first rate is known (``budget.ESTIMATE_AFTER_S`` of mirroring or ``ESTIMATE_AFTER_CALLS`` calls).

A target's compute: Triton's ``compute_input + compute_infer + compute_output`` of the versions
it calls (its pinned version; unpinned: every version but live's pinned one when live is the
same model on the same Triton, the rule of cost.py) since the first read, times this target's
share of them: its OK calls over Triton's successful requests in the same window (capped at 1).
So live's own calls (a noise-floor target mirroring live's model and version), other workers'
and other clients' are not charged to it. A counter that went back (Triton restarted, the model
reloaded) starts a new baseline: the compute between the last read and the reset is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from tritonclient.grpc import service_pb2 as kserve

from .budget import COMPUTE_POLL_S, ESTIMATE_AFTER_CALLS, ESTIMATE_AFTER_S, estimate

if TYPE_CHECKING:
    from .router import Router

log = logging.getLogger("shadowgrpc.budget")

STATS_TIMEOUT_S = 2.0


async def read_compute(upstream, model: str, timeout: float = STATS_TIMEOUT_S) -> dict[str, tuple[int, int]]:
    """version -> (successful requests, compute ns) of ``model`` on ``upstream``."""
    raw = await upstream.unary["ModelStatistics"](kserve.ModelStatisticsRequest(name=model).SerializeToString(), timeout=timeout)
    out = {}
    for m in kserve.ModelStatisticsResponse.FromString(raw).model_stats:
        s = m.inference_stats
        out[m.version] = (s.success.count, s.compute_input.ns + s.compute_infer.ns + s.compute_output.ns)
    return out


def versions_of(leg, live) -> tuple[str, set[str]]:
    """(pinned version or "", versions to leave out) of a shadow leg's Triton counters."""
    t = leg.target
    if t.version:
        return t.version, set()
    same = (live.address, live.model) == (t.address, t.model)
    return "", {live.version} if same and live.version else set()


class BudgetWatcher:
    def __init__(self, router: Router, poll_s: float | None = None) -> None:
        self.router = router
        self._poll_s = poll_s  # None: the router's settings' server.poll_s (a reload changes it)
        self._task: asyncio.Task | None = None
        self._base: dict[int, list] = {}  # id(TargetState) -> [compute ns, successes, target's ok, compute s charged]
        self._estimated: set[int] = set()
        self.last_error = ""

    def _legs(self) -> list:
        return [(rs, leg) for rs in list(self.router.routes.values()) for leg in rs.shadows if leg.state.budget is not None]

    async def start(self) -> None:
        """One poll now (the compute baselines, before traffic), then the task."""
        with contextlib.suppress(Exception):
            await self.poll()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def interval(self) -> float:
        poll = self.router.settings.poll_s if self._poll_s is None else self._poll_s
        compute = any(leg.state.budget.max_compute_s for _, leg in self._legs())
        return min(poll, COMPUTE_POLL_S) if compute else poll

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval())
            try:
                await self.poll()
            except Exception:  # never let the watcher die: the next poll tries again
                log.exception("budget poll failed")

    async def poll(self) -> None:
        legs = self._legs()
        for rs, leg in legs:
            bs = leg.state.budget
            if not bs.name:  # for its log lines
                bs.name = f"{rs.route.model}/{leg.target.name}"
            bs.tick()
        compute = [(rs, leg) for rs, leg in legs if leg.state.budget.max_compute_s]
        keys = {(leg.target.address, leg.target.model): leg.upstream for _, leg in compute}
        results = await asyncio.gather(*(read_compute(up, k[1]) for k, up in keys.items()), return_exceptions=True)
        snaps = dict(zip(keys, results))
        errors = []
        for rs, leg in compute:
            snap = snaps[(leg.target.address, leg.target.model)]
            if isinstance(snap, BaseException):
                errors.append(f"ModelStatistics({leg.target.model}) at {leg.target.address}: {snap!r}")
                continue
            self._charge(leg, snap, *versions_of(leg, rs.route.live))
        self.last_error = "; ".join(errors)
        live = {id(leg.state) for _, leg in legs}
        for k in set(self._base) - live:
            del self._base[k]
        for rs, leg in legs:
            self._maybe_log(rs, leg)

    def _charge(self, leg, snap: dict[str, tuple[int, int]], version: str, exclude: set[str]) -> None:
        picked = [v for k, v in snap.items() if (k == version if version else k not in exclude)]
        succ, comp = sum(p[0] for p in picked), sum(p[1] for p in picked)
        ok = leg.stats.ok
        key = id(leg.state)
        base = self._base.get(key)
        if base is None or comp < base[0] or succ < base[1]:  # first read, or the counters went back
            self._base[key] = [comp, succ, ok, 0.0]
            return
        dsucc, dok = succ - base[1], ok - base[2]
        mine = (comp - base[0]) / 1e9 * (min(dok / dsucc, 1.0) if dsucc > 0 else 0.0)
        if mine > base[3]:
            leg.state.budget.compute_used(mine - base[3])
            base[3] = mine

    def _maybe_log(self, rs, leg) -> None:
        ts, bs = leg.state, leg.state.budget
        if id(ts) in self._estimated or not (bs.active_s() >= ESTIMATE_AFTER_S or bs.total_requests >= ESTIMATE_AFTER_CALLS):
            return
        g = rs.route.gates
        e = estimate(bs, ts.stats.compared, ts.outcomes.live.rows, g.min_pairs, g.min_outcomes)
        if not e.known:
            return
        self._estimated.add(id(ts))
        log.info("%s/%s: budget estimate: %s%s", rs.route.model, ts.target.name, e.text, f"; {e.warning}" if e.warning else "")


def metric_rows(shadows, what: str):
    """Rows of the budget gauges (telemetry/metrics.py) for (route, ShadowLeg) pairs: ``what`` =
    "used" (this period, by kind), "limit" (by kind) or "paused" (1 / 0)."""
    for route, ss in shadows:
        bs = ss.state.budget
        if bs is None:
            continue
        a = {"route": route, "target": ss.target.name}
        if what == "paused":
            yield float(bs.paused), a
            continue
        for kind, used, limit in (("requests", bs.requests, bs.max_requests), ("bytes", bs.bytes, bs.max_bytes), ("compute_s", bs.compute_s, bs.max_compute_s)):
            if limit:
                yield (used if what == "used" else limit), {**a, "kind": kind}

