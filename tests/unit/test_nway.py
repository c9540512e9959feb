"""identical_sample (nway.py, Pairing.nway_begin/answered): the held answers of an N-way request are
compared all or none, with fake legs (no Triton): every leg OK, one leg failing, one cancelled
while waiting, one never answering, live failing, a contract mismatch, many mixed requests; the
paired interval math; the ground-truth join; the exact merge of replicas. Against the real Triton:
tests/triton/test_identical_sample.py."""

from __future__ import annotations

import asyncio
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest

from shadowgrpc import pairing, snapshot
from shadowgrpc.config import LiveTarget, Route, ShadowTarget
from shadowgrpc.nway import NWAY_INCOMPLETE, NWayState, merge_states
from shadowgrpc.outcomes import OutcomeStats, PairStore
from shadowgrpc.pairlog.schema import COMPARED, CONTRACT_MISMATCH, LIVE_FAILED
from shadowgrpc.state import FrontState
from shadowgrpc.stats import ShadowStats
from shadowgrpc.verdict import paired_delta_ci
from tests.wire import fp32_response

NAMES = ["a", "b", "c"]
ROUTE = Route(model="m", live=LiveTarget("127.0.0.1:1", "m"), shadows=tuple(ShadowTarget(n, "127.0.0.1:1", n) for n in NAMES))


class _Completeness:
    async def check(self, req) -> None:
        return None


class _Leg:  # the parts of routes.ShadowLeg the pairing stage reads
    def __init__(self, name: str, index: int) -> None:
        self.target = ShadowTarget(name, "127.0.0.1:1", name, deadline_s=1.0)
        self.stats = ShadowStats()
        self.route = ROUTE
        self.slices = ()
        self.index = index
        self.outcomes = OutcomeStats()


def _setup(max_pairs: int = 0):
    legs = [_Leg(n, i) for i, n in enumerate(NAMES)]
    rs = SimpleNamespace(completeness=_Completeness(), state=SimpleNamespace(nway=NWayState(list(NAMES))))
    return pairing.Pairing(PairStore(max_pairs=max_pairs)), legs, rs


def _probs(labels: list[int]) -> bytes:
    p = np.full((len(labels), 2), 0.1, np.float32)
    p[np.arange(len(labels)), labels] = 0.9
    return fp32_response(probability=p)


LIVE = _probs([0, 1, 0, 1])


async def _request(pr, legs, rs, answers, live=LIVE, request_id="", order=None, cancel=None):
    """One N-way request: ``answers[k]`` is leg k's response (None: failed; "never": no answer);
    live answers ``live`` (None: live failed). Returns each leg's outcome (or the exception)."""
    mr = pairing.MirroredRequest(b"", request_id, "m", asyncio.get_running_loop().create_future(), 1.0)
    pr.nway_begin(mr, legs)

    async def leg(k):
        await asyncio.sleep(0.001 * (order or range(len(legs))).index(k))
        return await pr.answered(legs[k], rs, mr, answers[k], None, "INTERNAL" if answers[k] is None else "OK")

    tasks = [asyncio.create_task(leg(k)) for k in range(len(legs)) if answers[k] != "never"]
    await asyncio.sleep(0.01)
    if cancel is not None:
        tasks[cancel].cancel()
        await asyncio.sleep(0.01)  # the cancelled leg settles the request before live answers
    if live is None:
        mr.live_done.cancel()
    else:
        mr.live_done.set_result(live)
    res = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert not mr.nway.answers  # nothing held once settled
    return res, mr


def test_every_leg_ok_all_are_compared_by_the_last_one_and_each_task_returns_its_own_pair():
    pr, legs, rs = _setup()
    b = _probs([0, 1, 1, 1])  # disagrees with live on row 2
    c = _probs([1, 1, 1, 1])  # rows 0, 2

    res, _ = asyncio.run(_request(pr, legs, rs, [LIVE, b, c], order=[2, 0, 1]))
    assert [r[0] for r in res] == [COMPARED] * 3 and all(r[1] == LIVE for r in res)
    assert [leg.stats.compared for leg in legs] == [1, 1, 1]
    nw = rs.state.nway
    assert (nw.requests, nw.rows, nw.agree) == (1, 4, [4, 3, 2])
    assert nw.agree_disc[0] == [0, 1, 2] and nw.agree_disc[1] == [0, 0, 1] and nw.agree_disc[2] == [0, 0, 0]
    assert not nw.incomplete


