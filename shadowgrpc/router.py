"""Route a ModelInfer: await live, schedule bounded shadows; live never waits for a shadow.

The path, in order (DESIGN.md "A request's path"):
1. ``scan_request`` reads model name, version, id and the shared-memory flag from the bytes.
2. Live: the bytes go to live Triton unchanged (rewritten only when the route renames or pins the
   live model) and live's response bytes go back unchanged; a live error is re-raised with
   Triton's exact status, message and trailing metadata.
3. Shadow: chosen by ``sample_key(id)`` (the same requests on every replica) or at random when
   the caller set no id; the shadow request is ``build_request(raw, model, version, shadow=True)``
   (a wire-level append, one copy) sent with metadata ``x-shadow-request: 1`` and the live
   deadline, as a task held in a set. Past ``max_in_flight`` per target, or past the byte budget
   for all in-flight shadow requests, the shadow is shed and counted; while the target's
   connection is down (TRANSIENT_FAILURE) it is not sent and counted as ``down``.
4. When both answers are in, ``compare_responses`` updates the target's stats, overall and per
   slice bucket (``slices.assign``, once per request); with a request id the pair waits for its
   ground truth (``record_outcome``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import grpc

from .backends import MODEL_SCOPED, Upstream, Upstreams
from .compare import compare_responses
from .completeness import Completeness
from .config import FALLBACK_SHADOW_DEADLINE_S, Route, Settings, ShadowTarget
from .outcomes import OutcomeStats, PairStore, score
from .packing import build_request, sample_key, scan_request
from .slices import assign
from .stats import RouteStats, ShadowStats

log = logging.getLogger("shadowgrpc.router")

SHADOW_METADATA = (("x-shadow-request", "1"),)
# Metadata grpc sets itself on the upstream call; everything else the caller sent is forwarded.
_DROP_METADATA = frozenset({"user-agent"})

_perf = time.perf_counter
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
_TRANSIENT_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE


def forward_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, Any], ...] | None:
    md = context.invocation_metadata()
    if not md or (len(md) == 1 and md[0][0] in _DROP_METADATA):
        return None  # the common case: nothing but grpc's own user-agent
    return tuple((k, v) for k, v in md if k not in _DROP_METADATA)


async def abort_like(context: grpc.aio.ServicerContext, err: BaseException) -> None:
    """Give the caller exactly the status an upstream Triton gave (or UNAVAILABLE if none)."""
    if isinstance(err, grpc.aio.AioRpcError):
        await context.abort(err.code(), err.details() or "", _trailing(err.trailing_metadata()))
    await context.abort(_UNAVAILABLE, f"upstream Triton call failed: {err!r}")


def _trailing(md) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in md) if md else ()


class ShadowState:
    __slots__ = ("target", "route", "slices", "upstream", "stats", "outcomes", "in_flight", "name", "version")

    def __init__(self, target: ShadowTarget, upstream: Upstream, route: Route) -> None:
        self.target = target
        self.route = route
        self.slices = route.slices
        self.upstream = upstream
        self.stats = ShadowStats()
        self.outcomes = OutcomeStats()
        self.in_flight = 0
        self.name = target.model
        self.version = target.version or None


class RouteState:
    __slots__ = ("route", "live", "stats", "shadows", "live_name", "live_version", "completeness")

    def __init__(self, route: Route, live: Upstream, shadows: list[ShadowState]) -> None:
        self.route = route
        self.live = live
        self.stats = RouteStats()
        self.shadows = shadows
        # Rewrite the live request only when the route renames or pins the live model.
        self.live_name = route.live.model if route.live.model != route.model else None
        self.live_version = route.live.version or None
        self.completeness = Completeness(live, route.live.model, route.live.version)

    def live_request(self, raw: bytes, version: str | None) -> bytes:
        """``raw`` for the live target: unchanged unless the route renames the model or pins a
        version other than the caller's (``version``; None when unknown)."""
        if self.live_name is None and (self.live_version is None or self.live_version == version):
            return raw
        return build_request(raw, self.live_name, self.live_version, False)


