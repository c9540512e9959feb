"""The promotion verdict: decisions and reasons from the collected statistics."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from shadowgrpc.config import ConfigError, Settings
from shadowgrpc.outcomes import OutcomeStats, score
from shadowgrpc.stats import RouteStats, ShadowStats
from shadowgrpc.verdict import Gates, evaluate, paired_delta_ci


def _stats(n: int, live_s: float = 0.002, shadow_s: float = 0.002, errors: int = 0):
    r, s = RouteStats(), ShadowStats()
    for _ in range(n):
        r.live_latency.record(live_s)
        s.latency.record(shadow_s)
    s.sent, s.ok, s.compared = n, n - errors, n - errors
    if errors:
        s.errors["DEADLINE_EXCEEDED"] = errors
    return r, s


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
