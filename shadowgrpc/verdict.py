"""The promotion verdict: may this shadow go to canary, and why (not)?

Gates (per route, ``[routes.gates]``) are evaluated for each shadow target to PASS, FAIL or
NOT_ENOUGH_DATA (SKIPPED lines are informational and never decide), each with its reason and
figures. The decision, in this order:

1. NOT_COMPARABLE when every answer of the shadow differed from live's in output names, dtypes or
   shapes (a contract mismatch): there is nothing to compare, so no other gate is evaluated. When
   only some answers mismatched, the ``contract`` gate FAILs instead (a shadow that breaks its
   contract now and then is broken, not incomparable).
2. FAIL when any gate FAILs, which needs evidence beyond noise:
   - ``latency_p99`` compares confidence bounds, not point estimates, and says NOT_ENOUGH_DATA
     when the shadow looks slower but noise cannot be ruled out (see :func:`latency_gate`);
   - ``invalid_outputs`` FAILs on NaN/inf/out-of-range shadow rows above
     ``invalid_output_rate_max``, with or without ground truth and without ``min_pairs``: an
     invalid output is a fact, not a sample estimate;
   - ``accuracy`` uses the lower 95% bound of the paired accuracy difference;
   - ``error_rate`` and ``calibration_ece`` compare the observed figure with their maximum
     (a failed call is an event, not a noisy measurement; ECE has no interval yet).
3. NOT_ENOUGH_DATA when any gate lacks data. Without ground-truth outcomes the accuracy and
   calibration gates always lack data, so a clean shadow without outcomes is NOT_ENOUGH_DATA:
   never PASS (agreement with live is not quality: a better model disagrees with live where live
   was wrong) and never FAIL (nothing failed).
4. PASS otherwise.

A target whose budget paused mirroring (budget.py) gets a SKIPPED ``budget`` line, and a
NOT_ENOUGH_DATA report says until when no more data comes (:func:`paused_reason`).

The accuracy gate is also applied in every slice bucket (``[[routes.slices]]``) with at least
``slice_min_outcomes`` outcome rows, so a shadow better on average but worse in one region or
amount band fails; buckets with fewer rows are listed as SKIPPED (not deciding).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import Gates
from .outcomes import OutcomeStats
from .sketches import LAT_BOUNDS
from .stats import RouteStats, ShadowStats

Z95 = 1.959963984540054
Z95_ONE_SIDED = 1.6448536269514722  # a 95% lower (or upper) bound
INVALID_MIN_ROWS = 20  # below this many compared rows, invalid outputs fail only past max rate x 20


@dataclass(frozen=True, slots=True)
class GateResult:
    name: str
    status: str  # PASS | FAIL | NOT_ENOUGH_DATA | SKIPPED (informational, never decides)
    reason: str
    value: float = 0.0
    threshold: float = 0.0


def paired_delta_ci(improvements: int, regressions: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(delta, lo, hi) for the difference of two paired proportions (shadow - live accuracy):
    delta = (b - c) / n with b = improvements, c = regressions, and the Wald interval on the
    paired difference, se = sqrt(b + c - (b - c)^2 / n) / n."""
    if n == 0:
        return 0.0, 0.0, 0.0
    d = (improvements - regressions) / n
    se = math.sqrt(max(improvements + regressions - (improvements - regressions) ** 2 / n, 0.0)) / n
    return d, d - z * se, d + z * se


def quantile_ranks(n: int, q: float, z: float = Z95_ONE_SIDED) -> tuple[int, int]:
    """1-based ranks (k_lo, k_hi) of the order statistics that bound the ``q`` quantile of ``n``
    samples: the number of samples at or below the true quantile is Binomial(n, q), so with the
    normal approximation X_(k_lo) <= quantile and quantile <= X_(k_hi) each hold with probability
    ~Phi(z) (95% for the default z = 1.645): k_lo = floor(nq - z sd), k_hi = ceil(nq + z sd), sd = sqrt(nq(1-q)),
    clamped to [1, n]. (Clamping k_hi to n makes the upper bound the sample maximum, a weaker
    bound when n is small: for q = 0.99 below ~400 samples.)"""
    if n <= 0:
        return 0, 0
    m, sd = n * q, math.sqrt(n * q * (1.0 - q))
    k_lo = min(max(math.floor(m - z * sd), 1), n)
    k_hi = min(max(math.ceil(m + z * sd), 1), n)
    return k_lo, k_hi