class Router:
    def __init__(self, settings: Settings, upstreams: Upstreams) -> None:
        self.settings = settings
        self.default = upstreams.get(settings.default_live, "live")
        self.routes: dict[str, RouteState] = {}
        for r in settings.routes:
            shadows = [ShadowState(s, upstreams.get(s.address, "shadow"), r) for s in r.shadows]
            self.routes[r.model] = RouteState(r, upstreams.get(r.live.address, "live"), shadows)
        self.unrouted = 0
        self.unparsed = 0
        self.stream_messages = 0
        self.shadow_buffer_bytes = settings.shadow_buffer_bytes
        self.pairs = PairStore(settings.outcome_max_pairs, settings.outcome_ttl_s)
        self.outcomes_unknown = 0
        self.outcomes_duplicate = 0
        self.outcomes_mismatch = 0
        self._shadow_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.started = time.time()
        self.telemetry = None  # telemetry.Hooks, set by the Front when tracing or metrics are on

    # -- ModelInfer -------------------------------------------------------------------------
    async def infer(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        t_in = _perf()
        try:
            model, version, request_id, uses_shm = scan_request(raw)
        except ValueError:
            # Not a ModelInferRequest we can read: Triton gives the caller its own answer.
            self.unparsed += 1
            return await self._proxy(self.default.infer, raw, context)
        rs = self.routes.get(model)
        if rs is None:
            self.unrouted += 1
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
        mirror_s = 0.0
        if rs.shadows:
            if uses_shm:
                st.shm_not_mirrored += 1
            else:
                tm = _perf()
                live_done = self._mirror(rs, model, raw, request_id, metadata, timeout)
                mirror_s = _perf() - tm
                if lc is not None:
                    lc.mirrored()
        try:
            response = await call
        except BaseException as e:
            if lc is not None:
                lc.end(e)
            if live_done is not None and not live_done.done():
                live_done.cancel()
            if isinstance(e, grpc.aio.AioRpcError):
                st.live_errors[e.code().name] += 1
            elif isinstance(e, asyncio.CancelledError):
                st.live_errors["CANCELLED"] += 1
                raise
            else:
                st.live_errors["UNAVAILABLE"] += 1
            await abort_like(context, e)
            raise  # unreachable: abort raises
        t1 = _perf()
        st.live_latency.record(t1 - t0)
        st.live_ok += 1
        if lc is not None:
            lc.end(None)
        if live_done is not None and not live_done.done():
            live_done.set_result(response)
        st.front_added.record((t0 - t_in) + mirror_s + (_perf() - t1))  # the handler's own time
        return response

    def _mirror(
        self, rs: RouteState, route: str, raw: bytes, request_id: str, metadata: tuple | None, timeout: float | None
    ) -> asyncio.Future[bytes] | None:
        key = sample_key(request_id) if request_id else random.random()
        live_done: asyncio.Future[bytes] | None = None
        started = False
        per_request: list = []  # the request's slice buckets, computed by the first shadow task to need them
        for ss in rs.shadows:
            t = ss.target
            if key >= t.sample_rate:
                continue
            s = ss.stats
            s.sampled += 1
            if ss.in_flight >= t.max_in_flight or self._shadow_bytes + len(raw) > self.shadow_buffer_bytes:
                s.shed += 1
                continue
            if ss.upstream.channel.get_state(try_to_connect=True) is _TRANSIENT_FAILURE:
                # Target down: a call would only fail with UNAVAILABLE at full per-call cost.
                s.down += 1
                continue
            if live_done is None:
                live_done = asyncio.get_running_loop().create_future()
            deadline = t.deadline_s or timeout or FALLBACK_SHADOW_DEADLINE_S
            ss.in_flight += 1
            self._shadow_bytes += len(raw)
            s.sent += 1
            inputs = None if started else rs.completeness
            started = True
            task = asyncio.create_task(self._shadow(ss, route, request_id, raw, metadata, deadline, live_done, inputs, per_request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return live_done

    async def _shadow(
        self,
        ss: ShadowState,
        route: str,
        request_id: str,
        raw: bytes,
        metadata: tuple | None,
        deadline: float,
        live_done: asyncio.Future[bytes],
        inputs: Completeness | None,
        per_request: list,
    ) -> None:
        s = ss.stats
        size = len(raw)
        sc = None
        try:
            if self.telemetry is not None:
                sc = self.telemetry.shadow(ss, route, deadline)
            req = build_request(raw, ss.name, ss.version, True)
            t0 = _perf()
            response = None
            try:
                infer = ss.upstream.infer if sc is None else sc.wrap(ss.upstream.infer)
                response = await infer(req, timeout=deadline, metadata=(metadata + SHADOW_METADATA) if metadata else SHADOW_METADATA)
                s.latency.record(_perf() - t0)
                s.ok += 1
            except grpc.aio.AioRpcError as e:
                s.errors[e.code().name] += 1
            finally:
                del req
            if inputs is not None:  # once per request, by its first shadow task
                await inputs.check(raw)
            slices = ss.slices
            if slices and response is not None and not per_request:
                per_request.append(assign(slices, raw))  # once per request (no await in between)
            del raw
            if response is None:
                return
            try:
                live_response = await live_done
            except asyncio.CancelledError:
                s.live_failed += 1
                return
            buckets = per_request[0] if per_request else ()
            mark = sc.mark(s) if sc is not None else None
            primary = compare_responses(live_response, response, s, ss.route, buckets)
            if sc is not None:
                sc.compared(s, mark, primary)
            if primary is not None and request_id and self.pairs.max_pairs:
                self.pairs.add(request_id, route, ss.target.name, *primary, buckets)
        except asyncio.CancelledError:
            s.errors["CANCELLED"] += 1
        except Exception:  # a shadow problem must never surface anywhere but in its stats
            s.errors["INTERNAL"] += 1
            log.exception("shadow %s failed", ss.target.name)
        finally:
            ss.in_flight -= 1
            self._shadow_bytes -= size
            if sc is not None:
                sc.end()

    # -- ground truth ---------------------------------------------------------------------------
    def record_outcome(self, request_id: str, labels, values) -> str:
        """Join one outcome with its waiting pair: "accepted", "unknown", "duplicate" or
        "mismatch" (rows or classes do not fit the predictions)."""
        pair, duplicate = self.pairs.take(request_id)
        if pair is None:
            if duplicate:
                self.outcomes_duplicate += 1
                return "duplicate"
            self.outcomes_unknown += 1
            return "unknown"
        rs = self.routes.get(pair.route)
        ok = False
        for ss in rs.shadows if rs is not None else ():
            shadow = pair.shadows.get(ss.target.name)
            if shadow is not None and score(ss.outcomes, pair.live, shadow, labels, values, ss.slices, pair.slices):
                ok = True
        if not ok:
            self.outcomes_mismatch += 1
            return "mismatch"
        return "accepted"

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
        """ModelStreamInfer: a bidirectional pass-through to the live Triton of the first
        message's route (several responses per request and sequences work as on Triton).
        Stream messages are not mirrored (counted in ``stream_messages``)."""
        it = requests.__aiter__()
        try:
            first = await it.__anext__()
        except StopAsyncIteration:
            return
        try:
            rs = self.routes.get(scan_request(first)[0])
        except ValueError:
            rs = None
        up = rs.live if rs is not None else self.default
        call = up.stream_infer(metadata=forward_metadata(context), timeout=context.time_remaining())

        def fix(msg: bytes) -> bytes:
            self.stream_messages += 1
            # Messages are not scanned one by one: a pinned version is applied to each.
            return msg if rs is None else rs.live_request(msg, None)

        async def pump() -> None:
            try:
                await call.write(fix(first))
                async for msg in it:
                    await call.write(fix(msg))
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass  # the call already ended: its status reaches the caller below

        pump_task = asyncio.create_task(pump())
        try:
            async for response in call:
                yield response
            code = await call.code()
            if code != grpc.StatusCode.OK:
                await context.abort(code, await call.details() or "", _trailing(await call.trailing_metadata()))
        except grpc.aio.AioRpcError as e:
            await abort_like(context, e)
        finally:
            pump_task.cancel()
            if not call.done():
                call.cancel()

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for in-flight shadow calls; cancel the rest. Returns how many
        were cancelled."""
        pending = set(self._tasks)
        if not pending:
            return 0
        _, still = await asyncio.wait(pending, timeout=timeout)
        for t in still:
            t.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
        return len(still)
