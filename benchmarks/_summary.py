"""front_overhead.py, part 2: medians over rounds, the target ratios and the printed tables."""

from __future__ import annotations

import statistics
import sys
from typing import Any

if __package__:
    from ._fronts import CONCURRENCY, DEADLINE_S, SCENARIOS, TRACE_SCENARIOS
else:  # run as a script: benchmarks/ is sys.path[0]
    from _fronts import CONCURRENCY, DEADLINE_S, SCENARIOS, TRACE_SCENARIOS

# (key, description, comparison, target)
TARGETS = {
    "throughput_shadow_off_over_direct": (">=", 0.60),
    "throughput_one_shadow_over_direct": (">=", 0.45),
    "added_seq_p50_ms_shadow_off": ("<=", 0.6),
    "front_cpu_us_per_req_shadow_off": ("<=", 400.0),
    "front_cpu_us_per_req_one_shadow": ("<=", 550.0),
    "live_p99_shadow_down_over_shadow_off": ("<=", 1.10),
    "live_p99_shadow_slow_over_shadow_off": ("<=", 1.10),
    "live_seq_p99_shadow_down_over_shadow_off": ("<=", 1.10),
    "live_seq_p99_shadow_slow_over_shadow_off": ("<=", 1.10),
    "soak_rss_growth_mb_shadow_down": ("<", 50.0),
    "soak_rss_growth_mb_shadow_slow": ("<", 50.0),
}


