"""Which shadow targets get a request: the admission half of the router (router.py).

Per request, in order (every decision counted once per target in the coverage ledger, report.py):

1. The route's reasons, for all its targets at once (``_why_not``): shared memory, a version other
   than the pinned one, larger than the whole shadow buffer or ``[routes.mirror] max_request_mb``
   (``too_large``), a ``[routes.mirror]`` rule (rules.py: ``excluded``).
2. Per target (``_mirror``): the sample (``not_sampled``: the request id's hash vs sample_rate,
   the same on every replica), then ``_admit``: not ready, ``shed`` (max_in_flight, the shadow
   buffer), ``down`` (its connection in TRANSIENT_FAILURE), ``budget`` (budget.py: charged here,
   so a budget of K calls never lets more than K out).
3. identical_sample (``_all_or_none``): every target of the route takes it, or none does
   (``held_back``), so every shadow is compared on the same rows (nway.py).
4. Sent (``_start``: a task held by the router), or for a constant_qps target queued
   (``qps_queued`` while queued; released by its Pacer through ``release`` and counted then, or
   ``qps_dropped``: capacity.py); amplify = N adds
   N - 1 uncompared copies (capacity.amplify).
"""

from __future__ import annotations

import asyncio

import grpc

from .config import FALLBACK_SHADOW_DEADLINE_S
from .pairing import MirroredRequest
from .pairlog.request import RequestLog
from .pairlog.schema import BUDGET, DOWN, EXPLICIT_VERSION, HELD_BACK, NOT_READY, NOT_SAMPLED, SHED, SHM, TOO_LARGE
from .routes import RouteEntry, ShadowLeg
from .state import CLOSED

_TRANSIENT_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE


def route_reason(rs: RouteEntry, raw: bytes, version: str | None, uses_shm: bool, metadata: tuple | None, buffer_bytes: int) -> str | None:
    """Why no target of route ``rs`` may get this request (unary or a stream message), or None:
    shared memory, an explicit other version, too large (never fits ``buffer_bytes``, or over
    ``[routes.mirror] max_request_mb``), or a ``[routes.mirror]`` rule's reason (rules.py)."""
    if uses_shm:
        return SHM
    if rs.explicit_other_version(version):
        return EXPLICIT_VERSION
    if len(raw) > buffer_bytes:  # could never be held: not "shed", it never fits
        return TOO_LARGE
    return rs.rules.why_not(raw, version, metadata) if rs.rules is not None else None  # rules.TOO_LARGE is TOO_LARGE


