"""Route a ModelInfer: await live, schedule bounded shadows; live never waits for a shadow.

The path, in order (DESIGN.md "A request's path"):
1. ``scan_request`` reads model name, version, id and the shared-memory flag from the bytes.
2. Live: the bytes go to live Triton unchanged (rewritten only when the route renames or pins the
   live model) and live's response bytes go back unchanged; a live error is re-raised with
   Triton's exact status, message and trailing metadata.
3. Shadow: which targets get it is admission.py (the route's mirror rules, the sample by
   ``sample_key(id)`` (the same requests on every replica) or at random when the caller set no
   id, in-flight and byte bounds (shed), down targets, budgets, identical_sample, constant_qps
   and amplify), each decision counted in the coverage ledger; the shadow request is
   ``build_request(raw, model, version, shadow=True)`` (a wire-level append, one copy) sent with
   metadata ``x-shadow-request: 1`` and the live deadline, as a task held in a set.
4. When the shadow has answered, ``pairing.Pairing`` takes over (decode once, completeness,
   slices, compare, pair store, paired log): this module only routes and schedules.

Versions: a route that pins ``live.version`` applies it to requests that name no version (or the
pinned one); a request that names another version explicitly goes to live Triton unchanged (it
answers as it would directly: another version's answer, or NOT_FOUND for one it lacks) and is not
mirrored (``explicit_version_not_mirrored``). A shadow without a configured version gets the
version field cleared, so Triton's version policy picks (newest by default), whatever the caller
named.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from functools import partial

import grpc

from . import coverage
from .admission import Admission
from .backends import Upstream, Upstreams
from .codec import MODEL_SCOPED
from .config import Settings
from .outcomes import PairStore
from .packing import build_request, sample_key, scan_request
from .pairing import MirroredRequest, Pairing
from .pairlog.request import RequestLog
from .pairlog.schema import INTERNAL_ERROR, OutcomeRow
from .passthrough import abort_like, forward_metadata, stream_infer
from .routes import RouteEntry, ShadowLeg
from .security import shadow_metadata  # a shadow never gets the caller's credentials
from .sequences import sequence_of
from .streams import StreamMirror
from .state import CLOSED, FrontState

log = logging.getLogger("shadowgrpc.router")


_perf = time.perf_counter
_wall = time.time
COVERAGE_EVERY = coverage.EVERY


class Router(Admission):
    """Routing and fan-out. Writes the comparison state ``state`` (state.FrontState), which the
    report, snapshots, metrics and cost read; ``routes`` holds what serving needs."""

    def __init__(self, settings: Settings, upstreams: Upstreams) -> None:
        self.settings = settings
        self.state = FrontState.for_routes(settings.routes, settings.outcome_max_pairs, settings.outcome_ttl_s, settings.outcome_max_bytes)
        self.default = upstreams.get(settings.default_live, "live")
        self.upstreams = upstreams
        self.routes: dict[str, RouteEntry] = {}
        self.shadow_buffer_bytes = settings.shadow_buffer_bytes
        self.pairs = PairStore(settings.outcome_max_pairs, settings.outcome_ttl_s, settings.outcome_max_bytes, self.state.pairs)
        self.pairing = Pairing(self.pairs)
        self._shadow_bytes = 0  # requests and shadow answers held by shadow tasks
        self._tasks: set[asyncio.Task[None]] = set()
        self.telemetry = None  # telemetry.Hooks, set by the Front when tracing or metrics are on
        self.log = None  # pairlog.PairLog, set by the Front when [log] is on
        self.log_rate = settings.log.sample_rate
        self.log_inputs = settings.log.keep_inputs
        self._log_seq = itertools.count()
        for r in settings.routes:
            self.publish(r.model)  # every target NOT_READY until its check (repository.py)

    def publish(self, model: str, sequence_batching: bool | None = None, decoupled: bool | None = None) -> RouteEntry:
        """Build ``model``'s entry from its state (every window not CLOSED gets a leg, mirroring
        or counting ``not_ready`` by its status) and publish it with one assignment: requests
        already routed keep the entry they read (routes.py)."""
        rstate = self.state.routes[model]
        r = rstate.route
        old = self.routes.get(model)
        self._attach(rstate)
        legs = [
            ShadowLeg(ts, self.upstreams.get(ts.target.address, "shadow"), r, i)
            for i, ts in enumerate(rstate.shadows)
            if ts.status != CLOSED
        ]  # fmt: skip
        live = old.live if old is not None else self.upstreams.get(r.live.address, "live")
        entry = RouteEntry(
            rstate, live, legs, old.completeness if old is not None else None, old.generation + 1 if old is not None else 0,
            (old.sequence_batching if old is not None else False) if sequence_batching is None else sequence_batching,
            (old.decoupled if old is not None else False) if decoupled is None else decoupled,
        )  # fmt: skip
        self.routes = {**self.routes, model: entry}
        if self.log is not None and len(rstate.shadows) != len(r.shadows):
            self.log.set_targets(model, [ts.target for ts in rstate.shadows])
        return entry

    # -- ModelInfer -------------------------------------------------------------------------
    async def infer(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        t_in = _perf()
        try:
            model, version, request_id, uses_shm = scan_request(raw)
        except ValueError:
            # Not a ModelInferRequest we can read: Triton gives the caller its own answer.
            self.state.unparsed += 1
            return await self._proxy(self.default.infer, raw, context)
        rs = self.routes.get(model)
        if rs is None:
            self.state.unrouted += 1
            return await self._proxy(self.default.infer, raw, context)

        st = rs.stats
        st.requests += 1
        metadata = forward_metadata(context)
        timeout = context.time_remaining()
        if timeout is None:
            timeout = rs.route.live.deadline_s
        t0 = _perf()
        lc = self.telemetry.live(rs, version, request_id) if self.telemetry is not None else None
        call = rs.live.infer(rs.live_request(raw, version), timeout=timeout, metadata=metadata if lc is None else lc.inject(metadata, timeout))
        live_done: asyncio.Future[bytes] | None = None
        rl: RequestLog | None = None
        mirror_s = 0.0
        if rs.shadows:
            key = sample_key(request_id) if request_id else random.random()
            why = self._why_not(rs, raw, version, uses_shm, metadata)  # the route's reason not to mirror, or None
            # Sequence batcher (sequences.py): sampled by sequence id, mirrored whole or not at all.
            seq = sequence_of(raw) if rs.sequence_batching else None
            if seq is not None:
                key = sample_key(str(seq[0]))
                st.sequences += seq[1]
                if why is not None:  # not mirrored: a mirrored sequence breaks
                    self.pairing.sequences.not_mirrored(model, rs.shadows, key, seq)
            if self.log is not None and key < self.log_rate:
                rl = RequestLog(self.log.pair, model, request_id, next(self._log_seq), _wall(), raw if self.log_inputs else None)
            if why is not None:
                if rl is not None:
                    rl.not_mirrored([ss.index for ss in rs.shadows], why)
            else:
                tm = _perf()
                live_done = self._mirror(rs, model, raw, request_id, metadata, timeout, key, rl, seq)
                if live_done is not None:
                    st.mirrored += 1
                mirror_s = _perf() - tm
                if lc is not None:
                    lc.mirrored()
            if rs.route.slices and st.requests % COVERAGE_EVERY == 0:  # per-slice coverage, off the handler
                asyncio.get_running_loop().call_soon(coverage.count, rs.state.coverage, rs.route.slices, raw, live_done is not None)
        try:
            response = await call
        except BaseException as e:
            if lc is not None:
                lc.end(e)
            if live_done is not None and not live_done.done():
                live_done.cancel()
            if isinstance(e, grpc.aio.AioRpcError):
                code = e.code().name
            elif isinstance(e, asyncio.CancelledError):
                code = "CANCELLED"
            else:
                code = "UNAVAILABLE"
            st.live_errors[code] += 1
            if rl is not None:
                rl.answered(code, None, None, None)
            if isinstance(e, asyncio.CancelledError):
                raise
            await abort_like(context, e)
            raise  # unreachable: abort raises
        t1 = _perf()
        st.live_latency.record(t1 - t0)
        st.live_ok += 1
        if lc is not None:
            lc.end(None)
        if live_done is not None and not live_done.done():
            live_done.set_result(response)
        added = (t0 - t_in) + mirror_s + (_perf() - t1)  # the handler's own time
        st.front_added.record(added)
        if rl is not None:
            if lc is not None:
                rl.trace_id = lc.trace_id()
            rl.answered("OK", t1 - t0, added, response)
        return response

    async def _shadow(self, ss: ShadowLeg, rs: RouteEntry, mr: MirroredRequest, metadata: tuple | None, deadline: float) -> None:
        """One shadow call, then the pairing stage. ``sent = ok + errors``: the call's own outcome
        is counted exactly once; what fails after an OK answer is the front's (internal_errors)."""
        s = ss.stats
        size = len(mr.raw)
        held = 0
        called = False
        sc = None
        status = "UNKNOWN"
        latency = None
        outcome = (None, None, None)
        response = None
        try:
            if self.telemetry is not None:
                sc = self.telemetry.shadow(ss, mr.route, deadline)
            req = build_request(mr.raw, ss.name, ss.version, True)
            t0 = _perf()
            response = None
            try:
                infer = ss.upstream.infer if sc is None else sc.wrap(ss.upstream.infer)
                response = await infer(req, timeout=deadline, metadata=shadow_metadata(metadata, self.settings.security.shadow_metadata_allow))
                latency = _perf() - t0
                s.latency.record(latency)
                s.ok += 1
                status = "OK"
            except grpc.aio.AioRpcError as e:
                status = e.code().name
                s.errors[status] += 1
            finally:
                called = status != "UNKNOWN"  # cancelled mid-call (shutdown past shadow_grace_s): counted CANCELLED below
                del req
            if response is not None:
                held = len(response)  # held until live answers: counted against shadow_buffer_mb
                self._shadow_bytes += held
            outcome = await self.pairing.answered(ss, rs, mr, response, sc, status=status)
        except asyncio.CancelledError:
            if called:
                s.internal_errors += 1  # cancelled after the call ended (shutdown): not compared
                outcome = (INTERNAL_ERROR, None, None)
            else:
                s.errors["CANCELLED"] += 1
                status = "CANCELLED"
                self.pairing.nway_failed(ss, rs, mr, status)  # identical_sample: the other legs need not wait
        except Exception:  # a shadow problem must never surface anywhere but in its stats
            if called:
                s.internal_errors += 1
                outcome = (INTERNAL_ERROR, None, None)
            else:
                s.errors["INTERNAL"] += 1
                status = "INTERNAL"
                self.pairing.nway_failed(ss, rs, mr, status)
            log.exception("shadow %s failed", ss.target.name)
        finally:
            ss.state.in_flight -= 1
            self._shadow_bytes -= size + held
            if ss.state.capacity is not None:
                ss.state.capacity.answered(latency, status == "OK", False)
            if sc is not None:
                sc.end()
            if mr.log is not None:
                pair, live, buckets = outcome
                mr.log.target(ss.index, status, pair, latency, buckets, live, response)

    # -- ground truth ---------------------------------------------------------------------------
    def record_outcome(self, request_id: str, labels, values) -> str:
        """Join one outcome with its waiting pair (``Pairing.record_outcome``) and count why not."""
        why = self.pairing.record_outcome(self.routes, request_id, labels, values)
        if self.log is not None:
            self.log.outcome(OutcomeRow(request_id, _wall(), labels, values, why, None))
        st = self.state
        if why == "unknown":
            st.outcomes_unknown += 1
        elif why == "duplicate":
            st.outcomes_duplicate += 1
        elif why == "reused":
            st.outcomes_reused += 1
        elif why == "mismatch":
            st.outcomes_mismatch += 1
        return why

    def reject_outcome(self, reason: str, request_id: str = "") -> None:
        """An outcome message that could not be used (counted by reason; the stream goes on)."""
        self.state.outcomes_rejected[reason] += 1
        if self.log is not None:
            self.log.outcome(OutcomeRow(request_id, _wall(), None, None, "rejected", reason))

    # -- everything else ----------------------------------------------------------------------
    async def _proxy(self, method, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            md = forward_metadata(context)
            if self.telemetry is not None:
                md = self.telemetry.pass_through(md)
            return await method(raw, timeout=context.time_remaining(), metadata=md)
        except grpc.aio.AioRpcError as e:
            await abort_like(context, e)
            raise

    def upstream_for(self, method: str, raw: bytes) -> tuple[Upstream, bytes]:
        """Model-scoped RPCs (ModelReady/Metadata/Config/Statistics) go to the route's live
        Triton, renamed/pinned like ModelInfer; all others to the default live Triton."""
        if method in MODEL_SCOPED:
            try:
                model, version, _, _ = scan_request(raw)
            except ValueError:
                return self.default, raw
            rs = self.routes.get(model)
            if rs is not None:
                return rs.live, rs.live_request(raw, version)
        return self.default, raw

    async def unary(self, method: str, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        up, raw = self.upstream_for(method, raw)
        return await self._proxy(up.unary[method], raw, context)

    async def stream_infer(self, requests, context: grpc.aio.ServicerContext):
        """ModelStreamInfer: each message routed by its own model name (``passthrough.stream_infer``)
        and mirrored on one shadow stream per target (``streams.StreamMirror``)."""
        mirror = partial(StreamMirror, self)  # routes read per message: a published entry applies
        async for response in stream_infer(lambda: self.routes, self.default, self._stream_message, requests, context, mirror):
            yield response

    def _stream_message(self) -> None:
        self.state.stream_messages += 1

    def _stream_bytes(self, n: int, force: bool = False) -> bool:
        """Hold ``n`` bytes (< 0: release) for stream shadows; False past the budget unless ``force``."""
        if n > 0 and not force and self._shadow_bytes + n > self.shadow_buffer_bytes:
            return False
        self._shadow_bytes += n
        return True

    def _spawn(self, coro) -> None:  # a shadow task, drained at shutdown
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for in-flight shadow calls; cancel the rest. Returns how many
        were cancelled. Requests still queued for a constant_qps target are dropped (counted)."""
        for rs in self.state.routes.values():
            for ts in rs.shadows:
                if ts.pacer is not None:
                    await ts.pacer.aclose()
        pending = set(self._tasks)
        if not pending:
            return 0
        _, still = await asyncio.wait(pending, timeout=timeout)
        for t in still:
            t.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
        return len(still)

