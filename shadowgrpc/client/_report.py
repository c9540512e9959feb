"""The client-side mirror's reporter: observed pairs to a front's ``ShadowControl.ReportPairs``.

One long-lived client stream, written by one task on the mirror's event loop, one message per batch
(``ObservedPairs``: up to ``batch`` pairs and about ``BATCH_BYTES`` of requests and answers): the
task waits for pairs, then lets a batch gather (``interval_s``, or until ``batch`` pairs or half of
``queue_max`` are queued), and writes them as one message. One message per pair cost ~280 us of the
caller's CPU and ~270 us of the front's per pair (gRPC's per-message work); a batch pays that once.
The queue is bounded (``queue_max`` pairs, and the mirror's byte budget, ``Budget``): a pair that
does not fit is dropped and counted (``report_dropped``). A stream that fails (the front down or
restarting) is counted (``report_errors``) and reopened after a backoff (50 ms doubling to 2 s); the
pairs of the batch being written when it failed are counted as dropped, and pairs queued meanwhile
wait, within the bounds. Every ``stream_max_s`` the stream is ended and a new one opened, so that
the front's answer (pairs accepted / rejected) comes back now and then (``acknowledged``,
``rejected``) and a silently broken connection cannot hold more than that much traffic.

A queued pair is a tuple of its fields; the protobuf message is built when written (one copy of
the bytes at a time, not two). A pair the mirror did not send to the shadow (``SHED`` / ``DOWN``)
carries no bytes, only its live status and latency.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

from ..v1 import shadow_pb2 as pb
from ..v1 import shadow_pb2_grpc as pb_grpc

log = logging.getLogger("shadowgrpc.client.mirror")

MIN_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0
BATCH_BYTES = 1 << 20  # a batch stops growing past this (the front's default limit is 4 MiB a message)


@dataclass(slots=True)
class MirrorStats:
    """The mirror's counters: admission and shadow calls (mirror.py), reporting (``PairReporter``)."""

    not_sampled: int = 0
    handoff_dropped: int = 0  # the hand-off queue was full: neither mirrored nor reported
    not_mirrored: int = 0  # shared-memory or unreadable requests
    sampled: int = 0
    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # shadow calls by gRPC status name
    shed: int = 0
    shed_reasons: Counter[str] = field(default_factory=Counter)  # max_in_flight, max_buffer, ejected
    down: int = 0
    reported: int = 0  # pairs written to the ReportPairs stream
    report_dropped: int = 0  # queue full, closing, or lost with a failed stream
    report_errors: int = 0  # ReportPairs streams that failed (each one reopened after a backoff)
    acknowledged: int = 0  # accepted by the front, as its answers at the end of each stream said
    rejected: int = 0
    rejected_reasons: Counter[str] = field(default_factory=Counter)


