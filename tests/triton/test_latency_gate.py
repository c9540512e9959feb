"""The latency gate against the real embedded Triton: a shadow that costs the same as live is not
judged slower, a 5x slower one is.

fraud v1 is live. ``same`` mirrors every request to fraud v2 (the same cost: the same numpy model
with other coefficients); ``slow`` mirrors them to ``fraud_slow5x`` (tests/models: fraud v2
after a 10 ms sleep, about 5x fraud's ~2 ms through the front here). Both are judged against the
same live calls, in one fresh front.

The load is open-loop: single-row requests are sent at a fixed rate, whatever the answers do, as
independent callers would. A closed-loop client (a few threads, each waiting for its answer)
would bias the comparison against every shadow: when the shadow's model stalls, live keeps
answering and feeding it requests that queue behind the stall, while a stall of live's model
holds the client back, so the shadow's p99 counts each stall many times and live's once (measured
here: a same-cost shadow at 22x live's p99, 74 ms vs 3.3 ms, with one waiting client on a busy machine).

The driver, ``run_pair``, is tests/latency_driver.py (also the driver of benchmarks/latency_gate.py)."""

from __future__ import annotations

import pytest

from tests.latency_driver import REQUESTS, run_pair

pytestmark = [pytest.mark.triton, pytest.mark.once]  # once: the latency gate on real latencies (sketch twins: tests/unit); no twin-dependent result (make test's pure-Python pass skips it)

ATTEMPTS = 3  # fresh fronts, when a heavily loaded machine leaves the verdict open (see the test)
QUIET_TAIL = 4.0  # live p99 / p50 at most this: the tail is the model's, not scheduling stalls


def test_same_cost_shadow_passes_and_a_5x_slower_shadow_fails_the_latency_gate(triton):
    """Never wrong: the same-cost shadow must not FAIL in any attempt, and the expected verdicts
    (same PASS, slow FAIL) must come in one of ATTEMPTS fresh fronts. On a machine loaded far past
    its cores the tail is scheduling stalls shared by every call in flight (live p99 tens of ms
    over a ~2 ms p50) and the slow model's extra 10 ms can hide in p99 noise (the gate then says
    NOT_ENOUGH_DATA): the failure message says how many attempts had such a tail (live p99 >
    QUIET_TAIL x p50), so an overloaded run is told apart from a wrong gate. Never skipped."""
    seen, quiet = [], 0
    for attempt in range(ATTEMPTS):
        res = run_pair(triton.grpc_address, prefix=f"lat{attempt}")
        same, slow = res["same"], res["slow"]
        for r in (same, slow):
            assert r["compared"] == REQUESTS + 1 and not r["errors"], r
        assert same["status"] != "FAIL", same["reason"]
        assert slow["shadow_p50_ms"] > 3 * slow["live_p50_ms"], slow  # the model really is slower
        seen.append(f"same {same['status']}: {same['reason']}\nslow {slow['status']}: {slow['reason']}")
        if same["status"] == "PASS" and slow["status"] == "FAIL":
            return
        quiet += same["live_p99_ms"] <= QUIET_TAIL * same["live_p50_ms"]
    pytest.fail(f"no attempt of {ATTEMPTS} ({quiet} with a quiet live tail) judged same PASS and slow FAIL:\n" + "\n".join(seen))