@pytest.mark.parametrize(("answers", "cancel", "reason"), [
    ([LIVE, None, LIVE], None, "b: INTERNAL"),
    ([None, None, LIVE], None, "a: INTERNAL"),  # the first failing leg in route order names the request
    ([LIVE, LIVE, LIVE], 0, "a: CANCELLED"),  # a leg cancelled while waiting (shutdown) counts as failed
])  # fmt: skip
def test_a_failed_or_cancelled_leg_removes_the_request_for_every_shadow(answers, cancel, reason):
    pr, legs, rs = _setup()
    res, _ = asyncio.run(_request(pr, legs, rs, answers, cancel=cancel))
    assert [leg.stats.compared for leg in legs] == [0, 0, 0]
    nw = rs.state.nway
    assert nw.requests == 0 and dict(nw.incomplete) == {reason: 1}
    for k, r in enumerate(res):
        if k == cancel:
            assert isinstance(r, asyncio.CancelledError)
        else:
            assert r[0] == (None if answers[k] is None else NWAY_INCOMPLETE)


def test_live_failing_removes_the_request_and_counts_live_failed_on_each_leg():
    pr, legs, rs = _setup()
    res, _ = asyncio.run(_request(pr, legs, rs, [LIVE, LIVE, LIVE], live=None))
    assert [r[0] for r in res] == [LIVE_FAILED] * 3
    assert [leg.stats.live_failed for leg in legs] == [1, 1, 1] and [leg.stats.compared for leg in legs] == [0, 0, 0]
    assert dict(rs.state.nway.incomplete) == {"live_failed": 1}


def test_a_contract_mismatch_on_one_leg_compares_none():
    pr, legs, rs = _setup()
    wrong = fp32_response(probability=np.full((4, 3), 0.3, np.float32))
    res, _ = asyncio.run(_request(pr, legs, rs, [LIVE, wrong, LIVE]))
    assert [r[0] for r in res] == [NWAY_INCOMPLETE, CONTRACT_MISMATCH, NWAY_INCOMPLETE]
    assert [leg.stats.compared for leg in legs] == [0, 0, 0] and legs[1].stats.contract_mismatch == 1
    assert dict(rs.state.nway.incomplete) == {"b: contract_mismatch": 1}


def test_a_leg_that_never_answers_is_bounded_and_the_late_answer_is_not_compared():
    async def go():
        pr, legs, rs = _setup()
        mr = pairing.MirroredRequest(b"", "", "m", asyncio.get_running_loop().create_future(), 1.0)
        pr.nway_begin(mr, legs)
        mr.nway.bound_at = pairing._perf() + 0.2  # the legs' deadlines, shortened for the test
        mr.live_done.set_result(LIVE)
        t0 = asyncio.get_running_loop().time()
        first = await asyncio.gather(*(pr.answered(legs[k], rs, mr, LIVE, None, "OK") for k in (0, 1)))
        waited = asyncio.get_running_loop().time() - t0
        late = await pr.answered(legs[2], rs, mr, LIVE, None, "OK")
        return first, late, waited, legs, rs

    first, late, waited, legs, rs = asyncio.run(go())
    assert 0.15 < waited < 2.0
    assert [r[0] for r in first] == [NWAY_INCOMPLETE] * 2 and late[0] == NWAY_INCOMPLETE
    assert [leg.stats.compared for leg in legs] == [0, 0, 0] and dict(rs.state.nway.incomplete) == {"c: TIMEOUT": 1}


