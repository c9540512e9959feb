#!/usr/bin/env python3
"""Load harness: tritonclient (grpc.aio) clients holding a fixed request rate or a fixed
concurrency, for a bounded time, against the front (or Triton directly, as the baseline).

  --concurrency C   closed loop: C requests always in flight; latency around each await
  --rate R          open loop: request k is due at t0 + k/R; latency counts from the due time, so
                    queueing in the client or the server shows; at most --max-outstanding in
                    flight, a due request beyond that is counted "not sent (client saturated)"

Every run is bounded by --duration (<= 600 s) and/or --requests. Fraud requests (fraud v1, one
row of make_transactions each) are spread over --clients tritonclient.grpc.aio clients, each with
a connection of its own. Loopback targets only.

By default the harness starts its own embedded Triton (example repository + tests/models) and a
front (``python -m shadowgrpc serve``: fraud v1 live, fraud v2 shadow at sample_rate 1, the
"one-shadow" config of benchmarks/_fronts.py) and loads ``--against front|direct|both``; ``both``
interleaves direct and front in --blocks blocks and prints front/direct ratios. ``--target ADDR``
loads a running front or Triton instead (``--front-pid`` to read its RSS and fds).

Printed: achieved rate, p50/p90/p99/p99.9/max latency (ms), errors by gRPC status, the server's
peak RSS (VmRSS sampled from /proc every --sample-s) and open fds (/proc/PID/fd, start and peak).

Run:  python benchmarks/load.py --concurrency 8 --duration 10 --against both
      python benchmarks/load.py --rate 200 --duration 10 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import ipaddress
import os
import pathlib
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if importlib.util.find_spec("shadowgrpc") is None:  # not installed: use this checkout
    sys.path.append(str(REPO_ROOT))

if __package__:
    from ._fronts import FrontProcess, build_repository, closed_port, front_config, log, proc_mem_mb, write_json
else:  # run as a script: benchmarks/ is sys.path[0]
    from _fronts import FrontProcess, build_repository, closed_port, front_config, log, proc_mem_mb, write_json

MAX_DURATION_S = 600.0
MAX_REQUESTS = 10_000_000
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


# -------------------------------------------------------------------------------------------
# Targets and /proc
# -------------------------------------------------------------------------------------------


def loopback_address(addr: str) -> str:
    """``addr`` (host:port, [v6]:port) if every address it resolves to is loopback; else ValueError."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"target {addr!r}: expected HOST:PORT (e.g. 127.0.0.1:8001)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"target {addr!r}: cannot resolve {host!r}: {e}") from None
    bad = sorted({i[4][0] for i in infos if not ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback})
    if bad or not infos:
        raise ValueError(f"target {addr!r} is not loopback (resolves to {', '.join(bad) or 'nothing'}); "
                         "this harness only loads 127.0.0.0/8 or ::1")
    return addr


def fd_count(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return None


class ProcSampler:
    """VmRSS and the fd count of ``pid`` every ``every_s`` while running (peak, start)."""

    def __init__(self, pid: int | None, every_s: float) -> None:
        self.pid, self.every_s = pid, every_s
        self.rss_start = self.rss_peak = self.fd_start = self.fd_peak = None
        self.samples = 0

    def sample(self) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(OSError, KeyError):
            rss = proc_mem_mb(self.pid)["VmRSS"]
            self.rss_start = rss if self.rss_start is None else self.rss_start
            self.rss_peak = max(self.rss_peak or 0.0, rss)
        fds = fd_count(self.pid)
        if fds is not None:
            self.fd_start = fds if self.fd_start is None else self.fd_start
            self.fd_peak = max(self.fd_peak or 0, fds)
        self.samples += 1

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every_s)

    def result(self) -> dict[str, Any]:
        return {"pid": self.pid, "rss_start_mib": self.rss_start, "rss_peak_mib": self.rss_peak,
                "fds_start": self.fd_start, "fds_peak": self.fd_peak, "samples": self.samples}


# -------------------------------------------------------------------------------------------
# Load
# -------------------------------------------------------------------------------------------


