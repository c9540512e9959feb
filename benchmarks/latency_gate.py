#!/usr/bin/env python3
"""How often the latency gate judges wrongly: a same-cost shadow must never FAIL latency_p99, a
5x slower shadow must never PASS it.

One embedded Triton (the example ``fraud`` model and ``fraud_slow5x`` from tests/models, which
answers like fraud v2 after a 10 ms sleep). Each repetition starts a fresh front with fraud v1 live
and two shadows, ``same`` (fraud v2: the same cost) and ``slow`` (fraud_slow5x), sends
``--requests`` single-row requests open-loop at ``--rate`` per second (see
tests/triton/test_latency_gate.py for why open-loop), and reads both shadows' latency_p99 gate from the
report. Next to the gate's verdict the table shows what the previous rule (FAIL when shadow p99 /
live p99 > 1.2, point estimates) would have said on the same data.

A wrong verdict is FAIL for ``same`` or PASS for ``slow`` (target: never); NOT_ENOUGH_DATA ("looks
slower, within noise") defers the decision and is counted apart. The ``load`` column (1-minute
load average) and live's p99/p50 show how much of the tail is the machine's.

Bounded: ``--repeats`` repetitions (default 20, about 11 s each), stopping early once
``--max-seconds`` (default 420) have passed.

Run:  python benchmarks/latency_gate.py [--repeats 20] [--requests 1000] [--rate 100] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # tests.* (the driver and the model copy) live in this checkout
    sys.path.insert(0, str(REPO_ROOT))

EXPECTED = {"same": "PASS", "slow": "FAIL"}
WRONG = {"same": "FAIL", "slow": "PASS"}  # the verdicts that would mislead; NOT_ENOUGH_DATA only defers
OLD_RATIO_MAX = 1.2  # the previous rule: FAIL when shadow p99 / live p99 > 1.2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="fresh fronts, each judging both shadows (default 20)")
    p.add_argument("--requests", type=int, default=1000, help="requests per repetition (default 1000)")
    p.add_argument("--rate", type=float, default=100.0, help="requests per second, open-loop (default 100)")
    p.add_argument("--max-seconds", type=float, default=420.0, help="stop repeating after this long (default 420)")
    p.add_argument("--json", metavar="PATH", help="write every figure here")
    a = p.parse_args(argv)
    if a.repeats < 1 or a.requests < 1 or a.rate <= 0:
        p.error("--repeats and --requests must be >= 1, --rate > 0")
    return a


def old_rule(r: dict[str, Any]) -> str:
    return "FAIL" if r["live_p99_ms"] > 0 and r["shadow_p99_ms"] / r["live_p99_ms"] > OLD_RATIO_MAX else "PASS"


def _st(status: str) -> str:
    return "NED" if status == "NOT_ENOUGH_DATA" else status


def print_table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    w = sys.stdout.write
    w(
        f"\n{'rep':>3} {'load':>5} {'live p50/p99 ms':>16} | {'same p99 ms':>11} {'bound x':>7} {'gate':>5} {'old':>4} | "
        f"{'slow p50/p99 ms':>16} {'bound x':>7} {'gate':>5} {'old':>4}\n"
    )
    for row in rows:
        s, l = row["same"], row["slow"]
        w(
            f"{row['rep']:>3} {row['load']:>5.2f} {s['live_p50_ms']:>7.2f}/{s['live_p99_ms']:<8.2f} | "
            f"{s['shadow_p99_ms']:>11.2f} {s['value']:>7.2f} {_st(s['status']):>5} {old_rule(s):>4} | "
            f"{l['shadow_p50_ms']:>7.2f}/{l['shadow_p99_ms']:<8.2f} {l['value']:>7.2f} {_st(l['status']):>5} {old_rule(l):>4}\n"
        )
    n = len(rows)
    summary: dict[str, Any] = {"repetitions": n}
    w("\n'bound x': the shadow's p99 lower bound / live's p99 upper bound (FAIL needs > 1.2 and > +1 ms); "
      "'old': shadow p99 / live p99 > 1.2; NED: NOT_ENOUGH_DATA\n")
    for name, want in EXPECTED.items():
        right = sum(row[name]["status"] == want for row in rows)
        wrong = sum(row[name]["status"] == WRONG[name] for row in rows)
        undecided = sum(row[name]["status"] == "NOT_ENOUGH_DATA" for row in rows)
        old_wrong = sum(old_rule(row[name]) != want for row in rows)
        summary[name] = {"expected": want, "right": right, "wrong": wrong, "not_enough_data": undecided, "old_rule_wrong": old_wrong}
        w(
            f"{name:>4} shadow (expected {want}): right {right}/{n}, wrong ({WRONG[name]}) {wrong}/{n}, "
            f"NOT_ENOUGH_DATA {undecided}/{n}; old rule wrong {old_wrong}/{n}\n"
        )
    summary["target_met"] = all(summary[name]["wrong"] == 0 for name in EXPECTED)
    w(f"target (never wrong): {'met' if summary['target_met'] else 'MISSED'}\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from shadowgrpc.local import EmbeddedTriton, example_repository
    from tests.latency_driver import run_pair
    from tests.fixtures_triton import TEST_MODELS, copy_models

    t_begin = time.monotonic()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="shadowgrpc-latency-gate-"))
    result: dict[str, Any] = {"args": vars(args), "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()}}
    rows: list[dict[str, Any]] = []
    try:
        repo = copy_models(workdir / "models", example_repository(), TEST_MODELS, only=["fraud", "fraud_slow5x"])
        with EmbeddedTriton(repo, log_path=workdir / "tritonserver.log", extra_args=["--exit-timeout-secs=5"]) as triton:
            print(f"Triton ready in {triton.startup_seconds or 0:.1f} s; {args.repeats} repetitions of {args.requests} requests at {args.rate:g}/s", flush=True)
            for rep in range(1, args.repeats + 1):
                if time.monotonic() - t_begin > args.max_seconds:
                    print(f"stopping after {rep - 1} repetitions: --max-seconds {args.max_seconds:g} reached", flush=True)
                    break
                load = os.getloadavg()[0]
                res = run_pair(triton.grpc_address, n=args.requests, rate=args.rate, prefix=f"bench-{rep}")
                rows.append({"rep": rep, "load": load, **res})
                print(
                    f"rep {rep}: same {res['same']['status']} ({res['same']['value']:.2f}x), "
                    f"slow {res['slow']['status']} ({res['slow']['value']:.2f}x), load {load:.2f}",
                    flush=True,
                )
        result["repetitions"] = rows
        result["summary"] = print_table(rows) if rows else {}
        result["elapsed_s"] = time.monotonic() - t_begin
        print(f"elapsed {result['elapsed_s']:.0f} s; {os.cpu_count()} CPUs; load average now {os.getloadavg()[0]:.2f}")
    finally:
        if args.json:
            path = pathlib.Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2, default=str))
            print(f"JSON: {path}")
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
