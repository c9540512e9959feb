"""The client-side mirror's reporter: observed pairs to a front's ``ShadowControl.ReportPairs``.

One long-lived client stream, written in batches by one task on the mirror's event loop: the
task waits for pairs, writes up to ``batch`` of them, and when it found fewer than that waits
``interval_s`` for more (fewer wake-ups of the mirror's loop, so less of the caller's CPU). The
queue is bounded (``queue_max`` pairs, and the mirror's byte budget, ``Budget``): a pair that does
not fit is dropped and counted (``report_dropped``). A stream that fails (the front down or
restarting) is counted (``report_errors``) and reopened after a backoff (50 ms doubling to 2 s);
the pair being written when it failed is counted as dropped, and pairs queued meanwhile wait,
within the bounds. Every ``stream_max_s`` the stream is ended and a new one opened, so that the
front's answer (pairs accepted / rejected) comes back now and then (``acknowledged``,
``rejected``) and a silently broken connection cannot hold more than that much traffic.

A queued pair is a tuple of its fields; the protobuf message is built when written (one copy of
the bytes at a time, not two).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import grpc

from ..v1 import shadow_pb2 as pb
from ..v1 import shadow_pb2_grpc as pb_grpc

log = logging.getLogger("shadowgrpc.client.mirror")

MIN_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0


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
        if self._wake is not None and len(self._queue) == 1:
            self._wake.set()

    def _message(self, fields: tuple) -> pb.ObservedPair:
        request, live, live_status, live_latency, shadow, shadow_status, shadow_latency = fields
        return pb.ObservedPair(
            route=self._route, target=self._target, request=request, live_response=live, live_status=live_status,
            live_latency_s=live_latency, shadow_response=shadow, shadow_status=shadow_status, shadow_latency_s=shadow_latency,
        )  # fmt: skip

    async def _wait_for_pairs(self) -> None:
        assert self._wake is not None
        while not self._queue and not self._closing:
            self._wake.clear()
            await self._wake.wait()

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
            nbytes = 0
            try:
                while q and time.monotonic() - opened < self._stream_max_s:
                    n = 0
                    while q and n < self._batch:
                        fields, nbytes = q.popleft()
                        msg = self._message(fields)
                        del fields
                        await call.write(msg)
                        del msg
                        self._budget.used -= nbytes
                        nbytes = 0
                        st.reported += 1
                        n += 1
                    if n < self._batch and not self._closing:
                        await asyncio.sleep(self._interval_s)  # let a batch gather
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
                call.cancel()
                raise
            except Exception as e:  # the front is down, restarting, refusing: never the caller's problem
                if nbytes:  # the pair being written
                    st.report_dropped += 1
                    self._budget.used -= nbytes
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