def quantile_bounds(sketch: Any, q: float, z: float = Z95_ONE_SIDED) -> tuple[float, float]:
    """(lower, upper) confidence bounds in seconds of the ``q`` quantile of a LatencySketch (either
    twin: both expose ``counts``, ``count`` and ``max`` over the shared ``LAT_BOUNDS`` buckets).

    The order statistics of :func:`quantile_ranks` are read from the bucket counts: the lower bound
    is the lower edge of the bucket holding rank k_lo (0 for the first bucket, which also holds
    the values clamped below 1 us), the upper bound the upper edge of the bucket holding rank
    k_hi, never above the largest value recorded (the last bucket also holds values clamped above
    60 s, for which the maximum is the only upper edge). The bucketing only widens the bounds.
    NaN, NaN for an empty sketch."""
    n = int(sketch.count)
    if n <= 0:
        return math.nan, math.nan
    k_lo, k_hi = quantile_ranks(n, q, z)
    cum = np.cumsum(sketch.counts)
    last = len(cum) - 1
    i_lo = min(int(np.searchsorted(cum, k_lo, side="left")), last)
    i_hi = min(int(np.searchsorted(cum, k_hi, side="left")), last)
    lo = 0.0 if i_lo == 0 else float(LAT_BOUNDS[i_lo])
    mx = float(sketch.max)
    hi = mx if i_hi == last else min(float(LAT_BOUNDS[i_hi + 1]), mx if mx > 0 else math.inf)
    return lo, max(hi, lo)


def _ms(x: float) -> str:
    return f"{x * 1e3:.2f} ms"


