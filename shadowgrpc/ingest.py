"""Pairs observed by a client-side mirror (``ShadowControl.ReportPairs``, shadowgrpc.client.mirror),
accounted exactly like a pair this front mirrored itself.

The stream carries batches (``ObservedPairs``); ``ingest_batch`` takes one batch's pairs in order,
each accepted or rejected on its own. For each ``ObservedPair`` (route, target, the request as the
client sent it to live, both answers, statuses, latencies), in the router's order:
1. the route (``router.routes[route]``) and its shadow target (by ``ss.target.name``), looked up
   per pair: the router may replace them at any time;
2. the route's live counts: requests, live_ok with live_latency, or live_errors by status;
3. the target's: sampled, then shed / down (reported by the client as ``SHED`` / ``DOWN``: not
   sent: such a pair carries no request or answers, and needs none), or sent with ok (latency) or
   errors by status;
4. a sent pair goes through the same pairing stage as the front's own
   (``router.pairing.answered``: completeness, slices, comparison, pair store for the ground-truth
   join) with a ``MirroredRequest`` whose ``live_done`` is already resolved (live's answer) or
   cancelled (live failed), counted in the target's ``in_flight`` meanwhile.
A pair that cannot be used is rejected by reason, before anything is counted: unknown_route,
unknown_target, unknown_live_status, unknown_shadow_status, bad_latency, no_request (a sent pair
without the request), unparseable_request, no_live_response (a sent pair whose live call was OK,
without its answer), no_shadow_response (an OK shadow status without the answer). The front's own
mirroring of the same target goes on independently; the paired log (``[log]``) does not hold
reported pairs.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter

import grpc

from .pairing import MirroredRequest
from .packing import scan_request

log = logging.getLogger("shadowgrpc.ingest")

STATUS_NAMES = frozenset(c.name for c in grpc.StatusCode)
SHED = "SHED"
DOWN = "DOWN"
NOT_SENT = frozenset((SHED, DOWN))


def _latency_ok(x: float) -> bool:
    return math.isfinite(x) and x >= 0.0


def problem(router, p) -> tuple[str, object, object, str]:
    """(why ``p`` cannot be used, or ""; its route entry; its shadow leg; its request id)."""
    rs = router.routes.get(p.route)
    if rs is None:
        return "unknown_route", None, None, ""
    ss = next((x for x in rs.shadows if x.target.name == p.target), None)
    if ss is None:
        return "unknown_target", rs, None, ""
    if p.live_status not in STATUS_NAMES:
        return "unknown_live_status", rs, ss, ""
    sent = p.shadow_status not in NOT_SENT
    if sent and p.shadow_status not in STATUS_NAMES:
        return "unknown_shadow_status", rs, ss, ""
    if not _latency_ok(p.live_latency_s) or not _latency_ok(p.shadow_latency_s):
        return "bad_latency", rs, ss, ""
    request_id = ""
    if sent and not p.request:
        return "no_request", rs, ss, ""
    if p.request:
        try:
            request_id = scan_request(p.request)[2]
        except ValueError:
            return "unparseable_request", rs, ss, ""
    if sent and p.live_status == "OK" and not p.live_response:  # not sent: live's answer not needed
        return "no_live_response", rs, ss, ""
    if p.shadow_status == "OK" and not p.shadow_response:
        return "no_shadow_response", rs, ss, ""
    return "", rs, ss, request_id


async def ingest_pair(router, p) -> str:
    """Account one ObservedPair on ``router`` (a router.Router); returns "" when accepted, else the
    reason it was rejected (nothing counted)."""
    why, rs, ss, request_id = problem(router, p)
    if why:
        return why
    st = rs.stats
    st.requests += 1
    live_ok = p.live_status == "OK"
    if live_ok:
        st.live_ok += 1
        st.live_latency.record(p.live_latency_s)
    else:
        st.live_errors[p.live_status] += 1
    s = ss.stats
    s.sampled += 1
    status = p.shadow_status
    if status == SHED:
        s.shed += 1
        return ""
    if status == DOWN:
        s.down += 1
        return ""
    s.sent += 1
    response = None
    if status == "OK":
        s.ok += 1
        s.latency.record(p.shadow_latency_s)
        response = p.shadow_response
    else:
        s.errors[status] += 1
    live_done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    if live_ok:
        live_done.set_result(p.live_response)
    else:
        live_done.cancel()
    mr = MirroredRequest(p.request, request_id, p.route, live_done, 0.0)
    state = ss.state
    state.in_flight += 1
    try:
        await router.pairing.answered(ss, rs, mr, response)
    except Exception:  # the front's own failure (the pair itself was fine): counted like the router's
        s.internal_errors += 1
        log.exception("reported pair for %s/%s: pairing failed", p.route, p.target)
    finally:
        state.in_flight -= 1
    return ""


async def ingest_batch(router, pairs) -> tuple[int, Counter[str]]:
    """Account each pair of one ``ObservedPairs`` batch (``ingest_pair``); returns (pairs accepted,
    pairs rejected by reason). The front's own failure on a pair is counted as ``internal`` and
    the batch goes on."""
    accepted = 0
    rejected: Counter[str] = Counter()
    for p in pairs:
        try:
            reason = await ingest_pair(router, p)
        except Exception:  # the front's own failure: counted, logged, the batch goes on
            log.exception("reported pair for %s/%s could not be used", p.route, p.target)
            reason = "internal"
        if reason:
            rejected[reason] += 1
        else:
            accepted += 1
    return accepted, rejected


__all__ = ["ingest_batch", "ingest_pair", "problem"]
