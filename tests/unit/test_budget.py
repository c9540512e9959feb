"""Budgets (budget.py): admission and charging, UTC periods with an injected clock, retune,
bytes, compute, the worker split, estimates, snapshots and the merge, the verdict line."""

from __future__ import annotations

import logging
import math

import pytest

from shadowgrpc import budget as B
from shadowgrpc._config_rollout import Budget
from shadowgrpc.budget import BudgetState, estimate, share_of
from shadowgrpc.config import Gates
from shadowgrpc.outcomes import OutcomeStats
from shadowgrpc.stats import RouteStats, ShadowStats
from shadowgrpc.verdict import evaluate, paused_reason

pytestmark = pytest.mark.once  # budgets are counters: no twin code on their path

HOUR = 3600.0
T0 = 1_765_000_000.0  # some unix time; T0 is 13:46:40 UTC, inside an hour


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_requests_budget_never_lets_more_than_k_calls_out(caplog):
    c = Clock()
    bs = BudgetState(Budget(per="run", requests=40), "fraud/v2", clock=c)
    caplog.set_level(logging.WARNING, "shadowgrpc.budget")
    admitted = sum(bs.admit(100, 1) for _ in range(100))
    assert admitted == 40 and bs.requests == 40 and bs.total_requests == 40
    assert bs.refused == 60 and bs.paused
    assert bs.paused_reason == "requests budget spent: 40 of 40 until the run ends"
    assert bs.paused_until == 0.0  # a run budget never resumes by itself
    assert sum("mirroring paused" in r.getMessage() for r in caplog.records) == 1  # logged once
    c.t += 10 * 86400
    assert not bs.admit(100, 1)  # run: never resets


def test_amplified_calls_are_charged_and_all_or_nothing():
    bs = BudgetState(Budget(per="run", requests=10), clock=Clock())
    assert [bs.admit(5, 3) for _ in range(4)] == [True, True, True, False]  # 9 sent; 3 more would be 12
    assert bs.requests == 9 and bs.bytes == 45 and bs.paused and "9 of 10" in bs.paused_reason


def test_bytes_budget():
    mb = 1024 * 1024
    bs = BudgetState(Budget(per="day", bytes=10 * mb), clock=Clock())
    assert bs.admit(4 * mb, 2)  # 8 MB
    assert not bs.admit(3 * mb, 1)  # 11 MB > 10 MB
    assert bs.bytes == 8 * mb and bs.paused
    assert bs.paused_reason.startswith("bytes budget spent: 8 MB of 10 MB (the next request needs 3 MB) this day, until ")


def test_hour_period_is_the_utc_hour_and_resumes_by_itself(caplog):
    c = Clock()
    bs = BudgetState(Budget(per="hour", requests=3), "r/t", clock=c)
    assert bs.period_start == math.floor(T0 / HOUR) * HOUR and bs.period_end == bs.period_start + HOUR
    assert [bs.admit(1) for _ in range(4)] == [True, True, True, False]
    assert bs.paused_until == bs.period_end
    end = bs.period_end
    assert "until " + B._utc(end) in bs.paused_reason
    c.t = end - 0.001
    assert not bs.admit(1)
    caplog.set_level(logging.WARNING, "shadowgrpc.budget")
    c.t = end + 5  # the next hour
    bs.tick()
    assert not bs.paused and bs.requests == 0 and bs.period_start == end
    assert any("mirroring resumed" in r.getMessage() for r in caplog.records)
    assert bs.admit(1) and bs.total_requests == 4 and bs.refused == 2
    # paused from the refusal at T0 until the hour ended: not counted as mirroring time
    assert bs.active_s(c.t) == pytest.approx(c.t - end, abs=1e-6)


def test_day_period_is_the_utc_calendar_day():
    bs = BudgetState(Budget(per="day", requests=1), clock=Clock(T0))
    assert bs.period_start % 86400 == 0 and bs.period_start <= T0 < bs.period_end == bs.period_start + 86400


