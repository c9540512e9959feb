#!/usr/bin/env python3
"""How far the compiled server side gets (issue 14, item 4, PROTOTYPE): the front's CPU per request
and throughput when its data port is served by libnghttp2 (shadowgrpc._h2srv_c through
shadowgrpc/h2server.py) instead of grpc.aio's server, side by side in one run with the real front
(``python -m shadowgrpc serve``) and Triton direct.

One embedded Triton (the example repository: fraud v1 and v2). Rows, each front its own process
on uvloop, started fresh for every round:

- ``direct``: the client calls Triton (run right before every other row: that row's baseline);
- ``proto-off`` / ``proto-shadow``: the prototype h2 server, live Triton fraud v1 through the
  compiled client (``H2Channel.call``, a task per call); with one shadow (every request mirrored
  to fraud v2, counted, not compared); ``-cb``: the same without a task per call (H2Front's
  ``callbacks``: the compiled client's future and a done-callback);
- ``router-off`` / ``router-shadow``: the prototype server in front of the real front's Router
  (``H2Front(router=...)``: its routing, sampling, shadows, pairing and compare, statistics; a
  stand-in for the ServicerContext), the same configs as the front rows: what the data port on
  the compiled layer would cost with today's Python logic behind it;
- ``front-off`` / ``front-shadow``: the real front, benchmarks/_fronts.py's "shadow-off" and
  "one-shadow" configs (its default data plane: the compiled client where built), which also
  pairs and compares the shadow's answers.

The client is benchmarks/_load.py's ClientProcess (grpc.aio raw-bytes stub, here on uvloop):
per row a warm-up, ``--seq`` sequential calls (the added p50), then ``--requests`` calls with 8 in
flight; the front's CPU (utime + stime of its process, /proc) over the 8-in-flight phase is its
CPU-us per request; its throughput is divided by the direct run's just before it (other load on
the machine drifts). ``x (CPU)``: the same ratio from CPU time, robust to other load: (client +
Triton CPU per request, direct) / (client + Triton + front CPU per request, this row), what the
throughput ratio is on a machine the three processes saturate (the issue's 2-core setting). Rounds alternate the row order. Every row's answers to ``--check`` requests
must be byte-identical to Triton direct's; ``shadow/req`` is what Triton's own counters saw of
fraud v2 per request (below 1: shadow calls shed by the in-flight bound, 64 in both fronts).

Run:  python benchmarks/h2_server_spike.py [--rounds 3] [--requests 4000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if importlib.util.find_spec("shadowgrpc") is None:
    sys.path.append(str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from _fronts import LoopbackProcess  # noqa: E402 (benchmarks/ is on the path only now)

ROWS = ("direct", "proto-off", "proto-shadow", "proto-off-cb", "proto-shadow-cb", "router-off", "router-shadow", "front-off", "front-shadow")
CONCURRENCY = 8
DEADLINE_S = 2.0
TARGETS = {r: ((250.0, 0.48) if "shadow" in r else (150.0, 0.75)) for r in ROWS[1:]}
ADDED_P50_MS = 0.25


# -- the prototype front process (--serve) --------------------------------------------------------
async def _serve(args: argparse.Namespace) -> None:
    from shadowgrpc.h2 import H2Channel
    from shadowgrpc.h2server import H2Front, stats

    real = None
    if args.config:  # router mode: the real front (its grpc.aio ports idle) and its Router behind the compiled server
        from shadowgrpc.config import Settings
        from shadowgrpc.server import Front

        real = Front(Settings.load(args.config))
        await real.start()
        front = H2Front(None, router=real.router)
    else:
        live = H2Channel(args.live, 64 << 20)
        shadow = H2Channel(args.shadow, 64 << 20) if args.shadow else None
        front = H2Front(live, shadow, route_model="fraud", shadow_model=args.shadow_model, shadow_version=args.shadow_version,
                        callbacks=args.callbacks)
    port = await front.start("127.0.0.1", 0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tmp = pathlib.Path(args.ready_file + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.rename(args.ready_file)
    await stop.wait()
    await front.close()
    if real is not None:
        await real.stop()
    print(json.dumps(stats(front)), flush=True)


class ProtoProcess(LoopbackProcess):
    """``h2_server_spike.py --serve`` as a child process (the FrontProcess interface the rows use)."""

    def __init__(self, workdir: pathlib.Path, live: str, shadow: str | None, tag: str, callbacks: bool = False, config: str = "") -> None:
        self.ready = workdir / f"proto-{tag}.ready"
        self.log_path = workdir / f"proto-{tag}.log"
        self.cmd = [sys.executable, __file__, "--serve", "--live", live, "--ready-file", str(self.ready)]
        if callbacks:
            self.cmd.append("--callbacks")
        if config:
            self.cmd += ["--config", config]
        if shadow:
            self.cmd += ["--shadow", shadow, "--shadow-model", "fraud", "--shadow-version", "2"]
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 30.0) -> ProtoProcess:
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prototype exited with {self.proc.returncode}:\n{self.log_path.read_text()[-2000:]}")
            if self.ready.exists():
                self.port = int(self.ready.read_text())
                return self
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("prototype not ready")

    def stop(self, timeout: float = 15.0) -> dict:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        with contextlib.suppress(ValueError, IndexError):
            return {"exit_code": self.proc.returncode, **json.loads(lines[-1])}
        return {"exit_code": self.proc.returncode, "log": lines[-20:]}


# -- the parent -----------------------------------------------------------------------------------
def run_row(row: str, rnd: int, ctx: dict, args: argparse.Namespace) -> dict:
    from _fronts import FrontProcess, front_config, group_cpu_s, proc_cpu_s, triton_model_stats
    from _load import Phase

    triton, client, work = ctx["triton"], ctx["client"], ctx["work"]
    tag = f"r{rnd}-{row}"
    front = None
    if row.startswith("proto"):
        front = ProtoProcess(work, triton.grpc_address, triton.grpc_address if "shadow" in row else None, tag, row.endswith("-cb")).start()
    elif row.startswith("router"):
        cfg = work / f"router-{tag}.toml"
        cfg.write_text(front_config("shadow-off" if row == "router-off" else "one-shadow", triton.grpc_address, 1))
        front = ProtoProcess(work, triton.grpc_address, None, tag, config=str(cfg)).start(60.0)
    elif row.startswith("front"):
        cfg = front_config("shadow-off" if row == "front-off" else "one-shadow", triton.grpc_address, 1)
        front = FrontProcess(row, work, cfg, "uvloop", tag).start()
    out: dict = {"row": row, "round": rnd, "loadavg_start": os.getloadavg()[0]}
    try:
        client.open(front.address if front else triton.grpc_address)
        got = [client.one(i, DEADLINE_S) for i in range(args.check)]
        if "reference" not in ctx:
            ctx["reference"] = got
        out["bytes_identical"] = got == ctx["reference"]
        client.run(Phase("warmup", args.warmup, CONCURRENCY, DEADLINE_S, max_seconds=60))
        out["seq"] = client.run(Phase(f"{tag} seq", args.seq, 1, DEADLINE_S, max_seconds=60))
        v2 = triton_model_stats(triton.grpc_address).get("fraud:2", {}).get("inference_count", 0)
        c0, t0 = proc_cpu_s(front.pid) if front else 0.0, group_cpu_s(triton.pid)
        res = client.run(Phase(f"{tag} conc", args.requests, CONCURRENCY, DEADLINE_S, max_seconds=args.phase_max_s))
        c1, t1 = proc_cpu_s(front.pid) if front else 0.0, group_cpu_s(triton.pid)
        out["triton_cpu_us_per_req"] = (t1 - t0) / res["sent"] * 1e6
        out["client_cpu_us_per_req"] = res["client_cpu_s"] / res["sent"] * 1e6
        time.sleep(0.2)  # shadow calls still in flight at the end of the phase
        out["shadow_calls_per_req"] = (triton_model_stats(triton.grpc_address).get("fraud:2", {}).get("inference_count", 0) - v2) / res["sent"]
        out["conc"] = res
        out["front_cpu_us_per_req"] = (c1 - c0) / res["sent"] * 1e6 if front else None
        # all three processes' CPU per request: on a machine they saturate, throughput ~ cores / this
        out["total_cpu_us_per_req"] = out["triton_cpu_us_per_req"] + out["client_cpu_us_per_req"] + (out["front_cpu_us_per_req"] or 0.0)
        client.close_channel()
    finally:
        if front is not None:
            out["front_stop"] = front.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds over all rows, order alternating (default 3)")
    p.add_argument("--requests", type=int, default=4000, help="calls with 8 in flight per row and round (default 4000)")
    p.add_argument("--seq", type=int, default=500, help="sequential calls per row and round, for the p50 (default 500)")
    p.add_argument("--warmup", type=int, default=500, help="warm-up calls per row and round (default 500)")
    p.add_argument("--check", type=int, default=16, help="requests whose answers are compared with Triton direct's (default 16)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"rows to run (default {','.join(ROWS)})")
    p.add_argument("--phase-max-s", type=float, default=120.0, help="time limit of one phase (default 120)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--live", help=argparse.SUPPRESS)
    p.add_argument("--shadow", help=argparse.SUPPRESS)
    p.add_argument("--shadow-model", default="fraud", help=argparse.SUPPRESS)
    p.add_argument("--shadow-version", default="2", help=argparse.SUPPRESS)
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    p.add_argument("--callbacks", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        import uvloop

        uvloop.run(_serve(args))
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        p.error(f"--rows: unknown {bad} (expected: {', '.join(ROWS)})")
    if "direct" in rows:  # the reference answers and the ratios' baseline: always first in a round
        rows.remove("direct")
    for name in ("rounds", "requests", "seq", "warmup", "check"):
        if not 1 <= getattr(args, name) <= 1_000_000:
            p.error(f"--{name}: must be in 1..1000000")
    from _load import ClientProcess

    from shadowgrpc.h2server import AVAILABLE
    from shadowgrpc.local import EmbeddedTriton, example_repository

    if not AVAILABLE:
        print("h2_server_spike: shadowgrpc._h2srv_c is not built (`make sysdeps build`)", file=sys.stderr)
        return 2
    work = pathlib.Path(tempfile.mkdtemp(prefix="shadowgrpc-h2srv-"))
    runs: list[dict] = []
    with EmbeddedTriton(example_repository(), log_path=work / "tritonserver.log", extra_args=["--exit-timeout-secs=5"]) as triton, \
            ClientProcess(n_requests=256, label="client", loop="uvloop") as client:
        ctx = {"triton": triton, "client": client, "work": work}
        print(f"Triton at {triton.grpc_address}; work dir {work}; {args.rounds} rounds, {args.requests} calls at {CONCURRENCY} in flight",
              file=sys.stderr)
        for rnd in range(args.rounds):
            for row in (rows if rnd % 2 == 0 else rows[::-1]):
                # each row right after a direct run of its own: the ratio's baseline, measured under the same machine load
                base = run_row("direct", rnd, ctx, args)
                r = run_row(row, rnd, ctx, args)
                r["direct_rps"] = base["conc"]["rps"]
                r["direct_total_cpu_us"] = base["total_cpu_us_per_req"]
                runs += [base, r]
                c = r["conc"]
                cpu = r["front_cpu_us_per_req"]
                print(f"  round {rnd + 1} {row:15s} {c['rps']:7.0f} req/s ({c['rps'] / r['direct_rps']:.2f}x direct {r['direct_rps']:.0f})"
                      f"  p50 {c['p50_ms']:.3f} ms  front "
                      f"{'-' if cpu is None else f'{cpu:.0f}'} CPU-us/req  errors {c['error_count']}  identical {r['bytes_identical']}"
                      f"  shadow/req {r['shadow_calls_per_req']:.2f}", file=sys.stderr, flush=True)
    return report(runs, ["direct"] + rows, args)


def report(runs: list[dict], rows: list[str], args: argparse.Namespace) -> int:
    med = statistics.median
    s: dict[str, dict] = {}
    for row in rows:
        rs = [r for r in runs if r["row"] == row]
        s[row] = {"rps": med(r["conc"]["rps"] for r in rs), "p50_ms": med(r["conc"]["p50_ms"] for r in rs),
                  "seq_p50_ms": med(r["seq"]["p50_ms"] for r in rs),
                  "cpu": med(r["front_cpu_us_per_req"] for r in rs) if rs[0]["front_cpu_us_per_req"] is not None else None,
                  "errors": sum(r["conc"]["error_count"] + r["seq"]["error_count"] for r in rs),
                  "identical": all(r["bytes_identical"] for r in rs), "shadow": med(r["shadow_calls_per_req"] for r in rs)}
    for row in rows:  # throughput against the direct run just before it (the machine's load drifts)
        xs = [r["conc"]["rps"] / r.get("direct_rps", r["conc"]["rps"]) for r in runs if r["row"] == row]
        cm = [r.get("direct_total_cpu_us", r["total_cpu_us_per_req"]) / r["total_cpu_us_per_req"] for r in runs if r["row"] == row]
        s[row].update(x=med(xs), x_min=min(xs), x_max=max(xs), x_cpu=med(cm), triton_us=med(r["triton_cpu_us_per_req"] for r in runs if r["row"] == row),
                      client_us=med(r["client_cpu_us_per_req"] for r in runs if r["row"] == row),
                      cpu_min=min((r["front_cpu_us_per_req"] or 0) for r in runs if r["row"] == row),
                      cpu_max=max((r["front_cpu_us_per_req"] or 0) for r in runs if r["row"] == row))
    d = s["direct"]
    print(f"\nmedians over {args.rounds} rounds; {args.requests} calls at {CONCURRENCY} in flight; fraud v1, 1 row; "
          f"cpus {len(os.sched_getaffinity(0))}; load average at row starts {min(r['loadavg_start'] for r in runs):.1f}-"
          f"{max(r['loadavg_start'] for r in runs):.1f}")
    print(f"{'row':15} {'req/s':>7} {'x direct (min-max)':>18} {'p50 ms':>7} {'seq p50':>8} {'+seq p50':>8} {'CPU-us/req (min-max)':>20} "
          f"{'shadow/req':>10} {'errors':>6} {'identical':>9} {'Triton us':>9} {'client us':>9} {'x (CPU)':>7}")
    for row in rows:
        x = s[row]
        cpu = "-" if x["cpu"] is None else f"{x['cpu']:.0f} ({x['cpu_min']:.0f}-{x['cpu_max']:.0f})"
        print(f"{row:15} {x['rps']:7.0f} {x['x']:6.2f} ({x['x_min']:.2f}-{x['x_max']:.2f}) {x['p50_ms']:7.3f} {x['seq_p50_ms']:8.3f} "
              f"{x['seq_p50_ms'] - d['seq_p50_ms']:+8.3f} {cpu:>20} {x['shadow']:10.2f} {x['errors']:6d} {str(x['identical']):>9} "
              f"{x['triton_us']:9.0f} {x['client_us']:9.0f} {x['x_cpu']:7.2f}")
    print("\nissue 14 targets: front CPU <= 150 / 250 us (shadow off / one shadow), >= 0.75x / 0.48x of direct, +seq p50 <= 0.25 ms")
    for row in rows:
        if row not in TARGETS:
            continue
        cpu_t, x_t = TARGETS[row]
        x = s[row]
        ratio = x["x"]
        added = x["seq_p50_ms"] - d["seq_p50_ms"]
        print(f"  {row:15} CPU {x['cpu']:.0f} us <= {cpu_t:.0f}: {'yes' if x['cpu'] <= cpu_t else 'NO'};  "
              f"{ratio:.2f}x >= {x_t:.2f}x: {'yes' if ratio >= x_t else 'NO'} (CPU model {x['x_cpu']:.2f}x: "
              f"{'yes' if x['x_cpu'] >= x_t else 'NO'});  +p50 {added:+.3f} ms <= {ADDED_P50_MS}: "
              f"{'yes' if added <= ADDED_P50_MS else 'NO'}")
    for a, b in (("proto-off", "front-off"), ("proto-shadow", "front-shadow")):
        if a in s and b in s and s[b]["cpu"]:
            print(f"  {a} / {b}: CPU {s[a]['cpu'] / s[b]['cpu']:.2f}, throughput {s[a]['x'] / s[b]['x']:.2f}x")
    ok = all(x["identical"] and x["errors"] == 0 for x in s.values())
    print(f"answers byte-identical to Triton direct, no errors: {'yes' if ok else 'NO'}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"runs": runs, "summary": s}, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
