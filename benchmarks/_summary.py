"""front_overhead.py, part 2: medians over rounds, the target ratios and the printed tables."""

from __future__ import annotations

import statistics
import sys
from typing import Any

if __package__:
    from ._fronts import CONCURRENCY, DEADLINE_S, NGINX_SCENARIOS, TRACE_SCENARIOS, row_label, split_label
else:  # run as a script: benchmarks/ is sys.path[0]
    from _fronts import CONCURRENCY, DEADLINE_S, NGINX_SCENARIOS, TRACE_SCENARIOS, row_label, split_label

# key: (comparison, target); the front's keys get a "[plane]" suffix per data plane when rows have one.
# The first five are issue 14's targets (a compiled data plane: C-proxy cost).
TARGETS = {
    "throughput_shadow_off_over_direct": (">=", 0.75),
    "throughput_one_shadow_over_direct": (">=", 0.48),
    "added_seq_p50_ms_shadow_off": ("<=", 0.25),
    "front_cpu_us_per_req_shadow_off": ("<=", 150.0),
    "front_cpu_us_per_req_one_shadow": ("<=", 250.0),
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
    for sc in dict.fromkeys(r["scenario"] for r in runs):  # rows in the order they first ran
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


def _getter(summary: dict[str, dict[str, Any]]):
    def get(sc: str, key: str) -> float | None:
        return summary.get(sc, {}).get(key)

    def div(x: float | None, y: float | None) -> float | None:
        return x / y if x is not None and y else None

    def added(sc: str) -> float | None:  # sequential p50 minus Triton direct's
        a, d = get(sc, "seq_p50_ms"), get("direct", "seq_p50_ms")
        return a - d if a is not None and d is not None else None

    def cpu_total(sc: str) -> float | None:  # client + Triton + proxy CPU-us per request (8 in flight)
        c, t = get(sc, "client_cpu_us_per_req"), get(sc, "triton_cpu_us_per_req")
        return c + t + (get(sc, "front_cpu_us_per_req") or 0.0) if c is not None and t is not None else None

    def cpu_x(sc: str) -> float | None:
        """x direct from CPU time, robust to other load: what the throughput ratio is when client,
        Triton and proxy saturate the machine (the issue's 2-core setting)."""
        return div(cpu_total("direct"), cpu_total(sc))

    return get, div, added, cpu_x


def ratios(summary: dict[str, dict[str, Any]], soaks: dict[str, dict[str, Any]], planes: list[str | None] | None = None) -> dict[str, Any]:
    """The target figures per data plane (``planes``: a row's plane, None for unsuffixed rows),
    plus ``info``: context without a target, the nginx rows' ratios among it."""
    get, div, added, cpu_x = _getter(summary)
    r: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for plane in planes or [None]:
        sfx = f"[{plane}]" if plane else ""
        off, one, down, slow = (row_label(b, plane) for b in ("shadow-off", "one-shadow", "shadow-down", "shadow-slow"))
        r.update({
            f"throughput_shadow_off_over_direct{sfx}": div(get(off, "conc_rps"), get("direct", "conc_rps")),
            f"throughput_one_shadow_over_direct{sfx}": div(get(one, "conc_rps"), get("direct", "conc_rps")),
            f"added_seq_p50_ms_shadow_off{sfx}": added(off),
            f"front_cpu_us_per_req_shadow_off{sfx}": get(off, "front_cpu_us_per_req"),
            f"front_cpu_us_per_req_one_shadow{sfx}": get(one, "front_cpu_us_per_req"),
            f"live_p99_shadow_down_over_shadow_off{sfx}": div(get(down, "conc_p99_ms"), get(off, "conc_p99_ms")),
            f"live_p99_shadow_slow_over_shadow_off{sfx}": div(get(slow, "conc_p99_ms"), get(off, "conc_p99_ms")),
            f"live_seq_p99_shadow_down_over_shadow_off{sfx}": div(get(down, "seq_p99_ms"), get(off, "seq_p99_ms")),
            f"live_seq_p99_shadow_slow_over_shadow_off{sfx}": div(get(slow, "seq_p99_ms"), get(off, "seq_p99_ms")),
            f"soak_rss_growth_mb_shadow_down{sfx}": soaks.get(down, {}).get("rss_growth_mb"),
            f"soak_rss_growth_mb_shadow_slow{sfx}": soaks.get(slow, {}).get("rss_growth_mb"),
        })  # fmt: skip
        # Context, no target: one-shadow's added p50 and p99 ratios, the shadow states' throughput.
        info.update({
            f"added_seq_p50_ms_one_shadow{sfx}": added(one),
            f"throughput_one_shadow_over_nginx_mirror{sfx}": div(get(one, "conc_rps"), get("nginx-mirror", "conc_rps")),
            f"seq_p99_one_shadow_over_shadow_off{sfx}": div(get(one, "seq_p99_ms"), get(off, "seq_p99_ms")),
            f"p99_one_shadow_over_shadow_off{sfx}": div(get(one, "conc_p99_ms"), get(off, "conc_p99_ms")),
            f"throughput_shadow_down_over_shadow_off{sfx}": div(get(down, "conc_rps"), get(off, "conc_rps")),
            f"throughput_shadow_slow_over_shadow_off{sfx}": div(get(slow, "conc_rps"), get(off, "conc_rps")),
        })  # fmt: skip
        for b in ("shadow-off", "one-shadow"):
            info[f"throughput_from_cpu_{b.replace('-', '_')}_over_direct{sfx}"] = cpu_x(row_label(b, plane))
    for sc in NGINX_SCENARIOS:  # the C-proxy yardstick (issue 14): one hop, and a mirror of the same model
        k = sc.replace("-", "_")
        info[f"throughput_{k}_over_direct"] = div(get(sc, "conc_rps"), get("direct", "conc_rps"))
        info[f"throughput_from_cpu_{k}_over_direct"] = cpu_x(sc)
        info[f"proxy_cpu_us_per_req_{k}"] = get(sc, "front_cpu_us_per_req")
        info[f"added_seq_p50_ms_{k}"] = added(sc)
    r["info"] = info
    return r


def verdicts(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, v in r.items():
        if key == "info":
            continue
        op, target = TARGETS[key.partition("[")[0]]
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
    get, div, added, cpu_x = _getter(summary)
    lw = max([12, *(len(sc) for sc in summary)])
    hdr = (f"{'scenario':<{lw}} {'seq p50 ms':>10} {'+p50 ms':>8} {'seq p99 ms':>10} {f'{CONCURRENCY}-infl req/s':>14} {'x direct':>8} "
           f"{'x (CPU)':>7} {'p50 ms':>8} {'p99 ms':>8} {'proxy CPU-us/req':>16} {'errors':>6}")
    w(f"\nfront overhead: median of {args.rounds} round(s); front loop {args.loop}; {args.seq_requests} sequential + "
      f"{args.requests} requests at {CONCURRENCY} in flight per scenario and round; deadline {DEADLINE_S:g} s\n"
      f"(+p50: sequential p50 minus Triton direct's; x direct: {CONCURRENCY}-in-flight throughput / Triton direct's; proxy CPU: "
      f"the front process, or nginx's master + 1 worker, per request at {CONCURRENCY} in flight; x (CPU): the throughput ratio "
      f"from CPU time, robust to other load: (client + Triton CPU/req, direct) / (client + Triton + proxy CPU/req, this row))\n")
    w(hdr + "\n" + "-" * len(hdr) + "\n")
    for sc, s in summary.items():
        err = s["errors"]
        w(f"{sc:<{lw}} {fmt(s['seq_p50_ms'], 3):>10} {fmt(added(sc), 3):>8} {fmt(s['seq_p99_ms'], 3):>10} {fmt(s['conc_rps'], 0):>14} "
          f"{fmt(div(s['conc_rps'], get('direct', 'conc_rps')), 2):>8} {fmt(cpu_x(sc), 2):>7} "
          f"{fmt(s['conc_p50_ms'], 3):>8} {fmt(s['conc_p99_ms'], 3):>8} {fmt(s['front_cpu_us_per_req'], 0):>16} "
          f"{err:>6}{'  <-- LIVE ERRORS' if err else ''}\n")
    side = [sc for sc in summary if split_label(sc)[0] in ("shadow-off", "one-shadow", *NGINX_SCENARIOS)]
    if "direct" in summary and side:
        w("vs Triton direct (throughput x direct / x from CPU, proxy CPU-us/req, added seq p50 ms): "
          + "; ".join(f"{sc} {fmt(div(get(sc, 'conc_rps'), get('direct', 'conc_rps')), 2)}x / {fmt(cpu_x(sc), 2)}x, "
                      f"{fmt(get(sc, 'front_cpu_us_per_req'), 0)} us, "
                      f"{fmt(added(sc), 3)} ms" for sc in side) + "\n")
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
            w(f"  r{r['round']} {r['scenario']:<{lw}} {fmt(s.get('p50_ms'), 3):>8} {fmt(s.get('p99_ms'), 3):>8} {c['rps']:>8.0f} "
              f"{fmt(c.get('p50_ms'), 3):>8} {fmt(c.get('p99_ms'), 3):>8} {fmt(c.get('front_cpu_us_per_req'), 0):>6} "
              f"{s['error_count'] + c['error_count']:>4}   load {r.get('loadavg_start', 0):.2f}\n")
    if soaks:
        w(f"\nsoak ({CONCURRENCY} in flight): front RSS growth = VmHWM at end - VmRSS after warm-up\n")
        h2 = f"{'state':<{lw}} {'requests':>9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'RSS0 MB':>8} {'RSS end':>8} {'HWM end':>8} {'growth MB':>9}  shadow sent/shed/errors"
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
            w(f"{state:<{lw}} {ld['sent']:>9} {ld['rps']:>7.0f} {fmt(ld.get('p50_ms'), 3):>8} {fmt(ld.get('p99_ms'), 3):>8} {ld['error_count']:>6} "
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
        base, _, plane = key.partition("[")
        mark = "n/a " if v["pass"] is None else ("PASS" if v["pass"] else "FAIL")
        label = names[base] + (f" [{plane}" if plane else "")
        w(f"  {mark}  {label:<62} {fmt(v['value'], 3):>9}  (target {v['op']} {v['target']:g})\n")
    w("context (no target):\n")
    for key, v in info.items():
        w(f"        {key:<62} {fmt(v, 3):>9}\n")
