"""The client-side mirror ("in front of the API"): for callers that cannot put the front in their
request path. The caller calls live Triton itself; each finished ModelInfer is handed to a
``ShadowMirror`` (by ``intercept.mirror_interceptor`` or the tritonclient helpers), which, off the
caller's path, sends the same request to a shadow endpoint and reports the pair (request, both
answers, statuses, latencies) to a front's ``ShadowControl.ReportPairs``, where it is compared and
judged like a pair the front mirrored itself (shadowgrpc/ingest.py).

The same rules as the front's router (router.py):
- sampling by ``sample_key(request id)`` (the same requests as a front would pick), at random
  when the request has no id; requests using shared memory are not mirrored (``not_mirrored``);
- the shadow request is ``build_request(raw, model, version, shadow=True)`` (marked as a shadow
  request) sent with metadata ``x-shadow-request: 1``; of the caller's metadata only the keys in
  ``forward_metadata`` go along (trace context by default; never ``authorization`` unless named);
- deadline: ``deadline_s`` when set, else the live call's own timeout, else
  ``config.FALLBACK_SHADOW_DEADLINE_S``;
- bounds: at most ``max_in_flight`` shadow calls, and ``max_buffer_mb`` of bytes held (requests
  and answers in flight, pairs waiting to be reported); past either the shadow is shed, counted
  and reported as ``SHED``; while the shadow channel is in TRANSIENT_FAILURE it is not called,
  counted and reported as ``DOWN``;
- outlier breaker (``_breaker.py``): ``eject_after`` consecutive shadow calls ending DEADLINE_EXCEEDED
  / UNAVAILABLE eject the endpoint for ``eject_s`` (doubling up to ``max_eject_s`` while its one probe
  per interval fails): shed meanwhile (``shed_reasons["ejected"]``); ``eject_after=0``: off.

Never on the caller's path: ``observe`` only samples and appends to a bounded hand-off queue
(past ``handoff_max`` entries the call is dropped and counted: the mirror's thread is starved;
``ShadowMirror``'s thread takes the queue at most every ``handoff_interval_s``, in one burst);
serializing, calling the shadow and reporting happen on the mirror's own event loop:
- ``ShadowMirror``: a daemon thread running its own loop; ``observe`` may be called from any
  thread (sync tritonclient, grpc futures' callbacks) or event loop;
- ``AsyncShadowMirror``: tasks on the event loop it was created in (grpc.aio callers);
  ``observe`` must be called on that loop.
The request and response objects handed to ``observe`` are serialized later, on the mirror's
loop: do not mutate them after the call (tritonclient builds new ones per call).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import grpc

from ..codec import SHADOW_METADATA
from ..config import FALLBACK_SHADOW_DEADLINE_S
from ..packing import build_request, sample_key, scan_request
from ._breaker import EJECTED, PROBE, Breaker
from ._report import Budget, MirrorStats, PairReporter

log = logging.getLogger("shadowgrpc.client.mirror")

INFER = "/inference.GRPCInferenceService/ModelInfer"
SHED, DOWN = "SHED", "DOWN"  # reported as the shadow status of a pair not sent
_TRANSIENT_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_perf = time.perf_counter


@dataclass(frozen=True, slots=True)
class _Config:
    shadow_address: str
    control_address: str
    route: str
    target: str
    model: str | None
    version: str | None
    sample_rate: float
    max_in_flight: int
    max_buffer_bytes: int
    deadline_s: float | None
    forward_metadata: frozenset[str]
    shadow_metadata: tuple
    control_metadata: tuple
    shadow_credentials: Any
    control_credentials: Any
    channel_options: tuple
    report_batch: int
    report_queue: int
    report_interval_s: float
    report_stream_s: float
    eject: tuple[int, float, float]  # eject_after, eject_s, max_eject_s


def _channel(address: str, credentials: Any, options: tuple) -> grpc.aio.Channel:
    if credentials is not None:
        return grpc.aio.secure_channel(address, credentials, options=options)
    return grpc.aio.insecure_channel(address, options=options)


class _Engine:
    """The mirror's work, on one event loop: admit (bounds, down), the shadow call, the report."""

    def __init__(self, cfg: _Config, stats: MirrorStats) -> None:
        self.cfg = cfg
        self.stats = stats
        self.budget = Budget(cfg.max_buffer_bytes)
        self.in_flight = 0
        self.breaker = Breaker(*cfg.eject)
        self._tasks: set[asyncio.Task[None]] = set()
        self._shadow_channel: grpc.aio.Channel | None = None
        self._control_channel: grpc.aio.Channel | None = None
        self._infer = None
        self.reporter: PairReporter | None = None

    def start(self) -> None:
        """On the loop: open the channels (they connect on first use) and the reporter."""
        c = self.cfg
        self._shadow_channel = _channel(c.shadow_address, c.shadow_credentials, c.channel_options)
        self._infer = self._shadow_channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        self._control_channel = _channel(c.control_address, c.control_credentials, c.channel_options)
        self.reporter = PairReporter(
            self._control_channel, c.route, c.target, self.stats, self.budget, batch=c.report_batch, queue_max=c.report_queue,
            interval_s=c.report_interval_s, stream_max_s=c.report_stream_s, metadata=c.control_metadata,
        )  # fmt: skip
        self.reporter.start()

    def admit(self, item: tuple) -> None:
        """One sampled live call: shed, down, or start its shadow call. Never raises."""
        try:
            self._admit(*item)
        except Exception:
            self.stats.errors["INTERNAL"] += 1
            log.exception("client mirror: admitting a call failed")

    def _admit(self, request, response, status: str, latency_s: float, timeout: float | None, metadata) -> None:
        s = self.stats
        c = self.cfg
        raw = request if isinstance(request, bytes) else request.SerializeToString()
        try:
            uses_shm = scan_request(raw)[3]
        except ValueError:
            s.not_mirrored += 1
            return
        if uses_shm:
            s.not_mirrored += 1
            return
        s.sampled += 1
        assert self.reporter is not None
        assert self._shadow_channel is not None
        shed = "max_in_flight" if self.in_flight >= c.max_in_flight else None if self.budget.fits(len(raw)) else "max_buffer"
        if shed is None and self._shadow_channel.get_state(try_to_connect=True) is _TRANSIENT_FAILURE:
            s.down += 1
            self.reporter.put((b"", b"", status, latency_s, b"", DOWN, 0.0), 0)
            return
        probe = False
        if shed is None:  # the breaker last: a probe it grants is sent
            verdict = self.breaker.admit()
            shed, probe = "ejected" if verdict is EJECTED else None, verdict is PROBE
        if shed is not None:
            s.shed += 1
            s.shed_reasons[shed] += 1
            self.reporter.put((b"", b"", status, latency_s, b"", SHED, 0.0), 0)
            return
        live = b"" if response is None else response if isinstance(response, bytes) else response.SerializeToString()
        md = SHADOW_METADATA + c.shadow_metadata
        if metadata and c.forward_metadata:
            md = tuple((k, v) for k, v in metadata if k.lower() in c.forward_metadata) + md
        deadline = c.deadline_s or timeout or FALLBACK_SHADOW_DEADLINE_S
        size = len(raw) + len(live)
        self.budget.used += size
        self.in_flight += 1
        s.sent += 1
        task = asyncio.get_running_loop().create_task(self._shadow(raw, live, status, latency_s, deadline, md, size, probe))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shadow(self, raw: bytes, live: bytes, live_status: str, live_latency: float, deadline: float, md: tuple, size: int, probe: bool) -> None:
        """The shadow call, then the pair to the reporter. ``sent = ok + errors``."""
        s = self.stats
        c = self.cfg
        held = size
        status = None
        try:
            req = build_request(raw, c.model, c.version, True)
            response = b""
            latency = 0.0
            t0 = _perf()
            try:
                response = await self._infer(req, timeout=deadline, metadata=md)
                latency = _perf() - t0
                status = "OK"
                s.ok += 1
            except grpc.aio.AioRpcError as e:
                status = e.code().name
                s.errors[status] += 1
            del req
            held += len(response)
            self.budget.used += len(response)
            assert self.reporter is not None
            self.reporter.put((raw, live, live_status, live_latency, response, status, latency), held)
            held = 0  # the reporter holds them now
        except asyncio.CancelledError:
            s.errors["CANCELLED"] += 1  # closing: not reported
        except Exception:
            s.errors["INTERNAL"] += 1
            log.exception("client mirror: the shadow call failed")
        finally:
            self.breaker.record(status, probe)
            self.in_flight -= 1
            self.budget.used -= held

    async def aclose(self, timeout: float) -> None:
        """Wait for shadow calls (then cancel the rest), flush the reporter, close the channels;
        all within about ``timeout`` s."""
        end = time.monotonic() + timeout
        if self._tasks:
            _, still = await asyncio.wait(set(self._tasks), timeout=max(timeout * 0.5, 0.0))
            for t in still:
                t.cancel()
            if still:
                await asyncio.gather(*still, return_exceptions=True)
        if self.reporter is not None:
            await self.reporter.aclose(end - time.monotonic())
        for ch in (self._shadow_channel, self._control_channel):
            if ch is not None:
                await ch.close()