class Load:
    """Clients, inputs and counters for one target; ``phase()`` runs one bounded stretch."""

    def __init__(self, args: argparse.Namespace, address: str, pid: int | None) -> None:
        import numpy as np
        import tritonclient.grpc.aio as grpcclient

        from shadowgrpc.examples.data import make_transactions

        self.args, self.address = args, address
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0),
                   ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        self.clients = [grpcclient.InferenceServerClient(address, channel_args=options) for _ in range(args.clients)]
        rows, _ = make_transactions(64, seed=7)
        self.inputs = []
        for row in rows:  # one pre-filled input per row; requests cycle over them
            inp = grpcclient.InferInput("features", [1, rows.shape[1]], "FP32")
            inp.set_data_from_numpy(np.ascontiguousarray(row[None, :], dtype=np.float32))
            self.inputs.append(inp)
        self.outputs = [grpcclient.InferRequestedOutput("probability")]
        self.sampler = ProcSampler(pid, args.sample_s)
        self.lat: list[float] = []
        self.errors: Counter[str] = Counter()
        self.sent = self.not_sent = self.wall_s = 0
        self.n = 0

    async def one(self, scheduled: float) -> None:
        k, self.n = self.n, self.n + 1
        client = self.clients[k % len(self.clients)]
        try:
            await client.infer(self.args.model, [self.inputs[k % len(self.inputs)]], model_version=self.args.version,
                               outputs=self.outputs, request_id=f"load-{k}", client_timeout=self.args.timeout)
        except Exception as e:  # noqa: BLE001 - every failure is counted by status
            status = getattr(e, "status", None)
            code = status() if callable(status) else None
            self.errors[str(code or type(e).__name__).removeprefix("StatusCode.")] += 1
        else:
            self.lat.append(time.perf_counter() - scheduled)

    async def phase(self, seconds: float, count: int, measure: bool = True) -> None:
        a, sent0, t0 = self.args, self.sent, time.perf_counter()
        end, tasks = t0 + seconds, set()
        lat0, err0, ns0 = len(self.lat), self.errors.copy(), self.not_sent
        sampler = asyncio.create_task(self.sampler.run()) if measure else None
        if a.concurrency:
            left = [count]

            async def worker() -> None:
                while left[0] > 0 and time.perf_counter() < end:
                    left[0] -= 1
                    self.sent += 1
                    await self.one(time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(min(a.concurrency, count))))
        else:
            k = 0
            while k < count:
                now = time.perf_counter()
                if now >= end:
                    break
                due = min(count, int((now - t0) * a.rate) + 1)
                for j in range(k, due):  # every request due by now, each with its own schedule time
                    if len(tasks) >= a.max_outstanding:
                        self.not_sent += 1
                        continue
                    self.sent += 1
                    t = asyncio.create_task(self.one(t0 + j / a.rate))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                k = due
                await asyncio.sleep(max(0.0, t0 + k / a.rate - time.perf_counter()))
            if tasks:
                await asyncio.wait(tasks, timeout=a.timeout + 5.0)
        wall = time.perf_counter() - t0
        if sampler:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            self.sampler.sample()
            self.wall_s += wall
        else:  # warm-up: forget what it measured
            del self.lat[lat0:]
            self.errors, self.not_sent, self.sent = err0, ns0, sent0

    async def close(self) -> None:
        for c in self.clients:
            await c.close()

    def result(self, label: str) -> dict[str, Any]:
        import numpy as np

        lat = np.sort(np.asarray(self.lat)) * 1e3
        out: dict[str, Any] = {"label": label, "target": self.address, "sent": self.sent, "ok": len(self.lat),
                               "errors": dict(self.errors), "not_sent": self.not_sent, "wall_s": self.wall_s,
                               "achieved_rps": len(self.lat) / self.wall_s if self.wall_s else 0.0,
                               "offered_rps": self.args.rate or None, **self.sampler.result()}
        for p in PERCENTILES:
            out[f"p{p:g}_ms"] = float(np.percentile(lat, p)) if lat.size else None
        out["max_ms"] = float(lat[-1]) if lat.size else None
        return out


