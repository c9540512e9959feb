#!/usr/bin/env python3
"""What the front costs: the same client load against Triton directly and through the front.

Scenarios, side by side in one run against ONE embedded Triton (example repository + the test
models of tests/models, ``SHADOWGRPC_SLEEPY_SECONDS=2``):

  direct        the client calls Triton itself
  shadow-off    the front, route for ``fraud`` with no shadow
  one-shadow    the front, fraud v1 live, fraud v2 shadow, sample_rate 1
  shadow-down   the front, one shadow whose address is a closed loopback port
  shadow-slow   the front, one shadow on ``fraud_sleepy`` (sleeps 2 s, past the 1 s deadline that
                the client sets on every call and that the shadow inherits)
  nginx-pass    nginx (Debian's package) ``grpc_pass`` to the same Triton: the C-proxy yardstick
  nginx-mirror  nginx ``grpc_pass`` plus ``mirror`` of every request to Triton again (same model;
                benchmarks/_nginx.py; both skipped, saying so, without nginx: ``make sysdeps``)

``--data-plane grpcio,nghttp2`` (the default when the front knows ``[server] data_plane`` and
``shadowgrpc._h2_c`` imports) runs each front scenario once per plane: ``shadow-off[nghttp2]``, ...

Each front scenario runs ``python -m shadowgrpc serve`` as its own process (its CPU time and RSS
are read from /proc), stopped with SIGTERM. The load comes from a separate client process
(``benchmarks/_load.py``): pre-serialized ModelInferRequest bytes for fraud v1 (1 row, request id
set, 1 s deadline): a sequential phase (p50/p99 latency), then a phase with 8 requests in flight
(throughput, p50/p99, front CPU-us per request). Scenarios are repeated in rounds (order reversed
every other round) and the median over rounds is reported. Then a soak in the shadow-down and
shadow-slow states measures the front's peak RSS growth.

Tracing (``--tracing``, the same run, side by side; see benchmarks/_tracing.py): the front with
one shadow (``--trace-base``) and tracing off, on at sampler ratio 1.0 and at 0.01 (``serve
--trace``, ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``), spans exported over OTLP/gRPC to a
real receiver in this process (tests/otlp.py, counting only), plus ``trace-caller``: ratio 0.01
but every request carries a sampled ``traceparent``, so all are traced by the parent's decision.
The fronts run side by side and are measured in interleaved blocks.

Run:  python benchmarks/front_overhead.py [--quick] [--json results.json] [--loop uvloop] [--tracing]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if importlib.util.find_spec("shadowgrpc") is None:  # not installed: use this checkout
    sys.path.append(str(REPO_ROOT))

if __package__:
    from . import _load, _nginx, _tracing
    from ._fronts import DATA_PLANES, NGINX_SCENARIOS, plan_rows, row_label, split_label
    from ._fronts import BASE_SCENARIOS, CONCURRENCY, DEADLINE_S, FrontProcess, SCENARIOS, SLEEPY_SECONDS, SOAK_STATES, TRACE_SCENARIOS, build_repository, closed_port, front_config, group_cpu_s, log, log_problems, machine_info, otlp_receiver, proc_cpu_s, proc_mem_mb, triton_model_stats, write_json
    from ._summary import fmt, print_tables, ratios, summarize, verdicts
else:  # run as a script: benchmarks/ is sys.path[0]
    import _load
    import _nginx
    import _tracing
    from _fronts import DATA_PLANES, NGINX_SCENARIOS, plan_rows, row_label, split_label
    from _fronts import BASE_SCENARIOS, CONCURRENCY, DEADLINE_S, FrontProcess, SCENARIOS, SLEEPY_SECONDS, SOAK_STATES, TRACE_SCENARIOS, build_repository, closed_port, front_config, group_cpu_s, log, log_problems, machine_info, otlp_receiver, proc_cpu_s, proc_mem_mb, triton_model_stats, write_json
    from _summary import fmt, print_tables, ratios, summarize, verdicts

ClientProcess = _load.ClientProcess
Phase = _load.Phase
NGINX_MISSING = "nginx: none (not on PATH nor /usr/sbin/nginx, or --nginx ''; `make sysdeps` installs Debian's): rows {} SKIPPED, not measured"

class Bench:
    def __init__(self, args: argparse.Namespace, workdir: pathlib.Path, triton, client: ClientProcess, down_port: int) -> None:
        self.args = args
        self.workdir = workdir
        self.triton = triton
        self.client = client
        self.down_port = down_port
        self.problems: list[str] = []
        self.receiver = None  # tests/otlp.py OtlpReceiver for the tracing scenarios
        self.reference: bytes | None = None
        self._n = 0

    def problem(self, msg: str) -> None:
        self.problems.append(msg)
        log(f"!!! PROBLEM: {msg}")

    def measured(self, phase: Phase, front_pid: int | None, on_wait=None, cpu_of=proc_cpu_s) -> dict[str, Any]:
        """One phase; the proxy's CPU is ``cpu_of(front_pid)`` (nginx: its process group)."""
        f0 = cpu_of(front_pid) if front_pid else None
        t0 = group_cpu_s(self.triton.pid)
        w0 = time.perf_counter()
        res = self.client.run(phase, on_wait=on_wait)
        window = time.perf_counter() - w0
        t1 = group_cpu_s(self.triton.pid)
        res["window_s"] = window
        res["triton_cpu_s"] = t1 - t0
        res["triton_cpu_us_per_req"] = (t1 - t0) / res["sent"] * 1e6 if res["sent"] else None
        if front_pid:
            f1 = cpu_of(front_pid)
            res["front_cpu_s"] = f1 - f0
            res["front_cpu_us_per_req"] = (f1 - f0) / res["sent"] * 1e6 if res["sent"] else None
            res["front_cpu_util"] = (f1 - f0) / window if window > 0 else None
        else:
            res["front_cpu_s"] = res["front_cpu_us_per_req"] = res["front_cpu_util"] = None
        if res["error_count"]:
            self.problem(f"LIVE ERRORS in {phase.name}: {res['errors']}")
        if res.get("truncated"):
            self.problem(f"{phase.name}: stopped by its time limit ({phase.max_seconds:.0f} s) after {res['sent']} of {phase.count} requests")
        return res

    def check_bytes(self, label: str) -> bool:
        got = self.client.one(0, DEADLINE_S)
        if self.reference is None:
            self.reference = got
            return True
        if got != self.reference:
            self.problem(f"{label}: response bytes differ from Triton direct ({len(got)} vs {len(self.reference)} bytes)")
            return False
        return True

    def start_front(self, scenario: str, tag: str, plane: str | None = None) -> FrontProcess:
        base = self.args.trace_base if scenario in TRACE_SCENARIOS else scenario
        cfg = front_config(base, self.triton.grpc_address, self.down_port, plane)
        front = FrontProcess(scenario, self.workdir, cfg, self.args.loop, tag)
        ratio = TRACE_SCENARIOS.get(scenario)
        if ratio is None:
            return front.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SHADOWGRPC_TRACE"))}
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=self.receiver.grpc_endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_BSP_SCHEDULE_DELAY="100",
                   OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG=str(ratio), OTEL_SERVICE_NAME="shadowgrpc-bench")
        return front.start(extra_args=("--trace",), env=env)

    def finish_front(self, front: FrontProcess, out: dict[str, Any]) -> None:
        out["front_report"] = front.report()
        out["front_stop"] = st = front.stop()
        if st["killed"] or st["exit_code"] != 0:
            self.problem(f"front {front.scenario}: did not exit cleanly on SIGTERM: {st}\n{front.log_tail()}")
        bad = log_problems(front.log_path.read_text(errors="replace"))
        out["front_log_problems"] = bad
        if bad:
            self.problem(f"front {front.scenario}: errors in its log ({front.log_path}):\n  " + "\n  ".join(bad[:8]))
        rep = out["front_report"] or {}
        for r in rep.get("routes", []):
            errs = {k: v for k, v in (r.get("live_errors") or {}).items() if v}
            if errs:
                self.problem(f"front {front.scenario}: live errors in its report: {errs}")

    def scenario_run(self, label: str, rnd: int) -> dict[str, Any]:
        a = self.args
        self._n += 1
        scenario, plane = split_label(label)
        tag = f"r{rnd}-{scenario}" + (f"-{plane}" if plane else "")
        out: dict[str, Any] = {"scenario": label, "base": scenario, "data_plane": plane, "round": rnd, "loadavg_start": os.getloadavg()[0]}
        front = proxy = None
        cpu_of = proc_cpu_s
        try:
            t0 = time.monotonic()
            if scenario in NGINX_SCENARIOS:
                proxy = _nginx.NginxProcess(scenario, self.workdir, self.triton.grpc_address, tag, a.nginx).start()
                cpu_of = group_cpu_s  # master + worker: nginx runs in a process group of its own
                out["nginx_config"] = proxy.config_path.read_text()
            elif scenario != "direct":
                front = self.start_front(scenario, tag, plane)
            if front or proxy:
                out["front_start_s"] = time.monotonic() - t0
                out["front_pid"] = (front or proxy).pid
            target = (front or proxy).address if front or proxy else self.triton.grpc_address
            self.client.open(target)
            out["bytes_identical"] = self.check_bytes(f"round {rnd} {scenario}")
            out["warmup"] = self.client.run(Phase("warmup", a.warmup, CONCURRENCY, DEADLINE_S, max_seconds=60))
            if out["warmup"]["error_count"]:
                self.problem(f"LIVE ERRORS in round {rnd} {scenario} warm-up: {out['warmup']['errors']}")
            if front:
                out["mem_after_warmup_mb"] = proc_mem_mb(front.pid)
            pid = (front or proxy).pid if front or proxy else None
            if proxy:
                proxy.mark()
            caller = scenario == "trace-caller"  # every request carries a sampled traceparent
            spans0 = self.receiver.span_count if self.receiver else 0
            out["seq"] = self.measured(Phase(f"round {rnd} {scenario} seq", a.seq_requests, 1, DEADLINE_S, max_seconds=a.phase_max_s,
                                             traceparent=caller), pid, cpu_of=cpu_of)
            out["conc"] = self.measured(
                Phase(f"round {rnd} {scenario} {CONCURRENCY}-inflight", a.requests, CONCURRENCY, DEADLINE_S,
                      max_seconds=a.phase_max_s, progress=a.requests >= 20000, traceparent=caller), pid, cpu_of=cpu_of)
            if self.receiver:
                out["spans_received"] = self.receiver.span_count - spans0  # what reached the collector during the phases
            if front:
                out["mem_end_mb"] = proc_mem_mb(front.pid)
            if proxy:
                out["triton_calls_per_request"] = proxy.check_calls(out["seq"]["sent"] + out["conc"]["sent"], self.problem)
            self.client.close_channel()
        finally:
            if proxy is not None:
                if proxy.proc is not None and proxy.proc.poll() is None:
                    proxy.finish(out, self.problem)
                else:
                    self.problem(f"{scenario} died during the run: exit {proxy.proc.returncode if proxy.proc else '?'}\n{proxy.log_tail()}")
            if front is not None:
                if front.proc is not None and front.proc.poll() is None:
                    self.finish_front(front, out)
                else:
                    self.problem(f"front {scenario} died during the run: exit {front.proc.returncode if front.proc else '?'}\n{front.log_tail()}")
        c, s = out["conc"], out["seq"]
        cpu = c.get("front_cpu_us_per_req")
        log(f"  {label:<20} seq p50 {fmt(s.get('p50_ms'), 3)} ms  p99 {fmt(s.get('p99_ms'), 3)} ms | "
            f"{CONCURRENCY} in flight {c['rps']:.0f} req/s p50 {fmt(c.get('p50_ms'), 3)} p99 {fmt(c.get('p99_ms'), 3)} ms | "
            f"proxy {fmt(cpu, 0)} CPU-us/req | errors {s['error_count'] + c['error_count']}")
        return out

    def soak(self, label: str) -> dict[str, Any]:
        a = self.args
        state, plane = split_label(label)
        out: dict[str, Any] = {"state": label, "data_plane": plane, "requests": a.soak_requests}
        front = self.start_front(state, f"soak-{state}" + (f"-{plane}" if plane else ""), plane)
        try:
            self.client.open(front.address)
            out["warmup"] = self.client.run(Phase(f"soak {label} warm-up", a.soak_warmup, CONCURRENCY, DEADLINE_S, max_seconds=120))
            if out["warmup"]["error_count"]:
                self.problem(f"LIVE ERRORS in soak {label} warm-up: {out['warmup']['errors']}")
            base = proc_mem_mb(front.pid)
            out["mem_after_warmup_mb"] = base
            samples: list[tuple[float, float]] = []
            t_start = time.monotonic()
            last = [0.0]

            def sample() -> None:
                now = time.monotonic()
                if now - last[0] >= 2.0:
                    last[0] = now
                    with contextlib.suppress(OSError):
                        samples.append((round(now - t_start, 2), round(proc_mem_mb(front.pid)["VmRSS"], 2)))

            log(f"soak {label}: {a.soak_requests} requests, {CONCURRENCY} in flight (front RSS after warm-up {base['VmRSS']:.1f} MB)")
            out["load"] = self.measured(
                Phase(f"soak {label}", a.soak_requests, CONCURRENCY, DEADLINE_S, max_seconds=a.soak_max_s, progress=True),
                front.pid, on_wait=sample)
            end = proc_mem_mb(front.pid)
            out["mem_end_mb"] = end
            out["rss_samples"] = samples
            out["rss_growth_mb"] = end["VmHWM"] - base["VmRSS"]
            out["rss_end_minus_start_mb"] = end["VmRSS"] - base["VmRSS"]
            self.client.close_channel()
        finally:
            if front.proc is not None and front.proc.poll() is None:
                self.finish_front(front, out)
            else:
                self.problem(f"front soak {label} died: exit {front.proc.returncode if front.proc else '?'}\n{front.log_tail()}")
        ld = out["load"]
        log(f"  soak {label}: {ld['sent']} requests in {ld['wall_s']:.0f} s ({ld['rps']:.0f} req/s), p99 {fmt(ld.get('p99_ms'), 2)} ms, "
            f"errors {ld['error_count']}, RSS {out['mem_after_warmup_mb']['VmRSS']:.1f} -> {end['VmRSS']:.1f} MB, HWM {end['VmHWM']:.1f} MB, "
            f"growth {out['rss_growth_mb']:.1f} MB")
        return out



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="front_overhead.py",
        description="Measure what the shadowgrpc front costs: the same client load against Triton directly and "
        "through the front with shadow off, one shadow, a shadow that is down, and a shadow slower than the live "
        "deadline. One embedded Triton (nvidia-pytriton) for the whole run; each front is its own process, its CPU "
        "and RSS read from /proc. Prints a table, the target ratios (PASS/FAIL) and optionally JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--requests", type=int, default=4000, help=f"requests per scenario and round at {CONCURRENCY} in flight (throughput, p50/p99, front CPU-us/req)")
    p.add_argument("--seq-requests", type=int, default=1000, help="requests per scenario and round sent one at a time (sequential p50/p99)")
    p.add_argument("--warmup", type=int, default=300, help=f"warm-up requests ({CONCURRENCY} in flight) before each scenario's measured phases")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all scenarios (order reversed every other round); the table shows the median")
    p.add_argument("--soak-requests", type=int, default=100_000, help=f"requests ({CONCURRENCY} in flight) for the RSS soak in the shadow-down and shadow-slow states; 0 skips the soak")
    p.add_argument("--soak-warmup", type=int, default=2000, help="warm-up requests before the soak's RSS baseline is read")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop", help="event loop of the front (shadowgrpc serve --loop; default uvloop, as serve)")
    p.add_argument("--scenarios", default=",".join(BASE_SCENARIOS), help="comma-separated subset of: " + ", ".join(SCENARIOS))
    p.add_argument("--tracing", action="store_true",
                   help="run the tracing scenarios instead: " + ", ".join(TRACE_SCENARIOS) + " (no soak unless --soak-requests is given)")
    p.add_argument("--data-plane", metavar="LIST",
                   help="comma-separated data planes of the front rows, each row once per plane: " + ", ".join(DATA_PLANES)
                   + " (the front's [server] data_plane); default: both when the front knows the key and shadowgrpc._h2_c imports, else grpcio")
    p.add_argument("--nginx", metavar="PATH", default=_nginx.nginx_binary(),
                   help="nginx binary of the nginx-pass and nginx-mirror rows (Debian's package; `make sysdeps` installs it); none found: those rows are skipped")
    p.add_argument("--trace-base", choices=["one-shadow", "shadow-off"], default="one-shadow", help="front config of the tracing scenarios")
    p.add_argument("--blocks", type=int, default=12, help="--tracing: interleaved blocks (every scenario once per block)")
    p.add_argument("--block-requests", type=int, default=1500, help=f"--tracing: requests per scenario and block, {CONCURRENCY} in flight")
    p.add_argument("--quick", action="store_true", help="small counts for a smoke test (well under a minute after Triton is up)")
    p.add_argument("--json", metavar="PATH", help="write every figure (all rounds, scenarios, soak, ratios, machine info) here")
    p.add_argument("--phase-max-s", type=float, default=120.0, help="time limit of one measured phase (it stops early and is flagged)")
    p.add_argument("--soak-max-s", type=float, default=300.0, help="time limit of one soak (it stops early and is flagged)")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (model repository, configs, front and Triton logs)")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.seq_requests, args.warmup, args.rounds = 600, 150, 100, 1
        args.soak_requests, args.soak_warmup = min(args.soak_requests, 2000), 300
        args.blocks, args.block_requests = 3, 300
    if args.tracing:
        if args.scenarios == p.get_default("scenarios"):
            args.scenarios = ",".join(TRACE_SCENARIOS)
        if "--soak-requests" not in (argv if argv is not None else sys.argv):
            args.soak_requests = 0
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in args.scenario_list:
        if s not in SCENARIOS:
            p.error(f"--scenarios: unknown scenario {s!r} (expected: {', '.join(SCENARIOS)})")
    plan_rows(args, p.error)
    for name in ("requests", "seq_requests", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be >= 1")
    if args.warmup < 0 or args.soak_requests < 0:
        p.error("--warmup / --soak-requests: must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from shadowgrpc.local import EmbeddedTriton

    t_begin = time.monotonic()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="shadowgrpc-bench-"))
    down_sock, down_port = closed_port()
    result: dict[str, Any] = {"args": {k: v for k, v in vars(args).items()}, "workdir": str(workdir)}
    rc = 0
    try:
        repo = build_repository(workdir / "models")
        log(f"starting Triton on {repo} ...")
        triton = EmbeddedTriton(
            repo,
            log_path=workdir / "tritonserver.log",
            env={
                "SHADOWGRPC_SLEEPY_SECONDS": str(SLEEPY_SECONDS),
                "SHADOWGRPC_PREFERENCE_CACHE": str(workdir / "preference_cache.jsonl"),
                "SHADOWGRPC_RECORDER_PATH": str(workdir / "recorder.jsonl"),
            },
            extra_args=["--exit-timeout-secs=5"],
        )
        with triton:
            log(f"Triton ready in {triton.startup_seconds or 0:.1f} s at {triton.grpc_address} (pid {triton.pid}); starting the load client ...")
            result["machine"] = machine_info(args, triton)
            result["machine"].update(nginx=_nginx.nginx_version(args.nginx) if args.nginx else None, data_planes=args.plane_labels)
            if args.skipped:
                log(NGINX_MISSING.format(", ".join(args.skipped)))
            with ClientProcess(label="client") as client, contextlib.ExitStack() as stack:
                bench = Bench(args, workdir, triton, client, down_port)
                if any(sc in TRACE_SCENARIOS for sc in args.scenario_list):
                    bench.receiver = stack.enter_context(otlp_receiver())
                runs: list[dict[str, Any]] = []
                # The direct response is the reference for byte identity.
                client.open(triton.grpc_address)
                bench.check_bytes("direct")
                client.close_channel()
                if args.tracing:
                    result["tracing"] = _tracing.interleaved(bench, args, args.scenario_list, Phase, CONCURRENCY, DEADLINE_S)
                for rnd in range(1, args.rounds + 1 if not args.tracing else 1):
                    order = list(args.rows) if rnd % 2 else list(reversed(args.rows))
                    log(f"round {rnd}/{args.rounds}: {', '.join(order)}")
                    for sc in order:
                        runs.append(bench.scenario_run(sc, rnd))
                soaks: dict[str, dict[str, Any]] = {}
                if args.soak_requests:
                    for state in SOAK_STATES:
                        for pl in args.plane_labels:
                            soaks[row_label(state, pl)] = bench.soak(row_label(state, pl))
                result["triton_model_stats"] = triton_model_stats(triton.grpc_address)
            summary = summarize(runs)
            r = ratios(summary, soaks, args.plane_labels)
            info = r.pop("info")
            verdict = verdicts(r)
            result.update(runs=runs, summary=summary, soak=soaks, ratios=r, ratios_info=info, targets=verdict,
                          problems=bench.problems)
            result["machine"]["loadavg_end"] = os.getloadavg()
            result["elapsed_s"] = time.monotonic() - t_begin
            if args.tracing:
                if not _tracing.print_result(result["tracing"], args):
                    rc = 1
            else:
                print_tables(runs, summary, soaks, verdict, info, args)
                if args.skipped:
                    print(NGINX_MISSING.format(", ".join(args.skipped)))
            if bench.problems:
                print(f"\n!!! {len(bench.problems)} PROBLEM(S):")
                for p in bench.problems:
                    print("  - " + p.replace("\n", "\n    "))
                rc = 1
            print(f"\nelapsed {result['elapsed_s']:.0f} s; machine: {result['machine']['cpu_count']} CPUs, Python {result['machine']['python']}, "
                  f"grpcio {result['machine']['grpcio']}, packing {result['machine']['packing']}, front loop {args.loop}, "
                  f"load average {result['machine']['loadavg_start'][0]:.2f} -> {result['machine']['loadavg_end'][0]:.2f}")
    finally:
        down_sock.close()
        if args.json:
            write_json(args.json, result)
        if args.keep_temp or rc or sys.exc_info()[0] is not None:  # kept for a look after a failure
            log(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