def latency_gate(g: Gates, route: RouteStats, s: ShadowStats, floor: ShadowStats | None = None, live_deadline_s: float | None = None) -> GateResult:
    """``latency_p99``: FAIL only when the shadow is slower than live beyond noise.

    p99 is bounded from each sketch's bucket counts (:func:`quantile_bounds`: order statistics,
    each bound a one-sided 95% bound). The reference is live's p99: its *upper* bound for FAIL,
    and the shadow's *lower* bound must exceed it both by the ratio and by the absolute slack:

        FAIL  when  shadow_lo > p99_ratio_max x ref_hi  and  shadow_lo - ref_hi > p99_delta_ms_min

    (A false FAIL needs both bounds wrong at once, each 5% likely for independent calls.) The
    ratio and the slack cover what sampling bounds cannot: the bounds assume independent calls,
    while on a shared machine a shadow that costs the same as live is still measured 0.2-0.4 ms
    (20-30%) slower at ~1.5 ms (it is sent after live and competes with it for the same cores),
    and one descheduled process queues a burst of consecutive calls behind it.

    When the point estimates meet the same test (shadow p99 > ratio x live p99 and more than the
    slack above it) but the bounds do not, the gate is NOT_ENOUGH_DATA: the shadow looks slower
    and more calls (or a quieter machine) are needed to tell; PASS means it does not even look
    slower. So a shadow is never promoted on a latency tail too noisy to judge.

    With an A/A noise-floor target on the route (``floor``: live's own model mirrored on the
    shadow path, hence the same dispatch, deadline and contention as any shadow), the reference is
    the larger of live's and the floor's (upper bound for FAIL, p99 for "looks slower"): the
    shadow must be slower beyond noise than both live and the A/A replica. The floor can only
    raise the reference: it removes FAILs that are the shadow path's own cost and never adds one;
    a floor with fewer than ``min_pairs`` calls is not used (its bound would be loose).

    SLA: ``p99_ms_max``, by default the live deadline when one is configured: FAIL when even the
    shadow's lower bound exceeds it, NOT_ENOUGH_DATA when only its p99 does. (Shadow calls past
    the deadline end as DEADLINE_EXCEEDED and count in the error gate, not here.)

    ``value`` is shadow_lo / ref_hi, ``threshold`` the ratio it must exceed to FAIL (with the slack)."""
    name = "latency_p99"
    pairs = s.compared
    if pairs < g.min_pairs or route.live_latency.count == 0 or s.latency.count == 0:
        return GateResult(name, "NOT_ENOUGH_DATA", f"{pairs} compared pairs, need {g.min_pairs}")
    s_lo, s_hi = quantile_bounds(s.latency, 0.99)
    l_lo, l_hi = quantile_bounds(route.live_latency, 0.99)
    sp99, lp99 = s.latency.quantile(0.99), route.live_latency.quantile(0.99)
    why = (
        f"shadow p99 {_ms(sp99)} (95% bounds {s_lo * 1e3:.2f}-{s_hi * 1e3:.2f} ms, {s.latency.count} calls) vs "
        f"live p99 {_ms(lp99)} ({l_lo * 1e3:.2f}-{l_hi * 1e3:.2f} ms, {route.live_latency.count} calls)"
    )
    ref, ref_p99, ref_name = l_hi, lp99, "live's upper bound"
    if floor is not None:
        if floor.latency.count >= g.min_pairs:
            f_lo, f_hi = quantile_bounds(floor.latency, 0.99)
            fp99 = floor.latency.quantile(0.99)
            why += f"; A/A noise floor p99 {_ms(fp99)} ({f_lo * 1e3:.2f}-{f_hi * 1e3:.2f} ms)"
            ref_p99 = max(ref_p99, fp99)
            if f_hi > ref:
                ref, ref_name = f_hi, "the A/A floor's upper bound"
        else:
            why += f"; A/A noise floor not used ({floor.latency.count} calls, need {g.min_pairs})"

    def beyond(shadow: float, reference: float) -> bool:
        return shadow > g.p99_ratio_max * reference and (shadow - reference) * 1e3 > g.p99_delta_ms_min

    ratio = s_lo / ref if ref > 0 else math.inf
    slower, looks_slower = beyond(s_lo, ref), beyond(sp99, ref_p99)
    why += (
        f": shadow's lower bound {_ms(s_lo)} = {ratio:.2f}x {ref_name} {_ms(ref)}, {(s_lo - ref) * 1e3:+.2f} ms "
        f"(FAIL needs > {g.p99_ratio_max:g}x and > +{g.p99_delta_ms_min:g} ms)"
    )
    if looks_slower and not slower:
        why += f"; p99 {sp99 / ref_p99:.2f}x, {(sp99 - ref_p99) * 1e3:+.2f} ms looks slower but is within noise: more calls needed"
    sla_ms, sla_src = (g.p99_ms_max, "p99_ms_max") if g.p99_ms_max is not None else (
        (live_deadline_s * 1e3, "live deadline") if live_deadline_s else (None, "")
    )
    over_sla = sla_ms is not None and s_lo * 1e3 > sla_ms
    looks_over_sla = sla_ms is not None and sp99 * 1e3 > sla_ms
    if sla_ms is not None:
        state = "lower bound above" if over_sla else "p99 above, lower bound within" if looks_over_sla else "within"
        why += f"; SLA {sla_ms:g} ms ({sla_src}): {state}"
    status = "FAIL" if slower or over_sla else "NOT_ENOUGH_DATA" if looks_slower or looks_over_sla else "PASS"
    return GateResult(name, status, why, ratio, g.p99_ratio_max)


