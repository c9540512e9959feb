"""Ground truth: the bounded pair store and the scores (the join end to end on the real Triton:
tests/triton/test_outcomes_join.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from shadowgrpc.outcomes import PAIR_OVERHEAD, SHADOW_OVERHEAD, OutcomeStats, PairStore, score, wilson


def test_wilson_matches_published_values():
    # Wilson 95% intervals (z = 1.96), e.g. Newcombe (1998), Table I.
    assert wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 0) == (0.0, 0.0)


def test_store_is_bounded_and_expires_and_knows_duplicates():
    s = PairStore(max_pairs=3, ttl_s=0.2)
    a = np.array([[0.9, 0.1]], np.float32)
    for i in range(5):
        s.add(f"r{i}", i, "fraud", "v2", a, a)
    assert len(s) == 3 and s.counts.evicted_full == 2
    assert s.take("r0") == (None, "unknown")  # evicted
    p, why = s.take("r4")
    assert p is not None and why == "" and p.shadows["v2"].shape == (1, 2)
    assert s.take("r4") == (None, "duplicate")  # answered before
    time.sleep(0.25)
    assert s.take("r3") == (None, "unknown") and s.counts.evicted_expired == 2
    assert s.counts.bytes == 0


def test_a_reused_id_never_pairs_one_requests_live_with_anothers_shadow():
    s = PairStore()
    first, second = 1, 2
    live_a, shadow_a = np.array([[0.9, 0.1]], np.float32), np.array([[0.8, 0.2]], np.float32)
    live_b, shadow_b = np.array([[0.1, 0.9]], np.float32), np.array([[0.2, 0.8]], np.float32)
    s.add("txn-1", first, "fraud", "v2", live_a, shadow_a)
    s.add("txn-1", first, "fraud", "v3", live_a, shadow_a)  # the same request's second target: fine
    assert s.counts.reused_ids == 0 and set(s._pairs["txn-1"].shadows) == {"v2", "v3"}
    s.add("txn-1", second, "fraud", "v2", live_b, shadow_b)  # another request, same id
    s.add("txn-1", second, "fraud", "v3", live_b, shadow_b)
    assert s.counts.reused_ids == 1 and s.counts.bytes == PAIR_OVERHEAD  # counted once per request; predictions dropped
    assert s.take("txn-1") == (None, "reused")  # the outcome cannot be joined to one of them
    assert s.take("txn-1") == (None, "duplicate")


def test_store_is_bounded_in_bytes():
    s = PairStore(max_pairs=1000, max_bytes=10_000)
    a = np.zeros((100, 2), np.float32)  # 800 bytes; a pair with one shadow holds 1600 + its bookkeeping
    per_pair = PAIR_OVERHEAD + 800 + SHADOW_OVERHEAD + 800
    for i in range(20):
        s.add(f"r{i}", i, "m", "v2", a, a)
    assert s.counts.bytes == len(s) * per_pair <= 10_000 and s.counts.evicted_bytes == 20 - len(s) and len(s) == 10_000 // per_pair
    assert s.take("r0") == (None, "unknown") and s.take("r19")[0] is not None


def test_invalid_predictions_are_scored_wrong_and_kept_out_of_calibration():
    st = OutcomeStats()
    live = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    shadow = np.array([[np.nan, np.nan], [0.1, np.inf], [1.7, -0.7], [0.8, 0.2]])
    assert score(st, live, shadow, np.array([0, 1, 0, 0]), None, probabilities=True)
    assert st.shadow.rows == 4 and st.shadow.invalid == 3 and st.shadow.correct == 1
    assert st.shadow.conf_count.sum() == 1  # only the valid row is in a calibration bin
    assert st.live.correct == 4 and st.regressions == 3 and st.improvements == 0
    assert np.isfinite(st.shadow.brier_sum) and np.isfinite(st.shadow.ece)
    # Logits (not probabilities): values outside [0, 1] are fine, NaN is not.
    lg = OutcomeStats()
    assert score(lg, live * 5, np.array([[3.0, -2.0], [np.nan, 1.0], [4.0, 1.0], [2.0, 0.0]]), np.array([0, 1, 0, 0]), None)
    assert lg.shadow.invalid == 1 and lg.shadow.correct == 3
    # Regression: NaN predictions are invalid and stay out of the MAE sum.
    r = OutcomeStats()
    assert score(r, np.array([[1.0], [2.0]]), np.array([[np.nan], [2.5]]), None, np.array([1.0, 3.0]))
    assert r.shadow.invalid == 1 and r.shadow.abs_err_sum == pytest.approx(0.5)


def test_scores_classifier_and_regression():
    st = OutcomeStats()
    live = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    shadow = np.array([[0.7, 0.3], [0.9, 0.1], [0.3, 0.7]])
    assert score(st, live, shadow, np.array([0, 1, 1]), None)
    assert (st.live.correct, st.shadow.correct) == (2, 2)
    assert (st.improvements, st.regressions, st.both_right, st.both_wrong) == (1, 1, 1, 0)
    assert st.live.brier_sum == pytest.approx(2 * 0.01 + 2 * 0.04 + 2 * 0.36)
    # ECE: conf 0.9 (hit), 0.8 (hit), 0.6 (miss) -> |0.9-1| + |0.8-1| + |0.6-0| over 3
    assert st.live.ece == pytest.approx((0.1 + 0.2 + 0.6) / 3)
    assert not score(st, live, shadow, np.array([0, 1]), None) and st.shape_mismatch == 1
    r = OutcomeStats()
    assert score(r, np.array([[1.0], [2.0]]), np.array([[1.5], [2.0]]), None, np.array([1.0, 3.0]))
    assert r.live.abs_err_sum == pytest.approx(1.0) and r.shadow.abs_err_sum == pytest.approx(1.5)
