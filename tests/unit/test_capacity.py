"""capacity.py: load levels, headroom, exact merge, uncompared copies (amplify) and the Pacer
(constant_qps), with fakes for the router and the upstream; the real path: tests/triton/test_capacity.py."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import grpc
import pytest
from tritonclient.grpc import service_pb2 as kserve

from shadowgrpc import capacity, snapshot
from shadowgrpc._capacity_report import capacity_lines, headroom, latency_limit, report_into
from shadowgrpc.capacity import COPY_HEADER, NO_LIVE, CapacityState, Pacer, level_label, level_of
from shadowgrpc.config import Gates, LiveTarget, Route, ShadowTarget
from shadowgrpc.report import build_report, latency_summary
from shadowgrpc.report_html import render_html
from shadowgrpc.report_text import format_report
from shadowgrpc.sketches import LatencySketch
from shadowgrpc.state import MIRRORING, FrontState, TargetState
from shadowgrpc.stats import RouteStats
from shadowgrpc.v1 import shadow_pb2 as pb


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_level_ladder_is_conservative() -> None:
    assert [level_label(level_of(c, 100)) for c in (300, 290, 286, 250, 100, 99, 150, 5)] == ["3x", "3x", "3x", "2x", "1x", "1x", "1.5x", "<0.125x"]
    assert level_of(10, 0) == NO_LIVE and level_label(NO_LIVE) == "no live traffic"
    assert level_label(level_of(10_000, 1)) == "64x"


def _run(cap: CapacityState, clock: Clock, live: RouteStats, seconds: int, live_per_s: int, mult: int, lat: float, errors: int = 0) -> None:
    """``seconds`` windows: live_per_s live requests, each sent mult times, answered in ``lat``."""
    for _ in range(seconds):
        for k in range(live_per_s):
            clock.t += 1.0 / (live_per_s + 1)
            live.requests += 1
            cap.sent(1)
            cap.sent(mult - 1) if mult > 1 else None
            for j in range(mult):
                failed = k < errors and j == 0
                cap.answered(None if failed else lat, not failed, j > 0)
        clock.t = (clock.t // 1.0 + 1.0) + 0.001  # into the next window


def _route(**gates) -> Route:
    return Route("m", LiveTarget("127.0.0.1:1", "m"), gates=Gates(**gates))


def test_windows_levels_and_headroom() -> None:
    clock, live = Clock(), RouteStats()
    cap = CapacityState(live, clock=clock)
    _run(cap, clock, live, 3, 50, 1, 0.002)  # 1x, fast
    _run(cap, clock, live, 3, 50, 3, 0.004)  # 3x, within 10 ms
    _run(cap, clock, live, 2, 50, 5, 0.030)  # 5x, over
    cap.roll()
    by = {level_label(i): lv for i, lv in enumerate(cap.levels) if lv is not None}
    assert sorted(by) == ["1x", "3x", "5x"]
    assert (by["1x"].windows, by["1x"].calls, by["1x"].live, by["1x"].answered) == (3, 150, 150, 150)
    assert (by["3x"].windows, by["3x"].calls, by["3x"].live, by["3x"].answered) == (3, 450, 150, 450)
    assert by["5x"].latency.count == 500
    assert 2.8e6 <= by["3x"].busy_us <= 3.0e6  # the time calls were being sent: the rates' denominator
    route = _route(p99_ms_max=10.0, min_pairs=100)
    text, mult, rows = headroom(cap, route, LatencySketch())
    assert (text, mult) == ("holds 3x production load", 3.0)
    assert [r[3] for r in rows] == [True, True, False]
    # Levels with too few answers do not count either way; none with enough: "not enough data".
    assert headroom(cap, _route(p99_ms_max=10.0, min_pairs=200), LatencySketch())[:2] == ("holds 3x production load", 3.0)
    assert headroom(cap, _route(p99_ms_max=10.0, min_pairs=460), LatencySketch())[0].startswith("does not hold 5x production load (p99 ")
    assert headroom(cap, _route(p99_ms_max=10.0, min_pairs=10_000), LatencySketch())[0].startswith("not enough data")
    # A limit the lowest level already exceeds.
    assert headroom(cap, _route(p99_ms_max=1.0, min_pairs=100), LatencySketch())[0].startswith("does not hold 1x production load (p99 ")


def test_errors_fail_a_level_and_limit_sources() -> None:
    clock, live = Clock(), RouteStats()
    cap = CapacityState(live, clock=clock)
    _run(cap, clock, live, 2, 100, 2, 0.001, errors=10)  # 20 of 400 calls failed: 5% > 1%
    cap.roll()
    text, mult, _ = headroom(cap, _route(p99_ms_max=10.0, min_pairs=100), LatencySketch())
    assert mult == 0.0 and text == "does not hold 2x production load (20/400 errors)"
    ll = LatencySketch()
    ll.record(0.005)
    assert latency_limit(_route(p99_ms_max=7.0), ll) == (0.007, "p99_ms_max")
    r = Route("m", LiveTarget("127.0.0.1:1", "m", deadline_s=0.05))
    assert latency_limit(r, ll) == (0.05, "live deadline")
    lim, src = latency_limit(_route(p99_ratio_max=2.0), ll)
    assert lim == pytest.approx(2 * ll.quantile(0.99), rel=0.02) and "p99_ratio_max" in src


def test_idle_window_keeps_previous_level_and_live_idle_fills() -> None:
    clock, live = Clock(), RouteStats()
    cap = CapacityState(live, clock=clock)
    _run(cap, clock, live, 1, 20, 3, 0.001)
    cap.answered(0.9, True, True)  # a late answer in a window where nothing was sent: the 3x tail
    clock.t += 1.0
    cap.sent(5)  # fills with no live request: "no live traffic"
    clock.t += 1.0
    cap.roll()
    by = {level_label(i): lv for i, lv in enumerate(cap.levels) if lv is not None}
    assert by["3x"].answered == 61 and by["3x"].windows == 2
    assert by["no live traffic"].calls == 5


def _state(seed: int) -> tuple[CapacityState, Clock, RouteStats]:
    clock, live = Clock(), RouteStats()
    cap = CapacityState(live, clock=clock)
    _run(cap, clock, live, 2, 30 + seed, 1 + seed, 0.001 * (seed + 1), errors=seed)
    cap.copies_sent, cap.qps_dropped = 7 * seed, seed
    cap.copies_errors["UNAVAILABLE"] += seed
    cap.roll()
    return cap, clock, live


def test_merge_is_exact_and_round_trips() -> None:
    a, b = _state(1)[0], _state(2)[0]
    # One front that saw both replicas' windows.
    both = CapacityState.from_dict(a.to_dict())
    both.merge(CapacityState.from_dict(b.to_dict()))
    ab = _state(1)[0]
    ab.merge(_state(2)[0])
    assert both.to_dict() == ab.to_dict()
    d = both.to_dict()
    assert d["copies_sent"] == 21 and d["qps_dropped"] == 3 and d["copies_errors"] == {"UNAVAILABLE": 3}
    assert sum(lv["answered"] for lv in d["levels"].values()) == 2 * 31 * 2 + 2 * 32 * 3
    other = CapacityState(window_s=5.0)
    with pytest.raises(ValueError, match="windows differ"):
        both.merge(other)


def test_snapshot_merge_and_report() -> None:
    t = ShadowTarget("cand", "127.0.0.1:2", "m", amplify=3)
    route = Route("m", LiveTarget("127.0.0.1:1", "m"), shadows=(t,), gates=Gates(p99_ms_max=10.0, min_pairs=50))
    views = []
    for seed in (1, 2):
        fs = FrontState.for_routes((route,), 10, 1.0, 1 << 20)
        ts = fs.routes["m"].shadows[0]
        ts.capacity, _, live = _state(seed)
        fs.routes["m"].stats.requests = live.requests
        views.append(snapshot.load(snapshot.snapshot(fs)))
    merged = snapshot.merge(views)
    cap = merged.routes["m"].shadows[0].capacity
    ref = _state(1)[0]
    ref.merge(_state(2)[0])
    assert cap.to_dict() == ref.to_dict()
    rep = build_report(merged)
    c = rep.routes[0].shadows[0].capacity
    assert c.amplify == 3 and c.latency_limit_source == "p99_ms_max" and c.copies_sent == 21
    assert sum(lv.answered for lv in c.levels) == sum(lv.answered for lv in ref.levels if lv is not None)
    assert abs(sum(lv.time_share for lv in c.levels) - 1.0) < 1e-9
    lines = capacity_lines(rep.routes[0].shadows[0])
    assert lines[0].startswith("    capacity (amplify 3): ") and any("calls/s" in x for x in lines)
    assert lines[0].strip() in format_report(rep) and lines[0].strip() in render_html(merged, rep)  # text and HTML reports
    # A plain target has no capacity message and no lines.
    plain = pb.ShadowReport()
    assert not plain.HasField("capacity") and capacity_lines(plain) == []
    msg = pb.Capacity()
    report_into(msg, CapacityState(), route, t, LatencySketch(), latency_summary, {"available": True, "shadow_inferences": 4, "shadow_compute_ms": 2.0})
    assert msg.compute_ms_per_inference == 0.5 and msg.headroom.startswith("not enough data")


# -- copies and the pacer, against a fake router and upstream ---------------------------------------
class FakeUpstream:
    def __init__(self, fail: grpc.StatusCode | None = None, delay: float = 0.0) -> None:
        self.calls: list[tuple[bytes, float, tuple]] = []
        self.fail, self.delay = fail, delay

    async def infer(self, req: bytes, timeout: float, metadata: tuple) -> bytes:
        self.calls.append((req, timeout, metadata))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise grpc.aio.AioRpcError(self.fail, grpc.aio.Metadata(), grpc.aio.Metadata(), "boom")
        return b"ok"

    def get_state(self, try_to_connect: bool = False):
        return grpc.ChannelConnectivity.READY


class FakeRouter:
    def __init__(self, budget: int = 1 << 20) -> None:
        self.settings = SimpleNamespace(security=SimpleNamespace(shadow_metadata_allow=frozenset({"x-tenant"})))
        self._shadow_bytes = 0
        self.shadow_buffer_bytes = budget
        self.tasks: set = set()
        self.state = SimpleNamespace(routes={"m": SimpleNamespace(stats=RouteStats())})
        self.released: list = []
        self.accept = True

    def _spawn(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*self.tasks)

    def release(self, item) -> bool:
        self.released.append((time.monotonic(), item))
        return self.accept


def _leg(upstream: FakeUpstream, max_in_flight: int = 64, qps: float = 0.0, queue: int = 8):
    t = ShadowTarget("cand", "127.0.0.1:2", "m2", version="2", max_in_flight=max_in_flight, constant_qps=qps, qps_queue=queue)
    ts = TargetState(t, status=MIRRORING)
    route = Route("m", LiveTarget("127.0.0.1:1", "m"), shadows=(t,))
    return SimpleNamespace(state=ts, target=t, upstream=upstream, name=t.model, version=t.version, route=route)


RAW = kserve.ModelInferRequest(model_name="m", id="r1").SerializeToString()


def test_amplify_sends_marked_uncompared_copies() -> None:
    async def main():
        r, up = FakeRouter(), FakeUpstream()
        leg = _leg(up)
        capacity.amplify(r, leg, RAW, (("x-tenant", "a"), ("authorization", "secret")), 0.5, 3)
        assert leg.state.in_flight == 2 and r._shadow_bytes == 2 * len(RAW)
        await r.settle()
        return r, up, leg

    r, up, leg = asyncio.run(main())
    cap = leg.state.capacity
    assert (cap.copies_sent, cap.copies_ok, cap.copies_shed) == (2, 2, 0)
    assert leg.state.in_flight == 0 and r._shadow_bytes == 0
    assert leg.state.stats.sent == 0 and leg.state.stats.latency.count == 0  # the compared statistics are untouched
    marks = sorted(dict(md)[COPY_HEADER] for _, _, md in up.calls)
    assert marks == ["1", "2"]
    for req, timeout, md in up.calls:
        m = kserve.ModelInferRequest.FromString(req)
        assert (m.model_name, m.model_version, m.parameters["shadow"].bool_param) == ("m2", "2", True)
        assert timeout == 0.5 and ("x-shadow-request", "1") in md and ("x-tenant", "a") in md and "authorization" not in dict(md)
    assert cap.live is r.state.routes["m"].stats  # attached to the route's live count


def test_copies_shed_at_the_bounds_and_errors_counted() -> None:
    async def main():
        r, up = FakeRouter(budget=len(RAW) * 3), FakeUpstream(fail=grpc.StatusCode.RESOURCE_EXHAUSTED)
        leg = _leg(up, max_in_flight=3)
        leg.state.in_flight = 1  # the compared call
        capacity.amplify(r, leg, RAW, None, 0.5, 5)  # 4 copies: 2 slots left
        r._shadow_bytes += len(RAW) * 2
        capacity.amplify(RuntimeError, leg, RAW, None, 0.5, 3)  # a broken router: never raises
        await r.settle()
        return leg

    leg = asyncio.run(main())
    cap = leg.state.capacity
    assert (cap.copies_sent, cap.copies_shed, cap.copies_ok) == (2, 2, 0)
    assert cap.copies_errors == {"RESOURCE_EXHAUSTED": 2} and leg.state.in_flight == 1


class Item:
    def __init__(self, k: int, leg) -> None:
        self.k, self.leg, self.raw, self.metadata, self.deadline = k, leg, RAW, None, 0.5
        self.dropped = False

    def drop(self) -> None:
        self.dropped = True


def test_pacer_rate_drop_oldest_fill_and_close() -> None:
    q = 200.0

    async def main():
        r, up = FakeRouter(), FakeUpstream()
        leg = _leg(up, qps=q, queue=4)
        pacer = Pacer(leg.state, r.release, router=r)
        items = [Item(k, leg) for k in range(6)]
        for it in items:  # 6 offers into a queue of 4: the 2 oldest dropped
            pacer.offer(it)
        assert [it.dropped for it in items] == [True, True, False, False, False, False] and pacer.waiting == 4
        t0 = time.monotonic()
        await asyncio.sleep(0.5)
        elapsed = time.monotonic() - t0
        await pacer.aclose()
        await r.settle()
        return r, up, leg, items, elapsed

    r, up, leg, items, elapsed = asyncio.run(main())
    cap = leg.state.capacity
    assert [it.k for _, it in r.released] == [2, 3, 4, 5]
    span = r.released[-1][0] - r.released[0][0]
    assert span >= 2 / q, span  # one per tick (a late wake catches up at most a tick or so), never all at once
    ticks = cap.qps_released + cap.qps_filled
    assert abs(ticks - q * elapsed) <= 0.1 * q * elapsed + 3, (ticks, elapsed)  # constant Q: releases, then fills
    assert (cap.qps_queued, cap.qps_dropped, cap.qps_released) == (6, 2, 4)
    assert cap.qps_filled == cap.copies_sent == len(up.calls) and cap.qps_filled > 50
    assert {dict(md)[COPY_HEADER] for _, _, md in up.calls} == {"fill"}
    assert leg.state.in_flight == 0 and r._shadow_bytes == 0


def test_pacer_not_started_and_close_drops_queue() -> None:
    async def main():
        r, up = FakeRouter(), FakeUpstream()
        r.accept = False
        leg = _leg(up, qps=50.0, queue=100)
        pacer = Pacer(leg.state, r.release, router=r)
        items = [Item(k, leg) for k in range(10)]
        for it in items:
            pacer.offer(it)
        await asyncio.sleep(0.1)
        await pacer.aclose()
        return leg, items, r

    leg, items, r = asyncio.run(main())
    cap = leg.state.capacity
    started = len(r.released)
    assert 3 <= started <= 8 and cap.qps_not_started == started and cap.qps_filled == 0  # nothing released: nothing to fill
    assert cap.qps_dropped == 10 - started and all(it.dropped for it in items[started:])


def test_metric_rows() -> None:
    from shadowgrpc._capacity_report import metric_rows

    amp, paced, plain = _leg(FakeUpstream()), _leg(FakeUpstream(), qps=10.0), _leg(FakeUpstream())
    for leg in (amp, paced):
        capacity.ensure(leg.state)
    amp.state.capacity.copies_sent, amp.state.capacity.copies_errors["UNAVAILABLE"] = 5, 2
    paced.state.capacity.qps_dropped = 3
    shadows = [("m", amp), ("m", paced), ("m", plain)]
    rows = metric_rows(shadows, "copies")
    assert len(rows) == 4 + 1 + 4  # sent/ok/shed/down (+ one error status) per target with a capacity state; none for plain
    assert sorted((a["outcome"], a.get("status"), n) for n, a in metric_rows([("m", amp)], "copies")) == [
        ("down", None, 0), ("error", "UNAVAILABLE", 2), ("ok", None, 0), ("sent", None, 5), ("shed", None, 0)]
    fates = {a["fate"]: n for n, a in metric_rows(shadows, "paced")}
    assert fates == {"queued": 0, "released": 0, "dropped": 3, "filled": 0, "not_started": 0}


def test_fills_are_charged_to_the_budget() -> None:
    from shadowgrpc._config_rollout import Budget
    from shadowgrpc.budget import BudgetState

    async def main():
        r, up = FakeRouter(), FakeUpstream()
        leg = _leg(up, qps=200.0)
        leg.state.budget = BudgetState(Budget(per="run", requests=5))
        pacer = Pacer(leg.state, r.release, router=r)
        pacer.offer(Item(0, leg))  # released (this fake router charges nothing), then fills until 5 calls
        await asyncio.sleep(0.15)
        await pacer.aclose()
        await r.settle()
        return leg, up

    leg, up = asyncio.run(main())
    assert leg.state.capacity.qps_filled == len(up.calls) == 5 and leg.state.budget.requests == 5
    assert leg.state.budget.refused > 0 and leg.state.budget.paused
