"""The capacity shadow's report: per load level (capacity.py) the offered and live rate, share of
time, p50/p99 and errors; the latency limit, the headroom it implies; the text lines.

Headroom: the latency limit is the route's ``gates.p99_ms_max``, else the live deadline, else
``gates.p99_ratio_max`` x live's p99. A level *holds* when it has at least ``gates.min_pairs``
answers, its p99 is within the limit and its error rate within ``gates.error_rate_max``. Walking
the levels upwards (those with enough answers), the headroom is the last level that holds before
the first that does not: "holds 3x production load", else "not enough data" (or which level does
not hold, and why).

Compute per level is not measured: Triton's statistics are read when the front starts and when a
report is asked for (cost.py), not per window; the report gives the run's compute per shadow
inference (cost.py's totals) beside the levels.
"""

from __future__ import annotations

from typing import Any

from .capacity import COUNTS, BELOW, LEVELS, NO_LIVE, CapacityState, Level, level_label, level_multiple


def latency_limit(route: Any, live_latency: Any) -> tuple[float, str]:
    """The p99 (seconds) a level must stay within, and where it comes from (0: none known)."""
    g = route.gates
    if g.p99_ms_max is not None:
        return g.p99_ms_max / 1e3, "p99_ms_max"
    if route.live.deadline_s:
        return route.live.deadline_s, "live deadline"
    if live_latency.count:
        return g.p99_ratio_max * min(live_latency.quantile(0.99), live_latency.max), f"p99_ratio_max {g.p99_ratio_max:g} x live p99"
    return 0.0, "no limit known (no p99_ms_max, live deadline or live latency)"


def headroom(cap: CapacityState, route: Any, live_latency: Any) -> tuple[str, float, list[tuple[int, Level, bool, bool, float]]]:
    """(headline, multiple, [(level index, level, enough data, holds, p99 s)]) of a target."""
    g = route.gates
    limit, _ = latency_limit(route, live_latency)
    rows = []
    for i, lv in enumerate(cap.levels):
        if lv is None:
            continue
        p99 = min(lv.latency.quantile(0.99), lv.latency.max) if lv.latency.count else 0.0
        enough = lv.answered >= g.min_pairs
        holds = enough and limit > 0 and lv.latency.count > 0 and p99 <= limit and lv.errors <= g.error_rate_max * lv.answered
        rows.append((i, lv, enough, holds, p99))
    best, first_fail = 0.0, None
    for i, lv, enough, holds, p99 in rows:
        if i in (BELOW, NO_LIVE) or not enough:
            continue
        if not holds:
            first_fail = (i, lv, p99)
            break
        best = LEVELS[i - 1]
    if limit <= 0:
        return "not enough data (no latency limit known)", 0.0, rows
    if best:
        return f"holds {best:g}x production load", best, rows
    if first_fail is not None:
        i, lv, p99 = first_fail
        why = f"p99 {p99 * 1e3:.2f} ms > {limit * 1e3:.2f} ms" if p99 > limit else f"{lv.errors}/{lv.answered} errors"
        return f"does not hold {level_label(i)} production load ({why})", 0.0, rows
    return f"not enough data (no load level with {g.min_pairs} answers yet)", 0.0, rows


def report_into(msg: Any, cap: CapacityState, route: Any, target: Any, live_latency: Any, latency_summary: Any,
                cost: dict | None = None, pacer: Any = None) -> None:  # fmt: skip
    """Fill a shadowgrpc.v1.Capacity ``msg`` (report.py; ``latency_summary``: its LatencySummary maker)."""
    cap.roll()
    msg.amplify, msg.constant_qps, msg.window_s = target.amplify, target.constant_qps, cap.window_s
    for k in COUNTS:
        setattr(msg, k, getattr(cap, k))
    msg.copies_errors.update(cap.copies_errors)
    msg.qps_waiting = pacer.waiting if pacer is not None else 0
    limit, source = latency_limit(route, live_latency)
    msg.latency_limit_ms, msg.latency_limit_source, msg.min_answers = limit * 1e3, source, route.gates.min_pairs
    msg.headroom, msg.headroom_multiple, rows = headroom(cap, route, live_latency)
    total = sum(lv.windows for lv in cap.levels if lv is not None) or 1
    for i, lv, enough, holds, _ in rows:
        secs = lv.busy_us / 1e6 or lv.windows * cap.window_s or 1.0  # the time calls were being sent
        msg.levels.add(
            label=level_label(i), multiple=level_multiple(i), measured_multiple=lv.calls / lv.live if lv.live else 0.0,
            offered_rps=lv.calls / secs, live_rps=lv.live / secs, time_share=lv.windows / total, windows=lv.windows, calls=lv.calls,
            answered=lv.answered, errors=lv.errors, latency=latency_summary(lv.latency), enough_data=enough, holds=holds,
        )  # fmt: skip
    if cost and cost.get("available") and cost.get("shadow_inferences"):
        msg.compute_ms_per_inference = cost["shadow_compute_ms"] / cost["shadow_inferences"]