class Budget:
    """Bytes held by the mirror (requests and answers of shadow calls in flight, queued pairs)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def fits(self, n: int) -> bool:
        return self.used + n <= self.limit


class PairReporter:
    """Lives on one event loop: ``put`` from that loop only; ``start`` and ``aclose`` there."""

    def __init__(
        self, channel: grpc.aio.Channel, route: str, target: str, stats, budget: Budget, *, batch: int, queue_max: int,
        interval_s: float, stream_max_s: float, metadata: tuple,
    ) -> None:  # fmt: skip
        self._stub = pb_grpc.ShadowControlStub(channel)
        self._route = route
        self._target = target
        self._stats = stats
        self._budget = budget
        self._batch = batch
        self._queue_max = queue_max
        self._interval_s = interval_s
        self._stream_max_s = stream_max_s
        self._metadata = metadata or None
        self._queue: collections.deque[tuple[tuple, int]] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._full = min(batch, max(1, queue_max // 2))  # a batch this big is written without waiting
        self._want = 1  # queued pairs that wake the writer
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, fields: tuple, nbytes: int) -> None:
        """Queue one pair: (request, live_response, live_status, live_latency_s, shadow_response,
        shadow_status, shadow_latency_s) holding ``nbytes`` already counted in the budget (given
        back here when dropped, or when written)."""
        if self._closing or len(self._queue) >= self._queue_max:
            self._stats.report_dropped += 1
            self._budget.used -= nbytes
            return
        self._queue.append((fields, nbytes))
        if self._wake is not None and len(self._queue) >= self._want:
            self._wake.set()

    def _next_batch(self) -> tuple[pb.ObservedPairs, int, int]:
        """Pop up to ``batch`` queued pairs (and about ``BATCH_BYTES``) into one message; returns
        (the message, the pairs in it, the budget bytes they held)."""
        msg = pb.ObservedPairs()
        add = msg.pairs.add
        route, target = self._route, self._target
        q = self._queue
        n = held = 0
        while q and n < self._batch and (held < BATCH_BYTES or not n):
            fields, nbytes = q.popleft()
            request, live, live_status, live_latency, shadow, shadow_status, shadow_latency = fields
            del fields
            if request:
                add(
                    route=route, target=target, request=request, live_response=live, live_status=live_status,
                    live_latency_s=live_latency, shadow_response=shadow, shadow_status=shadow_status,
                    shadow_latency_s=shadow_latency,
                )  # fmt: skip
            else:  # not sent (SHED / DOWN): the live figures only
                add(route=route, target=target, live_status=live_status, live_latency_s=live_latency, shadow_status=shadow_status)
            del request, live, shadow
            n += 1
            held += nbytes
        return msg, n, held

    async def _wait_for_pairs(self) -> None:
        assert self._wake is not None
        self._want = 1
        while not self._queue and not self._closing:
            self._wake.clear()
            await self._wake.wait()

    async def _gather(self) -> None:
        """Let a batch gather: up to ``interval_s``, or until half the queue's bound (or a full
        batch) is queued, or closing."""
        wake = self._wake
        assert wake is not None
        if len(self._queue) >= self._full or self._closing:
            return
        self._want = self._full
        wake.clear()
        timer = asyncio.get_running_loop().call_later(self._interval_s, wake.set)
        try:
            await wake.wait()
        finally:
            timer.cancel()
            self._want = 1

    async def _run(self) -> None:
        backoff = MIN_BACKOFF_S
        st = self._stats
        q = self._queue
        while True:
            await self._wait_for_pairs()
            if not q:
                return  # closing, nothing left
            call = self._stub.ReportPairs(metadata=self._metadata)
            opened = time.monotonic()
            n = held = 0
            try:
                while q and time.monotonic() - opened < self._stream_max_s:
                    await self._gather()
                    msg, n, held = self._next_batch()
                    await call.write(msg)
                    del msg
                    self._budget.used -= held
                    st.reported += n
                    n = held = 0
                    if not q and not self._closing:
                        await self._wait_for_pairs()
                await call.done_writing()
                resp = await call
                st.acknowledged += resp.accepted
                st.rejected += resp.rejected
                for reason, k in resp.rejected_reasons.items():
                    st.rejected_reasons[reason] += k
                backoff = MIN_BACKOFF_S
            except asyncio.CancelledError:
                if n:  # closing ran out of time in the middle of a batch
                    st.report_dropped += n
                    self._budget.used -= held
                call.cancel()
                raise
            except Exception as e:  # the front is down, restarting, refusing: never the caller's problem
                if n:  # the batch being written
                    st.report_dropped += n
                    self._budget.used -= held
                st.report_errors += 1
                call.cancel()
                log.debug("ReportPairs stream failed (%r); reopening in %.2f s", e, backoff)
                if self._closing:
                    self._drop_all()
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _drop_all(self) -> None:
        while self._queue:
            _, nbytes = self._queue.popleft()
            self._budget.used -= nbytes
            self._stats.report_dropped += 1

    async def aclose(self, timeout: float) -> None:
        """Send what is queued (up to ``timeout`` s), end the stream, read the front's answer;
        what could not be sent in time is dropped and counted."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        task = self._task
        if task is None:
            self._drop_all()
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), max(timeout, 0.0))
        except (asyncio.TimeoutError, Exception):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._drop_all()