def test_compute_budget_pauses_at_the_poll_that_sees_it_spent():
    c = Clock()
    bs = BudgetState(Budget(per="hour", compute_s=2.0), clock=c)
    assert bs.admit(10, 1)
    bs.compute_used(1.5)
    assert not bs.paused and bs.admit(10, 1)
    bs.compute_used(0.6)
    assert bs.paused and bs.paused_reason.startswith("compute budget spent: 2.1 of 2 Triton compute s")
    assert not bs.admit(10, 1)
    c.t = bs.period_end
    assert bs.admit(10, 1) and bs.compute_s == 0.0 and bs.total_compute_s == pytest.approx(2.1)


def test_retune_keeps_what_was_spent():
    c = Clock()
    bs = BudgetState(Budget(per="hour", requests=5), clock=c)
    for _ in range(6):
        bs.admit(1)
    assert bs.paused and bs.requests == 5
    bs.retune(Budget(per="hour", requests=8))  # raised: resumes, the 5 spent still count
    assert not bs.paused and bs.requests == 5
    assert [bs.admit(1) for _ in range(4)] == [True, True, True, False]
    bs.retune(Budget(per="hour", requests=4))  # lowered below what was spent: stays paused
    assert bs.paused and bs.requests == 8
    bs.retune(Budget(per="day", requests=100))  # another period kind: its period, spent kept
    assert not bs.paused and bs.requests == 8 and bs.period_end - bs.period_start == 86400
    bs.retune(Budget(per="day", compute_s=1.0))
    bs.compute_used(1.0)
    assert bs.paused
    bs.retune(Budget(per="day", compute_s=0.5))
    assert bs.paused and "compute" in bs.paused_reason


def test_worker_share_splits_k_with_remainders_first():
    k, n = 40, 3
    shares = [share_of(k, i, n) for i in range(n)]
    assert shares == [14, 13, 13] and sum(shares) == k
    states = [BudgetState(Budget(per="run", requests=k, bytes=1000, compute_s=3.0), clock=Clock(), share=(i, n)) for i in range(n)]
    assert [s.max_requests for s in states] == shares
    assert sum(s.max_bytes for s in states) == 1000 and sum(s.max_compute_s for s in states) == pytest.approx(3.0)
    total = sum(s.admit(1) for s in states for _ in range(100))
    assert total == k  # never more than K over all workers
    B.set_share(1, 3)
    try:
        assert BudgetState(Budget(per="run", requests=k), clock=Clock()).max_requests == 13
    finally:
        B.set_share(0, 1)


def test_estimate_math():
    c = Clock()
    bs = BudgetState(Budget(per="hour", requests=3600), clock=c)
    c.t = bs.period_start + 100.0  # an hour that began 100 s ago
    for _ in range(200):
        bs.admit(1000, 1)
    c.t += 100.0  # 200 calls in 100 s: 2 calls/s
    e = estimate(bs, compared=100, outcome_rows=10, min_pairs=500, min_outcomes=100, now=c.t)
    assert e.known and e.calls_per_s == pytest.approx(2.0) and e.pairs_per_s == pytest.approx(1.0) and e.outcomes_per_s == pytest.approx(0.1)
    # 7200 calls an hour wanted, 3600 allowed: mirroring runs half of each hour
    assert e.active_fraction == pytest.approx(0.5)
    assert e.spent_in_s == pytest.approx((3600 - 200) / 2.0)  # within this hour (3400 s left)
    assert e.enough_data_in_s == pytest.approx(900 / 0.5)  # 90 outcome rows at 0.1/s, half the time
    assert "run 50% of each hour" in e.warning and "per hour" in e.text


