"""After both answers: the stage that turns a shadow's answer and live's into evidence.

Runs in the shadow task, off the live path. For each mirrored request there is one
``MirroredRequest``, shared by its shadow tasks (and the request's identity in the pair store:
pairs belong to a request, never to an id string). In order:
1. decode once (``MirroredRequest.prepare``): the request is parsed a single time for everything
   that needs its inputs: on the event loop up to ``ON_LOOP_DECODE_MAX`` bytes, in a worker thread
   up to ``MAX_DECODE_BYTES``, not at all beyond (completeness counts it as not checked, slices put
   its rows in ``missing``);
2. completeness (the route's inputs) and slice buckets, once per request;
3. live's answer (bounded by the live call's own deadline, or ``live_wait_s`` when it has none);
4. ``compare.compare_responses`` -> the target's statistics;
5. the pair store, for the ground-truth join (``outcomes.PairStore``);
6. the paired log: what became of the pair goes back to the shadow task, which hands it with both
   answers to the request's ``pairlog.request.RequestLog`` (when the log samples the request).

Sequences (sequences.py): a request of a mirrored sequence carries its target's
``SequenceState`` (``MirroredRequest.sequences``); its pair is held, not compared, until the
sequence is complete, then all its pairs are compared in order, or none when the sequence was
broken (a failed shadow call or live answer breaks it). A held pair goes to the paired log with
``pair`` null. Stream pairs (streams.py) go through ``Pairing.compare_pair``.
Every await has a bound. A failure here is the front's own (``ShadowStats.internal_errors``,
logged), never a shadow error: the shadow answered.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from typing import Any

from .codec import decode_request
from .compare import compare_responses
from .outcomes import PairStore, score
from .pairlog.schema import COMPARED, CONTRACT_MISMATCH, INTERNAL_ERROR, LIVE_FAILED
from .sequences import SequenceTables
from .slices import assign

log = logging.getLogger("shadowgrpc.pairing")

ON_LOOP_DECODE_MAX = 64 << 10
MAX_DECODE_BYTES = 16 << 20
LIVE_WAIT_GRACE_S = 5.0
LIVE_WAIT_DEFAULT_S = 60.0  # when the live call has no deadline at all
_SEQ = itertools.count()


class MirroredRequest:
    """One request mirrored to one or more shadow targets."""

    __slots__ = ("_prepared", "live_bounded", "live_done", "live_wait_s", "log", "raw", "request_id", "route", "seq", "sequences")

    def __init__(self, raw: bytes, request_id: str, route: str, live_done: asyncio.Future[bytes], live_timeout: float | None) -> None:
        self.raw = raw
        self.seq = next(_SEQ)  # the request's identity in the pair store (holds no bytes)
        self.request_id = request_id
        self.route = route
        self.live_done = live_done
        self.live_bounded = live_timeout is not None
        self.live_wait_s = (live_timeout if live_timeout is not None else LIVE_WAIT_DEFAULT_S) + LIVE_WAIT_GRACE_S
        self._prepared: asyncio.Future[list] | None = None
        self.log = None  # pairlog.request.RequestLog when the paired log samples this request
        self.sequences: dict | None = None  # target name -> sequences.SequenceState (sequence models)

    async def live_answer(self) -> bytes:
        """Live's answer, for a shadow task that found ``live_done`` not done yet (a done one is
        read directly); CancelledError when live failed (``live_done`` cancelled). Bounded: by the
        live call's own deadline, which ends the handler and so resolves ``live_done`` either way,
        or, when the live call has none, by ``live_wait_s``."""
        fut = self.live_done
        if self.live_bounded:
            return await asyncio.shield(fut)  # shielded: one task's cancellation is not live's failure
        return await asyncio.wait_for(asyncio.shield(fut), self.live_wait_s)

    async def prepare(self, completeness: Any, slices: tuple) -> list:
        """Decode once, count completeness, assign slice buckets: done by the first shadow task of
        the request to get here; the others share its buckets. Never raises for a bad request."""
        fut = self._prepared
        if fut is not None:
            return await asyncio.shield(fut)
        fut = self._prepared = asyncio.get_running_loop().create_future()
        buckets: list = []
        try:
            raw = self.raw
            req = decode_request(raw) if len(raw) <= ON_LOOP_DECODE_MAX else await decode(raw)
            await completeness.check(req)
            buckets = assign(slices, req) if slices else []
        finally:
            fut.set_result(buckets)
        return buckets


async def decode(raw: bytes):
    """The ModelInferRequest, parsed on the loop when small, in a thread when large, or None when
    larger than MAX_DECODE_BYTES or not parseable."""
    if len(raw) > MAX_DECODE_BYTES:
        return None
    if len(raw) > ON_LOOP_DECODE_MAX:
        return await asyncio.to_thread(decode_request, raw)
    return decode_request(raw)


class Pairing:
    """The after-both-answers stage of one front: comparison and the pair store."""

    def __init__(self, pairs: PairStore) -> None:
        self.pairs = pairs
        self.sequences = SequenceTables()  # per target: open sequences and their held pairs
        self.stream_unpairable: Counter[str] = Counter()  # per route: decoupled stream messages without an id, not mirrored (streams.py)

    async def answered(self, ss: Any, rs: Any, mr: MirroredRequest, response: bytes | None, sc: Any = None) -> tuple:
        """The shadow call of ``ss`` (a router ShadowState) for ``mr`` ended with ``response``
        (None: it failed). Updates ``ss.stats`` and the pair store. Returns, for the paired log,
        (what became of the pair: pairlog.schema.PAIR_VALUES or None when the shadow failed,
        live's answer, the request's slice buckets)."""
        s = ss.stats
        seq = mr.sequences.get(ss.target.name) if mr.sequences else None
        try:
            buckets = await mr.prepare(rs.completeness, ss.slices)
        except Exception:
            s.internal_errors += 1
            log.exception("shadow %s: preparing the request failed", ss.target.name)
            buckets = []
        if response is None:
            if seq is not None:
                seq.table.failed(seq)
            return None, None, buckets
        try:
            live = mr.live_done
            live_response = live.result() if live.done() else await mr.live_answer()
        except asyncio.CancelledError:
            if not mr.live_done.cancelled():
                raise  # this task itself was cancelled (shutdown)
            s.live_failed += 1  # live failed: nothing to compare
            if seq is not None:
                seq.table.failed(seq)
            return LIVE_FAILED, None, buckets
        except asyncio.TimeoutError:
            s.live_failed += 1
            if seq is not None:
                seq.table.failed(seq)
            return LIVE_FAILED, None, buckets
        if seq is not None:
            pair = None
            for held in seq.table.hold(seq, (mr.request_id, mr.seq, live_response, response, buckets), len(live_response) + len(response)):
                p = self.compare_pair(ss, mr.route, *held)
                if held[1] == mr.seq:
                    pair = p
            return pair, live_response, buckets
        try:
            mark = sc.mark(s) if sc is not None else None
            compared = s.compared
            primary = compare_responses(live_response, response, s, ss.route, buckets)
            pair = COMPARED if s.compared != compared else CONTRACT_MISMATCH
            if sc is not None:
                sc.compared(s, mark, primary)
            if primary is not None and mr.request_id and self.pairs.max_pairs:
                live, shadow, probabilities = primary
                self.pairs.add(mr.request_id, mr.seq, mr.route, ss.target.name, live, shadow, buckets, probabilities)
            return pair, live_response, buckets
        except Exception:
            s.internal_errors += 1
            log.exception("shadow %s: comparing the answers failed", ss.target.name)
            return INTERNAL_ERROR, live_response, buckets

    def compare_pair(self, ss: Any, route: str, request_id: str, seq: int, live_response: bytes, response: bytes, buckets: list) -> str:
        """Compare one pair outside a shadow task's own answer (a completed sequence's held pairs,
        a stream's pairs): the target's statistics and the pair store. Returns the pair's
        pairlog.schema value; never raises (a failure is counted in ``internal_errors``)."""
        s = ss.stats
        try:
            compared = s.compared
            primary = compare_responses(live_response, response, s, ss.route, buckets)
            if primary is not None and request_id and self.pairs.max_pairs:
                live, shadow, probabilities = primary
                self.pairs.add(request_id, seq, route, ss.target.name, live, shadow, buckets, probabilities)
            return COMPARED if s.compared != compared else CONTRACT_MISMATCH
        except Exception:
            s.internal_errors += 1
            log.exception("shadow %s: comparing the answers failed", ss.target.name)
            return INTERNAL_ERROR

    # -- ground truth ---------------------------------------------------------------------------
    def record_outcome(self, routes: dict, request_id: str, labels, values) -> str:
        """Join one outcome with its waiting pair: "accepted", or why not: "unknown", "duplicate",
        "reused" (the id was carried by several waiting requests) or "mismatch" (rows or classes
        do not fit the predictions). ``routes``: the router's route states."""
        pair, why = self.pairs.take(request_id)
        if pair is None:
            return why
        rs = routes.get(pair.route)
        ok = False
        for ss in rs.shadows if rs is not None else ():
            shadow = pair.shadows.get(ss.target.name)
            if shadow is not None and score(ss.outcomes, pair.live, shadow, labels, values, ss.slices, pair.slices, pair.probabilities):
                ok = True
        return "accepted" if ok else "mismatch"