def invalid_output_gate(g: Gates, s: ShadowStats) -> GateResult:
    """``invalid_outputs``: shadow rows whose values are NaN, inf, a probability outside [0, 1] or
    a label outside the classes (``OutputStats.shadow_invalid``), per output, over the rows
    compared. FAIL when, for some output, at least one row is invalid and the invalid rows exceed
    ``invalid_output_rate_max`` x max(rows, 20): with few rows one invalid row is evidence at the
    default 0.1%, while a large configured maximum is not judged from a handful of rows. It needs
    neither outcomes nor ``min_pairs``. PASS from 20 compared rows on, NOT_ENOUGH_DATA before."""
    name, mx = "invalid_outputs", g.invalid_output_rate_max
    worst: tuple[float, str, int, int, int] | None = None  # (rate, output, invalid, rows, live invalid)
    failing: list[tuple[float, str, int, int, int]] = []
    for oname, o in s.outputs.items():
        rows = o.rows
        if rows <= 0:
            continue
        inv = o.shadow_invalid
        item = (inv / rows, oname, inv, rows, o.live_invalid)
        if worst is None or item > worst:
            worst = item
        if inv >= 1 and inv > mx * max(rows, INVALID_MIN_ROWS):
            failing.append(item)
    if worst is None:
        return GateResult(name, "NOT_ENOUGH_DATA", f"no compared rows, need {INVALID_MIN_ROWS}", 0.0, mx)

    def text(it: tuple[float, str, int, int, int]) -> str:
        rate, oname, inv, rows, linv = it
        return f"{oname}: {rate:.2%} of {rows} rows invalid ({inv}; NaN/inf/out of range; live {linv})"

    if failing:
        top = max(failing)
        more = f"; {len(failing) - 1} more output(s) over" if len(failing) > 1 else ""
        return GateResult(name, "FAIL", f"{text(top)}; max {mx:.2%}{more}", top[0], mx)
    rows = max(o.rows for o in s.outputs.values())
    if rows < INVALID_MIN_ROWS:
        return GateResult(name, "NOT_ENOUGH_DATA", f"{text(worst)}; {rows} compared rows, need {INVALID_MIN_ROWS}", worst[0], mx)
    return GateResult(name, "PASS", f"{text(worst)}; max {mx:.2%}", worst[0], mx)


def evaluate(
    g: Gates,
    route: RouteStats,
    s: ShadowStats,
    o: OutcomeStats,
    slices: tuple = (),
    *,
    floor: ShadowStats | None = None,
    live_deadline_s: float | None = None,
    refused: str = "",
    paused: str = "",
) -> tuple[str, list[GateResult]]:
    """The decision and every gate's result (rules in the module doc).

    ``slices``: the route's Slice configs (bucket names); ``floor``: the stats of the route's A/A
    noise-floor target, if any and if it is not ``s`` itself (it widens the latency reference, see
    :func:`latency_gate`); ``live_deadline_s``: the live target's deadline, the default SLA of the
    latency gate; ``refused``: why the contract check before traffic refused the target (then
    nothing was sent); ``paused``: why mirroring to it is paused by its budget (budget.py): an
    informational ``budget`` line (SKIPPED, never decides; see :func:`paused_reason`)."""
    gates: list[GateResult] = []
    if refused and not s.compared:
        return "NOT_COMPARABLE", [GateResult("contract", "FAIL", f"refused before traffic, incompatible with live: {refused}")]
    if s.contract_mismatch and not s.compared:
        return "NOT_COMPARABLE", [
            GateResult("contract", "FAIL", f"{s.contract_mismatch} answers differ from live in output names, dtypes or shapes; nothing comparable")
        ]
    if s.contract_mismatch:
        gates.append(GateResult("contract", "FAIL", f"{s.contract_mismatch} of {s.contract_mismatch + s.compared} answers differ from live in output names, dtypes or shapes", s.contract_mismatch, 0))

    # Latency under the live deadline.
    gates.append(latency_gate(g, route, s, None if floor is s else floor, live_deadline_s))

    # Errors (timeouts included: the shadow ran under the live deadline).
    errors = sum(s.errors.values())
    if s.sent < g.min_pairs:
        gates.append(GateResult("error_rate", "NOT_ENOUGH_DATA", f"{s.sent} shadow calls, need {g.min_pairs}"))
    else:
        rate = errors / s.sent
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(s.errors.items())) or "none"
        gates.append(
            GateResult("error_rate", "PASS" if rate <= g.error_rate_max else "FAIL", f"{rate:.2%} of {s.sent} calls failed ({kinds}); max {g.error_rate_max:.2%}", rate, g.error_rate_max)
        )

    # Invalid outputs: a fact about the shadow's answers, decided with or without outcomes.
    gates.append(invalid_output_gate(g, s))

    # Quality, from ground truth only.
    n = o.live.rows
    if o.kind not in ("classifier", "regression") or n < g.min_outcomes:
        why = f"{n} outcome rows, need {g.min_outcomes}: accuracy and calibration unknown (agreement with live is not accuracy)"
        gates.append(GateResult("accuracy", "NOT_ENOUGH_DATA", why))
        if o.kind != "regression":
            gates.append(GateResult("calibration_ece", "NOT_ENOUGH_DATA", why))
    else:
        gates.append(_accuracy_gate("accuracy", g, o))
        if o.kind == "classifier":
            de = o.shadow.ece - o.live.ece
            why = f"ECE shadow {o.shadow.ece:.4f} - live {o.live.ece:.4f} = {de:+.4f} (max {g.ece_delta_max:+.4f})"
            gates.append(GateResult("calibration_ece", "PASS" if de <= g.ece_delta_max else "FAIL", why, de, g.ece_delta_max))
    gates.extend(_slice_gates(g, o, slices))
    if paused:
        gates.append(GateResult("budget", "SKIPPED", f"PAUSED: {paused}"))

    statuses = {r.status for r in gates}
    decision = "FAIL" if "FAIL" in statuses else "NOT_ENOUGH_DATA" if "NOT_ENOUGH_DATA" in statuses else "PASS"
    return decision, gates