def test_estimate_run_budget_runs_out_before_enough_data():
    c = Clock()
    bs = BudgetState(Budget(per="run", requests=300), clock=c)
    for _ in range(100):
        bs.admit(10, 1)
    c.t += 50.0  # 2 calls/s, 1 pair/s; 200 calls left = 100 s
    e = estimate(bs, compared=50, outcome_rows=50, min_pairs=1000, min_outcomes=0, now=c.t)
    assert e.spent_in_s == pytest.approx(100.0) and e.enough_data_in_s == math.inf
    assert e.warning.startswith("the budget runs out (100 s) before min_pairs") and e.warning.endswith("raise it")
    fields = B.report_fields(bs, e, c.t)
    assert fields["estimate"]["enough_data_in_s"] == -1.0 and fields["requests_limit"] == 300
    e2 = estimate(bs, compared=1000, outcome_rows=0, min_pairs=1000, min_outcomes=0, now=c.t)
    assert e2.enough_data_in_s == 0.0 and not e2.warning and e2.text.endswith("now")
    assert not estimate(BudgetState(Budget(per="run", requests=3), clock=c), 0, 0, 1, 1).known


def test_snapshot_round_trip_and_merge_sum():
    c = Clock()
    a = BudgetState(Budget(per="run", requests=10, bytes=1 << 20), "r/t", clock=c, share=(0, 2))
    b = BudgetState(Budget(per="run", requests=10, bytes=1 << 20), "r/t", clock=c, share=(1, 2))
    for _ in range(7):
        a.admit(100)
    for _ in range(3):
        b.admit(100)
    c.t += 20
    a.compute_used(0.25)
    la, lb = BudgetState.from_dict(a.to_dict(c.t), c.t), BudgetState.from_dict(b.to_dict(c.t), c.t)
    assert la.paused and la.paused_reason == a.paused_reason and la.requests == 5 and la.refused == 2
    assert la.active_s() == pytest.approx(a.active_s(c.t))
    la.merge(lb)
    assert (la.max_requests, la.requests, la.refused, la.bytes) == (10, 8, 2, 800)
    assert (la.replicas, la.replicas_paused, la.paused) == (2, 1, True)
    assert la.total_compute_s == pytest.approx(0.25)


def test_verdict_budget_line_and_reason():
    g = Gates()
    decision, gates = evaluate(g, RouteStats(), ShadowStats(), OutcomeStats(), paused="requests budget spent: 40 of 40 until the run ends")
    line = [r for r in gates if r.name == "budget"]
    assert decision == "NOT_ENOUGH_DATA" and line[0].status == "SKIPPED" and line[0].reason.startswith("PAUSED: requests budget spent")
    assert "budget" not in {r.name for r in evaluate(g, RouteStats(), ShadowStats(), OutcomeStats())[1]}
    why = paused_reason(decision, "requests budget spent: 3 of 3 this hour", T0 + 100)
    assert why.startswith("not enough data, and mirroring is paused by the budget until ") and B._utc(T0 + 100) in why
    assert "the run ends" in paused_reason(decision, "x", 0.0)
    assert paused_reason("PASS", "x", 1.0) == "" and paused_reason(decision, "", 1.0) == ""


def test_describe():
    assert B.describe(Budget(per="day", requests=1000, bytes=50 * 1024 * 1024, compute_s=3600)) == "per day: 1000 requests, 50 MB, 3600 Triton compute s"


def test_refund_and_unchanged_retune():
    bs = BudgetState(Budget(per="run", requests=10, bytes=100), clock=Clock())
    assert bs.admit(10, 3)
    bs.refund(10, 3)  # identical_sample: another target refused
    assert (bs.requests, bs.bytes, bs.total_requests, bs.total_bytes) == (0, 0, 0, 0)
    assert bs.admit(30, 3) and bs.admit(5, 1)  # 4 requests, 95 bytes
    assert not bs.admit(10, 1) and bs.paused  # 105 bytes: the next does not fit
    bs.retune(Budget(per="run", requests=10, bytes=100))  # every publish retunes: an unchanged budget stays paused
    assert bs.paused and not bs.admit(1, 1)


