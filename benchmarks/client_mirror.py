#!/usr/bin/env python3
"""What the client-side mirror costs the caller: live latency of tritonclient.grpc calls to Triton
directly, with and without a ``ShadowMirror`` installed on the client (``mirror_tritonclient``).

Variants, side by side in one run against ONE embedded Triton (example repository + tests/models,
``SHADOWGRPC_SLEEPY_SECONDS=2``) and one collector front (``python -m shadowgrpc serve``, its own
process) that receives the mirrors' reports:

  none   no mirror
  none2  no mirror either (a second client): none2 vs none is the run's noise floor (A/A)
  dead   the shadow endpoint is a closed loopback port
  slow   the shadow is ``fraud_sleepy`` (answers after 2 s) with deadline_s 0.5
  good   the shadow is fraud v2 on the same Triton (so Triton does twice the work)

The load: fraud v1, 1 row, request id set, client_timeout 1 s, through ``client.infer``; a
sequential phase (p50/p99) and a phase with 8 threads each running calls back to back (p50/p99,
throughput). Variants are interleaved in rounds (order rotated each round; ``--rounds``) with a
pause between blocks, and every variant's samples are pooled; ratios are against ``none`` in the
same run. The target (issue 12): dead and slow within 1.10x of no mirror on p50 and p99 (PASS/FAIL);
``good`` is informational (its shadow shares the live Triton's CPUs). Also printed, for attribution
only: the CPU per call of this process (the caller, with its mirror's thread), of the collector
front and of Triton (its process group), over each variant's blocks. The mirrors use the client
mirror's defaults (outlier breaker on) unless ``--max-in-flight`` / ``--eject-after`` (0: breaker
off, as before it existed) say otherwise.

Run:  python benchmarks/client_mirror.py [--quick] [--rounds N] [--max-in-flight N] [--eject-after N] [--json results.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import tempfile
import threading
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if importlib.util.find_spec("shadowgrpc") is None:  # not installed: use this checkout
    sys.path.append(str(REPO_ROOT))

if __package__:
    from ._fronts import FrontProcess, SLEEPY_SECONDS, build_repository, closed_port, group_cpu_s, log, proc_cpu_s
else:  # run as a script: benchmarks/ is sys.path[0]
    from _fronts import FrontProcess, SLEEPY_SECONDS, build_repository, closed_port, group_cpu_s, log, proc_cpu_s

VARIANTS = ("none", "none2", "dead", "slow", "good")
TARGET = 1.10
SLOW_DEADLINE_S = 0.5
THREADS = 8
PAUSE_S = 0.3

COLLECTOR = """[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
default_live = "{triton}"
grace_s = 2.0

[[routes]]
model = "fraud"
live = {{ version = "1" }}
shadows = [
  {{ name = "dead", model = "fraud", version = "2" }},
  {{ name = "slow", model = "fraud_sleepy" }},
  {{ name = "good", model = "fraud", version = "2" }},
]
"""


def _inputs(rows: np.ndarray):
    import tritonclient.grpc as grpcclient

    x = grpcclient.InferInput("features", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows)
    return [x]


def _sequential(client, feats: np.ndarray, n: int, tag: str) -> list[float]:
    out = []
    for i in range(n):
        inputs = _inputs(feats[i % len(feats) : i % len(feats) + 1])
        t0 = time.perf_counter()
        client.infer("fraud", inputs, model_version="1", request_id=f"{tag}-{i}", client_timeout=1.0)
        out.append(time.perf_counter() - t0)
    return out


def _concurrent(client, feats: np.ndarray, per_thread: int, tag: str) -> tuple[list[float], float]:
    lat: list[list[float]] = [[] for _ in range(THREADS)]

    def worker(k: int) -> None:
        lat[k] = _sequential(client, feats[k * 50 :], per_thread, f"{tag}-t{k}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return [x for part in lat for x in part], wall


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) * 1e3


def run(args: argparse.Namespace) -> dict:
    import tritonclient.grpc as grpcclient

    from shadowgrpc.client import ShadowMirror, fetch_report, mirror_tritonclient
    from shadowgrpc.examples.data import make_transactions
    from shadowgrpc.local import EmbeddedTriton

    rounds = 3 if args.quick else args.rounds
    seq_n = 60 if args.quick else 250  # per block: 8 rounds x 250 = 2,000 sequential calls per variant
    per_thread = 10 if args.quick else 40  # per block: 8 threads x 40 x 8 rounds = 2,560 calls per variant
    feats, _ = make_transactions(2000, seed=5)
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    work = pathlib.Path(tempfile.mkdtemp(prefix="client-mirror-bench-"))
    repo = build_repository(work / "models")
    sock, down_port = closed_port()
    env = {"SHADOWGRPC_SLEEPY_SECONDS": str(SLEEPY_SECONDS), "SHADOWGRPC_RECORDER_PATH": str(work / "recorder.jsonl")}
    with EmbeddedTriton(repo, log_path=work / "tritonserver.log", env=env, extra_args=["--exit-timeout-secs=5"]) as triton:
        log(f"Triton ready at {triton.grpc_address}; starting the collector front ...")
        collector = FrontProcess("collector", work, COLLECTOR.format(triton=triton.grpc_address), "asyncio", "collector").start()
        try:
            shadows = {"dead": (f"127.0.0.1:{down_port}", "fraud", "2", None), "slow": (triton.grpc_address, "fraud_sleepy", "", SLOW_DEADLINE_S),
                       "good": (triton.grpc_address, "fraud", "2", None)}  # fmt: skip
            kw = {k: getattr(args, k) for k in ("max_in_flight", "eject_after") if getattr(args, k) is not None}
            mirrors = {
                v: ShadowMirror(addr, collector.admin_address, "fraud", v, model=model, version=version, deadline_s=deadline, **kw)
                for v, (addr, model, version, deadline) in shadows.items()
            }
            clients = {v: grpcclient.InferenceServerClient(triton.grpc_address) for v in VARIANTS}
            for v, m in mirrors.items():
                mirror_tritonclient(clients[v], m)
            for v in VARIANTS:  # warm-up: connections, Triton's first calls
                _sequential(clients[v], feats, 30, f"warm-{v}")
            time.sleep(SLOW_DEADLINE_S + PAUSE_S)
            seq: dict[str, list[float]] = {v: [] for v in VARIANTS}
            conc: dict[str, list[float]] = {v: [] for v in VARIANTS}
            conc_wall = dict.fromkeys(VARIANTS, 0.0)
            cpu = {v: [0.0, 0.0, 0.0] for v in VARIANTS}  # this process, the collector, Triton (s)

            def cpu_now() -> tuple[float, float, float]:
                return time.process_time(), proc_cpu_s(collector.pid), group_cpu_s(triton.pid)
            t_start = time.monotonic()
            for r in range(rounds):
                order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
                for v in order:
                    c0 = cpu_now()
                    seq[v] += _sequential(clients[v], feats, seq_n, f"r{r}-{v}")
                    time.sleep(PAUSE_S)
                    lat, wall = _concurrent(clients[v], feats, per_thread, f"r{r}-{v}-c")
                    conc[v] += lat
                    conc_wall[v] += wall
                    time.sleep(PAUSE_S)
                    cpu[v] = [a + b - c for a, b, c in zip(cpu[v], cpu_now(), c0)]
                log(f"round {r + 1}/{rounds} done ({time.monotonic() - t_start:.0f} s)")
            for c in clients.values():
                c.close()
            for m in mirrors.values():
                m.close(5)
            rep = fetch_report(collector.admin_address, "fraud")
            collected = {s.target.name: {"sampled": s.sampled, "sent": s.sent, "ok": s.ok, "shed": s.shed, "down": s.down,
                                         "errors": dict(s.errors), "compared": s.compared, "decision": s.verdict.decision}
                         for s in rep.routes[0].shadows}  # fmt: skip
        finally:
            collector.stop()
            sock.close()
    rows = {}
    for v in VARIANTS:
        rows[v] = {
            "seq_n": len(seq[v]), "seq_p50_ms": _pct(seq[v], 50), "seq_p99_ms": _pct(seq[v], 99),
            "c8_n": len(conc[v]), "c8_p50_ms": _pct(conc[v], 50), "c8_p99_ms": _pct(conc[v], 99),
            "c8_rps": len(conc[v]) / conc_wall[v] if conc_wall[v] else 0.0,
            "cpu_us_per_call": dict(zip(("client", "collector", "triton"), (x / (len(seq[v]) + len(conc[v])) * 1e6 for x in cpu[v]))),
            "mirror": mirrors[v].stats() if v in mirrors else None, "collector": collected.get(v),
        }  # fmt: skip
    return {"rounds": rounds, "variants": rows, "target": TARGET, "mirror_options": kw}


def report(result: dict) -> bool:
    rows = result["variants"]
    base = rows["none"]
    keys = ("seq_p50_ms", "seq_p99_ms", "c8_p50_ms", "c8_p99_ms")
    print(f"\nclient-side mirror: live latency of tritonclient.grpc calls to Triton ({result['rounds']} interleaved rounds; "
          f"mirror options {result['mirror_options'] or 'defaults'})")
    print(f"{'variant':8} {'seq n':>6} {'seq p50':>8} {'seq p99':>8} {'c8 n':>6} {'c8 p50':>8} {'c8 p99':>8} {'c8 rps':>7}   ratios vs none (seq p50/p99, c8 p50/p99)")
    ok = True
    for v, r in rows.items():
        ratios = [r[k] / base[k] if base[k] else float("nan") for k in keys]
        judged = v in ("dead", "slow")
        verdict = ""
        if v != "none":
            passed = all(x <= TARGET for x in ratios)
            verdict = ("PASS" if passed else "FAIL") if judged else "(A/A: noise floor)" if v == "none2" else "(info)"
            ok &= passed or not judged
        print(f"{v:8} {r['seq_n']:6d} {r['seq_p50_ms']:8.3f} {r['seq_p99_ms']:8.3f} {r['c8_n']:6d} {r['c8_p50_ms']:8.3f} {r['c8_p99_ms']:8.3f} "
              f"{r['c8_rps']:7.0f}   " + " ".join(f"{x:5.3f}" for x in ratios) + f"  {verdict}")  # fmt: skip
    print(f"\ntarget: dead and slow within {TARGET:.2f}x of none on every column")
    print("CPU per call (us; the blocks' pauses included): " + "; ".join(
        f"{v} " + " ".join(f"{k} {x:.0f}" for k, x in r["cpu_us_per_call"].items()) for v, r in rows.items()))  # fmt: skip
    for v, r in rows.items():
        if r["mirror"] is not None:
            m = r["mirror"]
            print(f"  {v}: mirror sent {m['sent']} ok {m['ok']} errors {m['errors']} shed {m['shed']} {m['shed_reasons']} down {m['down']} "
                  f"breaker {m['breaker']} reported {m['reported']} dropped {m['report_dropped']} acknowledged {m['acknowledged']}; collector {r['collector']}")  # fmt: skip
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 short rounds (a smoke run, not a measurement)")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds (more: steadier p99; default 8)")
    ap.add_argument("--max-in-flight", type=int, help="the mirrors' max_in_flight (default: the mirror's default)")
    ap.add_argument("--eject-after", type=int, help="the mirrors' eject_after (0: no outlier breaker; default: the mirror's)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    result = run(args)
    result["pass"] = report(result)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2))
    return 0  # a benchmark prints its verdicts; it fails only when it could not measure


if __name__ == "__main__":
    sys.exit(main())
