"""One logged request: collects what the live handler and each shadow task learn about it and
hands the writer one ``PairRow`` per shadow target once all of them are done.

Built by the router only for requests the log samples (``[log] sample_rate``, by the same
request-id hash as mirroring). Its parts arrive in any order: the targets that were not sent
(not sampled, shed, down, ...) at mirror time, the live answer at the end of the handler, each
sent target when its shadow task ends (after the pairing stage). ``waiting`` counts the parts still
to come (live + sent targets); whoever brings the last one emits the rows. Cheap on the event
loop: no decoding, no copies (the writer thread decodes the answer bytes).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .schema import SENT, PairRow

_now = time.time


class RequestLog:
    __slots__ = (
        "arrival", "emit", "front_added_s", "live", "live_answered", "live_latency_s", "live_status", "parts",
        "request", "request_id", "route", "seq", "trace_id", "waiting",
    )  # fmt: skip

    def __init__(self, emit: Callable[[PairRow], None], route: str, request_id: str, seq: int, arrival: float, request: bytes | None) -> None:
        self.emit = emit
        self.route = route
        self.request_id = request_id
        self.seq = seq
        self.arrival = arrival
        self.request = request
        self.parts: list[tuple] = []
        self.waiting = 1  # live
        self.live: bytes | None = None
        self.live_answered: float | None = None
        self.live_status = "UNKNOWN"
        self.live_latency_s: float | None = None
        self.front_added_s: float | None = None
        self.trace_id: str | None = None

    def not_sent(self, index: int, mirror: str, sampled: bool) -> None:
        """Target ``index`` was not sent (``mirror`` says why)."""
        self.parts.append((index, mirror, sampled, None, None, None, None, None, None, None))

    def not_mirrored(self, indexes, mirror: str) -> None:
        """No target of the request was considered (shared memory, an explicit other version);
        ``indexes``: the targets' positions in the route (its legs' ``index``)."""
        for i in indexes:
            self.not_sent(i, mirror, False)

    def sent(self) -> None:
        """One more shadow task will report (``target``)."""
        self.waiting += 1

    def target(self, index: int, status: str, pair: str | None, latency_s: float | None, buckets: list | None, live: bytes | None, shadow: bytes | None) -> None:
        """The shadow task of target ``index`` ended: its call's gRPC status, what pairing made of
        it, its latency (OK answers), the request's slice buckets, both answers."""
        self.parts.append((index, SENT, True, status, pair, latency_s, buckets, live, shadow, _now()))
        self._done()

    def answered(self, status: str, latency_s: float | None, front_added_s: float | None, response: bytes | None) -> None:
        """The live call ended with ``status`` (its answer ``response`` when OK)."""
        self.live_answered = _now()
        self.live_status = status
        self.live_latency_s = latency_s
        self.front_added_s = front_added_s
        self.live = response
        self._done()

    def _done(self) -> None:
        self.waiting -= 1
        if self.waiting:
            return
        keep_live = self.request is not None  # replay needs every request's live answer
        for n, p in enumerate(sorted(self.parts, key=_index)):
            index, mirror, sampled = p[0], p[1], p[2]
            sent = mirror == SENT
            live = p[7] if sent else (self.live if keep_live else None)
            self.emit(
                PairRow(
                    self.route, index, self.request_id, self.seq, self.arrival, self.live_answered,
                    p[9], mirror, sampled, self.live_status, p[3], p[4], self.live_latency_s,
                    p[5], self.front_added_s, self.trace_id, p[6], live, p[8],
                    self.request if n == 0 else None, n == 0,  # the request's first row carries its bytes
                )
            )  # fmt: skip
        self.parts.clear()


def _index(p: tuple) -> int:
    return p[0]