def fmt(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def median_of(runs: list[dict[str, Any]], phase: str, key: str) -> float | None:
    vals = [r[phase].get(key) for r in runs if r.get(phase) and r[phase].get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for sc in SCENARIOS:
        rs = [r for r in runs if r["scenario"] == sc and "conc" in r]
        if not rs:
            continue
        out[sc] = {
            "rounds": len(rs),
            "seq_p50_ms": median_of(rs, "seq", "p50_ms"),
            "seq_p99_ms": median_of(rs, "seq", "p99_ms"),
            "conc_rps": median_of(rs, "conc", "rps"),
            "conc_p50_ms": median_of(rs, "conc", "p50_ms"),
            "conc_p99_ms": median_of(rs, "conc", "p99_ms"),
            "front_cpu_us_per_req": median_of(rs, "conc", "front_cpu_us_per_req"),
            "front_cpu_us_per_req_seq": median_of(rs, "seq", "front_cpu_us_per_req"),
            "triton_cpu_us_per_req": median_of(rs, "conc", "triton_cpu_us_per_req"),
            "client_cpu_us_per_req": statistics.median(r["conc"]["client_cpu_s"] / max(1, r["conc"]["sent"]) * 1e6 for r in rs),
            "errors": sum(r["seq"]["error_count"] + r["conc"]["error_count"] + r.get("warmup", {}).get("error_count", 0) for r in rs),
            "front_rss_end_mb": median_of(rs, "mem_end_mb", "VmRSS") if sc != "direct" else None,
            "spans_received": statistics.median(r.get("spans_received", 0) for r in rs),
        }
    return out


def ratios(summary: dict[str, dict[str, Any]], soaks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def get(sc: str, key: str) -> float | None:
        return summary.get(sc, {}).get(key)

    def div(x: float | None, y: float | None) -> float | None:
        return x / y if x is not None and y else None

    r: dict[str, Any] = {
        "throughput_shadow_off_over_direct": div(get("shadow-off", "conc_rps"), get("direct", "conc_rps")),
        "throughput_one_shadow_over_direct": div(get("one-shadow", "conc_rps"), get("direct", "conc_rps")),
        "added_seq_p50_ms_shadow_off": (get("shadow-off", "seq_p50_ms") - get("direct", "seq_p50_ms"))
        if get("shadow-off", "seq_p50_ms") is not None and get("direct", "seq_p50_ms") is not None else None,
        "front_cpu_us_per_req_shadow_off": get("shadow-off", "front_cpu_us_per_req"),
        "front_cpu_us_per_req_one_shadow": get("one-shadow", "front_cpu_us_per_req"),
        "live_p99_shadow_down_over_shadow_off": div(get("shadow-down", "conc_p99_ms"), get("shadow-off", "conc_p99_ms")),
        "live_p99_shadow_slow_over_shadow_off": div(get("shadow-slow", "conc_p99_ms"), get("shadow-off", "conc_p99_ms")),
        "live_seq_p99_shadow_down_over_shadow_off": div(get("shadow-down", "seq_p99_ms"), get("shadow-off", "seq_p99_ms")),
        "live_seq_p99_shadow_slow_over_shadow_off": div(get("shadow-slow", "seq_p99_ms"), get("shadow-off", "seq_p99_ms")),
        "soak_rss_growth_mb_shadow_down": soaks.get("shadow-down", {}).get("rss_growth_mb"),
        "soak_rss_growth_mb_shadow_slow": soaks.get("shadow-slow", {}).get("rss_growth_mb"),
    }
    # Context, no target: the same ratios from the sequential phase, and one-shadow's added p50.
    r["info"] = {
        "added_seq_p50_ms_one_shadow": (get("one-shadow", "seq_p50_ms") - get("direct", "seq_p50_ms"))
        if get("one-shadow", "seq_p50_ms") is not None and get("direct", "seq_p50_ms") is not None else None,
        "seq_p99_one_shadow_over_shadow_off": div(get("one-shadow", "seq_p99_ms"), get("shadow-off", "seq_p99_ms")),
        "p99_one_shadow_over_shadow_off": div(get("one-shadow", "conc_p99_ms"), get("shadow-off", "conc_p99_ms")),
        "throughput_shadow_down_over_shadow_off": div(get("shadow-down", "conc_rps"), get("shadow-off", "conc_rps")),
        "throughput_shadow_slow_over_shadow_off": div(get("shadow-slow", "conc_rps"), get("shadow-off", "conc_rps")),
    }
    return r


def verdicts(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, (op, target) in TARGETS.items():
        v = r.get(key)
        if v is None:
            ok = None
        elif op == ">=":
            ok = v >= target
        elif op == "<=":
            ok = v <= target
        else:
            ok = v < target
        out[key] = {"value": v, "op": op, "target": target, "pass": ok}
    return out


def print_tables(runs, summary, soaks, verdict, info, args) -> None:
    w = sys.stdout.write
    hdr = (f"{'scenario':<12} {'seq p50 ms':>10} {'seq p99 ms':>10} {f'{CONCURRENCY}-infl req/s':>14} {'p50 ms':>8} {'p99 ms':>8} "
           f"{'front CPU-us/req':>16} {'errors':>6}")
    w(f"\nfront overhead: median of {args.rounds} round(s); front loop {args.loop}; {args.seq_requests} sequential + "
      f"{args.requests} requests at {CONCURRENCY} in flight per scenario and round; deadline {DEADLINE_S:g} s\n")
    w(hdr + "\n" + "-" * len(hdr) + "\n")
    for sc in SCENARIOS:
        s = summary.get(sc)
        if not s:
            continue
        err = s["errors"]
        w(f"{sc:<12} {fmt(s['seq_p50_ms'], 3):>10} {fmt(s['seq_p99_ms'], 3):>10} {fmt(s['conc_rps'], 0):>14} "
          f"{fmt(s['conc_p50_ms'], 3):>8} {fmt(s['conc_p99_ms'], 3):>8} {fmt(s['front_cpu_us_per_req'], 0):>16} "
          f"{err:>6}{'  <-- LIVE ERRORS' if err else ''}\n")
    traced = [sc for sc in TRACE_SCENARIOS if sc in summary and sc != "trace-off"]
    if traced:
        w("spans received by the OTLP collector per scenario (median over rounds): "
          + ", ".join(f"{sc} {summary[sc]['spans_received']:.0f}" for sc in traced) + "\n")
    if args.rounds > 1:
        w(f"\nper round (seq p50, seq p99, {CONCURRENCY}-in-flight req/s, p50, p99 ms, front CPU-us/req, errors; load average at start):\n")
        for r in runs:
            if "conc" not in r:
                continue
            s, c = r["seq"], r["conc"]
            w(f"  r{r['round']} {r['scenario']:<12} {fmt(s.get('p50_ms'), 3):>8} {fmt(s.get('p99_ms'), 3):>8} {c['rps']:>8.0f} "
              f"{fmt(c.get('p50_ms'), 3):>8} {fmt(c.get('p99_ms'), 3):>8} {fmt(c.get('front_cpu_us_per_req'), 0):>6} "
              f"{s['error_count'] + c['error_count']:>4}   load {r.get('loadavg_start', 0):.2f}\n")
    if soaks:
        w(f"\nsoak ({CONCURRENCY} in flight): front RSS growth = VmHWM at end - VmRSS after warm-up\n")
        h2 = f"{'state':<12} {'requests':>9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'RSS0 MB':>8} {'RSS end':>8} {'HWM end':>8} {'growth MB':>9}  shadow sent/shed/errors"
        w(h2 + "\n" + "-" * len(h2) + "\n")
        for state, s in soaks.items():
            ld = s.get("load", {})
            if not ld:
                continue
            sh = ""
            for route in (s.get("front_report") or {}).get("routes", []):
                for x in route.get("shadows", []):
                    errs = {k: int(v) for k, v in (x.get("errors") or {}).items()}
                    sh = f"{x.get('sent')}/{x.get('shed')}/{sum(errs.values())} {errs}"
            w(f"{state:<12} {ld['sent']:>9} {ld['rps']:>7.0f} {fmt(ld.get('p50_ms'), 3):>8} {fmt(ld.get('p99_ms'), 3):>8} {ld['error_count']:>6} "
              f"{s['mem_after_warmup_mb']['VmRSS']:>8.1f} {s['mem_end_mb']['VmRSS']:>8.1f} {s['mem_end_mb']['VmHWM']:>8.1f} {s['rss_growth_mb']:>9.1f}  {sh}\n")
    w("\ntargets:\n")
    names = {
        "throughput_shadow_off_over_direct": "throughput shadow-off / direct",
        "throughput_one_shadow_over_direct": "throughput one-shadow / direct",
        "added_seq_p50_ms_shadow_off": "added sequential p50, shadow-off - direct (ms)",
        "front_cpu_us_per_req_shadow_off": "front CPU-us/req, shadow-off",
        "front_cpu_us_per_req_one_shadow": "front CPU-us/req, one-shadow",
        "live_p99_shadow_down_over_shadow_off": f"live p99 ({CONCURRENCY} in flight) shadow-down / shadow-off",
        "live_p99_shadow_slow_over_shadow_off": f"live p99 ({CONCURRENCY} in flight) shadow-slow / shadow-off",
        "live_seq_p99_shadow_down_over_shadow_off": "live p99 (sequential) shadow-down / shadow-off",
        "live_seq_p99_shadow_slow_over_shadow_off": "live p99 (sequential) shadow-slow / shadow-off",
        "soak_rss_growth_mb_shadow_down": "soak RSS growth MB, shadow-down",
        "soak_rss_growth_mb_shadow_slow": "soak RSS growth MB, shadow-slow",
    }
    for key, v in verdict.items():
        mark = "n/a " if v["pass"] is None else ("PASS" if v["pass"] else "FAIL")
        w(f"  {mark}  {names[key]:<52} {fmt(v['value'], 3):>9}  (target {v['op']} {v['target']:g})\n")
    w("context (no target):\n")
    for key, v in info.items():
        w(f"        {key:<52} {fmt(v, 3):>9}\n")
