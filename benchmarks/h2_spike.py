#!/usr/bin/env python3
"""Go/no-go for the compiled data plane (issue 14, item 1): the CPU one unary ModelInfer call
costs the calling process, through grpc.aio and through shadowgrpc._h2_c (libnghttp2's sans-IO
session driven by a uvloop protocol, shadowgrpc/h2.py), side by side in one run.

One embedded Triton (the example repository, fraud v1, one row per request, the same
pre-serialized requests as benchmarks/_load.py). Each measurement is its own client process on
uvloop: ``--warmup`` calls, then ``--requests`` calls with ``concurrency`` in flight (tasks
pulling from a shared counter); its CPU time (all threads, ``time.process_time``) over the
measured calls is the CPU-us per call. Both clients run at every concurrency, in rounds (the
order alternating), and the median over rounds is reported with the ratio. Every response is
checked byte for byte against the first client's.

Go if the compiled client's CPU-us per call is at most ``--go-us`` (80) at both concurrencies.

Run:  python benchmarks/h2_spike.py [--rounds 3] [--requests 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if importlib.util.find_spec("shadowgrpc") is None:
    sys.path.append(str(REPO_ROOT))

MODEL, VERSION = "fraud", "1"
PATH = "/inference.GRPCInferenceService/ModelInfer"
CLIENTS = ("grpcio", "nghttp2")


# -- the client process --------------------------------------------------------------------------
async def _client(kind: str, address: str, concurrency: int, warmup: int, requests: int, deadline: float) -> dict:
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from _load import build_requests

    reqs = build_requests(256, model=MODEL, version=VERSION)
    if kind == "grpcio":
        import grpc

        channel = grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        mc = channel.unary_unary(PATH, request_serializer=None, response_deserializer=None, _registered_method=True)

        async def call(raw: bytes) -> bytes:
            return await mc(raw, timeout=deadline)

        close = channel.close
    else:
        from shadowgrpc.h2 import H2Channel

        ch = H2Channel(address, 64 * 1024 * 1024)
        path = PATH.encode()

        async def call(raw: bytes) -> bytes:
            return await ch.call(path, raw, deadline, None)

        close = ch.close
    digest = hashlib.sha256()
    for r in reqs:  # sequential: the reference bytes, in order
        digest.update(await call(r))
    errors = 0
    nreq = len(reqs)

    async def run(n: int) -> None:
        i = 0

        async def worker() -> None:
            nonlocal i, errors
            while i < n:
                k = i
                i += 1
                try:
                    await call(reqs[k % nreq])
                except Exception:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    await run(warmup)
    c0, t0 = time.process_time(), time.perf_counter()
    await run(requests)
    c1, t1 = time.process_time(), time.perf_counter()
    await close()
    return {"kind": kind, "concurrency": concurrency, "requests": requests, "errors": errors, "cpu_s": c1 - c0, "wall_s": t1 - t0,
            "cpu_us_per_call": (c1 - c0) / requests * 1e6, "rps": requests / (t1 - t0), "digest": digest.hexdigest()}


def client_main(args: argparse.Namespace) -> int:
    import uvloop

    out = uvloop.run(_client(args.client, args.address, args.concurrency, args.warmup, args.requests, args.deadline))
    print(json.dumps(out))
    return 0


# -- the parent ----------------------------------------------------------------------------------
def run_client(kind: str, address: str, concurrency: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--client", kind, "--address", address, "--concurrency", str(concurrency),
           "--warmup", str(args.warmup), "--requests", str(args.requests), "--deadline", str(args.deadline)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # numpy's BLAS threads idle-spinning would count as the client's CPU
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.client_timeout, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{kind} client failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds of every (client, concurrency) pair (default 3)")
    p.add_argument("--requests", type=int, default=20000, help="measured calls per client run (default 20000)")
    p.add_argument("--warmup", type=int, default=2000, help="calls before measuring (default 2000)")
    p.add_argument("--concurrency", default="16,64", help="calls in flight, comma-separated (default 16,64)")
    p.add_argument("--deadline", type=float, default=5.0, help="per-call deadline in s (default 5)")
    p.add_argument("--go-us", type=float, default=80.0, help="go if nghttp2 CPU-us per call is at most this (default 80)")
    p.add_argument("--client-timeout", type=float, default=300.0, help=argparse.SUPPRESS)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--client", choices=CLIENTS, help=argparse.SUPPRESS)
    p.add_argument("--address", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        args.concurrency = int(args.concurrency)
        return client_main(args)
    for name in ("rounds", "requests"):
        if getattr(args, name) < 1 or getattr(args, name) > 1_000_000:
            p.error(f"--{name}: must be in 1..1000000")
    levels = [int(c) for c in args.concurrency.split(",")]
    from shadowgrpc.h2 import AVAILABLE
    from shadowgrpc.local import EmbeddedTriton, example_repository

    if not AVAILABLE:
        print("h2_spike: shadowgrpc._h2_c is not built (libnghttp2-dev missing at build time: `make sysdeps build`)", file=sys.stderr)
        return 2
    work = pathlib.Path(tempfile.mkdtemp(prefix="shadowgrpc-h2spike-"))
    runs: list[dict] = []
    with EmbeddedTriton(example_repository(), log_path=work / "tritonserver.log", extra_args=["--exit-timeout-secs=5"]) as triton:
        print(f"Triton at {triton.grpc_address}; {args.rounds} rounds x {len(levels)} levels x {len(CLIENTS)} clients, "
              f"{args.requests} calls each", file=sys.stderr)
        for r in range(args.rounds):
            for c in levels:
                for kind in (CLIENTS if r % 2 == 0 else CLIENTS[::-1]):
                    res = run_client(kind, triton.grpc_address, c, args)
                    res["round"] = r
                    runs.append(res)
                    print(f"  round {r + 1} c={c:<3d} {kind:8s} {res['cpu_us_per_call']:7.1f} CPU-us/call  {res['rps']:8.0f} calls/s"
                          f"  errors {res['errors']}", file=sys.stderr, flush=True)
    digests = {r["digest"] for r in runs}
    summary: dict[str, dict] = {}
    print(f"\n{'concurrency':>11} {'client':>8} {'CPU-us/call':>12} {'calls/s':>9} {'errors':>7}")
    for c in levels:
        for kind in CLIENTS:
            rs = [r for r in runs if r["kind"] == kind and r["concurrency"] == c]
            s = summary[f"{kind}@{c}"] = {"cpu_us_per_call": statistics.median(r["cpu_us_per_call"] for r in rs),
                                          "rps": statistics.median(r["rps"] for r in rs), "errors": sum(r["errors"] for r in rs)}
            print(f"{c:>11} {kind:>8} {s['cpu_us_per_call']:>12.1f} {s['rps']:>9.0f} {s['errors']:>7}")
    go = True
    print()
    for c in levels:
        g, n = summary[f"grpcio@{c}"], summary[f"nghttp2@{c}"]
        ok = n["cpu_us_per_call"] <= args.go_us and n["errors"] == 0
        go &= ok
        print(f"concurrency {c}: nghttp2 / grpcio CPU per call = {n['cpu_us_per_call'] / g['cpu_us_per_call']:.3f}  "
              f"(saves {g['cpu_us_per_call'] - n['cpu_us_per_call']:.0f} us); throughput {n['rps'] / g['rps']:.2f}x; "
              f"{n['cpu_us_per_call']:.1f} <= {args.go_us:.0f} us: {'yes' if ok else 'NO'}")
    same = len(digests) == 1
    print(f"responses byte-identical across clients and runs: {'yes' if same else 'NO'}")
    verdict = "GO" if go and same else "NO-GO"
    print(f"verdict: {verdict}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary, "verdict": verdict}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
