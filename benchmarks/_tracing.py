"""``front_overhead.py --tracing``: front throughput and p99 with tracing off, on at sampler ratio
1.0 and at 0.01 (and ``trace-caller``: 0.01, every request carrying a sampled traceparent).

On a shared 2-core machine the speed drifts by more than the 3% this must resolve, so the fronts
(one process each, all started at once, idle when not measured) are measured *interleaved*:
``--blocks`` blocks, each running every scenario for ``--block-requests`` requests at 8 in flight,
the order rotated per block. Throughput ratios are the median over blocks of the ratio within a
block (a drift hits both sides of a ratio alike); p99 is over all blocks' latencies pooled.
Spans go over OTLP/gRPC to a real receiver in the benchmark process (tests/otlp.py, counting),
with ``OTEL_BSP_SCHEDULE_DELAY=100`` so that a front exports its spans during its own block.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import numpy as np

TARGETS = {"trace-1": 0.85, "trace-0.01": 0.97}  # throughput vs tracing off, at least


def interleaved(bench: Any, args: Any, scenarios: list[str], phase_cls: Any, concurrency: int, deadline_s: float) -> dict[str, Any]:
    fronts: dict[str, Any] = {}
    out: dict[str, Any] = {"scenarios": scenarios, "blocks": []}
    try:
        for sc in scenarios:
            fronts[sc] = bench.start_front(sc, f"tracing-{sc}")
        for sc in scenarios:
            bench.client.open(fronts[sc].address)
            bench.check_bytes(f"tracing {sc}")
            w = bench.client.run(phase_cls(f"{sc} warm-up", args.warmup, concurrency, deadline_s, max_seconds=60, traceparent=sc == "trace-caller"))
            if w["error_count"]:
                bench.problem(f"LIVE ERRORS in {sc} warm-up: {w['errors']}")
        for b in range(args.blocks):
            order = scenarios[b % len(scenarios):] + scenarios[: b % len(scenarios)]
            row: dict[str, Any] = {}
            for sc in order:
                bench.client.open(fronts[sc].address)
                spans0 = bench.receiver.span_count
                row[sc] = bench.measured(phase_cls(f"block {b + 1} {sc}", args.block_requests, concurrency, deadline_s, max_seconds=args.phase_max_s,
                                                   keep_latencies=True, traceparent=sc == "trace-caller"), fronts[sc].pid)
                time.sleep(0.3)  # the last spans of this block leave (schedule delay 100 ms) before the next front is measured
                row[sc]["spans_received"] = bench.receiver.span_count - spans0
            out["blocks"].append(row)
            print(f"  block {b + 1}/{args.blocks}: " + "  ".join(f"{sc} {row[sc]['rps']:.0f} req/s" for sc in scenarios), file=sys.stderr, flush=True)
    finally:
        bench.client.close_channel()
        out["fronts"] = {}
        for sc, front in fronts.items():
            out["fronts"][sc] = fo = {}
            bench.finish_front(front, fo)
            fo.pop("front_report", None)
    out["summary"] = _summary(out["blocks"], scenarios)
    return out


def _summary(blocks: list[dict[str, Any]], scenarios: list[str]) -> dict[str, dict[str, Any]]:
    summary = {}
    for sc in scenarios:
        lat = np.concatenate([np.asarray(b[sc].pop("latencies_s"), dtype=np.float64) for b in blocks]) * 1e3
        s = {
            "rps": statistics.median(b[sc]["rps"] for b in blocks),
            "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
            "front_cpu_us_per_req": statistics.median(b[sc]["front_cpu_us_per_req"] for b in blocks),
            # Triton does the same work in every scenario: front CPU over Triton CPU cancels the machine's drift.
            "front_over_triton_cpu": statistics.median(b[sc]["front_cpu_s"] / b[sc]["triton_cpu_s"] for b in blocks if b[sc]["triton_cpu_s"]),
            "errors": sum(b[sc]["error_count"] for b in blocks),
            "spans_per_req": sum(b[sc]["spans_received"] for b in blocks) / max(1, sum(b[sc]["sent"] for b in blocks)),
        }
        if "trace-off" in scenarios:
            s["throughput_over_off"] = statistics.median(b[sc]["rps"] / b["trace-off"]["rps"] for b in blocks)
            off = summary.get("trace-off") or {}
            s["p99_over_off"] = s["p99_ms"] / off["p99_ms"] if off.get("p99_ms") and s["p99_ms"] else None
            s["front_cpu_us_added"] = s["front_cpu_us_per_req"] - (off.get("front_cpu_us_per_req") or s["front_cpu_us_per_req"])
            s["front_cpu_x_off"] = s["front_over_triton_cpu"] / off["front_over_triton_cpu"] if off.get("front_over_triton_cpu") else 1.0
        summary[sc] = s
    return summary


def print_result(res: dict[str, Any], args: Any) -> bool:
    """The table and the targets; True when every target with a value passes."""
    w = sys.stdout.write
    summary = res["summary"]
    w(f"\ntracing overhead: front with {args.trace_base}, {len(res['blocks'])} interleaved blocks of {args.block_requests} requests "
      "at 8 in flight per scenario; ratios within each block, median over blocks; p99 over all blocks\n")
    hdr = (f"{'scenario':<13} {'req/s':>7} {'x off':>6} {'p50 ms':>7} {'p99 ms':>7} {'p99 x off':>9} {'front CPU-us/req':>16} {'added':>6} "
           f"{'CPU/Triton x off':>16} {'spans/req':>9} {'errors':>6}")
    w(hdr + "\n" + "-" * len(hdr) + "\n")

    def f(v: float | None, nd: int) -> str:
        return "-" if v is None else f"{v:.{nd}f}"

    for sc, s in summary.items():
        w(f"{sc:<13} {s['rps']:>7.0f} {f(s.get('throughput_over_off'), 3):>6} {f(s['p50_ms'], 2):>7} {f(s['p99_ms'], 2):>7} "
          f"{f(s.get('p99_over_off'), 3):>9} {s['front_cpu_us_per_req']:>16.0f} {f(s.get('front_cpu_us_added'), 0):>6} "
          f"{f(s.get('front_cpu_x_off'), 3):>16} {s['spans_per_req']:>9.2f} {s['errors']:>6}\n")
    ok = True
    w("targets:\n")
    for sc, target in TARGETS.items():
        v = summary.get(sc, {}).get("throughput_over_off")
        passed = None if v is None else v >= target
        ok = ok and passed is not False
        w(f"  {'n/a ' if passed is None else ('PASS' if passed else 'FAIL')}  throughput {sc} / trace-off {f(v, 3):>7}  (target >= {target:g})\n")
    return ok
