"""The promotion verdict: may this shadow go to canary, and why (not)?

Gates (per route, ``[routes.gates]``) are evaluated for each shadow target to PASS, FAIL or
NOT_ENOUGH_DATA, each with its reason; the decision is
- NOT_COMPARABLE when live and shadow outputs differ in name, dtype or shape (contract mismatch),
- else FAIL when any gate fails,
- else NOT_ENOUGH_DATA when any gate lacks data,
- else PASS.
The accuracy gate is also applied in every slice bucket (``[[routes.slices]]``) with at least
``slice_min_outcomes`` outcome rows, so a shadow better on average but worse in one region or
amount band fails; buckets with fewer rows are listed as SKIPPED (not deciding).
Quality is decided by ground truth (accuracy, calibration) where outcomes exist. Agreement with
live is not quality (a better model disagrees with live where live was wrong); without outcomes
the verdict says that accuracy is unknown instead of guessing from agreement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .outcomes import OutcomeStats
from .stats import RouteStats, ShadowStats

Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Gates:
    min_pairs: int = 200  # compared pairs before latency/error gates decide
    min_outcomes: int = 200  # outcome rows before quality gates decide
    p99_ratio_max: float = 1.2  # shadow p99 <= this x live p99
    p99_ms_max: float | None = None  # and/or an absolute bound
    error_rate_max: float = 0.01  # (shadow errors) / sent
    accuracy_delta_min: float = -0.005  # lower 95% bound of (shadow - live) accuracy
    ece_delta_max: float = 0.02  # shadow ECE - live ECE
    slice_min_outcomes: int = 200  # outcome rows in a slice bucket before its accuracy gate decides


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


def evaluate(g: Gates, route: RouteStats, s: ShadowStats, o: OutcomeStats, slices: tuple = ()) -> tuple[str, list[GateResult]]:
    """The decision and every gate's result; ``slices``: the route's Slice configs (bucket names)."""
    gates: list[GateResult] = []
    pairs = s.compared
    if s.contract_mismatch and not s.compared:
        return "NOT_COMPARABLE", [
            GateResult("contract", "FAIL", f"{s.contract_mismatch} answers differ from live in output names, dtypes or shapes; nothing comparable")
        ]
    if s.contract_mismatch:
        gates.append(GateResult("contract", "FAIL", f"{s.contract_mismatch} of {s.contract_mismatch + s.compared} answers differ from live in output names, dtypes or shapes", s.contract_mismatch, 0))

    # Latency under the live deadline.
    lp99, sp99 = route.live_latency.quantile(0.99), s.latency.quantile(0.99)
    if pairs < g.min_pairs or route.live_latency.count == 0:
        gates.append(GateResult("latency_p99", "NOT_ENOUGH_DATA", f"{pairs} compared pairs, need {g.min_pairs}"))
    else:
        ratio = sp99 / lp99 if lp99 > 0 else math.inf
        ok = ratio <= g.p99_ratio_max and (g.p99_ms_max is None or sp99 * 1e3 <= g.p99_ms_max)
        why = f"shadow p99 {sp99 * 1e3:.2f} ms = {ratio:.2f}x live p99 {lp99 * 1e3:.2f} ms (max {g.p99_ratio_max:g}x"
        why += f", {g.p99_ms_max:g} ms)" if g.p99_ms_max is not None else ")"
        gates.append(GateResult("latency_p99", "PASS" if ok else "FAIL", why, ratio, g.p99_ratio_max))

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

    statuses = {r.status for r in gates}
    decision = "FAIL" if "FAIL" in statuses else "NOT_ENOUGH_DATA" if "NOT_ENOUGH_DATA" in statuses else "PASS"
    return decision, gates


def _accuracy_gate(name: str, g: Gates, o: OutcomeStats) -> GateResult:
    n = o.live.rows
    if o.kind == "classifier":
        d, lo, _ = paired_delta_ci(o.improvements, o.regressions, n)
        why = (
            f"shadow - live accuracy {d:+.2%} (95% CI lower bound {lo:+.2%}; min {g.accuracy_delta_min:+.2%}) over {n} rows: "
            f"{o.improvements} improvements, {o.regressions} regressions"
        )
        return GateResult(name, "PASS" if lo >= g.accuracy_delta_min else "FAIL", why, lo, g.accuracy_delta_min)
    lm, sm = o.live.abs_err_sum / n, o.shadow.abs_err_sum / n
    why = f"MAE shadow {sm:.4g} vs live {lm:.4g} over {n} rows"
    return GateResult(name, "PASS" if sm <= lm else "FAIL", why, sm - lm, 0.0)


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
