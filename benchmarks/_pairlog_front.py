"""pairlog.py, part 2: the front's throughput with the paired log on vs off, in the same run.

One embedded Triton (the example ``fraud`` model only, v1 and v2) and two fronts (``python -m
shadowgrpc serve``, each its own process, both started at once): front_overhead.py's one-shadow
config (fraud v1 live, fraud v2 shadow at sample_rate 1), ``off`` without ``[log]``, ``on`` with
``[log] path = <fresh folder>, sample_rate = 1.0`` and the other ``[log]`` settings at their
defaults (flush_rows 20000, flush_s 5). On a shared 2-core machine the speed drifts by more than
the 10% this must resolve, so the two are measured alternately (as front_overhead.py --tracing
does): ``pairs`` pairs of runs, off then on, then on then off, ..., each run a short warm-up and
``requests`` requests at 8 in flight from front_overhead's load client (benchmarks/_load.py, its
own process): req/s, p50/p99, the front's CPU per request from /proc. The front not being
measured is idle. Each pair gives one on/off ratio; the median of the pairs' ratios is the figure.

The log must really hold every request: after the fronts' SIGTERM (which flushes the log) the
pairs files must hold one row per request the ``on`` front served and its report no shed or
dropped rows, else the run is flagged as a problem. The writer finishes a file every flush_s, so
the rows of an ``on`` run's last seconds may be written during the next run (an ``off`` one, or
after the last): at most ~8 us of writer CPU per row (the writer phase's rows per CPU-second),
under 1% of the front's CPU per request here, so that shift is left as it is.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import statistics
import time
from typing import Any

if __package__:
    from . import _load
    from ._fronts import CONCURRENCY, DEADLINE_S, FrontProcess, closed_port, front_config, group_cpu_s, log, log_problems, proc_cpu_s
    from ._pairlog_rows import parquet_files
else:  # run as a script: benchmarks/ is sys.path[0]
    import _load
    from _fronts import CONCURRENCY, DEADLINE_S, FrontProcess, closed_port, front_config, group_cpu_s, log, log_problems, proc_cpu_s
    from _pairlog_rows import parquet_files


def fraud_repository(dst: pathlib.Path) -> pathlib.Path:
    """A model repository holding only the example ``fraud`` model (v1 and v2)."""
    from shadowgrpc.local import example_repository

    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(example_repository() / "fraud", dst / "fraud", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def config_text(triton: str, down_port: int, log_path: pathlib.Path | None) -> str:
    text = front_config("one-shadow", triton, down_port)
    if log_path is not None:
        text += f'\n[log]\npath = "{log_path}"\nsample_rate = 1.0\n'
    return text


def _pairs_rows(path: pathlib.Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(str(path)))


class FrontAB:
    def __init__(self, workdir: pathlib.Path, triton, client, args) -> None:
        self.workdir = workdir
        self.triton = triton
        self.client = client
        self.args = args
        self.problems: list[str] = []
        self.log_path = workdir / "front-log"
        self.served = {False: 0, True: 0}  # requests each front served (warm-ups included)

    def problem(self, msg: str) -> None:
        self.problems.append(msg)
        log(f"!!! PROBLEM: {msg}")

    def one(self, front: FrontProcess, logging_on: bool, pair: int) -> dict[str, Any]:
        a = self.args
        tag = f"p{pair}-{'on' if logging_on else 'off'}"
        out: dict[str, Any] = {"logging": logging_on, "pair": pair, "loadavg_start": os.getloadavg()[0]}
        self.client.open(front.address)
        try:
            warm = self.client.run(_load.Phase(f"{tag} warm-up", a.warmup, CONCURRENCY, DEADLINE_S, max_seconds=120))
            f0, t0 = proc_cpu_s(front.pid), group_cpu_s(self.triton.pid)
            w0 = time.perf_counter()
            res = self.client.run(_load.Phase(f"{tag} {CONCURRENCY}-inflight", a.requests, CONCURRENCY, DEADLINE_S, max_seconds=a.phase_max_s))
            window = time.perf_counter() - w0
            f1, t1 = proc_cpu_s(front.pid), group_cpu_s(self.triton.pid)
        finally:
            self.client.close_channel()
        self.served[logging_on] += warm["sent"] + res["sent"]
        out.update(
            rps=res["rps"], p50_ms=res["p50_ms"], p99_ms=res["p99_ms"], sent=res["sent"], errors=res["errors"],
            error_count=res["error_count"] + warm["error_count"], truncated=res.get("truncated"), window_s=window,
            front_cpu_us_per_req=(f1 - f0) / res["sent"] * 1e6 if res["sent"] else None,
            front_cpu_util=(f1 - f0) / window if window > 0 else None,
            triton_cpu_us_per_req=(t1 - t0) / res["sent"] * 1e6 if res["sent"] else None,
        )  # fmt: skip
        if out["error_count"]:
            self.problem(f"front {tag}: live errors {res['errors']} (warm-up {warm['errors']})")
        if out.get("truncated"):
            self.problem(f"front {tag}: the phase hit its time limit ({a.phase_max_s:.0f} s) after {out['sent']} requests")
        log(f"  {tag:<7} {out['rps']:7.0f} req/s  p50 {out['p50_ms']:.3f} ms  p99 {out['p99_ms']:.3f} ms  "
            f"front {out['front_cpu_us_per_req']:.0f} CPU-us/req  load {out['loadavg_start']:.2f}")
        return out

    def _finish(self, front: FrontProcess, logging_on: bool) -> dict[str, Any]:
        report = front.report() or {}
        stop = front.stop()
        out: dict[str, Any] = {"stop": stop}
        if stop["killed"] or stop["exit_code"] != 0:
            self.problem(f"front {front.scenario}: did not exit cleanly on SIGTERM: {stop}\n{front.log_tail()}")
        bad = log_problems(front.log_path.read_text(errors="replace"))
        if bad:
            self.problem(f"front {front.scenario}: errors in its log ({front.log_path}):\n  " + "\n  ".join(bad[:8]))
        if logging_on:
            lg = report.get("log") or {}
            out["log_report"] = {k: lg.get(k) for k in ("rows_written", "rows_shed", "rows_dropped", "files_written", "write_errors")}
            out["rows_on_disk"] = rows = _pairs_rows(self.log_path)
            out["bytes_on_disk"] = sum(os.path.getsize(f) for f in parquet_files(str(self.log_path)))
            out["requests_served"] = self.served[True]
            if rows != self.served[True] or int(lg.get("rows_shed") or 0) or int(lg.get("rows_dropped") or 0):
                self.problem(f"front on: the log holds {rows} rows for {self.served[True]} requests served; its report {out['log_report']}")
        return out

    def run(self) -> dict[str, Any]:
        """Both fronts started, then ``pairs`` x (off, on) measured alternately; the order inside a
        pair flips every other pair so neither side always runs second."""
        sock, down_port = closed_port()
        fronts: dict[bool, FrontProcess] = {}
        runs: list[dict[str, Any]] = []
        finished: dict[str, Any] = {}
        try:
            for on in (False, True):
                tag = "on" if on else "off"
                cfg = config_text(self.triton.grpc_address, down_port, self.log_path if on else None)
                fronts[on] = FrontProcess(tag, self.workdir, cfg, self.args.loop, tag).start()
            for p in range(1, self.args.pairs + 1):
                for on in (False, True) if p % 2 else (True, False):
                    runs.append(self.one(fronts[on], on, p))
        finally:
            for on, front in fronts.items():
                if front.proc is not None and front.proc.poll() is None:
                    finished["on" if on else "off"] = self._finish(front, on)
                else:
                    self.problem(f"front {front.scenario} died: exit {front.proc.returncode if front.proc else '?'}\n{front.log_tail()}")
            sock.close()
        out = summarize(runs)
        out["fronts"] = finished
        return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    pairs = sorted({r["pair"] for r in runs})
    per_pair = []
    for p in pairs:
        off = next((r for r in runs if r["pair"] == p and not r["logging"]), None)
        on = next((r for r in runs if r["pair"] == p and r["logging"]), None)
        if off and on and off["rps"]:
            per_pair.append({"pair": p, "off_rps": off["rps"], "on_rps": on["rps"], "on_over_off": on["rps"] / off["rps"],
                             "cpu_us_off": off["front_cpu_us_per_req"], "cpu_us_on": on["front_cpu_us_per_req"]})  # fmt: skip
    ratios = [x["on_over_off"] for x in per_pair]
    ci = _median_interval(ratios)
    cpu = [x["cpu_us_on"] / x["cpu_us_off"] for x in per_pair if x["cpu_us_on"] and x["cpu_us_off"]]

    def med(on: bool, key: str) -> float | None:
        v = [r[key] for r in runs if r["logging"] == on and r.get(key) is not None]
        return statistics.median(v) if v else None

    return {
        "runs": runs, "pairs": per_pair,
        "median_on_over_off": statistics.median(ratios) if ratios else None,
        "median_on_over_off_ci90": ci,
        "min_on_over_off": min(ratios) if ratios else None, "max_on_over_off": max(ratios) if ratios else None,
        "median_cpu_us_per_req_on_over_off": statistics.median(cpu) if cpu else None,
        "off": {k: med(False, k) for k in ("rps", "p50_ms", "p99_ms", "front_cpu_us_per_req")},
        "on": {k: med(True, k) for k in ("rps", "p50_ms", "p99_ms", "front_cpu_us_per_req")},
    }  # fmt: skip


def _median_interval(values: list[float], level: float = 0.90, draws: int = 10_000) -> list[float] | None:
    """A bootstrap interval of the median of ``values`` (the pairs' ratios): how far the machine's
    drift leaves the figure from what a quiet machine would give."""
    if len(values) < 3:
        return None
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    medians = np.median(a[np.random.default_rng(0).integers(0, len(a), (draws, len(a)))], axis=1)
    lo, hi = np.percentile(medians, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]