def capacity_lines(s: Any) -> list[str]:
    """A ShadowReport's capacity (report_text.py, report_html.py); empty for a plain target."""
    if not s.HasField("capacity"):
        return []
    c = s.capacity
    how = f"amplify {c.amplify}" if c.amplify > 1 else f"constant_qps {c.constant_qps:g}"
    out = [f"    capacity ({how}): {c.headroom}; p99 limit {c.latency_limit_ms:.2f} ms ({c.latency_limit_source}), {c.min_answers} answers per level"]
    errs = ", ".join(f"{k}={v}" for k, v in sorted(c.copies_errors.items())) or "0"
    out.append(f"      copies (not compared) sent {c.copies_sent}, ok {c.copies_ok}, errors {errs}, shed {c.copies_shed}, down {c.copies_down}")
    if c.constant_qps:
        out.append(
            f"      pacer: queued {c.qps_queued}, released {c.qps_released}, dropped {c.qps_dropped} (queue full), filled {c.qps_filled}, "
            f"not started {c.qps_not_started}, ticks skipped {c.qps_ticks_skipped}, waiting {c.qps_waiting}"
        )
    for lv in c.levels:
        lat = f"p50 {lv.latency.p50_ms:.2f} / p99 {lv.latency.p99_ms:.2f} ms" if lv.latency.count else "no OK answers"
        mark = "holds" if lv.holds else "over" if lv.enough_data else "few answers"
        out.append(
            f"      {lv.label:>15}: {lv.offered_rps:8.1f} calls/s (live {lv.live_rps:.1f}/s, x{lv.measured_multiple:.2f}), "
            f"{lv.time_share:.0%} of time, {lv.answered} answers, {lv.errors} errors, {lat}  [{mark}]"
        )
    comp = f"{c.compute_ms_per_inference:.3f} ms per inference (run total, cost.py)" if c.compute_ms_per_inference else "not collected"
    out.append(f"      compute: {comp}; not measured per level")
    return out


_COPY_OUTCOMES = (("sent", "copies_sent"), ("ok", "copies_ok"), ("shed", "copies_shed"), ("down", "copies_down"))
_PACED_FATES = (("queued", "qps_queued"), ("released", "qps_released"), ("dropped", "qps_dropped"), ("filled", "qps_filled"), ("not_started", "qps_not_started"))


def metric_rows(shadows: Any, what: str) -> list[tuple[int, dict[str, str]]]:
    """telemetry/metrics.py: ``what`` = "copies" (by outcome; failed ones by status) or "paced"
    (constant_qps, by fate) per (route, ShadowLeg) of ``shadows``, for targets with a capacity state."""
    out = []
    for route, ss in shadows:
        cap = ss.state.capacity
        if cap is None:
            continue
        attrs = {"route": route, "target": ss.target.name}
        if what == "copies":
            out += [(getattr(cap, f), {**attrs, "outcome": k}) for k, f in _COPY_OUTCOMES]
            out += [(n, {**attrs, "outcome": "error", "status": code}) for code, n in dict(cap.copies_errors).items()]
        elif ss.target.constant_qps > 0:
            out += [(getattr(cap, f), {**attrs, "fate": k}) for k, f in _PACED_FATES]
    return out