async def run_targets(args: argparse.Namespace, targets: list[tuple[str, str, int | None]]) -> list[dict[str, Any]]:
    """Loads every (label, address, pid); with several, interleaved in ``args.blocks`` blocks."""
    loads = [Load(args, addr, pid) for _, addr, pid in targets]
    try:
        for ld in loads:
            if args.warmup:
                await ld.phase(min(30.0, args.duration), args.warmup, measure=False)
        blocks = args.blocks if len(loads) > 1 else 1
        per_s, per_n = args.duration / blocks, max(1, args.requests // blocks)
        for b in range(blocks):
            order = loads if b % 2 == 0 else loads[::-1]
            for ld in order:
                log(f"  block {b + 1}/{blocks}: {ld.address} ...")
                await ld.phase(per_s, per_n)
        return [ld.result(label) for ld, (label, _, _) in zip(loads, targets)]
    finally:
        for ld in loads:
            await ld.close()


# -------------------------------------------------------------------------------------------
# Output
# -------------------------------------------------------------------------------------------


def fmt(v: Any, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, float | None]:
    mode = f"open loop, {args.rate:g} req/s offered, <= {args.max_outstanding} outstanding" if args.rate else \
        f"closed loop, {args.concurrency} in flight"
    print(f"\n{mode}; {args.clients} clients; {args.model} v{args.version}; deadline {args.timeout:g} s; "
          f"per target <= {args.duration:g} s and <= {args.requests} requests")
    cols = ["target", "sent", "ok", "req/s", "p50", "p90", "p99", "p99.9", "max", "not sent", "RSS peak MiB", "fds start/peak"]
    rows = []
    for r in results:
        rows.append([r["label"], str(r["sent"]), str(r["ok"]), fmt(r["achieved_rps"], 1), *(fmt(r[f"p{p:g}_ms"]) for p in PERCENTILES),
                     fmt(r["max_ms"]), str(r["not_sent"]), fmt(r["rss_peak_mib"], 1), f"{fmt(r['fds_start'])}/{fmt(r['fds_peak'])}"])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)) + "   (latency ms; RSS/fds of the server pid only)")
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
    for r in results:
        errs = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "none"
        print(f"errors {r['label']}: {errs}" + (f"; not sent (client saturated): {r['not_sent']}" if r["not_sent"] else ""))
    ratios: dict[str, float | None] = {}
    by = {r["label"].split()[0]: r for r in results}
    if "front" in by and "direct" in by:
        f, d = by["front"], by["direct"]
        for key in ("achieved_rps", *(f"p{p:g}_ms" for p in PERCENTILES), "max_ms"):
            ratios[key] = f[key] / d[key] if f[key] is not None and d[key] else None
        print("front/direct: " + "  ".join(f"{k.removesuffix('_ms')} {fmt(v, 3)}" for k, v in ratios.items()))
    return ratios


