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
import json
import os
import pathlib
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if importlib.util.find_spec("shadowgrpc") is None:  # not installed: use this checkout
    sys.path.append(str(REPO_ROOT))

if __package__:
    from . import _load, _tracing
else:  # run as a script: benchmarks/ is sys.path[0]
    import _load
    import _tracing

ClientProcess = _load.ClientProcess
Phase = _load.Phase

TEST_MODELS = REPO_ROOT / "tests" / "models"
SLEEPY_SECONDS = 2.0
DEADLINE_S = 1.0
CONCURRENCY = 8
BASE_SCENARIOS = ("direct", "shadow-off", "one-shadow", "shadow-down", "shadow-slow")
# Tracing scenarios: sampler ratio (None: tracing off) on the --trace-base front config.
TRACE_SCENARIOS = {"trace-off": None, "trace-1": 1.0, "trace-0.01": 0.01, "trace-caller": 0.01}
SCENARIOS = BASE_SCENARIOS + tuple(TRACE_SCENARIOS)
SOAK_STATES = ("shadow-down", "shadow-slow")
CLK_TCK = os.sysconf("SC_CLK_TCK")

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


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------------
# /proc readings
# -------------------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def group_cpu_s(pgid: int) -> float:
    """utime + stime summed over the live processes of process group ``pgid`` (Triton and its
    Python-backend stubs)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 12 and int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def proc_mem_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MB (MiB)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024.0  # kB -> MiB
    return out


# -------------------------------------------------------------------------------------------
# Triton and the front
# -------------------------------------------------------------------------------------------


def build_repository(dst: pathlib.Path) -> pathlib.Path:
    from shadowgrpc.local import example_repository

    dst.mkdir(parents=True, exist_ok=True)
    for source in (example_repository(), TEST_MODELS):
        for model in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            shutil.copytree(model, dst / model.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def closed_port() -> tuple[socket.socket, int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), never listening."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def front_config(scenario: str, triton: str, down_port: int) -> str:
    head = f"""[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
default_live = "{triton}"
grace_s = 5.0

[[routes]]
model = "fraud"
live = {{ version = "1" }}
"""
    shadow = {
        "shadow-off": None,
        "one-shadow": ("fraud-v2", "fraud", "2", None),
        "shadow-down": ("fraud-v2-down", "fraud", "2", f"127.0.0.1:{down_port}"),
        "shadow-slow": ("fraud-sleepy", "fraud_sleepy", "1", None),
    }[scenario]
    if shadow is None:
        return head
    name, model, version, address = shadow
    text = head + f"""
[[routes.shadows]]
name = "{name}"
model = "{model}"
version = "{version}"
sample_rate = 1.0
"""
    if address:
        text += f'address = "{address}"\n'
    return text


class FrontProcess:
    """``python -m shadowgrpc serve`` as a child process, on loopback, free ports."""

    def __init__(self, scenario: str, workdir: pathlib.Path, config_text: str, loop: str, tag: str) -> None:
        self.scenario = scenario
        self.config_path = workdir / f"front-{tag}.toml"
        self.ready_path = workdir / f"front-{tag}.ready"
        self.log_path = workdir / f"front-{tag}.log"
        self.config_path.write_text(config_text)
        self.loop = loop
        self.proc: subprocess.Popen | None = None
        self.port = self.admin_port = 0

    def start(self, timeout: float = 60.0, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> FrontProcess:
        with contextlib.suppress(FileNotFoundError):
            self.ready_path.unlink()
        cmd = [sys.executable, "-m", "shadowgrpc", "--log-level", "WARNING", "serve", "--config", str(self.config_path),
               "--ready-file", str(self.ready_path), "--loop", self.loop, *extra_args]
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT),
                                         env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"front ({self.scenario}) exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
            with contextlib.suppress(FileNotFoundError):
                text = self.ready_path.read_text()
                if text.endswith("\n"):
                    self.port, self.admin_port = (int(x) for x in text.split())
                    return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"front ({self.scenario}) not ready after {timeout:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin_address(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def report(self) -> dict[str, Any] | None:
        try:
            from shadowgrpc.client import fetch_report
            from shadowgrpc.report import report_json

            return json.loads(report_json(fetch_report(self.admin_address, "", 5.0)))
        except Exception as e:  # noqa: BLE001 - the report is evidence, not a requirement
            return {"error": f"{type(e).__name__}: {e}"}

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM, wait; returns {exit_code, stop_s, killed}."""
        assert self.proc is not None
        t0 = time.monotonic()
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                self.proc.kill()
                self.proc.wait(10)
        return {"exit_code": self.proc.returncode, "stop_s": time.monotonic() - t0, "killed": killed}

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def log_problems(text: str) -> list[str]:
    keys = ("Traceback", "ERROR", "Exception", "CRITICAL")
    return [line for line in text.splitlines() if any(k in line for k in keys)][:20]


# -------------------------------------------------------------------------------------------
# Measuring
# -------------------------------------------------------------------------------------------


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

    def measured(self, phase: Phase, front_pid: int | None, on_wait=None) -> dict[str, Any]:
        f0 = proc_cpu_s(front_pid) if front_pid else None
        t0 = group_cpu_s(self.triton.pid)
        w0 = time.perf_counter()
        res = self.client.run(phase, on_wait=on_wait)
        window = time.perf_counter() - w0
        t1 = group_cpu_s(self.triton.pid)
        res["window_s"] = window
        res["triton_cpu_s"] = t1 - t0
        res["triton_cpu_us_per_req"] = (t1 - t0) / res["sent"] * 1e6 if res["sent"] else None
        if front_pid:
            f1 = proc_cpu_s(front_pid)
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

    def start_front(self, scenario: str, tag: str) -> FrontProcess:
        base = self.args.trace_base if scenario in TRACE_SCENARIOS else scenario
        cfg = front_config(base, self.triton.grpc_address, self.down_port)
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

    def scenario_run(self, scenario: str, rnd: int) -> dict[str, Any]:
        a = self.args
        self._n += 1
        tag = f"r{rnd}-{scenario}"
        out: dict[str, Any] = {"scenario": scenario, "round": rnd, "loadavg_start": os.getloadavg()[0]}
        front = None
        try:
            if scenario != "direct":
                t0 = time.monotonic()
                front = self.start_front(scenario, tag)
                out["front_start_s"] = time.monotonic() - t0
                out["front_pid"] = front.pid
            target = front.address if front else self.triton.grpc_address
            self.client.open(target)
            out["bytes_identical"] = self.check_bytes(f"round {rnd} {scenario}")
            out["warmup"] = self.client.run(Phase("warmup", a.warmup, CONCURRENCY, DEADLINE_S, max_seconds=60))
            if out["warmup"]["error_count"]:
                self.problem(f"LIVE ERRORS in round {rnd} {scenario} warm-up: {out['warmup']['errors']}")
            if front:
                out["mem_after_warmup_mb"] = proc_mem_mb(front.pid)
            pid = front.pid if front else None
            caller = scenario == "trace-caller"  # every request carries a sampled traceparent
            spans0 = self.receiver.span_count if self.receiver else 0
            out["seq"] = self.measured(Phase(f"round {rnd} {scenario} seq", a.seq_requests, 1, DEADLINE_S, max_seconds=a.phase_max_s,
                                             traceparent=caller), pid)
            out["conc"] = self.measured(
                Phase(f"round {rnd} {scenario} {CONCURRENCY}-inflight", a.requests, CONCURRENCY, DEADLINE_S,
                      max_seconds=a.phase_max_s, progress=a.requests >= 20000, traceparent=caller), pid)
            if self.receiver:
                out["spans_received"] = self.receiver.span_count - spans0  # what reached the collector during the phases
            if front:
                out["mem_end_mb"] = proc_mem_mb(front.pid)
            self.client.close_channel()
        finally:
            if front is not None:
                if front.proc is not None and front.proc.poll() is None:
                    self.finish_front(front, out)
                else:
                    self.problem(f"front {scenario} died during the run: exit {front.proc.returncode if front.proc else '?'}\n{front.log_tail()}")
        c, s = out["conc"], out["seq"]
        cpu = c.get("front_cpu_us_per_req")
        log(f"  {scenario:<12} seq p50 {fmt(s.get('p50_ms'), 3)} ms  p99 {fmt(s.get('p99_ms'), 3)} ms | "
            f"{CONCURRENCY} in flight {c['rps']:.0f} req/s p50 {fmt(c.get('p50_ms'), 3)} p99 {fmt(c.get('p99_ms'), 3)} ms | "
            f"front {fmt(cpu, 0)} CPU-us/req | errors {s['error_count'] + c['error_count']}")
        return out

    def soak(self, state: str) -> dict[str, Any]:
        a = self.args
        out: dict[str, Any] = {"state": state, "requests": a.soak_requests}
        front = self.start_front(state, f"soak-{state}")
        try:
            self.client.open(front.address)
            out["warmup"] = self.client.run(Phase(f"soak {state} warm-up", a.soak_warmup, CONCURRENCY, DEADLINE_S, max_seconds=120))
            if out["warmup"]["error_count"]:
                self.problem(f"LIVE ERRORS in soak {state} warm-up: {out['warmup']['errors']}")
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

            log(f"soak {state}: {a.soak_requests} requests, {CONCURRENCY} in flight (front RSS after warm-up {base['VmRSS']:.1f} MB)")
            out["load"] = self.measured(
                Phase(f"soak {state}", a.soak_requests, CONCURRENCY, DEADLINE_S, max_seconds=a.soak_max_s, progress=True),
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
                self.problem(f"front soak {state} died: exit {front.proc.returncode if front.proc else '?'}\n{front.log_tail()}")
        ld = out["load"]
        log(f"  soak {state}: {ld['sent']} requests in {ld['wall_s']:.0f} s ({ld['rps']:.0f} req/s), p99 {fmt(ld.get('p99_ms'), 2)} ms, "
            f"errors {ld['error_count']}, RSS {out['mem_after_warmup_mb']['VmRSS']:.1f} -> {end['VmRSS']:.1f} MB, HWM {end['VmHWM']:.1f} MB, "
            f"growth {out['rss_growth_mb']:.1f} MB")
        return out


# -------------------------------------------------------------------------------------------
# Summaries
# -------------------------------------------------------------------------------------------


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


def otlp_receiver():
    """The OTLP collector of the tracing scenarios: tests/otlp.py's real receiver, counting only."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))
    from tests.otlp import OtlpReceiver

    return OtlpReceiver(keep_spans=False)


def machine_info(args: argparse.Namespace, triton) -> dict[str, Any]:
    import grpc

    import shadowgrpc
    from shadowgrpc import packing

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "shadowgrpc": getattr(shadowgrpc, "__version__", "?"),
        "packing": packing.IMPLEMENTATION,
        "front_loop": args.loop,
        "client_loop": "asyncio",
        "loadavg_start": os.getloadavg(),
    }
    with contextlib.suppress(Exception):
        import uvloop

        info["uvloop"] = uvloop.__version__
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(Exception):
        info["triton"] = triton.server_metadata().get("version")
    return info


def triton_model_stats(address: str) -> dict[str, Any]:
    try:
        import tritonclient.grpc as tc

        with tc.InferenceServerClient(address) as c:
            stats = c.get_inference_statistics(as_json=True)
        out = {}
        for m in stats.get("model_stats", []):
            inf = m.get("inference_stats", {})
            out[f"{m['name']}:{m['version']}"] = {
                "inference_count": int(m.get("inference_count", 0)),
                "success": int(inf.get("success", {}).get("count", 0)),
                "fail": int(inf.get("fail", {}).get("count", 0)),
                "cancel": int(inf.get("cancel", {}).get("count", 0)),
            }
        return out
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}


# -------------------------------------------------------------------------------------------
# main
# -------------------------------------------------------------------------------------------


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
                    order = list(args.scenario_list) if rnd % 2 else list(reversed(args.scenario_list))
                    log(f"round {rnd}/{args.rounds}: {', '.join(order)}")
                    for sc in order:
                        runs.append(bench.scenario_run(sc, rnd))
                soaks: dict[str, dict[str, Any]] = {}
                if args.soak_requests:
                    for state in SOAK_STATES:
                        soaks[state] = bench.soak(state)
                result["triton_model_stats"] = triton_model_stats(triton.grpc_address)
            summary = summarize(runs)
            r = ratios(summary, soaks)
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
            path = pathlib.Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2, default=str))
            print(f"JSON: {path}")
        if args.keep_temp or rc:
            log(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
