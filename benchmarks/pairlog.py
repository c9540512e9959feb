#!/usr/bin/env python3
"""The paired-prediction log's costs: the rows/s its writer sustains, the bytes per pair on disk,
the rows/s of ``shadowgrpc.analysis.analyze``, and the front's throughput with logging on vs off.

1. writer (this process; benchmarks/_pairlog_rows.py): ``--rows`` PairRows of FP32 [1, 16] pairs
   (real ModelInferResponse bytes for live and shadow, distinct values, the other fields as the
   front fills them for a compared pair) are handed to ``PairLog.pair()`` as fast as possible
   (``max_queue_rows`` above the count: nothing shed; ``flush_rows`` ``--flush-rows``), then
   ``close()``. rows/s = rows / wall time from the first ``pair()`` to every file finished
   (fsynced, renamed). The writer thread's own CPU time (``time.thread_time`` in it) and the
   process's show how many cores it took; the time in rows-to-Arrow, in Parquet and in the cyclic
   GC is shown apart. bytes per pair = the pairs/ files' size / rows, against the raw tensor bytes
   (live + shadow FP32 contents: 128 B). A second, smaller log with uuid4 request ids
   (``--uuid-rows``) is context: request ids are the one near-unique string a caller picks.
2. analyze (this process): ``analyze([log])`` on the log of step 1 (``--rows`` rows in files of
   ``--flush-rows``), ``--analyze-runs`` times; rows/s = rows / wall time. Split: DuckEngine's start
   (the files read into DuckDB temp tables) vs the rest (SQL queries incl. the export to Arrow vs
   the Python that feeds the sketches).
3. front (benchmarks/_pairlog_front.py): two fronts side by side, fraud v1 live + fraud v2 shadow
   against one embedded Triton, one with ``[log] sample_rate = 1.0``, one without ``[log]``,
   measured alternately (off, on, on, off, ...) for ``--pairs`` pairs with front_overhead's load
   client at 8 in flight; the median of the pairs' on/off throughput ratios, with a bootstrap
   interval (the machine's drift), and logging's CPU per request measured apart (the event loop's
   RequestLog -> pair(), the writer's CPU per row) next to the front's own.

Targets (PASS/FAIL, never asserted): writer >= 50,000 rows/s; bytes per pair <= 1.5 x raw;
analyze >= 1,000,000 rows/s; front on/off throughput >= 0.90 (logging costs <= 10%).

Run:  python benchmarks/pairlog.py [--quick] [--json FILE] [--skip-front] [--rows N] [--pairs N]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if importlib.util.find_spec("shadowgrpc") is None:  # not installed: use this checkout
    sys.path.append(str(REPO_ROOT))

if __package__:
    from . import _load
    from ._fronts import CONCURRENCY, log, write_json
    from ._pairlog_front import FrontAB, fraud_repository
    from ._pairlog_rows import OUTPUT_SHAPE, RAW_TENSOR_BYTES, build_rows, measure_analyze, measure_request_log, measure_writer
    from ._summary import fmt
else:  # run as a script: benchmarks/ is sys.path[0]
    import _load
    from _fronts import CONCURRENCY, log, write_json
    from _pairlog_front import FrontAB, fraud_repository
    from _pairlog_rows import OUTPUT_SHAPE, RAW_TENSOR_BYTES, build_rows, measure_analyze, measure_request_log, measure_writer
    from _summary import fmt

# key: (comparison, target, what)
TARGETS = {
    "writer_rows_per_s": (">=", 50_000.0, "writer rows/s (FP32 [1,16] pairs)"),
    "bytes_per_pair_over_raw": ("<=", 1.5, f"bytes per pair on disk / raw tensor bytes ({RAW_TENSOR_BYTES} B)"),
    "analyze_rows_per_s": (">=", 1_000_000.0, "analyze rows/s"),
    "front_throughput_log_on_over_off": (">=", 0.90, "front throughput, log on / off (median of pairs)"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pairlog.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="pair rows written by the writer (and read by analyze)")
    p.add_argument("--flush-rows", type=int, default=100_000, help="[log] flush_rows of the writer run (rows per file)")
    p.add_argument("--uuid-rows", type=int, default=200_000, help="rows of the context log with uuid4 request ids (0 skips it)")
    p.add_argument("--analyze-runs", type=int, default=2, help="analyze runs over the log (the table shows the median)")
    p.add_argument("--pairs", type=int, default=8, help="(off, on) pairs of front runs, alternating")
    p.add_argument("--requests", type=int, default=4000, help=f"measured requests per front run, {CONCURRENCY} in flight")
    p.add_argument("--warmup", type=int, default=300, help="warm-up requests before each front run")
    p.add_argument("--phase-max-s", type=float, default=120.0, help="time limit of a measured front phase")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop", help="the front's event loop")
    p.add_argument("--skip-front", action="store_true", help="no front runs (no Triton): writer and analyze only")
    p.add_argument("--quick", action="store_true", help="small counts for a smoke test")
    p.add_argument("--json", metavar="FILE", help="write every figure here")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp folder (logs, front configs and logs)")
    a = p.parse_args(argv)
    if a.quick:
        a.rows, a.flush_rows, a.uuid_rows, a.analyze_runs = 100_000, 25_000, 0, 1
        a.pairs, a.requests, a.warmup = 3, 1000, 200
    for name in ("rows", "flush_rows", "analyze_runs", "pairs", "requests"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be >= 1")
    return a


def machine(args: argparse.Namespace) -> dict[str, Any]:
    import duckdb
    import pyarrow

    import shadowgrpc
    from shadowgrpc import packing

    info = {"cpu_count": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0)), "python": sys.version.split()[0],
            "platform": platform.platform(), "shadowgrpc": getattr(shadowgrpc, "__version__", "?"), "packing": packing.IMPLEMENTATION,
            "pyarrow": pyarrow.__version__, "duckdb": duckdb.__version__, "loadavg_start": os.getloadavg()}  # fmt: skip
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def writer_phase(args: argparse.Namespace, workdir: pathlib.Path) -> tuple[dict[str, Any], dict[str, Any] | None, pathlib.Path]:
    log(f"building {args.rows:,} pair rows (FP32 {list(OUTPUT_SHAPE)} live and shadow answers) ...")
    t0 = time.perf_counter()
    rows = build_rows(args.rows)
    log(f"  built in {time.perf_counter() - t0:.1f} s; writing them (flush_rows {args.flush_rows:,}) ...")
    path = workdir / "log"
    w = measure_writer(rows, str(path), args.flush_rows)
    del rows
    log(f"  writer: {w['rows_written']:,} rows in {w['wall_s']:.2f} s = {w['rows_per_s']:,.0f} rows/s; writer thread CPU "
        f"{w['writer_thread_cpu_s']:.2f} s; {w['bytes_per_pair']:.1f} B/pair; load {os.getloadavg()[0]:.2f}")
    u = None
    if args.uuid_rows:
        log(f"context: {args.uuid_rows:,} rows with uuid4 request ids ...")
        rows = build_rows(args.uuid_rows, seed=2, ids="uuid")
        u = measure_writer(rows, str(workdir / "log-uuid"), min(args.flush_rows, args.uuid_rows))
        del rows
        shutil.rmtree(workdir / "log-uuid", ignore_errors=True)
        log(f"  uuid ids: {u['rows_per_s']:,.0f} rows/s, {u['bytes_per_pair']:.1f} B/pair")
    w["request_log"] = measure_request_log(20_000 if args.quick else 100_000)
    return w, u, path


def analyze_phase(args: argparse.Namespace, path: pathlib.Path) -> dict[str, Any]:
    runs = []
    for i in range(args.analyze_runs):
        r = measure_analyze(str(path))
        r["loadavg"] = os.getloadavg()[0]
        runs.append(r)
        log(f"  analyze run {i + 1}: {r['rows']:,} rows in {r['wall_s']:.2f} s = {r['rows_per_s']:,.0f} rows/s "
            f"(load {r['load_s']:.2f} s, SQL {r['sql_s']:.2f} s, Python {r['python_s']:.2f} s); load avg {r['loadavg']:.2f}")
    best = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]  # the median run (upper median for an even count)
    return {"runs": runs, "median": best}


def front_phase(args: argparse.Namespace, workdir: pathlib.Path) -> tuple[dict[str, Any], list[str]]:
    from shadowgrpc.local import EmbeddedTriton

    repo = fraud_repository(workdir / "models")
    log(f"starting Triton on {repo} ...")
    with EmbeddedTriton(repo, log_path=workdir / "tritonserver.log", extra_args=["--exit-timeout-secs=5"]) as triton:
        log(f"Triton ready in {triton.startup_seconds or 0:.1f} s at {triton.grpc_address}; {args.pairs} (off, on) pairs of "
            f"{args.requests} requests at {CONCURRENCY} in flight ...")
        with _load.ClientProcess(label="client") as client:
            ab = FrontAB(workdir, triton, client, args)
            res = ab.run()
    return res, ab.problems


def verdicts(figures: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, (op, target, _what) in TARGETS.items():
        v = figures.get(key)
        ok = None if v is None else (v >= target if op == ">=" else v <= target)
        out[key] = {"value": v, "op": op, "target": target, "pass": ok, "value_over_target": v / target if v is not None else None}
    return out


def print_result(res: dict[str, Any], args: argparse.Namespace) -> None:
    w = sys.stdout.write
    wr, u = res["writer"], res.get("writer_uuid")
    w(f"\npaired log: {wr['rows']:,} FP32 {list(OUTPUT_SHAPE)} pairs, flush_rows {wr['flush_rows']:,} ({wr['files']} files)\n")
    h = f"{'writer':<34} {'rows/s':>9} {'wall s':>7} {'thread CPU s':>12} {'proc CPU s':>10} {'cores':>5} {'Arrow CPU':>9} {'Parquet CPU':>11} {'GC s':>5} {'B/pair':>7} {'/raw':>5}"
    w(h + "\n" + "-" * len(h) + "\n")
    for label, x in (("sequential request ids", wr), ("uuid4 request ids (context)", u)):
        if x:
            w(f"{label:<34} {x['rows_per_s']:>9,.0f} {x['wall_s']:>7.2f} {x['writer_thread_cpu_s']:>12.2f} {x['process_cpu_s']:>10.2f} "
              f"{x['cores_used']:>5.2f} {x['arrow_thread_cpu_s']:>9.2f} {x['parquet_thread_cpu_s']:>11.2f} {x['gc_s']:>5.2f} {x['bytes_per_pair']:>7.1f} "
              f"{x['bytes_per_pair_over_raw']:>5.2f}\n")
    w(f"  rows per second of the writer thread's own CPU: {fmt(wr['rows_per_writer_cpu_s'], 0)}; GC pauses by generation "
      f"{[round(s, 2) for s in wr['gc_s_by_generation']]} s ({wr['gc_count_by_generation']} collections); "
      f"shed {wr['rows_shed']}, dropped {wr['rows_dropped']}, write errors {wr['write_errors']}\n")
    an = res["analyze"]
    h = (f"\n{'analyze (wall s | CPU s)':<34} {'rows/s':>9} {'wall s':>7} {'DuckDB load':>13} {'SQL queries':>13} {'Python':>13} "
         f"{'cores':>5} {'load avg':>8}")
    w(h + "\n" + "-" * (len(h) - 1) + "\n")
    for i, r in enumerate(an["runs"], 1):
        label = f"run {i} ({r['rows']:,} rows, {r['files']} files)"
        w(f"{label:<34} {r['rows_per_s']:>9,.0f} {r['wall_s']:>7.2f} {r['load_s']:>6.2f}|{r['load_cpu_s']:<6.2f} "
          f"{r['sql_s']:>6.2f}|{r['sql_cpu_s']:<6.2f} {r['python_s']:>6.2f}|{r['python_cpu_s']:<6.2f} {r['cores_used']:>5.2f} {r['loadavg']:>8.2f}\n")
    q = an["median"]["per_query"]
    w("  SQL per query (wall|CPU s, median run): " + ", ".join(f"{x['query']} {x['wall_s']:.2f}|{x['cpu_s']:.2f}" for x in q) + "\n")
    fr = res.get("front")
    if fr:
        h = f"\n{'front (fraud v1 live + v2 shadow)':<34} {f'{CONCURRENCY}-infl req/s':>13} {'p50 ms':>7} {'p99 ms':>7} {'CPU-us/req':>10} {'load avg':>8}"
        w(h + "\n" + "-" * len(h) + "\n")
        for r in fr["runs"]:
            label = f"pair {r['pair']} log {'on ' if r['logging'] else 'off'}"
            w(f"{label:<34} {r['rps']:>13.0f} {fmt(r['p50_ms'], 3):>7} {fmt(r['p99_ms'], 3):>7} {fmt(r['front_cpu_us_per_req'], 0):>10} "
              f"{r['loadavg_start']:>8.2f}\n")
        w("  on/off per pair: " + ", ".join(f"{x['on_over_off']:.3f}" for x in fr["pairs"])
          + f"; median {fmt(fr['median_on_over_off'], 3)}"
          + (f" (90% bootstrap interval {fr['median_on_over_off_ci90'][0]:.3f}-{fr['median_on_over_off_ci90'][1]:.3f})" if fr.get("median_on_over_off_ci90") else "")
          + f"; medians of runs: off {fmt(fr['off']['rps'], 0)} req/s "
          f"{fmt(fr['off']['front_cpu_us_per_req'], 0)} CPU-us/req, on {fmt(fr['on']['rps'], 0)} req/s {fmt(fr['on']['front_cpu_us_per_req'], 0)} CPU-us/req\n")
        w(f"  front CPU-us/req on/off, median of pairs: {fmt(fr['median_cpu_us_per_req_on_over_off'], 3)}\n")
        fo = (fr.get("fronts") or {}).get("on") or {}
        if "rows_on_disk" in fo:
            w(f"  the on front's log: {fo['rows_on_disk']} rows on disk for {fo['requests_served']} requests served "
              f"({fo['bytes_on_disk'] / max(1, fo['rows_on_disk']):.1f} B/row, fraud's FP32 [1,2] outputs); report {fo['log_report']}\n")
    rl = wr.get("request_log")
    if rl:
        writer_us = 1e6 / wr["rows_per_writer_cpu_s"] if wr.get("rows_per_writer_cpu_s") else None
        off_cpu = (fr or {}).get("off", {}).get("front_cpu_us_per_req")
        share = f" = {(rl['event_loop_us_per_request'] + writer_us) / off_cpu:.1%} of the off front's {off_cpu:.0f} CPU-us/req" if off_cpu and writer_us else ""
        w(f"  logging's CPU per request, measured apart: event loop {rl['event_loop_us_per_request']:.1f} us (RequestLog -> pair()) + "
          f"writer {fmt(writer_us, 1)} us (FP32 [1,16] row){share}\n")
    w("\ntargets:\n")
    for key, v in res["targets"].items():
        mark = "n/a " if v["pass"] is None else ("PASS" if v["pass"] else "FAIL")
        val = fmt(v["value"], 3 if v["target"] < 10 else 0)
        w(f"  {mark}  {TARGETS[key][2]:<56} {val:>10}  (target {v['op']} {v['target']:g}; measured/target {fmt(v['value_over_target'], 3)})\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_begin = time.monotonic()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="shadowgrpc-pairlog-bench-"))
    result: dict[str, Any] = {"args": vars(args), "workdir": str(workdir), "machine": machine(args)}
    problems: list[str] = []
    rc = 0
    try:
        wr, u, path = writer_phase(args, workdir)
        result["writer"], result["writer_uuid"] = wr, u
        if wr["rows_written"] != wr["rows"] or wr["write_errors"]:
            problems.append(f"writer: {wr['rows_written']} of {wr['rows']} rows written, {wr['write_errors']} errors {wr['last_error']}")
        log(f"analyze: {args.analyze_runs} run(s) over {wr['rows_written']:,} rows ...")
        result["analyze"] = analyze_phase(args, path)
        if result["analyze"]["median"]["compared_in_state"] != wr["rows_written"]:
            problems.append(f"analyze: {result['analyze']['median']['compared_in_state']} compared pairs in its state, {wr['rows_written']} logged")
        if not args.keep_temp:
            shutil.rmtree(path, ignore_errors=True)
        if not args.skip_front:
            result["front"], front_problems = front_phase(args, workdir)
            problems += front_problems
        fr = result.get("front") or {}
        result["figures"] = figures = {
            "writer_rows_per_s": wr["rows_per_s"], "bytes_per_pair_over_raw": wr["bytes_per_pair_over_raw"],
            "analyze_rows_per_s": result["analyze"]["median"]["rows_per_s"], "front_throughput_log_on_over_off": fr.get("median_on_over_off"),
        }  # fmt: skip
        result["targets"] = verdicts(figures)
        result["problems"] = problems
        result["machine"]["loadavg_end"] = os.getloadavg()
        result["elapsed_s"] = time.monotonic() - t_begin
        print_result(result, args)
        if problems:
            print(f"\n!!! {len(problems)} PROBLEM(S):")
            for p in problems:
                print("  - " + p.replace("\n", "\n    "))
            rc = 1
        m = result["machine"]
        print(f"\nelapsed {result['elapsed_s']:.0f} s; {m['cpu_count']} CPUs ({m.get('cpu_model', '?')}), Python {m['python']}, pyarrow "
              f"{m['pyarrow']}, duckdb {m['duckdb']}, packing {m['packing']}; load average {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}")
    finally:
        if args.json:
            write_json(args.json, result)
        if args.keep_temp or rc:
            log(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