def test_many_mixed_requests_every_shadow_compares_the_same_requests():
    rng = random.Random(7)

    async def go():
        pr, legs, rs = _setup()
        for i in range(60):
            answers = [None if rng.random() < 0.1 else _probs([rng.randrange(2) for _ in range(3)]) for _ in legs]
            live = None if rng.random() < 0.05 else _probs([0, 1, 1])
            await _request(pr, legs, rs, answers, live=live, order=rng.sample(range(3), 3))
        return legs, rs

    legs, rs = asyncio.run(go())
    nw = rs.state.nway
    compared = {leg.stats.compared for leg in legs}
    assert compared == {nw.requests} and 10 < nw.requests < 60
    assert nw.requests + sum(nw.incomplete.values()) == 60
    assert nw.rows == 3 * nw.requests
    assert [leg.stats.outputs["probability"].agreed_rows for leg in legs] == nw.agree  # the same rows as each target's own sketch


def test_ground_truth_ranks_models_on_the_same_rows_with_paired_intervals():
    async def go():
        pr, legs, rs = _setup(max_pairs=100)
        answers = [_probs([0, 1, 0, 1]), _probs([0, 1, 1, 1]), _probs([1, 0, 1, 0])]
        await _request(pr, legs, rs, answers, request_id="r1")
        return pr, legs, rs

    pr, legs, rs = asyncio.run(go())
    routes = {"m": SimpleNamespace(shadows=legs, state=rs.state)}
    why = pr.record_outcome(routes, "r1", np.array([0, 1, 1, 1]), None)
    assert why == "accepted"
    nw = rs.state.nway
    assert nw.truth_rows == 4 and nw.correct == [3, 3, 4, 1]  # live, a, b, c
    assert nw.ranking() == ("accuracy", [2, 0, 1, 3])
    b, c, d, lo, hi = nw.paired_accuracy(2, 0)  # b vs live: b right where live is wrong on row 2
    assert (b, c) == (1, 0) and d == pytest.approx(0.25) and (lo, hi) == pytest.approx(paired_delta_ci(1, 0, 4)[1:])


def test_paired_intervals_match_their_definitions():
    nw = NWayState(["x", "y"])
    rng = np.random.default_rng(3)
    lat = rng.gamma(2.0, 0.01, size=(50, 3))
    for i in range(50):
        ax, ay = rng.random(5) < 0.9, rng.random(5) < 0.7
        nw.record([ax, ay], list(lat[i]))
    # agreement: live agrees with itself; shadow vs shadow from the discordant counts
    b, c, d, lo, hi = nw.paired_agreement(1, 2)
    assert (b, c) == (nw.agree_disc[0][1], nw.agree_disc[1][0]) and d == pytest.approx((nw.agree[0] - nw.agree[1]) / nw.rows)
    se = math.sqrt(b + c - (b - c) ** 2 / nw.rows) / nw.rows
    assert (lo, hi) == pytest.approx((d - 1.959963984540054 * se, d + 1.959963984540054 * se))
    assert nw.paired_agreement(0, 1)[:2] == (nw.rows - nw.agree[0], 0)
    # latency: mean difference and the t-free normal interval from the per-request differences
    diff = lat[:, 1] - lat[:, 2]
    mean, lo, hi = nw.latency_diff(1, 2)
    half = 1.959963984540054 * diff.std(ddof=1) / math.sqrt(len(diff))
    assert (mean, lo, hi) == pytest.approx((diff.mean(), diff.mean() - half, diff.mean() + half), rel=1e-9)
    assert nw.latency_diff(2, 1) == pytest.approx((-mean, -hi, -lo))