class Admission:
    """Mixed into router.Router: uses its ``pairing``, ``_shadow_bytes``, ``shadow_buffer_bytes``,
    ``_tasks``, ``_spawn`` and ``_shadow`` (the call and its pairing)."""

    def _attach(self, rstate) -> None:
        """The per-target parts a target's config asks for: its budget (budget.py), capacity
        counters and pacer (capacity.py); the route's N-way state (nway.py). Kept across
        publishes (a retuned budget keeps what was spent in its period)."""
        for ts in rstate.shadows:
            t = ts.target
            if t.budget is not None:
                from .budget import BudgetState

                if ts.budget is None:
                    ts.budget = BudgetState(t.budget, name=f"{rstate.route.model}/{t.name}")
                else:
                    ts.budget.retune(t.budget)
            else:
                ts.budget = None
            if (t.amplify > 1 or t.constant_qps > 0) and ts.capacity is None:
                from .capacity import CapacityState

                ts.capacity = CapacityState(rstate.stats)  # load levels: calls per live request, per window
            if t.constant_qps > 0 and ts.pacer is None:
                from .capacity import Pacer

                ts.pacer = Pacer(ts, self.release)
            elif t.constant_qps > 0:  # a reload may retune the rate and the queue bound
                ts.pacer.interval = 1.0 / t.constant_qps
                ts.pacer.bound = t.qps_queue
            elif ts.pacer is not None:
                pacer, ts.pacer = ts.pacer, None
                self._spawn(pacer.aclose())  # what it still held: dropped (counted)
        if rstate.route.identical_sample:
            names = [ts.target.name for ts in rstate.shadows if ts.status != CLOSED]
            if rstate.nway is None or rstate.nway.names != names:  # a reload changed the shadows: a new N-way block
                from .nway import NWayState

                rstate.nway = NWayState(names)

    def _why_not(self, rs: RouteEntry, raw: bytes, version: str | None, uses_shm: bool, metadata: tuple | None) -> str | None:
        """Why no target of the route gets this request (counted; the paired log's reason), or None."""
        why = route_reason(rs, raw, version, uses_shm, metadata, self.shadow_buffer_bytes)
        if why is None:
            return None
        st = rs.stats
        if why == SHM:
            st.shm_not_mirrored += 1
        elif why == EXPLICIT_VERSION:
            st.explicit_version_not_mirrored += 1
        elif why == TOO_LARGE:
            st.too_large += 1
        else:
            st.excluded[why] += 1  # the paired log's mirror column: the rule's reason ("excluded: writes", ...)
        return why

    def _mirror(
        self, rs: RouteEntry, route: str, raw: bytes, request_id: str, metadata: tuple | None, timeout: float | None, key: float,
        rl: RequestLog | None, seq: tuple | None = None,
    ) -> asyncio.Future[bytes] | None:
        """Choose, bound and start the shadow calls; ``key``: the request's sampling key; ``rl``:
        its paired-log record when the log samples it; ``seq``: its (sequence id, start, end).
        Every target's decision is counted once in the coverage ledger (report.py): not_sampled,
        not_ready, shed, down, budget, held_back (identical_sample), qps_queued or sent."""
        chosen: list[tuple[ShadowLeg, object]] = []
        size = len(raw)
        for ss in rs.shadows:
            t = ss.target
            if key >= t.sample_rate:
                ss.stats.not_sampled += 1
                if rl is not None:
                    rl.not_sent(ss.index, NOT_SAMPLED, False)
                continue
            sq = self.pairing.sequences.admit(route, ss, seq) if seq is not None else None  # sequence batcher
            if seq is not None and sq is None:  # not mirrored from its start, or broken (sequences.py)
                ss.stats.not_sampled += 1
                if rl is not None:
                    rl.not_sent(ss.index, NOT_SAMPLED, False)
                continue
            ss.stats.sampled += 1
            why = self._admit(ss, size, check_budget=not rs.identical)
            if why is not None:
                self._not_sent(ss, why, rl, sq)
                continue
            chosen.append((ss, sq))
        if not chosen:
            return None
        if rs.identical and not self._all_or_none(rs, chosen, size, rl):
            return None
        mr = MirroredRequest(raw, request_id, route, asyncio.get_running_loop().create_future(), timeout)
        mr.log = rl
        for ss, sq in chosen:
            if sq is not None:  # sequence: its pairs are held until it completes (pairing.py)
                sq.table.sent(sq)
                mr.sequences = {**(mr.sequences or {}), ss.target.name: sq}
        if rs.identical:
            self.pairing.nway_begin(mr, [ss for ss, _ in chosen])  # compared only when all answered (nway.py)
        for ss, _ in chosen:
            t = ss.target
            deadline = t.deadline_s or timeout or FALLBACK_SHADOW_DEADLINE_S
            if rl is not None:
                rl.sent()
            if ss.paced:  # constant_qps: queued; the target's Pacer releases it (capacity.py)
                ss.stats.qps_queued += 1
                self._shadow_bytes += size  # held while queued
                ss.state.pacer.offer(_Paced(self, ss, rs, mr, metadata, deadline))
                continue
            self._start(ss, rs, mr, metadata, deadline)
            if ss.amplify > 1:
                from . import capacity

                capacity.amplify(self, ss, raw, metadata, deadline, ss.amplify)
        return mr.live_done

    def _admit(self, ss: ShadowLeg, size: int, check_budget: bool = True) -> str | None:
        """Whether target ``ss`` can take a request of ``size`` bytes now: None, or why not
        (not ready, shed, down, budget). The budget is checked last: it charges what it admits."""
        if not ss.mirroring:  # not checked yet, refused by its contract check, or gone
            return NOT_READY
        if not ss.paced and (ss.in_flight >= ss.target.max_in_flight or self._shadow_bytes + size > self.shadow_buffer_bytes):
            return SHED
        if ss.upstream.get_state(try_to_connect=True) is _TRANSIENT_FAILURE:
            return DOWN  # target down: a call would only fail with UNAVAILABLE at full per-call cost
        if check_budget and ss.state.budget is not None and not ss.state.budget.admit(size, ss.amplify):
            return BUDGET
        return None

    def _all_or_none(self, rs: RouteEntry, chosen: list, size: int, rl: RequestLog | None) -> bool:
        """identical_sample: every target of the route takes the request, or none does. The
        others of a target that could not are counted ``held_back``; budgets charged only when
        all of them admit (what one admitted is given back when a later one refuses)."""
        if len(chosen) == len(rs.shadows):
            charged = []
            for ss, sq in chosen:
                b = ss.state.budget
                if b is not None and not b.admit(size, ss.amplify):
                    for c in charged:
                        c.state.budget.refund(size, c.amplify)
                    self._not_sent(ss, BUDGET, rl, sq)
                    chosen = [x for x in chosen if x[0] is not ss]
                    break
                if b is not None:
                    charged.append(ss)
            else:
                return True
        for ss, sq in chosen:
            self._not_sent(ss, HELD_BACK, rl, sq)
        return False

    def _not_sent(self, ss: ShadowLeg, why: str, rl: RequestLog | None, sq) -> None:
        """Target ``ss`` sampled but not sent: ``why`` (one of schema.NOT_SENT, its counter's name)."""
        s = ss.stats
        setattr(s, why, getattr(s, why) + 1)
        if rl is not None:
            rl.not_sent(ss.index, why, True)
        if sq is not None:  # sequence: not sent breaks it (sequences.py)
            sq.table.not_sent(sq)

    def _start(self, ss: ShadowLeg, rs: RouteEntry, mr: MirroredRequest, metadata: tuple | None, deadline: float) -> None:
        """Start the (compared) shadow call of ``mr`` to ``ss`` as a task held by the router."""
        ss.state.in_flight += 1
        self._shadow_bytes += len(mr.raw)
        ss.stats.sent += 1
        if ss.state.capacity is not None:
            ss.state.capacity.sent(1)
        task = asyncio.create_task(self._shadow(ss, rs, mr, metadata, deadline))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def release(self, item: _Paced) -> bool:
        """constant_qps: the Pacer (capacity.py) releases a queued request now. False when the
        target cannot take it any more (shed, down, not ready, budget: counted like any other)."""
        ss, size = item.leg, len(item.mr.raw)
        self._shadow_bytes -= size  # the queue's hold ends; _start holds it again while in flight
        item.held = False
        ss.stats.qps_queued -= 1  # the ledger: no longer queued; what became of it is counted now
        why = self._admit(ss, size)
        if why is None and ss.state.in_flight >= ss.target.max_in_flight:
            why = SHED
        if why is not None:
            self._not_sent(ss, why, None, None)
            item.ended(why.upper())
            return False
        self._start(ss, item.rs, item.mr, item.metadata, item.deadline)
        return True


class _Paced:
    """A mirrored request queued for a constant_qps target (capacity.Pacer): released through
    ``Router.release``, or dropped (oldest first when the queue is full, or at shutdown)."""

    __slots__ = ("deadline", "held", "leg", "metadata", "mr", "router", "rs")

    def __init__(self, router: Admission, leg: ShadowLeg, rs: RouteEntry, mr: MirroredRequest, metadata: tuple | None, deadline: float) -> None:
        self.router = router
        self.leg = leg
        self.rs = rs
        self.mr = mr
        self.metadata = metadata
        self.deadline = deadline
        self.held = True  # its bytes count in the router's shadow buffer while queued

    @property
    def raw(self) -> bytes:
        return self.mr.raw

    def drop(self) -> None:
        """Not sent: the queue was full (oldest dropped) or the front stops."""
        if self.held:
            self.router._shadow_bytes -= len(self.mr.raw)
            self.held = False
        s = self.leg.stats
        s.qps_queued -= 1
        s.qps_dropped += 1
        self.ended("DROPPED")

    def ended(self, status: str) -> None:
        """The paired log's row for this target: not sent after all (``status``)."""
        if self.mr.log is not None:
            self.mr.log.target(self.leg.index, status, None, None, None, None, None)
