#!/usr/bin/env python3
"""Soak: a steady request rate for --duration seconds (default 600) through a ``shadowgrpc serve``
front, with a flaky shadow: its own tritonserver is killed with SIGKILL and restarted every
--flap-s seconds.

Set-up (loopback only): a live tritonserver (EmbeddedTriton, the example ``fraud`` model) and a
second one for the shadow (``fraud`` v2), both real; the front is ``python -m shadowgrpc serve``
(a real process): route ``fraud`` live v1, shadow ``fraud`` v2 at the shadow tritonserver,
sample_rate 1. Load: benchmarks/load.py's open loop (request k due at t0 + k/R, latency from the
due time; tritonclient grpc.aio clients), one stretch per minute so that p50/p99 come per minute.

Memory held by design: the front keeps every prediction pair waiting for its ground truth for
server.outcome_ttl_s (600 s by default; at most 50,000 pairs / 256 MiB), so at 50 req/s its RSS
climbs for the first 10 minutes of any run, bounded, and a 10-minute soak with the default would
read that fill as growth. The soak sets outcome_ttl_s to --warmup-s (--outcome-ttl-s), so the
store is full (and steady: as many pairs expire as arrive) before the start reading, and prints
the pairs waiting per minute; --outcome-ttl-s 0 keeps the default.

Flaps: the shadow tritonserver's process group is SIGKILLed at --flap-s/2, then every --flap-s;
it stays down --down-s seconds, then starts again on the same ports. The first --warmup-s seconds
(load and flaps running) are excluded from growth. The start reading is the first sample after
them, the end reading the last one, with the front mirroring the shadow (see ``soak``).

Printed: the front's RSS and open fds at start (after warm-up), peak and end; live errors by
status; the shadow's sent/ok/shed/down/errors from GetReport (cumulative and per minute);
achieved rate; live p50/p99 per minute; and the targets as PASS/FAIL:
  * RSS growth (end - start) <= --rss-limit-mb (20 MB);
  * fds: end <= start + --fd-tolerance (0: both readings are taken with the shadow up, the same
    four client connections open and the front's channels to both tritonservers connected, so
    every fd the front holds at start is held at end; a leaked socket per flap shows as >= 1);
  * zero live errors (every caller answered OK within --timeout).
Exit status 0 only if every target passes.

Not in CI: ``make soak`` (about 11 minutes, warm-up included).

Run:  python benchmarks/soak.py [--duration 600] [--rate 50] [--json bench-results/soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
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
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _fronts import FrontProcess, log, write_json  # noqa: E402
from _soak_parts import COUNTS, FlakyShadow, Reports, fraud_repository, rss_mb  # noqa: E402
from load import Load, fd_count, loopback_address  # noqa: E402

MAX_DURATION_S = 3600.0
MAX_RATE = 2000.0


async def soak(args: argparse.Namespace, front: FrontProcess, shadow: FlakyShadow) -> dict[str, Any]:
    """The load, the flaps, a /proc sample every --sample-s and a GetReport every --report-s.

    A sample is "settled" when the shadow is up and the last two GetReports, both asked after it
    started, found it MIRRORING with more OK answers in the last than in the one before (the front
    is connected to it and sending): the start reading is the first
    settled sample after the warm-up, the end reading the last settled one, so that both see the
    front in the same state (its channel to the shadow connected; four client connections)."""
    load_args = argparse.Namespace(clients=args.clients, model="fraud", version="1", timeout=args.timeout, concurrency=None,
                                   rate=args.rate, max_outstanding=args.max_outstanding, sample_s=args.sample_s)
    load = Load(load_args, front.address, front.pid)
    reports = Reports(front.admin_address)
    shadow_counts = reports.counts
    samples: list[dict[str, Any]] = []
    polls: list[dict[str, Any]] = []
    minutes: list[dict[str, Any]] = []
    state: dict[str, Any] = {"settled": False, "since": 0.0}

    def settled() -> bool:  # the shadow is up, and both of the last two reports came after it started
        return state["settled"] and shadow.up.is_set() and state["since"] > shadow.last_up
    t0 = time.monotonic()

    async def sampler() -> None:
        while True:
            samples.append({"t_s": round(time.monotonic() - t0, 1), "rss_mb": rss_mb(front.pid), "fds": fd_count(front.pid),
                            "shadow_up": shadow.up.is_set(), "settled": settled()})
            await asyncio.sleep(args.sample_s)

    async def poller() -> None:
        last_ok, last_t = -1, 0.0
        while True:
            t = time.monotonic()
            c = await asyncio.to_thread(shadow_counts)
            ok = c.get("ok", -1)
            state["settled"] = c.get("status") == "MIRRORING" and last_ok >= 0 and ok > last_ok
            state["since"] = last_t
            polls.append({"t_s": round(t - t0, 1), "status": c.get("status"), "ok": ok, "settled": state["settled"]})
            last_ok, last_t = ok, t
            await asyncio.sleep(args.report_s)

    tasks = [asyncio.create_task(sampler()), asyncio.create_task(poller())]
    shadow.begin(t0)
    prev = await asyncio.to_thread(shadow_counts)
    try:
        spans = [(w, True) for w in chunks(args.warmup_s)] + [(d, False) for d in chunks(args.duration)]
        for i, (span, warm) in enumerate(spans):
            n0, e0, s0 = len(load.lat), load.errors.copy(), load.sent
            t_a = time.monotonic() - t0
            await load.phase(span, 10_000_000)
            lat = sorted(load.lat[n0:])
            counts = await asyncio.to_thread(shadow_counts)
            m = {"from_s": round(t_a, 1), "to_s": round(time.monotonic() - t0, 1), "sent": load.sent - s0, "ok": len(lat),
                 "errors": dict(load.errors - e0), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": lat[-1] * 1e3 if lat else None,
                 "warmup": warm, "rss_mb": rss_mb(front.pid), "fds": fd_count(front.pid), "pairs_waiting": counts.get("pairs_waiting"),
                 "shadow": {key: counts.get(key, 0) - prev.get(key, 0) for key in COUNTS}
                 if "failed" not in counts and "failed" not in prev else counts}
            prev = counts
            minutes.append(m)
            log(f"  [{m['to_s']:6.1f} s] sent {m['sent']} ok {m['ok']} errors {m['errors'] or 0} p50 {fmt(m['p50_ms'])} p99 {fmt(m['p99_ms'])} ms; "
                f"RSS {fmt(m['rss_mb'], 1)} MB fds {m['fds']}; pairs waiting {m['pairs_waiting']}; shadow {m['shadow']}" + ("  (warm-up)" if warm else ""))
            if warm and (i + 1 == len(spans) or not spans[i + 1][1]):  # the warm-up is over: forget its latencies and errors
                load.lat.clear()
                load.errors.clear()
                load.sent = load.not_sent = 0
                load.wall_s = 0.0
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await load.close()
    final = await asyncio.to_thread(shadow_counts)
    reports.close()
    after = [s for s in samples if s["t_s"] >= args.warmup_s]
    steady = [s for s in after if s["settled"]]
    start = steady[0] if steady else None
    end = steady[-1] if steady else None
    after = [s for s in after if start is None or s["t_s"] >= start["t_s"]]
    rss_values = [s["rss_mb"] for s in after if s["rss_mb"] is not None]
    fd_values = [s["fds"] for s in after if s["fds"] is not None]
    res = load.result("front")
    return {"start": start, "end": end, "last_sample": samples[-1] if samples else None,
            "rss_peak_mb": max(rss_values, default=None), "fds_peak": max(fd_values, default=None),
            "rss_slope_mb_per_min": slope([(s["t_s"], s["rss_mb"]) for s in after if s["rss_mb"] is not None]) * 60,
            "live": {k: res[k] for k in ("sent", "ok", "errors", "not_sent", "wall_s", "achieved_rps", "p50_ms", "p99_ms", "p99.9_ms", "max_ms")},
            "minutes": minutes, "shadow_report": final, "flaps": shadow.events, "polls": polls, "samples": samples}


def chunks(seconds: float, size: float = 60.0) -> list[float]:
    """``seconds`` cut into stretches of ``size`` (the last one shorter)."""
    out = []
    while seconds > 1e-6:
        out.append(min(size, seconds))
        seconds -= out[-1]
    return out


def pct(sorted_s: list[float], p: float) -> float | None:
    if not sorted_s:
        return None
    return sorted_s[min(len(sorted_s) - 1, int(round(p / 100 * (len(sorted_s) - 1))))] * 1e3


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per second); 0 with fewer than 2 points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def fmt(v: Any, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def verdicts(args: argparse.Namespace, r: dict[str, Any]) -> list[tuple[str, bool, str]]:
    s, e, live = r["start"] or {}, r["end"] or {}, r["live"]
    growth = (e["rss_mb"] - s["rss_mb"]) if s.get("rss_mb") is not None and e.get("rss_mb") is not None else None
    fd_ok = s.get("fds") is not None and e.get("fds") is not None and e["fds"] <= s["fds"] + args.fd_tolerance
    n_err = sum(live["errors"].values())
    return [
        ("RSS growth after warm-up", growth is not None and growth <= args.rss_limit_mb,
         f"{fmt(growth)} MB (start {fmt(s.get('rss_mb'), 1)}, peak {fmt(r['rss_peak_mb'], 1)}, end {fmt(e.get('rss_mb'), 1)}; "
         f"slope {r['rss_slope_mb_per_min']:+.3f} MB/min) <= {args.rss_limit_mb:g} MB"),
        ("no fd growth", fd_ok, f"start {s.get('fds')} at {s.get('t_s')} s, peak {r['fds_peak']}, end {e.get('fds')} at {e.get('t_s')} s "
         f"(end <= start + {args.fd_tolerance}; readings with the front mirroring the shadow)"),
        ("zero live errors", n_err == 0 and live["ok"] > 0,
         f"{n_err} errors ({', '.join(f'{k} {v}' for k, v in sorted(live['errors'].items())) or 'none'}) in {live['sent']} sent, {live['ok']} ok"),
    ]


def print_report(args: argparse.Namespace, r: dict[str, Any]) -> bool:
    live = r["live"]
    print(f"\nsoak: {args.duration:g} s measured after {args.warmup_s:g} s warm-up; offered {args.rate:g} req/s open loop, "
          f"{args.clients} clients, deadline {args.timeout:g} s; outcome_ttl_s {ttl_text(args)}; shadow tritonserver SIGKILLed every {args.flap_s:g} s, "
          f"down {args.down_s:g} s + its start time")
    print(f"{'minute':>12} {'sent':>6} {'ok':>6} {'errors':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'RSS MB':>8} {'fds':>4} {'pairs':>6}  shadow " + "/".join(COUNTS))
    for m in r["minutes"]:
        sh = m["shadow"]
        shs = "/".join(str(sh.get(k)) for k in COUNTS) if "failed" not in sh else str(sh)
        span = f"{m['from_s']:.0f}-{m['to_s']:.0f} s" + ("*" if m["warmup"] else "")
        print(f"{span:>12} {m['sent']:>6} {m['ok']:>6} {sum(m['errors'].values()):>8} {fmt(m['p50_ms']):>8} {fmt(m['p99_ms']):>8} "
              f"{fmt(m['max_ms']):>8} {fmt(m['rss_mb'], 1):>8} {m['fds']!s:>4} {m['pairs_waiting']!s:>6}  {shs}")
    print("(* warm-up, excluded from growth; pairs: prediction pairs waiting for ground truth, bounded by the store's "
          f"ttl {ttl_text(args)}, 50000 pairs, 256 MiB)")
    print(f"live after warm-up: sent {live['sent']}, ok {live['ok']}, achieved {live['achieved_rps']:.1f} req/s, p50 {fmt(live['p50_ms'])} "
          f"p99 {fmt(live['p99_ms'])} p99.9 {fmt(live['p99.9_ms'])} max {fmt(live['max_ms'])} ms; not sent (client saturated) {live['not_sent']}")
    sr = r["shadow_report"]
    print(f"shadow (GetReport, whole run): {sr}")
    ups = [f.get("start_s") for f in r["flaps"]]
    print(f"flaps: {len(r['flaps'])} SIGKILLs; restart times {ups} s")
    if r["start"] is None:
        print("no settled reading after the warm-up: the front never mirrored the shadow again between two flaps (--flap-s too short?)")
    ok_all = True
    for name, ok, detail in verdicts(args, r):
        ok_all &= ok
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return ok_all


def ttl_text(args: argparse.Namespace) -> str:
    return f"{args.outcome_ttl_s:g} s" if args.outcome_ttl_s else "600 s (the default)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="soak.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog="Loopback only; bounded by --warmup-s + --duration (plus start-up and shut-down).")
    p.add_argument("--duration", type=float, default=600.0, help=f"measured seconds after the warm-up (<= {MAX_DURATION_S:g})")
    p.add_argument("--warmup-s", type=float, default=60.0, help="seconds of load (and flaps) before the start reading, excluded from growth")
    p.add_argument("--rate", type=float, default=50.0, help=f"requests started per second, open loop (<= {MAX_RATE:g})")
    p.add_argument("--flap-s", type=float, default=60.0, help="the shadow tritonserver is SIGKILLed every this many seconds (first at half of it)")
    p.add_argument("--down-s", type=float, default=5.0, help="seconds it stays down before it is started again")
    p.add_argument("--clients", type=int, default=4, help="tritonclient.grpc.aio clients (one connection each)")
    p.add_argument("--timeout", type=float, default=2.0, help="deadline of each live request, seconds")
    p.add_argument("--max-outstanding", type=int, default=256, help="most live requests in flight; a due request beyond is counted not sent")
    p.add_argument("--sample-s", type=float, default=1.0, help="RSS/fd sampling interval, seconds")
    p.add_argument("--report-s", type=float, default=5.0, help="GetReport interval, seconds (the shadow's state for the readings)")
    p.add_argument("--rss-limit-mb", type=float, default=20.0, help="target: RSS growth after warm-up, MB")
    p.add_argument("--fd-tolerance", type=int, default=0, help="target: end fds <= start fds + this")
    p.add_argument("--outcome-ttl-s", type=float, help="the front's server.outcome_ttl_s; default: --warmup-s, so that the "
                   "bounded store of pairs waiting for ground truth is full before the start reading (0: the front's default, 600 s)")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop", help="event loop of the front")
    p.add_argument("--json", metavar="PATH", help="write the results (per-minute rows, every sample) here")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (repositories, config, logs)")
    a = p.parse_args(argv)
    if not 0 < a.duration <= MAX_DURATION_S:
        p.error(f"--duration: must be in (0, {MAX_DURATION_S:g}]")
    if not 0 <= a.warmup_s <= 600:
        p.error("--warmup-s: must be in [0, 600]")
    if not 0 < a.rate <= MAX_RATE:
        p.error(f"--rate: must be in (0, {MAX_RATE:g}]")
    if not 5 <= a.flap_s <= 3600 or not 0 <= a.down_s < a.flap_s:
        p.error("--flap-s in [5, 3600], --down-s in [0, flap-s)")
    if not 0 < a.clients <= 64 or not 0 < a.max_outstanding <= 65536 or not 0 < a.timeout <= 60 or not 0.05 <= a.sample_s <= 60 \
            or not 0.5 <= a.report_s <= 60:
        p.error("--clients in [1, 64], --max-outstanding in [1, 65536], --timeout in (0, 60], --sample-s in [0.05, 60], --report-s in [0.5, 60]")
    if a.outcome_ttl_s is None:
        a.outcome_ttl_s = a.warmup_s
    if a.outcome_ttl_s and not 1 <= a.outcome_ttl_s <= 7 * 86400:
        p.error("--outcome-ttl-s: 0 (the default 600 s) or in [1, 604800]")
    if a.rss_limit_mb <= 0 or a.fd_tolerance < 0:
        p.error("--rss-limit-mb > 0, --fd-tolerance >= 0")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from shadowgrpc.local import EmbeddedTriton

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="shadowgrpc-soak-"))
    result: dict[str, Any] = {"args": vars(args), "loadavg_start": os.getloadavg(), "cpu_count": os.cpu_count()}
    front = shadow = None
    ok = False
    try:
        log("starting the live and the shadow tritonserver ...")
        with EmbeddedTriton(fraud_repository(workdir / "live-models", "1"), log_path=workdir / "live-triton.log",
                            extra_args=["--exit-timeout-secs=5"]) as live:
            shadow = FlakyShadow(fraud_repository(workdir / "shadow-models", "2"), workdir, args.flap_s, args.down_s)
            cfg = f"""[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
default_live = "{live.grpc_address}"
grace_s = 5.0
{f"outcome_ttl_s = {args.outcome_ttl_s}" if args.outcome_ttl_s else ""}

[[routes]]
model = "fraud"
live = {{ version = "1" }}

[[routes.shadows]]
name = "fraud-v2-flaky"
model = "fraud"
version = "2"
address = "{shadow.address}"
sample_rate = 1.0
"""
            front = FrontProcess("soak", workdir, cfg, args.loop, "soak").start()
            for addr in (live.grpc_address, shadow.address, front.address):
                loopback_address(addr)
            log(f"live {live.grpc_address} (pid {live.pid}), shadow {shadow.address}, front {front.address} (pid {front.pid}); "
                f"{args.warmup_s + args.duration:.0f} s of load")
            result.update(asyncio.run(soak(args, front, shadow)))
            result["loadavg_end"] = os.getloadavg()
            result["front_stop"] = front.stop()
            ok = print_report(args, result)
            result["verdicts"] = [{"target": n, "pass": v, "detail": d} for n, v, d in verdicts(args, result)]
            if result["front_stop"]["exit_code"] != 0:
                ok = False
                print(f"!!! front exited with {result['front_stop']['exit_code']}:\n{front.log_tail()}")
    finally:
        if front is not None:
            front.kill()
        if shadow is not None:
            shadow.close()
    print(f"load average at start {result['loadavg_start']}, at end {result.get('loadavg_end')} ({result['cpu_count']} CPUs, shared)")
    if args.json:
        write_json(args.json, result)
    if args.keep_temp or not ok:
        log(f"temp dir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