def test_replicas_merge_exactly_and_survive_a_snapshot():
    rng = np.random.default_rng(11)
    whole, parts = NWayState(list(NAMES)), [NWayState(list(NAMES)) for _ in range(3)]
    for i in range(90):
        agrees = [rng.random(4) < p for p in (0.9, 0.8, 0.5)]
        lat = list(rng.gamma(2.0, 0.01, size=4) * 10.0 ** rng.integers(-3, 2))
        hits = [rng.random(4) < 0.7 for _ in range(4)]
        for s in (whole, parts[i % 3]):
            s.record(agrees, lat)
            s.record_truth(hits)
            s.incomplete["b: INTERNAL" if i % 2 else "live_failed"] += 1
    merged = None
    for p in (parts[2], parts[0], parts[1]):  # any order: exact sums
        merged = merge_states(merged, NWayState.from_dict(p.to_dict()))
    assert merged.to_dict() == whole.to_dict()
    assert merged.latency_diff(0, 3) == whole.latency_diff(0, 3)
    with pytest.raises(ValueError, match="identical_sample shadows differ"):
        merged.merge(NWayState(["a", "b"]))
    # through snapshot.py: a FrontState whose route carries N-way state, saved and merged
    views = []
    for p in parts:
        st = FrontState.for_routes((ROUTE,), 10, 60.0, 1 << 20)
        st.routes["m"].nway = p
        views.append(snapshot.load(snapshot.snapshot(st)))
    assert snapshot.merge(views).routes["m"].nway.to_dict() == whole.to_dict()


def test_a_leg_that_ends_without_answering_releases_the_others_at_once():
    """Router._shadow calls nway_failed when a leg's task ends before its call did (cancelled at
    shutdown, the front's own failure): the others must not wait for their bound."""

    async def go():
        pr, legs, rs = _setup()
        mr = pairing.MirroredRequest(b"", "", "m", asyncio.get_running_loop().create_future(), 1.0)
        pr.nway_begin(mr, legs)
        mr.live_done.set_result(LIVE)
        waiting = [asyncio.create_task(pr.answered(legs[k], rs, mr, LIVE, None, "OK")) for k in (0, 2)]
        await asyncio.sleep(0.01)
        assert not any(t.done() for t in waiting)
        pr.nway_failed(legs[1], rs, mr, "CANCELLED")
        pr.nway_failed(legs[1], rs, mr, "CANCELLED")  # once only
        return await asyncio.wait_for(asyncio.gather(*waiting), 1), legs, rs

    res, legs, rs = asyncio.run(go())
    assert [r[0] for r in res] == [NWAY_INCOMPLETE] * 2
    assert [leg.stats.compared for leg in legs] == [0, 0, 0] and dict(rs.state.nway.incomplete) == {"b: CANCELLED": 1}


def test_the_report_block_text_and_html():
    from shadowgrpc.report import build_report
    from shadowgrpc.report_html import render_html
    from shadowgrpc.report_text import format_report

    st = FrontState.for_routes((ROUTE,), 10, 60.0, 1 << 20)
    nw = st.routes["m"].nway = NWayState(list(NAMES))
    rng = np.random.default_rng(5)
    for _ in range(300):
        nw.record([rng.random(2) < p for p in (0.99, 0.9, 0.5)], [0.01, 0.012, 0.011, 0.03 + rng.random() * 0.001])
    nw.incomplete["c: INTERNAL"] = 7
    n = build_report(st).routes[0].nway
    assert (n.requests, n.rows, dict(n.incomplete), n.ranked_by) == (300, 600, {"c: INTERNAL": 7}, "agreement")
    assert [m.name for m in n.ranking] == ["live", "a", "b", "c"] and [m.rank for m in n.ranking] == [0, 1, 2, 3]
    assert n.ranking[1].ahead_of_next and n.ranking[2].ahead_of_next  # 99% vs 90% vs 50% on 600 rows
    lat = {(p.a, p.b): p for p in n.pairs if p.metric == "latency_s"}
    assert lat[("a", "c")].ci.hi < 0 and lat[("live", "c")].ci.hi < 0  # c is ~20 ms slower than everyone
    assert not [p for p in n.pairs if p.metric == "accuracy"]  # no ground truth yet
    text = format_report(build_report(st))
    assert "identical_sample: 300 requests (600 rows) compared on every shadow (a, b, c); 7 compared on none: c: INTERNAL 7" in text
    assert "a vs c latency_s:" in text and "c slower" in text
    page = render_html(st, build_report(st))
    assert "Fair N-way comparison (identical_sample): 300 requests, 600 rows" in page and "paired 95% interval" in page
