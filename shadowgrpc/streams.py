"""ModelStreamInfer mirroring: one shadow stream per (caller stream, target), answers paired one to one.

``passthrough.stream_infer`` serves the caller's stream exactly as without shadows and calls a
``StreamMirror`` at three points, none of which can block or fail the caller: ``request`` after a
message was written to live, ``live_response`` before a live answer is yielded, ``finish`` when the
caller's stream has ended.

Rules:
- Sampling, per message of a route with shadows: like ModelInfer (``sample_key(id)``, at random
  without an id; for a route whose live model has a sequence batcher, by sequence id with the
  whole-or-nothing rules of sequences.py). Not mirrored, as ModelInfer (admission.route_reason):
  shared-memory inputs, an explicitly named other version, too large, ``[routes.mirror]`` rules
  (``RouteStats.stream_not_mirrored`` by reason); a spent budget counts ``budget``. Sent
  messages are ``build_request(raw, model, version, True)`` written to the target's shadow stream
  of this caller stream, opened on first use with ``x-shadow-request: 1`` and the caller's stream
  deadline (none when the caller set none: it is bounded by the caller's stream and the grace).
- Bounds: a message is shed (``shed``) when the target has ``max_in_flight`` requests in flight
  (unary and stream together) or the router's shadow byte budget is full; ``down`` while the
  target's channel is in TRANSIENT_FAILURE or its shadow stream of this caller stream has ended;
  ``not_ready`` for a target that is not mirroring. A request stays in flight until its shadow
  answer list is complete, failed, or older than the target's deadline (``t.deadline_s``, else the
  route's live deadline, else config.FALLBACK_SHADOW_DEADLINE_S; counted DEADLINE_EXCEEDED).
- Pairing: a response belongs to the request with the same id (``infer_response.id``); on the
  live side by (live model name, id), since one live stream carries several models. Requests with
  the same id (or none) are served first in, first out: messages *without an id* are paired by
  arrival order, exact when the model answers them in order. On a decoupled route, messages without an id are not mirrored at all
  (``Pairing.stream_unpairable``): their responses interleave and cannot be told apart.
- Lists: on a decoupled route a request's answers are a list, complete at a response carrying
  ``triton_final_response: true`` (the request asked for ``triton_enable_empty_final_response``;
  an empty final response is a terminator, not an element), else when that side's stream ends; on
  other routes a list is complete at its first response. An error response ends a list as failed
  (shadow: ``errors["STREAM_ERROR"]``; live: ``live_failed``). Complete lists are compared element
  by element (``Pairing.compare_pair``: the same comparison as unary pairs), ``stream_responses_paired``
  counting the pairs, ``stream_response_count_mismatch`` the lists of different lengths. Text
  outputs are also compared per response position (``ShadowStats.stream_position`` is the pair's
  index in its list while it is compared; text.STREAM_POSITIONS bounds the positions kept).
- Counts: ``RouteStats.stream_requests`` per routed message; per target ``sampled``, ``sent``,
  ``stream_requests`` per message written (``stream_not_sent`` per reason not), ``ok`` per
  complete list, else ``errors``.
- End: the caller's stream ended: each shadow stream is half-closed, gets ``STREAM_GRACE_S`` (or
  the target's deadline, if longer) in a router task, then is cancelled (``errors["CANCELLED"]``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from typing import Any

import grpc

from ._packing_py import _LEN, _VARINT, _utf8, _wrong_wire_type
from ._wire_py import fields
from .security import shadow_metadata
from .admission import route_reason
from .config import FALLBACK_SHADOW_DEADLINE_S
from .packing import build_request, sample_key
from .pairlog.schema import EXPLICIT_VERSION, SHM
from .sequences import sequence_of

log = logging.getLogger("shadowgrpc.streams")

STREAM_GRACE_S = 5.0
_FINAL = b"triton_final_response"
_TRANSIENT_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_perf = time.perf_counter
# Fields read of a ModelStreamInferResponse (error_message, infer_response), its ModelInferResponse
# (model_name, id, parameters, outputs), a parameters entry (key, value), an InferParameter (bool_param).
_RESPONSE = frozenset((1, 2))
_INFER_RESPONSE = frozenset((1, 3, 4, 5))
_ENTRY = frozenset((1, 2))
_BOOL = frozenset((1,))


def scan_stream_response(raw: bytes) -> tuple[str, str, str, bool, bool, bytes]:
    """(error_message, model_name, id, final, has_outputs, infer_response bytes) of a serialized
    ModelStreamInferResponse; ``final``: a ``triton_final_response`` bool parameter set true.
    Raises ValueError on malformed bytes."""
    buf = raw
    error = ""
    inner = (0, 0)
    for f, wt, a, b, tagpos in fields(buf, 0, len(buf), _RESPONSE):
        if wt != _LEN:
            raise _wrong_wire_type(f, wt, tagpos)
        if f == 1:
            error = _utf8(buf, a, b, f, tagpos)
        else:
            inner = (a, b)
    model = rid = ""
    final = outputs = False
    for f, wt, a, b, tagpos in fields(buf, *inner, _INFER_RESPONSE):
        if f in (1, 3):
            if wt != _LEN:
                raise _wrong_wire_type(f, wt, tagpos)
            s = _utf8(buf, a, b, f, tagpos)
            model, rid = (s, rid) if f == 1 else (model, s)
        elif f == 5:
            outputs = True
        elif wt == _LEN:  # a parameters map entry
            key, value = b"", None
            for g, gw, c, d, _ in fields(buf, a, b, _ENTRY):
                if g == 1 and gw == _LEN:
                    key = bytes(buf[c:d])
                elif g == 2 and gw == _LEN:
                    value = next((buf[x] != 0 for _, hw, x, _, _ in fields(buf, c, d, _BOOL) if hw == _VARINT), None)
            if key == _FINAL and value is not None:
                final = bool(value)
    return error, model, rid, final, outputs, bytes(buf[inner[0] : inner[1]])


class _Request:  # one mirrored message: live's answers, and each target's side
    __slots__ = ("id", "live", "live_done", "live_failed", "route", "sides", "size")

    def __init__(self, rid: str, route: str, size: int) -> None:
        self.id = rid
        self.route = route
        self.size = size
        self.live: list[bytes] = []
        self.live_done = self.live_failed = False
        self.sides: list[_Side] = []


class _Side:  # one target's shadow of a _Request
    __slots__ = ("done", "failed", "out", "req", "seq", "t0", "target")

    def __init__(self, req: _Request, target: _Target, seq: Any) -> None:
        self.req = req
        self.target = target
        self.seq = seq  # sequences.SequenceState, or None
        self.out: list[bytes] = []
        self.done = self.failed = False
        self.t0 = _perf()


class _Target:  # one shadow stream of one caller stream: its call, writer, reader, pending sides

    def __init__(self, mirror: StreamMirror, leg: Any, rs: Any) -> None:
        self.mirror = mirror
        self.leg = leg
        self.decoupled = rs.decoupled
        self.deadline = leg.target.deadline_s or rs.route.live.deadline_s or FALLBACK_SHADOW_DEADLINE_S
        self.pending: dict[str, collections.deque[_Side]] = {}  # by request id, first in first out
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()  # bounded by max_in_flight
        self.ended = False
        md = shadow_metadata(mirror.metadata, mirror.router.settings.security.shadow_metadata_allow)  # no caller credentials
        self.call = leg.upstream.stream_infer(metadata=md, timeout=mirror.timeout)
        self.writer = asyncio.get_running_loop().create_task(self._write())
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _write(self) -> None:
        try:
            while (msg := await self.queue.get()) is not None:
                await self.call.write(msg)
            await self.call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            self.end("UNAVAILABLE")  # the shadow stream ended: the reader counts how

    async def _read(self) -> None:
        try:
            async for raw in self.call:
                self.mirror.shadow_response(self, raw)
            code = await self.call.code()
            self.end(code.name if code != grpc.StatusCode.OK else None)
        except grpc.aio.AioRpcError as e:
            self.end(e.code().name)
        except asyncio.CancelledError:
            self.end("CANCELLED")
            raise
        except Exception:  # a shadow problem never surfaces in the caller's stream
            log.exception("shadow stream of %s failed", self.leg.target.name)
            self.end("INTERNAL")

    def end(self, code: str | None) -> None:
        """The shadow stream ended (``code`` None: OK): open lists complete (decoupled) or fail."""
        self.ended = True
        for q in self.pending.values():
            for side in q:
                self.mirror.settle(side, None if code is None and self.decoupled else code or "CANCELLED")
        self.pending.clear()

    def expire(self, now: float) -> None:
        for q in self.pending.values():
            while q and now - q[0].t0 > self.deadline:
                self.mirror.settle(q.popleft(), "DEADLINE_EXCEEDED")


class StreamMirror:
    """The shadows of one caller stream. ``router``: the Router (its pairing stage, the byte
    budget ``_stream_bytes`` and the task set ``_spawn``)."""

    def __init__(self, router: Any, metadata: tuple | None, timeout: float | None) -> None:
        self.router = router
        self.pairing = router.pairing
        self.metadata = metadata
        self.timeout = timeout
        self.targets: dict[int, _Target] = {}
        self.live_pending: dict[tuple[str, str], collections.deque[_Request]] = {}

    # -- the caller's messages ------------------------------------------------------------------
    def request(self, msg: bytes, rs: Any, version: str, rid: str, shm: bool) -> None:
        """A message of route ``rs``, on its way to live: sample, bound, send. Never raises."""
        try:
            self._request(msg, rs, version, rid, shm)
        except Exception:
            log.exception("stream mirror of %s failed", rs.route.model)

    def _request(self, msg: bytes, rs: Any, version: str, rid: str, shm: bool) -> None:
        st = rs.stats
        st.stream_requests += 1
        if not rs.shadows:
            return
        key = sample_key(rid) if rid else random.random()
        seq = sequence_of(msg) if rs.sequence_batching else None
        if seq is not None:
            key = sample_key(str(seq[0]))
            st.sequences += seq[1]
        why = route_reason(rs, msg, version, shm, self.metadata, self.router.shadow_buffer_bytes)  # [routes.mirror] too
        if why is not None:
            st.shm_not_mirrored += why == SHM
            st.explicit_version_not_mirrored += why == EXPLICIT_VERSION
            st.stream_not_mirrored[why] += 1
            if seq is not None:  # a mirrored sequence that misses a request breaks
                self.pairing.sequences.not_mirrored(rs.route.model, rs.shadows, key, seq)
            return
        if rs.decoupled and not rid:
            self.pairing.stream_unpairable[rs.route.model] += 1
            return
        req: _Request | None = None
        for leg in rs.shadows:
            t = leg.target
            if key >= t.sample_rate:
                continue
            sq = None
            if seq is not None:
                sq = self.pairing.sequences.admit(rs.route.model, leg, seq)
                if sq is None:
                    continue
            s = leg.stats
            s.sampled += 1
            target = self.targets.get(id(leg))
            why = None
            if not leg.mirroring:
                why = "not_ready"
            elif leg.in_flight >= t.max_in_flight:
                why = "shed"
            elif (target is not None and target.ended) or leg.upstream.channel.get_state(try_to_connect=True) is _TRANSIENT_FAILURE:
                why = "down"
            elif not self.router._stream_bytes(len(msg)):
                why = "shed"
            elif leg.state.budget is not None and not leg.state.budget.admit(len(msg), 1):  # budget.py
                self.router._stream_bytes(-len(msg))
                why = "budget"
            if why is not None:
                setattr(s, why, getattr(s, why) + 1)
                s.stream_not_sent[why] += 1  # the unary coverage ledger leaves these out (ledger.py)
                if sq is not None:
                    sq.table.not_sent(sq)
                continue
            if target is None:
                target = self.targets[id(leg)] = _Target(self, leg, rs)
            target.expire(_perf())
            if req is None:
                req = _Request(rid, rs.route.model, 0)
                self.live_pending.setdefault((rs.route.live.model, rid), collections.deque()).append(req)
            req.size += len(msg)
            side = _Side(req, target, sq)
            req.sides.append(side)
            target.pending.setdefault(rid, collections.deque()).append(side)
            if sq is not None:
                sq.table.sent(sq)
            leg.state.in_flight += 1
            s.sent += 1
            s.stream_requests += 1
            target.queue.put_nowait(build_request(msg, leg.name, leg.version, True))

    # -- answers --------------------------------------------------------------------------------
    def live_response(self, raw: bytes) -> None:
        """A live answer the caller is about to get. Never raises."""
        if not self.live_pending:
            return
        try:
            error, model, rid, final, outputs, inner = scan_stream_response(raw)
            q = self.live_pending.get((model, rid))
            if not q:
                return
            req = q[0]
            if error:
                req.live_failed = req.live_done = True
            elif outputs or not final:
                req.live.append(inner)
                self.router._stream_bytes(len(inner), force=True)
                req.size += len(inner)
            decoupled = req.sides[0].target.decoupled
            if error or final or not decoupled:
                req.live_done = True
            if req.live_done:
                q.popleft()
                if not q:
                    del self.live_pending[(model, rid)]
                self._try_pair(req)
        except Exception:
            log.exception("stream mirror: reading a live answer failed")

    def shadow_response(self, target: _Target, raw: bytes) -> None:
        try:
            error, _, rid, final, outputs, inner = scan_stream_response(raw)
        except ValueError:  # unreadable: fails the oldest request without an id, if any
            error, rid, final, outputs, inner = "unreadable", "", False, False, b""
        q = target.pending.get(rid)
        if not q:
            return  # not ours (expired, or an id the shadow changed)
        side = q[0]
        if not error and (outputs or not final):
            side.out.append(inner)
            self.router._stream_bytes(len(inner), force=True)
            side.req.size += len(inner)
        if error or final or not target.decoupled:
            q.popleft()
            if not q:
                del target.pending[rid]
            self.settle(side, "STREAM_ERROR" if error else None)

    def settle(self, side: _Side, error: str | None) -> None:
        """``side``'s shadow list is complete (``error`` None) or failed: free its slot, pair."""
        if side.done:
            return
        side.done = True
        leg = side.target.leg
        leg.state.in_flight -= 1
        if error is None:
            leg.stats.ok += 1
        else:
            side.failed = True
            leg.stats.errors[error] += 1
        self._try_pair(side.req)

    def _try_pair(self, req: _Request) -> None:
        if not req.live_done or not all(side.done for side in req.sides):
            return
        for side in req.sides:
            leg = side.target.leg
            if req.live_failed or side.failed:
                if req.live_failed and not side.failed:
                    leg.stats.live_failed += 1
                if side.seq is not None:
                    side.seq.table.failed(side.seq)
                continue
            if side.seq is None:
                self._compare(leg, req.route, req.id, req.live, side.out)
                continue
            size = sum(map(len, req.live)) + sum(map(len, side.out))
            for rid, live, out in side.seq.table.hold(side.seq, (req.id, req.live, side.out), size):
                self._compare(leg, req.route, rid, live, out)
        self.router._stream_bytes(-req.size)
        req.size = 0

    def _compare(self, leg: Any, route: str, rid: str, live: list[bytes], shadow: list[bytes]) -> None:
        s = leg.stats
        if len(live) != len(shadow):
            s.stream_response_count_mismatch += 1
        try:
            for i, (a, b) in enumerate(zip(live, shadow)):
                s.stream_position = i  # text outputs are also kept per response position (compare.py)
                self.pairing.compare_pair(leg, route, rid, -1, a, b, [])
                s.stream_responses_paired += 1
        finally:
            s.stream_position = -1

    # -- the end --------------------------------------------------------------------------------
    def finish(self, ok: bool) -> None:
        """The caller's stream ended (``ok``: normally): the shadow streams' grace runs as a router task."""
        try:
            for q in self.live_pending.values():
                for req in q:  # live lists open at the end: complete (decoupled) or failed
                    req.live_done = True
                    req.live_failed = not (ok and req.sides and req.sides[0].target.decoupled)
                    self._try_pair(req)
            self.live_pending.clear()
            if self.targets:
                self.router._spawn(self._close())
        except Exception:
            log.exception("stream mirror: finishing failed")

    async def _close(self) -> None:
        targets = list(self.targets.values())
        for t in targets:
            t.queue.put_nowait(None)
        readers = [t.reader for t in targets]
        try:
            await asyncio.wait(readers, timeout=max([STREAM_GRACE_S] + [t.deadline for t in targets]))
        finally:
            for t in targets:
                t.writer.cancel()
                t.call.cancel()
            await asyncio.gather(*readers, *(t.writer for t in targets), return_exceptions=True)
            for t in targets:
                t.end("CANCELLED")