def test_watcher_charges_this_targets_share_of_tritons_compute():
    """A noise-floor target calls live's own model and version: Triton's counters hold live's
    calls too, so the target is charged its share (its OK calls over Triton's successes)."""
    from types import SimpleNamespace as NS

    from shadowgrpc.budget_watch import BudgetWatcher, versions_of

    live = NS(address="t:1", model="fraud", version="1")
    floor = NS(target=NS(address="t:1", model="fraud", version="", name="aa"), stats=NS(ok=0))
    floor.state = NS(budget=BudgetState(Budget(per="run", compute_s=10.0), clock=Clock()))
    assert versions_of(floor, live) == ("", {"1"})  # unpinned, same model: live's pinned version left out
    floor.target.version = "1"
    assert versions_of(floor, live) == ("1", set())
    w = BudgetWatcher(NS(routes={}, settings=NS(poll_s=5.0)))
    w._charge(floor, {"1": (100, 1_000_000_000), "2": (7, 5)}, "1", set())  # the baseline
    floor.stats.ok = 50  # 50 of Triton's 200 new successes are this target's
    w._charge(floor, {"1": (300, 3_000_000_000), "2": (9, 9)}, "1", set())
    assert floor.state.budget.compute_s == pytest.approx(2.0 * 50 / 200)
    w._charge(floor, {"1": (300, 3_000_000_000)}, "1", set())  # nothing new: nothing charged
    assert floor.state.budget.compute_s == pytest.approx(0.5)
    w._charge(floor, {"1": (10, 1000)}, "1", set())  # Triton restarted: a new baseline, nothing charged
    assert floor.state.budget.compute_s == pytest.approx(0.5)
    assert w.interval() == 5.0


def test_metric_rows():
    from types import SimpleNamespace as NS

    from shadowgrpc.budget_watch import metric_rows

    bs = BudgetState(Budget(per="run", requests=2, bytes=100), clock=Clock())
    legs = [("fraud", NS(target=NS(name="v2"), state=NS(budget=bs))), ("fraud", NS(target=NS(name="plain"), state=NS(budget=None)))]
    bs.admit(10, 2)
    bs.admit(10, 1)
    assert list(metric_rows(legs, "used")) == [(2, {"route": "fraud", "target": "v2", "kind": "requests"}), (20, {"route": "fraud", "target": "v2", "kind": "bytes"})]
    assert [v for v, _ in metric_rows(legs, "limit")] == [2, 100]
    assert list(metric_rows(legs, "paused")) == [(1.0, {"route": "fraud", "target": "v2"})]


def _state_with_budget(share: tuple[int, int], admits: int):
    from shadowgrpc.config import Settings
    from shadowgrpc.state import MIRRORING, FrontState

    cfg = {"server": {"default_live": "127.0.0.1:1"}, "routes": [{"model": "fraud", "shadows": [{"name": "v2", "version": "2", "budget": {"per": "run", "requests": 10}}]}]}
    s = Settings.from_dict(cfg)
    st = FrontState.for_routes(s.routes, 100, 60.0, 1 << 20)
    (ts,) = st.routes["fraud"].shadows
    ts.status = MIRRORING
    ts.budget = BudgetState(ts.target.budget, "fraud/v2", share=share)
    for _ in range(admits):
        ts.budget.admit(100)
    return st