class _MirrorBase:
    def __init__(
        self, shadow_address: str, control_address: str, route: str, target: str, *, model: str | None = None,
        version: str | None = "", sample_rate: float = 1.0, max_in_flight: int = 64, max_buffer_mb: float = 64,
        deadline_s: float | None = None, forward_metadata=("traceparent", "tracestate"), shadow_metadata=(),
        control_metadata=(), shadow_credentials=None, control_credentials=None, channel_options=(),
        report_batch: int = 256, report_queue: int = 4096, report_interval_s: float = 0.1, report_stream_s: float = 60.0,
        handoff_max: int | None = None, handoff_interval_s: float = 0.05, eject_after: int = 5, eject_s: float = 5.0,
        max_eject_s: float = 60.0,
    ) -> None:  # fmt: skip
        if not route or not target:
            raise ValueError("route and target: the route and shadow target names configured on the reporting front")
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate: must be in [0, 1], got {sample_rate}")
        if max_in_flight < 1 or report_batch < 1 or report_queue < 1:
            raise ValueError("max_in_flight, report_batch and report_queue must be >= 1")
        if max_buffer_mb <= 0:
            raise ValueError(f"max_buffer_mb: must be > 0, got {max_buffer_mb}")
        if deadline_s is not None and deadline_s <= 0:
            raise ValueError(f"deadline_s: must be > 0 or None, got {deadline_s}")
        if eject_after < 0 or (eject_after and not 0 < eject_s <= max_eject_s):
            raise ValueError("eject_after must be >= 0 (0: no breaker), and then 0 < eject_s <= max_eject_s")
        self.cfg = _Config(
            shadow_address, control_address, route, target, model, version, float(sample_rate), int(max_in_flight),
            int(max_buffer_mb * 1024 * 1024), deadline_s, frozenset(k.lower() for k in forward_metadata),
            tuple(shadow_metadata), tuple(control_metadata), shadow_credentials, control_credentials, tuple(channel_options),
            int(report_batch), int(report_queue), float(report_interval_s), float(report_stream_s),
            (int(eject_after), float(eject_s), float(max_eject_s)),
        )  # fmt: skip
        self._stats = MirrorStats()
        self._engine = _Engine(self.cfg, self._stats)
        self._handoff_max = handoff_max if handoff_max is not None else max(1024, 4 * max_in_flight)
        self._lock = threading.Lock()  # caller-side counters only
        self._interval_s = handoff_interval_s  # ShadowMirror: its loop wakes at most once per interval
        self._closed = False

    def _sampled(self, request) -> bool:
        """The sampling decision, on the caller's side (cheap: the id of a message, or a scan)."""
        rate = self.cfg.sample_rate
        if rate >= 1.0:
            return True
        if isinstance(request, (bytes, bytearray, memoryview)):
            try:
                rid = scan_request(request)[2]
            except ValueError:
                return True  # the mirror's loop counts it as not mirrored
        else:
            rid = request.id
        if (sample_key(rid) if rid else random.random()) < rate:
            return True
        with self._lock:
            self._stats.not_sampled += 1
        return False

    def _dropped(self) -> None:
        with self._lock:
            self._stats.handoff_dropped += 1

    def stats(self) -> dict[str, Any]:
        """The mirror's counters (see ``MirrorStats``), plus ``in_flight``, ``buffered_bytes`` and
        ``breaker`` (state: closed / ejected / probing, ejections, probes, interval_s)."""
        d = asdict(self._stats)
        d["errors"] = dict(self._stats.errors)
        d["shed_reasons"] = dict(self._stats.shed_reasons)
        d["breaker"] = self._engine.breaker.snapshot()
        d["rejected_reasons"] = dict(self._stats.rejected_reasons)
        d["in_flight"] = self._engine.in_flight
        d["buffered_bytes"] = self._engine.budget.used
        return d