def paused_reason(decision: str, paused: str, until: float) -> str:
    """The verdict's reason when a budget paused the target and the data is not enough: no more
    is coming until ``until`` (unix time; 0: a run budget, never), so nobody waits for it."""
    if decision != "NOT_ENOUGH_DATA" or not paused:
        return ""
    when = "the run ends (a run budget does not reset)" if not until else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(until))
    return f"not enough data, and mirroring is paused by the budget until {when}: {paused}"


def _accuracy_gate(name: str, g: Gates, o: OutcomeStats) -> GateResult:
    n = o.live.rows
    if o.kind == "classifier":
        d, lo, _ = paired_delta_ci(o.improvements, o.regressions, n)
        why = (
            f"shadow - live accuracy {d:+.2%} (95% CI lower bound {lo:+.2%}; min {g.accuracy_delta_min:+.2%}) over {n} rows: "
            f"{o.improvements} improvements, {o.regressions} regressions"
        )
        return GateResult(name, "PASS" if lo >= g.accuracy_delta_min else "FAIL", why, lo, g.accuracy_delta_min)
    # MAE over each side's finite predictions; a NaN/inf prediction has no error to average, so
    # any is a FAIL here (the invalid_outputs gate gives the rate).
    lm, sm = o.live.abs_err_sum / max(o.live.valid_rows, 1), o.shadow.abs_err_sum / max(o.shadow.valid_rows, 1)
    why = f"MAE shadow {sm:.4g} vs live {lm:.4g} over {n} rows"
    if o.shadow.invalid:
        why += f"; {o.shadow.invalid} shadow predictions NaN/inf (scored as wrong)"
    ok = sm <= lm and o.shadow.invalid <= o.live.invalid
    return GateResult(name, "PASS" if ok else "FAIL", why, sm - lm, 0.0)


def _slice_gates(g: Gates, o: OutcomeStats, slices: tuple) -> list[GateResult]:
    """The accuracy gate in every slice bucket with enough outcome rows; one SKIPPED line per
    slice for the buckets without."""
    out: list[GateResult] = []
    for sl, row in zip(slices, o.slices):
        few = []
        for label, bo in zip(sl.buckets, row):
            if bo is None or bo.live.rows == 0:
                continue
            if bo.kind not in ("classifier", "regression") or bo.live.rows < g.slice_min_outcomes:
                few.append(f"{label} ({bo.live.rows})")
                continue
            out.append(_accuracy_gate(f"accuracy[{sl.name} {label}]", g, bo))
        if few:
            why = f"outcome rows below {g.slice_min_outcomes}, not gated: " + ", ".join(few)
            out.append(GateResult(f"accuracy[{sl.name}]", "SKIPPED", why))
    return out
