"""Capacity shadow: send a target more than its share of traffic and measure how its latency holds.

    [[routes.shadows]]
    amplify = 3            # each mirrored request sent 3 times: the compared call + 2 copies
    # constant_qps = 500.0 # or: mirrored requests released at 500/s (qps_queue, oldest dropped)

Copies (``amplify``) and fills (``constant_qps``) carry ``x-shadow-copy`` metadata (the copy's
number, or "fill") besides the shadow marks, are never compared, paired, stored for ground truth
or logged, and count only here (``copies_*``): the compared statistics and the verdict are what
they would be without amplification. Each copy takes an in-flight slot of the target
(``max_in_flight``) and its request bytes count against ``shadow_buffer_mb``; a copy that finds
either full is shed (``copies_shed``), one whose target is down is not sent (``copies_down``).

Load levels (``CapacityState``). In each window of ``WINDOW_S`` (1 s) the front counts the calls
it sent to the target (compared calls, copies, fills: what the candidate's Triton is offered) and
live's requests on the route; their ratio is the window's *load multiple* ("production load x N",
whatever the window's length). A window goes to the highest level of the fixed ladder ``LEVELS``
at or below its multiple with 5% tolerance (2.9x counts as 3x, 2.5x as 2x: "holds 3x" is claimed
only from windows that offered about 3x or more); calls with no live request in the window (fills
while live is idle) form the level "no live traffic". Answers (latency, errors) count in the window
in which they arrive, which for sub-second latencies is the one they were sent in; a window in
which nothing was sent keeps the previous one's level (its answers are that load's tail). The
window in progress is reported once it ends. The ladder is fixed, so replicas' levels merge
exactly (multiples are each front's, the fleet's behind an even load balancer; rates per front).

The report per level (offered and live rate, time share, p50/p99, errors), the compute and the
headroom it implies: _capacity_report.py.

``Pacer`` (``constant_qps``): mirrored requests queue (bounded by ``qps_queue``; full: the oldest
dropped, ``qps_dropped``) and one is released every 1/Q s on absolute times (no drift; after a
stall at most ``CATCHUP_TICKS`` ticks, or 5 ms worth, are caught up, never a burst). A tick with
an empty queue sends a fill copy of the last released request (``qps_filled``), so the candidate
sees a constant Q req/s while traffic flows; after ``IDLE_S`` without an offer the pacer parks
(no fills) until the next one.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter, deque
from typing import Any

import grpc

from .packing import build_request
from .security import shadow_metadata
from .sketches import LatencySketch
from .state import MIRRORING

log = logging.getLogger("shadowgrpc.capacity")

WINDOW_S, TOLERANCE = 1.0, 0.05
LEVELS = (0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)
BELOW = 0  # level index: below LEVELS[0]
NO_LIVE = len(LEVELS) + 1  # level index: calls sent, no live request in the window
N_LEVELS = len(LEVELS) + 2
COPY_HEADER = "x-shadow-copy"
CATCHUP_TICKS, CATCHUP_MIN_S, IDLE_S = 3, 0.005, 10.0
COUNTS = ("copies_sent", "copies_ok", "copies_shed", "copies_down", "qps_queued", "qps_released", "qps_dropped", "qps_filled", "qps_not_started", "qps_ticks_skipped")
_LEVEL_COUNTS = ("windows", "busy_us", "calls", "live", "answered", "errors")
_TRANSIENT_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_perf = time.perf_counter


def level_of(calls: int, live: int) -> int:
    """The level index of a window that sent ``calls`` to the target while live had ``live`` requests."""
    if live <= 0:
        return NO_LIVE if calls > 0 else BELOW
    m = calls / live * (1.0 + TOLERANCE)
    i = 0
    while i < len(LEVELS) and LEVELS[i] <= m:
        i += 1
    return i  # 0: below LEVELS[0]; i: LEVELS[i - 1]


def level_label(i: int) -> str:
    if i == BELOW:
        return f"<{LEVELS[0]:g}x"
    if i == NO_LIVE:
        return "no live traffic"
    return f"{LEVELS[i - 1]:g}x"


def level_multiple(i: int) -> float:
    return 0.0 if i in (BELOW, NO_LIVE) else LEVELS[i - 1]


class Level:
    __slots__ = ("answered", "busy_us", "calls", "errors", "latency", "live", "windows")

    def __init__(self) -> None:
        self.windows = 0  # windows of WINDOW_S at this level
        self.busy_us = 0  # of which calls were being sent: first to last send (+ one gap), us (rates)
        self.calls = 0  # calls sent to the target in them
        self.live = 0  # live requests on the route in them
        self.answered = 0  # calls that ended in them (ok + errors)
        self.errors = 0
        self.latency = LatencySketch()  # OK calls

    def add(self, other: Level) -> None:
        for k in _LEVEL_COUNTS:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.latency.merge(other.latency)


class CapacityState:
    """One shadow target's load levels and copy/pacer counters (see the module doc). ``live``: the
    route's RouteStats (its ``requests`` counts live's requests); None: every window with calls
    counts as "no live traffic"."""

    __slots__ = ("_clock", "_end", "_first", "_last_level", "_latest", "_live0", "_sends", "_w", "copies_errors", "levels", "live", "window_s", *COUNTS)

    def __init__(self, live: Any = None, window_s: float = WINDOW_S, clock: Any = time.monotonic) -> None:
        self.live = live
        self.window_s = window_s
        self._clock = clock
        self.levels: list[Level | None] = [None] * N_LEVELS
        self.copies_errors: Counter[str] = Counter()
        for k in COUNTS:
            setattr(self, k, 0)
        self._w = Level()  # the window in progress
        self._end = 0.0  # its end (clock); 0: none open
        self._live0 = 0
        self._last_level = BELOW
        self._first = self._latest = 0.0  # the window's first and latest send
        self._sends = 0

    def attach(self, live: Any) -> None:
        """Count live's requests from ``live`` (a RouteStats) from now on, when not counting yet."""
        if self.live is None and live is not None:
            self.live = live
            self._live0 = live.requests

    def _live_now(self) -> int:
        return self.live.requests if self.live is not None else 0

    def roll(self, now: float | None = None) -> None:
        """Close the window in progress when it has ended (called by every event and by readers)."""
        now = self._clock() if now is None else now
        if now < self._end:
            return
        if self._end:
            w = self._w
            w.live = self._live_now() - self._live0
            if w.calls or w.live:
                self._last_level = level_of(w.calls, w.live)
            if w.calls or w.live or w.answered:
                w.windows = 1
                n = self._sends
                span = (self._latest - self._first) * n / (n - 1) if n > 1 else self.window_s
                w.busy_us = round(min(span, self.window_s) * 1e6)
                i = self._last_level
                if self.levels[i] is None:
                    self.levels[i] = w
                else:
                    self.levels[i].add(w)
                self._w = Level()
            else:
                self._w.live = 0
        self._end = (now // self.window_s + 1) * self.window_s
        self._live0 = self._live_now()
        self._sends = 0

    def sent(self, calls: int = 1) -> None:
        """``calls`` calls were sent to the target (compared calls, copies, fills)."""
        now = self._clock()
        if now >= self._end:
            self.roll(now)
        self._w.calls += calls
        if not self._sends:
            self._first = now
        self._latest = now
        self._sends += 1

    def answered(self, latency_s: float | None, ok: bool, copy: bool) -> None:
        """A call to the target ended (``copy``: a copy or fill; counted in ``copies_*`` by its sender)."""
        if self._clock() >= self._end:
            self.roll()
        w = self._w
        w.answered += 1
        if ok and latency_s is not None:
            w.latency.record(latency_s)
        elif not ok:
            w.errors += 1

    def merge(self, other: CapacityState) -> None:
        """Add ``other`` (another replica's, loaded from a snapshot) to this one, exactly."""
        if other.window_s != self.window_s:
            raise ValueError(f"capacity windows differ: {self.window_s} s vs {other.window_s} s")
        for k in COUNTS:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.copies_errors.update(other.copies_errors)
        for i, lv in enumerate(other.levels):
            if lv is not None:
                if self.levels[i] is None:
                    self.levels[i] = Level()
                self.levels[i].add(lv)

    # -- snapshots ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        self.roll()
        d: dict[str, Any] = {k: getattr(self, k) for k in COUNTS}
        d["window_s"] = self.window_s
        d["copies_errors"] = dict(self.copies_errors)
        d["levels"] = {
            str(i): {**{k: getattr(lv, k) for k in _LEVEL_COUNTS}, "latency": base64.b64encode(lv.latency.to_bytes()).decode()}
            for i, lv in enumerate(self.levels) if lv is not None
        }  # fmt: skip
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CapacityState:
        c = cls(None, float(d["window_s"]), clock=lambda: 0.0)  # a loaded state records nothing more
        for k in COUNTS:
            setattr(c, k, int(d.get(k, 0)))
        c.copies_errors = Counter({str(k): int(v) for k, v in d.get("copies_errors", {}).items()})
        for i, ld in d["levels"].items():
            lv = Level()
            for k in _LEVEL_COUNTS:
                setattr(lv, k, int(ld[k]))
            lv.latency = LatencySketch.from_bytes(base64.b64decode(ld["latency"]))
            c.levels[int(i)] = lv
        return c


def ensure(ts: Any, live: Any = None) -> CapacityState:
    """``ts.capacity`` (a state.TargetState's), made when missing."""
    if ts.capacity is None:
        ts.capacity = CapacityState(live)
    return ts.capacity


# -- copies --------------------------------------------------------------------------------------
def amplify(router: Any, leg: Any, raw: bytes, metadata: tuple | None, deadline: float, n: int) -> None:
    """Send ``n - 1`` uncompared copies of a mirrored request to ``leg`` (the compared call was
    just started by the router). Never raises."""
    try:
        if n <= 1:
            return
        cap = ensure(leg.state)
        if cap.live is None:  # made without the route's stats: live's requests counted from now on
            rs = router.state.routes.get(leg.route.model)
            cap.attach(rs.stats if rs is not None else None)
        req = build_request(raw, leg.name, leg.version, True)
        md = shadow_metadata(metadata, router.settings.security.shadow_metadata_allow)
        for k in range(1, n):
            send_copy(router, leg, req, len(raw), md, deadline, str(k), check_down=False)
    except Exception:
        log.exception("amplify %s failed", getattr(leg.target, "name", "?"))


def send_copy(router: Any, leg: Any, req: bytes, size: int, md: tuple, deadline: float, mark: str, check_down: bool = True) -> bool:
    """Start one copy (``req``: the shadow request, already rewritten; ``md``: shadow metadata)
    unless the target's in-flight slots or the shadow byte budget are full (shed) or it is down."""
    ts = leg.state
    cap = ensure(ts)
    if ts.in_flight >= leg.target.max_in_flight or router._shadow_bytes + size > router.shadow_buffer_bytes:
        cap.copies_shed += 1
        return False
    if check_down and leg.upstream.get_state(try_to_connect=True) is _TRANSIENT_FAILURE:
        cap.copies_down += 1
        return False
    ts.in_flight += 1
    router._shadow_bytes += size
    cap.copies_sent += 1
    cap.sent()
    router._spawn(_copy(router, leg, cap, req, size, (*md, (COPY_HEADER, mark)), deadline))
    return True


async def _copy(router: Any, leg: Any, cap: CapacityState, req: bytes, size: int, md: tuple, deadline: float) -> None:
    ok, latency = False, None
    try:
        t0 = _perf()
        await leg.upstream.infer(req, timeout=deadline, metadata=md)
        latency = _perf() - t0
        ok = True
        cap.copies_ok += 1
    except grpc.aio.AioRpcError as e:
        cap.copies_errors[e.code().name] += 1
    except asyncio.CancelledError:
        cap.copies_errors["CANCELLED"] += 1  # shutdown past shadow_grace_s
    except Exception:
        cap.copies_errors["INTERNAL"] += 1
        log.exception("copy to %s failed", leg.target.name)
    finally:
        leg.state.in_flight -= 1
        router._shadow_bytes -= size
        cap.answered(latency, ok, True)


# -- constant_qps --------------------------------------------------------------------------------
class Pacer:
    """Releases a target's mirrored requests at ``constant_qps`` (see the module doc). ``release``:
    the router's function that starts a queued request now (False: not started, counted by the
    router); ``router``: for fills (None: ``release``'s owner when it is a bound method)."""

    def __init__(self, ts: Any, release: Any, router: Any = None, clock: Any = time.monotonic) -> None:
        self.ts = ts
        self.release = release
        self.router = router if router is not None else getattr(release, "__self__", None)
        self.cap = ensure(ts)
        self.interval = 1.0 / ts.target.constant_qps
        self.queue: deque = deque()
        self.bound = ts.target.qps_queue
        self._clock = clock
        self._task: asyncio.Task | None = None
        self._last: Any = None  # the last released item (fills copy it)
        self._fill: tuple | None = None  # (leg, request, size, metadata, deadline) of _last
        self._offered = 0.0

    waiting = property(lambda self: len(self.queue))

    def offer(self, item: Any) -> None:
        """Queue ``item`` (has .raw, .leg, .metadata, .deadline, .drop()); full: the oldest dropped."""
        cap = self.cap
        if cap.live is None and getattr(item, "rs", None) is not None:
            cap.attach(item.rs.stats)  # made without the route's stats: live's requests counted from now on
        if len(self.queue) >= self.bound:
            self._drop(self.queue.popleft())
        self.queue.append(item)
        cap.qps_queued += 1
        self._offered = self._clock()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _drop(self, item: Any) -> None:
        self.cap.qps_dropped += 1
        try:
            item.drop()
        except Exception:
            log.exception("dropping a queued request failed")

    async def _run(self) -> None:
        clock, step = self._clock, self.interval
        lag_max = max(CATCHUP_TICKS * step, CATCHUP_MIN_S)
        due = clock()
        while True:
            now = clock()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            if now - due > lag_max:  # a stall: skip what cannot be caught up without a burst
                skipped = int((now - due - lag_max) / step) + 1
                self.cap.qps_ticks_skipped += skipped
                due += skipped * step
            if not self.queue and now - self._offered > IDLE_S:
                return  # parked until the next offer
            self._tick()
            due += step
            if due <= clock():
                await asyncio.sleep(0)  # catching up: let the loop breathe between ticks

    def _tick(self) -> None:
        cap = self.cap
        try:
            if self.queue:
                item = self.queue.popleft()
                if self.release(item):
                    cap.qps_released += 1
                    if item is not self._last:
                        self._last, self._fill = item, None
                else:
                    cap.qps_not_started += 1
                return
            if self._last is None or self.router is None or self.ts.status != MIRRORING:
                return
            if self._fill is None:
                it, leg = self._last, self._last.leg
                md = shadow_metadata(it.metadata, self.router.settings.security.shadow_metadata_allow)
                self._fill = (leg, build_request(it.raw, leg.name, leg.version, True), len(it.raw), md, it.deadline)
            leg, req, size, md, deadline = self._fill
            b = self.ts.budget  # budget.py: a fill is a shadow call too (refused: counted by the budget)
            if b is not None and not b.admit(size, 1):
                return
            if send_copy(self.router, leg, req, size, md, deadline, "fill"):
                cap.qps_filled += 1
            elif b is not None:
                b.refund(size, 1)
        except Exception:
            log.exception("pacer tick for %s failed", self.ts.target.name)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def aclose(self) -> None:
        """Stop releasing and drop whatever is queued (Router.drain)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        while self.queue:
            self._drop(self.queue.popleft())
        self._last = self._fill = None