class ShadowMirror(_MirrorBase):
    """The mirror on its own thread and event loop; ``observe`` from any thread. See the module doc;
    ``close(timeout)`` flushes (also as a context manager)."""

    def __init__(self, shadow_address: str, control_address: str, route: str, target: str, **kw: Any) -> None:
        super().__init__(shadow_address, control_address, route, target, **kw)
        self._handoff: collections.deque[tuple] = collections.deque()
        self._scheduled = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="shadowgrpc-mirror", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        self._engine.start()

    def observe(self, request, response, status: str = "OK", latency_s: float = 0.0, timeout: float | None = None, metadata=None) -> None:
        """One finished live ModelInfer: ``request`` as sent (bytes or a ModelInferRequest),
        ``response`` (bytes, a ModelInferResponse, or None when it failed), its gRPC ``status``
        name, ``latency_s``, the call's ``timeout`` and ``metadata``. Thread-safe, never blocks,
        never raises for a mirroring problem."""
        if self._closed or not self._sampled(request):
            return
        q = self._handoff
        if len(q) >= self._handoff_max:
            self._dropped()
            return
        q.append((request, response, status, latency_s, timeout, metadata))
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._loop.call_later, self._interval_s, self._drain)
            except RuntimeError:  # the loop is closed
                pass

    def _drain(self) -> None:
        self._scheduled = False  # before popping: an append after this schedules another drain
        q = self._handoff
        admit = self._engine.admit
        while q:
            admit(q.popleft())

    def close(self, timeout: float = 5.0) -> None:
        """Stop mirroring; wait for shadow calls and send queued pairs (about ``timeout`` s in all)."""
        if self._closed:
            return
        self._closed = True

        async def finish() -> None:
            self._drain()
            await self._engine.aclose(timeout)

        try:
            asyncio.run_coroutine_threadsafe(finish(), self._loop).result(timeout + 5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def __enter__(self) -> ShadowMirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncShadowMirror(_MirrorBase):
    """The mirror as tasks on the running event loop (create it inside a coroutine); ``observe``
    on that loop only. ``await aclose(timeout)`` flushes (also ``async with``)."""

    def __init__(self, shadow_address: str, control_address: str, route: str, target: str, **kw: Any) -> None:
        super().__init__(shadow_address, control_address, route, target, **kw)
        self._loop = asyncio.get_running_loop()  # RuntimeError outside a coroutine: create it inside one
        self._pending = 0
        self._engine.start()

    def observe(self, request, response, status: str = "OK", latency_s: float = 0.0, timeout: float | None = None, metadata=None) -> None:
        """Like ``ShadowMirror.observe``, on the mirror's loop."""
        if self._closed or not self._sampled(request):
            return
        if self._pending >= self._handoff_max:
            self._dropped()
            return
        self._pending += 1  # admitted after the caller's await returns: serializing is not on its path
        self._loop.call_soon(self._admit, (request, response, status, latency_s, timeout, metadata))

    def _admit(self, item: tuple) -> None:
        self._pending -= 1
        self._engine.admit(item)

    async def aclose(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.sleep(0)  # the admissions already scheduled run first
        await self._engine.aclose(timeout)

    async def __aenter__(self) -> AsyncShadowMirror:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncShadowMirror", "MirrorStats", "ShadowMirror"]
