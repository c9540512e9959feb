"""The promotion verdict: decisions and reasons from the collected statistics."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import shadowgrpc.sketches._py as ref
from shadowgrpc import sketches
from shadowgrpc.config import ConfigError, Settings
from shadowgrpc.outcomes import OutcomeStats, score
from shadowgrpc.sketches import LabelAgreement
from shadowgrpc.stats import OutputStats, RouteStats, ShadowStats
from shadowgrpc.verdict import Gates, evaluate, latency_gate, paired_delta_ci, quantile_bounds, quantile_ranks


def _output(rows: int, invalid: int = 0, live_invalid: int = 0) -> OutputStats:
    """A classifier output that compared ``rows`` rows, ``invalid`` of them invalid on the shadow side."""
    p = LabelAgreement(2)
    labels = np.zeros(rows, dtype=np.int64)
    p.update_labels(labels, labels)
    return OutputStats(kind="classifier", paired=p, shadow_invalid=invalid, live_invalid=live_invalid)


def _stats(n: int, live_s=0.002, shadow_s=0.002, errors: int = 0, invalid: int = 0):
    """Route and shadow stats of ``n`` requests; latencies: a constant or an array of ``n`` values."""
    r, s = RouteStats(), ShadowStats()
    r.live_latency.record_many(np.broadcast_to(np.asarray(live_s, dtype=np.float64), (n,)).copy())
    s.latency.record_many(np.broadcast_to(np.asarray(shadow_s, dtype=np.float64), (n,)).copy())
    s.sent, s.ok, s.compared = n, n - errors, n - errors
    if errors:
        s.errors["DEADLINE_EXCEEDED"] = errors
    if n - errors:
        s.outputs["probability"] = _output(n - errors, invalid)
    return r, s


def _by(gates) -> dict:
    return {g.name: g for g in gates}


def _outcomes(n: int, live_right: float, shadow_right: float, seed: int = 0) -> OutcomeStats:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    o = OutcomeStats()

    def probs(p_right):
        right = rng.random(n) < p_right
        pred = np.where(right, labels, 1 - labels)
        out = np.full((n, 2), 1 - p_right)  # calibrated: confidence = accuracy
        out[np.arange(n), pred] = p_right
        return out

    score(o, probs(live_right), probs(shadow_right), labels, None)
    return o


def test_paired_delta_ci():
    d, lo, hi = paired_delta_ci(30, 10, 1000)
    assert d == pytest.approx(0.02)
    se = np.sqrt(30 + 10 - 20**2 / 1000) / 1000
    assert lo == pytest.approx(0.02 - 1.96 * se, abs=1e-6) and hi == pytest.approx(0.02 + 1.96 * se, abs=1e-6)
    assert paired_delta_ci(0, 0, 0) == (0.0, 0.0, 0.0)


def test_without_outcomes_the_verdict_says_what_it_cannot_know():
    r, s = _stats(500)
    decision, gates = evaluate(Gates(), r, s, OutcomeStats())
    assert decision == "NOT_ENOUGH_DATA"
    by = {g.name: g for g in gates}
    assert by["latency_p99"].status == "PASS" and by["error_rate"].status == "PASS"
    assert by["accuracy"].status == "NOT_ENOUGH_DATA" and "agreement with live is not accuracy" in by["accuracy"].reason


def test_better_model_passes_and_worse_model_fails_on_accuracy():
    r, s = _stats(500)
    decision, gates = evaluate(Gates(), r, s, _outcomes(4000, 0.80, 0.85))
    assert decision == "PASS", gates
    decision, gates = evaluate(Gates(), r, s, _outcomes(4000, 0.85, 0.80))
    assert decision == "FAIL" and {g.name for g in gates if g.status == "FAIL"} == {"accuracy"}
    # Right as often, but overconfident: calibration fails.
    o = _outcomes(4000, 0.80, 0.80)
    o.improvements = o.regressions = 0  # the same predictions as live...
    o.shadow = copy.deepcopy(o.live)
    o.shadow.conf_fx = [v * 6 // 5 for v in o.shadow.conf_fx]  # ...stated 20% more confidently
    assert {g.name for g in evaluate(Gates(), r, s, o)[1] if g.status == "FAIL"} == {"calibration_ece"}


def test_slow_or_failing_shadow_fails_its_gates_and_mismatch_is_not_comparable():
    r, s = _stats(500, live_s=0.002, shadow_s=0.010)
    decision, gates = evaluate(Gates(), r, s, OutcomeStats())
    assert decision == "FAIL" and any(g.name == "latency_p99" and g.status == "FAIL" for g in gates)
    r, s = _stats(500, errors=50)
    _, gates = evaluate(Gates(), r, s, OutcomeStats())
    assert any(g.name == "error_rate" and g.status == "FAIL" and "DEADLINE_EXCEEDED=50" in g.reason for g in gates)
    r, s = RouteStats(), ShadowStats()
    s.contract_mismatch = 7
    assert evaluate(Gates(), r, s, OutcomeStats())[0] == "NOT_COMPARABLE"


def test_gates_config():
    s = Settings.from_dict({"routes": [{"model": "m", "gates": {"min_pairs": 10, "p99_ms_max": 50, "accuracy_delta_min": 0.0}}]})
    g = s.routes[0].gates
    assert (g.min_pairs, g.p99_ms_max, g.accuracy_delta_min, g.ece_delta_max) == (10, 50.0, 0.0, 0.02)
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.gates\.min_pair: unknown key"):
        Settings.from_dict({"routes": [{"model": "m", "gates": {"min_pair": 10}}]})
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.gates\.error_rate_max: must be in"):
        Settings.from_dict({"routes": [{"model": "m", "gates": {"error_rate_max": 2}}]})
    g = Settings.from_dict({"routes": [{"model": "m"}]}).routes[0].gates
    assert (g.p99_delta_ms_min, g.invalid_output_rate_max, g.p99_ms_max) == (1.0, 0.001, None)
    g = Settings.from_dict({"routes": [{"model": "m", "gates": {"p99_delta_ms_min": 0, "invalid_output_rate_max": 0.05}}]}).routes[0].gates
    assert (g.p99_delta_ms_min, g.invalid_output_rate_max) == (0.0, 0.05)
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.gates\.p99_delta_ms_min: must be in"):
        Settings.from_dict({"routes": [{"model": "m", "gates": {"p99_delta_ms_min": -1}}]})
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.gates\.invalid_output_rate_max: must be a number"):
        Settings.from_dict({"routes": [{"model": "m", "gates": {"invalid_output_rate_max": "1%"}}]})


# --- confidence bounds on p99 from the sketch's bucket counts --------------------------------------


def test_quantile_ranks_are_the_binomial_order_statistics():
    # n = 1000, q = 0.99: nq = 990, sd = sqrt(9.9) = 3.146; one-sided 95%: z sd = 5.18
    assert quantile_ranks(1000, 0.99) == (984, 996)
    assert quantile_ranks(1000, 0.99, z=1.959963984540054) == (983, 997)
    assert quantile_ranks(200, 0.99) == (195, 200)  # k_hi clamped: the sample maximum
    assert quantile_ranks(1, 0.99) == (1, 1) and quantile_ranks(0, 0.99) == (0, 0)
    assert quantile_ranks(10, 0.5, z=0.0) == (5, 5)


@pytest.mark.parametrize("impl", ["python", "default"])
def test_quantile_bounds_read_bucket_edges_and_match_for_both_twins(impl):
    cls = ref.LatencySketch if impl == "python" else sketches.LatencySketch
    h = cls()
    assert all(np.isnan(quantile_bounds(h, 0.99)))
    values = np.arange(1, 1001) * 1e-5  # 10 us .. 10 ms, one each: X_(k) = k * 10 us
    h.record_many(values)
    lo, hi = quantile_bounds(h, 0.99)
    # X_(984) = 9.84 ms and X_(996) = 9.96 ms, widened by at most one 1% bucket
    assert 9.84e-3 / 1.01 <= lo <= 9.84e-3 and 9.96e-3 <= hi <= 9.96e-3 * 1.01
    assert lo <= h.quantile(0.99) <= hi
    twin = ref.LatencySketch()
    twin.record_many(values)
    assert quantile_bounds(twin, 0.99) == (lo, hi)
    # Few samples: the upper bound is the maximum, never past it; the first bucket reads as 0.
    few = cls()
    few.record_many(np.array([5e-7, 2e-3, 3e-3]))
    assert quantile_bounds(few, 0.99) == (pytest.approx(2e-3, rel=0.011), 3e-3)
    assert quantile_bounds(few, 0.0)[0] == 0.0
    # Values clamped above 60 s: the maximum is the upper edge.
    top = cls()
    top.record_many(np.array([70.0] * 10))
    assert quantile_bounds(top, 0.99)[1] == 70.0


def test_quantile_bounds_cover_the_true_p99():
    """Each bound holds in ~95% of samples: checked on 300 samples of 1000 draws."""
    rng = np.random.default_rng(7)
    true_p99 = float(np.exp(np.log(1.5e-3) + 0.4 * 2.3263478740408408))  # lognormal(ln 1.5 ms, 0.4)
    below = above = 0
    for _ in range(300):
        h = ref.LatencySketch()
        h.record_many(rng.lognormal(np.log(1.5e-3), 0.4, 1000))
        lo, hi = quantile_bounds(h, 0.99)
        below += lo <= true_p99
        above += hi >= true_p99
    assert below >= 0.91 * 300 and above >= 0.91 * 300  # 95% expected; 91% is 3 sd below


# --- the latency gate: FAIL only beyond noise ------------------------------------------------------


def test_same_cost_shadow_measured_a_little_slower_is_noise_and_passes():
    """On a shared 2-core box a shadow costing the same as live is measured 1.21-1.27x at p99
    (0.3 ms at 1.5 ms): the old point-estimate rule (> 1.2x) failed it; now it passes."""
    rng = np.random.default_rng(1)
    live = rng.lognormal(np.log(0.8e-3), 0.25, 1000)
    for factor in (1.21, 1.27, 1.5):
        r, s = _stats(1000, live, live * factor)
        old_ratio = s.latency.quantile(0.99) / r.live_latency.quantile(0.99)
        assert old_ratio > 1.2  # what used to FAIL
        gate = _by(evaluate(Gates(), r, s, OutcomeStats())[1])["latency_p99"]
        assert gate.status == "PASS", gate.reason
    # Without the absolute slack, 1.5x with 1000 samples is beyond sampling noise: FAIL.
    gate = latency_gate(Gates(p99_delta_ms_min=0.0), *_stats(1000, live, live * 1.5))
    assert gate.status == "FAIL" and gate.value > 1.2, gate.reason
    # ...while 1.21x is within the sampling bounds even then: it looks slower, so not a PASS either.
    gate = latency_gate(Gates(p99_delta_ms_min=0.0), *_stats(1000, live, live * 1.21))
    assert gate.status == "NOT_ENOUGH_DATA" and "looks slower but is within noise: more calls needed" in gate.reason


def test_a_clearly_slower_shadow_fails_with_the_bounds_in_the_reason():
    rng = np.random.default_rng(2)
    live = rng.lognormal(np.log(1.2e-3), 0.3, 600)
    r, s = _stats(600, live, live * 5)
    decision, gates = evaluate(Gates(), r, s, OutcomeStats())
    gate = _by(gates)["latency_p99"]
    assert decision == "FAIL" and gate.status == "FAIL"
    assert gate.value > 3 and gate.threshold == 1.2
    for text in ("shadow p99", "95% bounds", "live p99", "600 calls", "lower bound", "upper bound", "FAIL needs > 1.2x and > +1 ms"):
        assert text in gate.reason, gate.reason
    # A constant 20 ms vs 25 ms is 1.25x and +5 ms: beyond both, even with the 1% buckets.
    assert latency_gate(Gates(), *_stats(2000, 0.020, 0.025)).status == "FAIL"
    # The old small-sample test: 500 pairs at 2 ms vs 10 ms.
    assert latency_gate(Gates(), *_stats(500, 0.002, 0.010)).status == "FAIL"


def test_one_outlier_does_not_make_or_break_the_gate():
    # A shadow's single 50 ms hiccup among 1000 calls at 1 ms is not a slower p99.
    sh = np.full(1000, 1e-3)
    sh[17] = 0.050
    assert latency_gate(Gates(p99_delta_ms_min=0.0), *_stats(1000, 1e-3, sh)).status == "PASS"
    # Nor are ten (p99 is rank 990 of 1000)...
    sh[:9] = 0.050
    assert latency_gate(Gates(p99_delta_ms_min=0.0), *_stats(1000, 1e-3, sh)).status == "PASS"
    # ...while eleven make p99 itself 50 ms: that looks slower, but p99's lower bound (rank 984)
    # is still 1 ms: NOT_ENOUGH_DATA, not FAIL.
    sh[9] = 0.050
    g = latency_gate(Gates(p99_delta_ms_min=0.0), *_stats(1000, 1e-3, sh))
    assert g.status == "NOT_ENOUGH_DATA" and g.value < 1.01, g.reason
    # Live's own outliers raise its upper bound: 4 of 1000 at 40 ms (rank 996 is the 5th largest).
    live = np.full(1000, 1e-3)
    live[:4] = 0.040
    assert latency_gate(Gates(), *_stats(1000, live, 0.005)).status == "FAIL"


def test_the_noise_floor_raises_the_reference_and_never_adds_a_fail():
    rng = np.random.default_rng(3)
    live = rng.lognormal(np.log(2e-3), 0.2, 1000)
    r, s = _stats(1000, live, live * 1.8)  # +1.5 ms or so at p99: FAIL against live alone
    without = latency_gate(Gates(), r, s)
    assert without.status == "FAIL", without.reason
    _, aa = _stats(1000, live, live * 1.7)  # the A/A replica is just as slow on the shadow path
    with_floor = latency_gate(Gates(), r, s, floor=aa)
    assert with_floor.status == "PASS" and "A/A noise floor p99" in with_floor.reason and "the A/A floor's upper bound" in with_floor.reason
    # A floor faster than live changes nothing: the reference is the larger of the two.
    _, fast = _stats(1000, live, live * 0.5)
    g = latency_gate(Gates(), r, s, floor=fast)
    assert (g.status, g.value) == (without.status, without.value) and "live's upper bound" in g.reason
    # A floor with fewer than min_pairs calls is not used.
    _, few = _stats(50, live[:50], live[:50] * 1.7)
    g = latency_gate(Gates(), r, s, floor=few)
    assert g.status == "FAIL" and "A/A noise floor not used (50 calls, need 200)" in g.reason
    # A 5x shadow fails against the floor too; and evaluate ignores a floor that is the shadow itself.
    _, slow = _stats(1000, live, live * 5)
    assert latency_gate(Gates(), r, slow, floor=aa).status == "FAIL"
    assert _by(evaluate(Gates(), r, slow, OutcomeStats(), floor=slow)[1])["latency_p99"].reason == latency_gate(Gates(), r, slow).reason


def test_sla_defaults_to_the_live_deadline_and_uses_the_lower_bound():
    r, s = _stats(1000, 0.009, 0.010)  # 1.11x: the ratio test passes
    assert latency_gate(Gates(), r, s).status == "PASS"
    g = latency_gate(Gates(), r, s, live_deadline_s=0.008)
    assert g.status == "FAIL" and "SLA 8 ms (live deadline): lower bound above" in g.reason
    assert latency_gate(Gates(), r, s, live_deadline_s=0.050).status == "PASS"
    g = latency_gate(Gates(p99_ms_max=5.0), r, s, live_deadline_s=0.050)  # p99_ms_max wins
    assert g.status == "FAIL" and "SLA 5 ms (p99_ms_max)" in g.reason
    # Point p99 over the SLA, lower bound within: 15 of 1000 calls at 10 ms, the rest 1 ms.
    sh = np.full(1000, 1e-3)
    sh[:15] = 0.010
    r, s = _stats(1000, 1e-3, sh)
    assert s.latency.quantile(0.99) * 1e3 > 5.0
    g = latency_gate(Gates(p99_ms_max=5.0, p99_ratio_max=100.0), r, s)
    assert g.status == "NOT_ENOUGH_DATA" and "SLA 5 ms (p99_ms_max): p99 above, lower bound within" in g.reason


# --- invalid outputs ------------------------------------------------------------------------------


def test_invalid_outputs_fail_without_outcomes_and_without_min_pairs():
    r, s = _stats(4000, invalid=82)
    decision, gates = evaluate(Gates(), r, s, OutcomeStats())
    g = _by(gates)["invalid_outputs"]
    assert decision == "FAIL" and g.status == "FAIL"
    assert g.reason.startswith("probability: 2.05% of 4000 rows invalid") and "max 0.10%" in g.reason
    assert g.value == pytest.approx(82 / 4000) and g.threshold == 0.001
    # Below the max rate: PASS (2 of 4000 = 0.05%).
    assert _by(evaluate(Gates(), *_stats(4000, invalid=2), OutcomeStats())[1])["invalid_outputs"].status == "PASS"
    # Few rows: min_pairs does not hold it back; one invalid row of 30 is evidence.
    r, s = _stats(30, invalid=1)
    decision, gates = evaluate(Gates(), r, s, OutcomeStats())
    assert decision == "FAIL" and _by(gates)["invalid_outputs"].status == "FAIL" and _by(gates)["latency_p99"].status == "NOT_ENOUGH_DATA"
    r, s = _stats(10, invalid=1)
    assert _by(evaluate(Gates(), r, s, OutcomeStats())[1])["invalid_outputs"].status == "FAIL"
    # ...but a clean handful of rows is not yet a PASS, and a lax max is not judged on a handful.
    assert _by(evaluate(Gates(), *_stats(10), OutcomeStats())[1])["invalid_outputs"].status == "NOT_ENOUGH_DATA"
    assert _by(evaluate(Gates(invalid_output_rate_max=0.2), *_stats(10, invalid=3), OutcomeStats())[1])["invalid_outputs"].status == "NOT_ENOUGH_DATA"
    assert _by(evaluate(Gates(invalid_output_rate_max=0.2), *_stats(10, invalid=5), OutcomeStats())[1])["invalid_outputs"].status == "FAIL"
    # The worst output decides and is named.
    r, s = _stats(1000)
    s.outputs["label"] = _output(1000, invalid=40, live_invalid=1)
    g = _by(evaluate(Gates(), r, s, OutcomeStats())[1])["invalid_outputs"]
    assert g.status == "FAIL" and g.reason.startswith("label: 4.00% of 1000 rows invalid (40;") and "live 1" in g.reason


# --- the decision table ---------------------------------------------------------------------------


def test_decision_table():
    good = _outcomes(4000, 0.80, 0.85)
    # Clean shadow, no outcomes: NOT_ENOUGH_DATA, never PASS, never FAIL.
    decision, gates = evaluate(Gates(), *_stats(1000), OutcomeStats())
    assert decision == "NOT_ENOUGH_DATA" and {g.status for g in gates} == {"PASS", "NOT_ENOUGH_DATA"}
    assert {g.name for g in gates if g.status == "NOT_ENOUGH_DATA"} == {"accuracy", "calibration_ece"}
    # Clean shadow with enough outcomes: PASS.
    assert evaluate(Gates(), *_stats(1000), good)[0] == "PASS"
    # Noise (same cost, measured 1.25x at ~1 ms) with outcomes: still PASS.
    rng = np.random.default_rng(4)
    live = rng.lognormal(np.log(1e-3), 0.3, 1000)
    assert evaluate(Gates(), *_stats(1000, live, live * 1.25), good)[0] == "PASS"
    # A slow shadow FAILs with or without outcomes.
    assert evaluate(Gates(), *_stats(1000, live, live * 5), good)[0] == "FAIL"
    assert evaluate(Gates(), *_stats(1000, live, live * 5), OutcomeStats())[0] == "FAIL"
    # Invalid outputs FAIL even without outcomes.
    assert evaluate(Gates(), *_stats(1000, invalid=100), OutcomeStats())[0] == "FAIL"
    # Contract: every answer mismatched -> NOT_COMPARABLE (nothing else evaluated); some -> FAIL.
    r, s = RouteStats(), ShadowStats()
    s.contract_mismatch = 7
    decision, gates = evaluate(Gates(), r, s, good)
    assert decision == "NOT_COMPARABLE" and [g.name for g in gates] == ["contract"]
    r, s = _stats(1000)
    s.contract_mismatch = 3
    assert evaluate(Gates(), r, s, good)[0] == "FAIL"
    # Too few pairs and no outcomes: NOT_ENOUGH_DATA.
    assert evaluate(Gates(), *_stats(50), OutcomeStats())[0] == "NOT_ENOUGH_DATA"


def test_the_report_passes_the_noise_floor_and_the_live_deadline_to_the_gate():
    from shadowgrpc.report import build_report
    from shadowgrpc.state import FrontState

    cfg = {
        "routes": [
            {
                "model": "m",
                "live": {"version": "1", "deadline_ms": 50},
                "shadows": [{"name": "v2", "version": "2"}, {"name": "aa", "version": "1", "noise_floor": True}],
            }
        ]
    }
    settings = Settings.from_dict(cfg)
    rng = np.random.default_rng(5)
    live = rng.lognormal(np.log(2e-3), 0.2, 1000)
    r, v2 = _stats(1000, live, live * 1.8)  # FAIL against live alone (see above)
    _, aa = _stats(1000, live, live * 1.7)
    state = FrontState.for_routes(settings.routes, settings.outcome_max_pairs, settings.outcome_ttl_s, settings.outcome_max_bytes)
    rs = state.routes["m"]
    rs.stats, rs.shadows[0].stats, rs.shadows[1].stats = r, v2, aa
    rep = build_report(state)
    gates = {s.target.name: {g.name: g for g in s.verdict.gates}["latency_p99"] for s in rep.routes[0].shadows}
    assert gates["v2"].status == "PASS" and "A/A noise floor p99" in gates["v2"].reason
    assert "SLA 50 ms (live deadline): within" in gates["v2"].reason
    assert "A/A noise floor" not in gates["aa"].reason  # the floor is not its own reference