def test_report_snapshot_and_merge_show_the_budget():
    from shadowgrpc import snapshot
    from shadowgrpc.report import build_report
    from shadowgrpc.report_html import render_html
    from shadowgrpc.report_text import format_report

    a, b = _state_with_budget((0, 2), 9), _state_with_budget((1, 2), 2)
    rep = build_report(a)
    sb = rep.routes[0].shadows[0]
    assert (sb.budget.requests_limit, sb.budget.requests_used, sb.budget.refused, sb.budget.paused) == (5, 5, 4, True)
    assert sb.verdict.reason.startswith("not enough data, and mirroring is paused by the budget until the run ends")
    assert {g.name: g.status for g in sb.verdict.gates}["budget"] == "SKIPPED"
    text = format_report(rep)
    assert "budget per run: requests 5 of 5 used this run; 4 mirrored requests not sent (budget)" in text
    assert "PAUSED: requests budget spent: 5 of 5 until the run ends" in text and "(not enough data, and mirroring is paused" in text
    pytest.importorskip("matplotlib")
    page = render_html(a, rep)
    assert "PAUSED: requests budget spent: 5 of 5 until the run ends" in page and "paused by the budget until the run ends" in page
    m = snapshot.merge([snapshot.load(snapshot.snapshot(a)), snapshot.load(snapshot.snapshot(b))])
    mb = build_report(m).routes[0].shadows[0].budget
    assert (mb.requests_limit, mb.requests_used, mb.refused, mb.replicas, mb.replicas_paused) == (10, 7, 4, 2, 1)
    assert "PAUSED on 1 of 2 replicas" in format_report(build_report(m))


def test_watcher_names_ticks_and_logs_the_estimate_once(caplog):
    import asyncio
    from types import SimpleNamespace as NS

    from shadowgrpc.budget_watch import BudgetWatcher
    from shadowgrpc.state import TargetState

    st = _state_with_budget((0, 1), 0)
    rs = st.routes["fraud"]
    (ts,) = rs.shadows
    c = Clock()
    ts.budget = BudgetState(Budget(per="hour", requests=1000), clock=c)
    for _ in range(B.ESTIMATE_AFTER_CALLS):
        ts.budget.admit(10)
    c.t += 20.0
    assert isinstance(ts, TargetState)
    leg = NS(state=ts, target=ts.target, stats=ts.stats, upstream=None)
    w = BudgetWatcher(NS(routes={"fraud": NS(route=rs.route, shadows=[leg])}, settings=NS(poll_s=5.0)))
    caplog.set_level(logging.INFO, "shadowgrpc.budget")
    asyncio.run(w.poll())
    asyncio.run(w.poll())
    lines = [r.getMessage() for r in caplog.records if "budget estimate" in r.getMessage()]
    assert ts.budget.name == "fraud/v2" and len(lines) == 1 and lines[0].startswith("fraud/v2: budget estimate: 10 calls/s")


def test_a_reload_retunes_a_budget_keeping_what_was_spent_and_gives_a_new_target_its_own():
    from tests.frontctl import front_for

    ft = front_for("127.0.0.1:1", [{"model": "fraud", "shadows": [{"name": "v2", "version": "2", "budget": {"per": "run", "requests": 10}}]}])
    try:
        bs = ft.router.state.routes["fraud"].shadows[0].budget
        assert [ft.call(_admit(bs)) for _ in range(11)].count(True) == 10 and bs.paused
        text = (
            '[server]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\ndefault_live = "127.0.0.1:1"\n[[routes]]\nmodel = "fraud"\n'
            '[[routes.shadows]]\nname = "v2"\nversion = "2"\n[routes.shadows.budget]\nper = "run"\nrequests = 20\n'
            '[[routes.shadows]]\nname = "v3"\nversion = "3"\n[routes.shadows.budget]\nper = "hour"\nmb = 1\n'
        )
        ft.call(ft.front.reload_from(text=text))
        v2, v3 = ft.router.state.routes["fraud"].shadows
        assert v2.budget is bs and (bs.max_requests, bs.requests, bs.paused) == (20, 10, False)
        assert v3.budget is not None and (v3.budget.max_bytes, v3.budget.budget.per) == (1024 * 1024, "hour")
    finally:
        ft.stop()


async def _admit(bs) -> bool:  # on the front's loop, as the router does
    return bs.admit(1)
