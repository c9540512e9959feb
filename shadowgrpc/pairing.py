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

N-way requests (``routes[].identical_sample``, nway.py): the router calls ``nway_begin`` with the
legs it sent the request to; each leg's answer is then held until every leg has answered, and the
task of the last one compares all of them, or none when any leg or live failed (counted in the
route's ``NWayState.incomplete``). The earlier legs' tasks wait (bounded: the longest leg deadline
plus live's wait) for that outcome and return their own pair from it, so each task's paired-log row
and its held bytes (the router's shadow byte budget) last until the request is settled.
Every await has a bound. A failure here is the front's own (``ShadowStats.internal_errors``,
logged), never a shadow error: the shadow answered.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from typing import Any

import numpy as np

from .codec import decode_request
from .compare import compare_responses
from .config import FALLBACK_SHADOW_DEADLINE_S
from .nway import NWAY_INCOMPLETE, NWayRequest, agreeing_rows, correct_rows
from .outcomes import PairStore, score
from .packing import scan_response
from .pairlog.schema import COMPARED, CONTRACT_MISMATCH, INTERNAL_ERROR, LIVE_FAILED
from .sequences import SequenceTables
from .slices import assign

log = logging.getLogger("shadowgrpc.pairing")

ON_LOOP_DECODE_MAX = 64 << 10
MAX_DECODE_BYTES = 16 << 20
LIVE_WAIT_GRACE_S = 5.0
LIVE_WAIT_DEFAULT_S = 60.0  # when the live call has no deadline at all
NWAY_GRACE_S = 5.0  # an N-way leg waits for the others up to the longest deadline + live's wait + this
_SEQ = itertools.count()
_perf = time.perf_counter


class MirroredRequest:
    """One request mirrored to one or more shadow targets."""

    __slots__ = ("_prepared", "live_bounded", "live_done", "live_wait_s", "log", "nway", "raw", "request_id", "route", "seq", "sequences")

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
        self.nway: NWayRequest | None = None  # identical_sample: its legs' held answers (Pairing.nway_begin)

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

    async def answered(self, ss: Any, rs: Any, mr: MirroredRequest, response: bytes | None, sc: Any = None, status: str = "") -> tuple:
        """The shadow call of ``ss`` (a router ShadowState) for ``mr`` ended with ``response``
        (None: it failed, with gRPC status ``status`` when the caller says). Updates ``ss.stats``
        and the pair store. Returns, for the paired log, (what became of the pair:
        pairlog.schema.PAIR_VALUES, nway.NWAY_INCOMPLETE, or None when the shadow failed, live's
        answer, the request's slice buckets)."""
        arrived = _perf()
        s = ss.stats
        seq = mr.sequences.get(ss.target.name) if mr.sequences else None
        try:
            buckets = await mr.prepare(rs.completeness, ss.slices)
        except Exception:
            s.internal_errors += 1
            log.exception("shadow %s: preparing the request failed", ss.target.name)
            buckets = []
        if mr.nway is not None and seq is None:  # sequence models: held per sequence instead (not N-way)
            return await self._nway_answered(mr.nway, ss, rs, mr, response, sc, status, buckets, arrived)
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
        return self._compare(ss, mr, live_response, response, buckets, sc)[0], live_response, buckets

    def _compare(self, ss: Any, mr: MirroredRequest, live_response: bytes, response: bytes, buckets: list, sc: Any) -> tuple:
        """Compare one answer with live's: (pair value, the primary output pair or None). Never raises."""
        s = ss.stats
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
            return pair, primary
        except Exception:
            s.internal_errors += 1
            log.exception("shadow %s: comparing the answers failed", ss.target.name)
            return INTERNAL_ERROR, None

    # -- N-way requests (identical_sample, nway.py) ------------------------------------------------
    def nway_begin(self, mr: MirroredRequest, legs: list) -> None:
        """``mr`` was sent to every leg of an identical_sample route (``legs``: routes.ShadowLeg, in
        route order); called before their tasks start. Their answers are held until all have
        answered (see the module doc)."""
        timeout = mr.live_wait_s - LIVE_WAIT_GRACE_S if mr.live_bounded else None
        longest = max((leg.target.deadline_s or timeout or FALLBACK_SHADOW_DEADLINE_S for leg in legs), default=0.0)
        t0 = _perf()
        nw = mr.nway = NWayRequest(list(legs), t0, t0 + longest + mr.live_wait_s + NWAY_GRACE_S)
        mr.live_done.add_done_callback(lambda _f: nw.live_answered(_perf()))

    def nway_failed(self, ss: Any, rs: Any, mr: MirroredRequest, status: str) -> None:
        """The shadow task of ``ss`` ended without calling ``answered`` (cancelled mid-call at
        shutdown, or the front's own failure before the call): for an N-way request the leg
        counts as failed with ``status``, so the other legs need not wait for it. Never raises."""
        nw = mr.nway
        pos = nw.positions.get(id(ss)) if nw is not None else None
        if pos is None or pos in nw.answers or nw.done.done():
            return
        nw.answers[pos] = (None, status, _perf(), None)
        if not nw.missing():
            k = next(k for k in range(len(nw.legs)) if nw.answers[k][0] is None)
            self._nway_settle(nw, rs, nw.buckets, f"{nw.legs[k].target.name}: {nw.answers[k][1]}")

    async def _nway_answered(self, nw: NWayRequest, ss: Any, rs: Any, mr: MirroredRequest, response: bytes | None, sc: Any, status: str, buckets: list, arrived: float) -> tuple:
        pos = nw.positions.get(id(ss))
        if pos is None or pos in nw.answers or nw.done.done():
            # not one of the request's legs (a copy), or late: the request was settled without it
            return (None if response is None else NWAY_INCOMPLETE), None, buckets
        nw.answers[pos] = (response, status or ("OK" if response is not None else "ERROR"), arrived, sc)
        nw.buckets = buckets
        if nw.missing():
            try:  # the last leg to answer settles the request
                return (await asyncio.wait_for(asyncio.shield(nw.done), max(nw.bound_at - _perf(), 0.0)))[pos]
            except asyncio.TimeoutError:
                missing = nw.missing()
                self._nway_settle(nw, rs, buckets, f"{nw.legs[missing[0]].target.name}: TIMEOUT" if missing else "live_failed")
                return nw.done.result()[pos]
            except asyncio.CancelledError:  # shutdown: this leg counts as failed
                if not nw.done.done():
                    nw.answers[pos] = (None, "CANCELLED", arrived, sc)
                    self._nway_settle(nw, rs, buckets, f"{ss.target.name}: CANCELLED")
                raise
        try:
            return self._nway_compare(nw, rs, mr, buckets, await self._nway_live(nw, rs, mr, buckets))[pos]
        except asyncio.CancelledError:
            self._nway_settle(nw, rs, buckets, f"{ss.target.name}: CANCELLED")
            raise

    async def _nway_live(self, nw: NWayRequest, rs: Any, mr: MirroredRequest, buckets: list) -> bytes | None:
        """Live's answer when every leg answered OK; None when a leg failed (the request is then
        settled) or live failed."""
        failed = [k for k in range(len(nw.legs)) if nw.answers[k][0] is None]
        if failed:
            self._nway_settle(nw, rs, buckets, f"{nw.legs[failed[0]].target.name}: {nw.answers[failed[0]][1]}")
            return None
        live = mr.live_done
        try:
            return live.result() if live.done() else await mr.live_answer()
        except asyncio.CancelledError:
            if not live.cancelled():
                raise  # this task itself was cancelled (shutdown)
        except asyncio.TimeoutError:
            pass
        return None

    def _nway_settle(self, nw: NWayRequest, rs: Any, buckets: list, reason: str, outcomes: dict | None = None) -> None:
        """Settle ``nw`` without comparing any leg (counted by ``reason``); a no-op once settled."""
        if nw.done.done():
            return
        state = rs.state.nway
        if state is not None:
            state.incomplete[reason] += 1
        res = []
        for k in range(len(nw.legs)):
            a = nw.answers.get(k)
            res.append((outcomes or {}).get(k) or ((None, None, buckets) if a is None or a[0] is None else (NWAY_INCOMPLETE, None, buckets)))
        nw.answers.clear()  # the held answers go with their tasks
        nw.done.set_result(res)

    def _nway_compare(self, nw: NWayRequest, rs: Any, mr: MirroredRequest, buckets: list, live_response: bytes | None) -> list:
        """Every leg answered: compare all of them with live, or none (live failed, a contract
        differs). Returns each leg's outcome (by position)."""
        if nw.done.done():  # settled meanwhile (a leg failed, or a waiter's bound passed)
            return nw.done.result()
        n = len(nw.legs)
        if live_response is None:
            for leg in nw.legs:
                leg.stats.live_failed += 1
            self._nway_settle(nw, rs, buckets, "live_failed", {k: (LIVE_FAILED, None, buckets) for k in range(n)})
            return nw.done.result()
        bad = _contract_differs(live_response, [nw.answers[k][0] for k in range(n)])
        if bad is not None:
            nw.legs[bad].stats.contract_mismatch += 1
            self._nway_settle(nw, rs, buckets, f"{nw.legs[bad].target.name}: contract_mismatch", {bad: (CONTRACT_MISMATCH, live_response, buckets)})
            return nw.done.result()
        res, primaries = [], []
        for k, leg in enumerate(nw.legs):
            response, _, _, sc = nw.answers[k]
            pair, primary = self._compare(leg, mr, live_response, response, buckets, sc)
            res.append((pair, live_response, buckets))
            primaries.append(primary)
        state = rs.state.nway
        if state is not None:
            try:
                agrees = None
                if all(p is not None for p in primaries):
                    agrees = [_agreeing(leg, p) for leg, p in zip(nw.legs, primaries)]
                live_at = nw.live_at if nw.live_at is not None else _perf()
                state.record(agrees, [live_at - nw.t0] + [nw.answers[k][2] - nw.t0 for k in range(n)])
            except Exception:
                log.exception("route %s: the N-way comparison failed", mr.route)
        nw.answers.clear()
        nw.done.set_result(res)
        return res

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
        nw = rs.state.nway if rs is not None else None
        if ok and nw is not None and labels is not None:
            live = pair.live
            preds = [pair.shadows.get(n) for n in nw.names]
            if live is not None and live.ndim == 2 and live.shape[1] > 1 and all(p is not None for p in preds):
                labels = labels.astype(np.int64, copy=False)
                nw.record_truth([correct_rows(x, labels, pair.probabilities) for x in (live, *preds)])
        return "accepted" if ok else "mismatch"


def _contract_differs(live: bytes, responses: list[bytes]) -> int | None:
    """The position of the first answer whose outputs' names, datatypes or shapes differ from
    live's (as compare_responses judges them; an unreadable answer differs), else None."""
    try:
        want = sorted((n, d, tuple(s)) for n, d, s, _ in scan_response(live))
    except ValueError:
        return 0
    for k, r in enumerate(responses):
        try:
            if sorted((n, d, tuple(s)) for n, d, s, _ in scan_response(r)) != want:
                return k
        except ValueError:
            return k
    return None


def _agreeing(leg: Any, primary: tuple) -> np.ndarray:
    """Per row of the primary output: does the leg's answer agree with live's (nway.agreeing_rows)."""
    live, shadow, _ = primary
    name = next(iter(leg.stats.outputs), "")
    out = leg.stats.outputs.get(name)
    return agreeing_rows(live, shadow, out.kind if out is not None else "", leg.route.output_spec(name))