# -------------------------------------------------------------------------------------------
# main
# -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="load.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog="Loopback only. Every run is bounded by --duration and --requests.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: requests started per second on a fixed schedule")
    mode.add_argument("--concurrency", type=int, help="closed loop: requests kept in flight")
    p.add_argument("--duration", type=float, default=10.0, help=f"seconds per target (hard cap, <= {MAX_DURATION_S:g}); with both, split over the blocks")
    p.add_argument("--requests", type=int, default=1_000_000, help=f"request cap per target (<= {MAX_REQUESTS})")
    p.add_argument("--max-outstanding", type=int, default=256, help="--rate: most requests in flight; a due request beyond is not sent and counted")
    p.add_argument("--clients", type=int, default=4, help="tritonclient.grpc.aio clients sharing the load (one connection each)")
    p.add_argument("--timeout", type=float, default=1.0, help="deadline of each request, seconds")
    p.add_argument("--warmup", type=int, default=200, help="warm-up requests per target before measuring (0: none)")
    p.add_argument("--target", help="HOST:PORT of a running front or Triton (loopback); default: start an embedded Triton and a front")
    p.add_argument("--front-pid", type=int, help="with --target: pid whose RSS and fds are read")
    p.add_argument("--against", choices=["front", "direct", "both"], default="front", help="without --target: what to load")
    p.add_argument("--blocks", type=int, default=4, help="--against both: interleaved blocks (direct, front, front, direct, ...)")
    p.add_argument("--model", default="fraud", help="model name (the front's route or Triton's model)")
    p.add_argument("--version", default="1", help="model version")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop", help="event loop of the started front")
    p.add_argument("--sample-s", type=float, default=0.1, help="/proc sampling interval, seconds")
    p.add_argument("--json", metavar="PATH", help="write the results here")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (model repository, configs, logs)")
    a = p.parse_args(argv)
    if not 0 < a.duration <= MAX_DURATION_S:
        p.error(f"--duration: must be in (0, {MAX_DURATION_S:g}]")
    if not 0 < a.requests <= MAX_REQUESTS:
        p.error(f"--requests: must be in [1, {MAX_REQUESTS}]")
    if a.rate is not None and not 0 < a.rate <= 100_000:
        p.error("--rate: must be in (0, 100000]")
    if a.concurrency is not None and not 0 < a.concurrency <= 4096:
        p.error("--concurrency: must be in [1, 4096]")
    for name, hi in (("max_outstanding", 65536), ("clients", 64), ("blocks", 100)):
        if not 0 < getattr(a, name) <= hi:
            p.error(f"--{name.replace('_', '-')}: must be in [1, {hi}]")
    if not 0 < a.timeout <= 60 or a.warmup < 0 or a.sample_s <= 0:
        p.error("--timeout in (0, 60], --warmup >= 0, --sample-s > 0")
    if a.front_pid is not None and not a.target:
        p.error("--front-pid needs --target")
    if a.target:
        try:
            loopback_address(a.target)
        except ValueError as e:
            p.error(str(e))
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {"args": vars(args)}
    if args.target:
        label = "target" if args.front_pid is None else f"target (pid {args.front_pid})"
        result["results"] = asyncio.run(run_targets(args, [(label, args.target, args.front_pid)]))
        print_table(result["results"], args)
        return finish(args, result, None)

    from shadowgrpc.local import EmbeddedTriton

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="shadowgrpc-load-"))
    down_sock, down_port = closed_port()
    front = None
    try:
        repo = build_repository(workdir / "models")
        log(f"starting Triton on {repo} ...")
        env = {"SHADOWGRPC_PREFERENCE_CACHE": str(workdir / "preference_cache.jsonl"),
               "SHADOWGRPC_RECORDER_PATH": str(workdir / "recorder.jsonl")}
        with EmbeddedTriton(repo, log_path=workdir / "tritonserver.log", env=env, extra_args=["--exit-timeout-secs=5"]) as triton:
            loopback_address(triton.grpc_address)
            targets: list[tuple[str, str, int | None]] = []
            if args.against in ("direct", "both"):
                targets.append(("direct (tritonserver)", triton.grpc_address, triton.pid))
            if args.against in ("front", "both"):
                cfg = front_config("one-shadow", triton.grpc_address, down_port)
                front = FrontProcess("one-shadow", workdir, cfg, args.loop, "load").start()
                loopback_address(front.address)
                targets.append(("front (fraud v2 shadow)", front.address, front.pid))
            log(f"Triton {triton.grpc_address} (pid {triton.pid})" + (f", front {front.address} (pid {front.pid})" if front else ""))
            result["results"] = asyncio.run(run_targets(args, targets))
            result["ratios"] = print_table(result["results"], args)
            if front is not None:
                result["front_report"] = front.report()
                result["front_stop"] = front.stop()
                if result["front_stop"]["exit_code"] != 0:
                    print(f"!!! front exited with {result['front_stop']['exit_code']}:\n{front.log_tail()}")
    finally:
        if front is not None:
            front.kill()
        down_sock.close()
    return finish(args, result, workdir)


def finish(args: argparse.Namespace, result: dict[str, Any], workdir: pathlib.Path | None) -> int:
    rc = 1 if any(r["ok"] == 0 for r in result.get("results", [])) else 0
    if args.json:
        write_json(args.json, result)
    if workdir is not None:
        if args.keep_temp or rc:
            log(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
