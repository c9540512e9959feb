"""Fault tests under load (tests/triton/test_faults.py) and their benchmark (benchmarks/faults.py):
a load client in a process of its own and interleaved baseline/fault measurement (the processes
under test: tests/faultprocs.py).

``LoadClient`` (multiprocessing, spawn): raw-bytes grpc.aio channels to named targets, fraud v1
requests (one row each, ``benchmarks/_load.build_requests``). ``expect(address)`` takes every
request's answer from Triton direct once; from then on each OK answer of a block is checked
byte for byte against it (``mismatches``). ``block(label, seconds, rate)`` is an open loop: call
k is due at t0 + k/rate and its latency counts from that time; every call ends within its
deadline (``call_s`` keeps each failed call's own duration). Bounded in count and time.

``interleave`` loads a baseline and a fault front at once, their requests alternating one by one
(the finest interleaving, so that a burst of a shared machine's noise hits both), in blocks, and
pools each side's latencies (``Side``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import pathlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MAX_OUTSTANDING = 128
MAX_BLOCK_S = 120.0


# -------------------------------------------------------------------------------------------
# the client process
# -------------------------------------------------------------------------------------------


_NEXT = itertools.count()  # the client process's request counter: blocks go on cycling over every request


async def _block(calls: list, reqs: list[bytes], expected: list[bytes] | None, seconds: float, rate: float, deadline_s: float) -> list[dict]:
    """Open loop over ``calls`` in turn (call k goes to ``calls[k % len(calls)]``); one result per call target."""
    import grpc

    perf = time.perf_counter
    res = [{"lat": [], "errors": Counter(), "call_s": [], "mismatches": 0, "not_sent": 0, "sent": 0} for _ in calls]
    tasks: set[asyncio.Task] = set()
    pending = [set() for _ in calls]

    async def one(j: int, i: int, due: float) -> None:
        r = res[j]
        t0 = perf()
        try:
            resp = await calls[j](reqs[i], timeout=deadline_s)
        except grpc.aio.AioRpcError as e:
            r["errors"][e.code().name] += 1
            r["call_s"].append(perf() - t0)
            return
        except Exception as e:  # noqa: BLE001 - counted, never fatal for the load
            r["errors"][f"CLIENT_{type(e).__name__}"] += 1
            r["call_s"].append(perf() - t0)
            return
        r["lat"].append(perf() - due)
        if expected is not None and resp != expected[i]:
            r["mismatches"] += 1

    seconds = min(seconds, MAX_BLOCK_S)
    n = max(1, int(seconds * rate))
    t_start = perf()
    for k in range(n):
        j = k % len(calls)
        due = t_start + k / rate
        delay = due - perf()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= MAX_OUTSTANDING:
            res[j]["not_sent"] += 1
            continue
        res[j]["sent"] += 1
        t = asyncio.create_task(one(j, next(_NEXT) % len(reqs), due))
        tasks.add(t)
        pending[j].add(t)
        t.add_done_callback(tasks.discard)
        t.add_done_callback(pending[j].discard)
    if tasks:
        await asyncio.wait(set(tasks), timeout=deadline_s + 5.0)
    for j, r in enumerate(res):
        r["hung"] = len(pending[j])
        r["errors"] = dict(r["errors"])
        r["wall_s"] = perf() - t_start
    for t in list(tasks):
        t.cancel()
    return res


def _child(conn, n_requests: int, prefix: str) -> None:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from tritonclient.grpc import service_pb2

    from benchmarks._load import build_requests

    reqs = []
    for raw in build_requests(n_requests, prefix=prefix):  # no requested outputs: Triton answers every output it has
        req = service_pb2.ModelInferRequest.FromString(raw)
        del req.outputs[:]
        reqs.append(req.SerializeToString())
    conn.send(("ready", os.getpid()))

    async def main() -> None:
        import grpc

        opts = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)]
        channels: dict[str, Any] = {}
        calls: dict[str, Any] = {}
        expected: list[bytes] | None = None
        try:
            while True:
                cmd, arg = conn.recv()
                try:
                    if cmd == "exit":
                        conn.send(("ok", None))
                        return
                    if cmd == "open":
                        label, address = arg
                        if label in channels:
                            await channels.pop(label).close()
                        ch = channels[label] = grpc.aio.insecure_channel(address, options=opts)
                        calls[label] = ch.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
                        await asyncio.wait_for(ch.channel_ready(), 15.0)
                        conn.send(("ok", None))
                    elif cmd == "expect":
                        async with grpc.aio.insecure_channel(arg, options=opts) as ch:
                            direct = ch.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
                            expected = [await direct(r, timeout=10.0) for r in reqs]
                        conn.send(("ok", len(expected)))
                    elif cmd == "block":
                        labels, seconds, rate, deadline_s = arg
                        out = await _block([calls[x] for x in labels], reqs, expected, seconds, rate, deadline_s)
                        conn.send(("ok", dict(zip(labels, out))))
                    else:
                        conn.send(("error", f"unknown command {cmd!r}"))
                except Exception as e:  # noqa: BLE001 - reported to the caller
                    conn.send(("error", f"{type(e).__name__}: {e}"))
        finally:
            for ch in channels.values():
                await ch.close()

    asyncio.run(main())


class LoadClient:
    """The load client process, driven in lock step over a pipe (context manager)."""

    def __init__(self, n_requests: int = 256, prefix: str = "fault", start_s: float = 60.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child, n_requests, prefix), name="fault-load", daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(start_s):
            self.close()
            raise RuntimeError(f"load client did not start within {start_s:.0f} s")
        kind, self.pid = self._conn.recv()
        assert kind == "ready", kind

    def _cmd(self, cmd: str, arg: Any, timeout: float) -> Any:
        self._conn.send((cmd, arg))
        if not self._conn.poll(timeout):
            self.close()
            raise RuntimeError(f"load client: {cmd!r} did not finish within {timeout:.0f} s")
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"load client: {cmd!r} failed: {value}")
        return value

    def open(self, label: str, address: str) -> None:
        self._cmd("open", (label, address), 30.0)

    def expect(self, direct_address: str) -> int:
        """Take every request's answer from ``direct_address`` (Triton itself) as the reference."""
        return self._cmd("expect", direct_address, 120.0)

    def block(self, label: str, seconds: float, rate: float, deadline_s: float = 1.0) -> dict:
        """``seconds`` of load at ``rate`` on one target."""
        return self.mixed((label,), seconds, rate, deadline_s)[label]

    def mixed(self, labels: tuple[str, ...], seconds: float, rate: float, deadline_s: float = 1.0) -> dict[str, dict]:
        """``seconds`` of load at ``rate`` in all, request k to ``labels[k % len(labels)]``."""
        return self._cmd("block", (tuple(labels), seconds, rate, deadline_s), min(seconds, MAX_BLOCK_S) + deadline_s + 30.0)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._proc.is_alive():
                self._conn.send(("exit", None))
                self._conn.poll(10)
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()

    def __enter__(self) -> LoadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -------------------------------------------------------------------------------------------
# interleaved blocks
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Side:
    """One side's blocks, pooled: OK latencies (s, from each call's due time), errors by code,
    failed calls' own durations, answers that differ from Triton direct's."""

    lat: list[float] = dataclasses.field(default_factory=list)
    errors: Counter = dataclasses.field(default_factory=Counter)
    call_s: list[float] = dataclasses.field(default_factory=list)
    mismatches: int = 0
    sent: int = 0
    not_sent: int = 0
    hung: int = 0
    blocks: int = 0
    block_p99s: list[float] = dataclasses.field(default_factory=list)

    def add(self, r: Mapping[str, Any]) -> None:
        self.lat += r["lat"]
        self.errors.update(r["errors"])
        self.call_s += r["call_s"]
        self.mismatches += r["mismatches"]
        self.sent += r["sent"]
        self.not_sent += r["not_sent"]
        self.hung += r["hung"]
        self.blocks += 1
        if r["lat"]:
            self.block_p99s.append(pct(r["lat"], 99))

    @property
    def ok(self) -> int:
        return len(self.lat)

    def p(self, q: float) -> float:
        return pct(self.lat, q)

    def row(self) -> dict[str, Any]:
        return {"sent": self.sent, "ok": self.ok, "errors": dict(self.errors), "mismatches": self.mismatches, "not_sent": self.not_sent,
                "hung": self.hung, "p50_ms": self.p(50) * 1e3, "p99_ms": self.p(99) * 1e3, "max_ms": max(self.lat, default=0) * 1e3}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


@dataclasses.dataclass
class Compared:
    base: Side
    fault: Side

    @property
    def p99_ratio(self) -> float:
        return self.fault.p(99) / self.base.p(99)

    @property
    def p50_ratio(self) -> float:
        return self.fault.p(50) / self.base.p(50)

    def line(self, name: str) -> str:
        b, f = self.base, self.fault
        return (f"[{name}] base p50 {b.p(50) * 1e3:.2f} p99 {b.p(99) * 1e3:.2f} ms ({b.ok} ok) | fault p50 {f.p(50) * 1e3:.2f} "
                f"p99 {f.p(99) * 1e3:.2f} ms ({f.ok} ok) | p99 ratio {self.p99_ratio:.3f} p50 ratio {self.p50_ratio:.3f} | "
                f"errors base {dict(b.errors)} fault {dict(f.errors)}")


def interleave(client: LoadClient, base: str, fault: str, *, blocks: int, block_s: float, rate: float, deadline_s: float = 1.0,
               between: Callable[[int], None] | None = None) -> Compared:
    """``blocks`` blocks of ``block_s`` s at ``rate`` requests/s per side, the two sides'
    requests alternating one by one (base, fault, base, ...: the finest interleaving, so a
    burst of the machine's noise hits both); ``between(i)`` runs after block i."""
    sides = {base: Side(), fault: Side()}
    for b in range(blocks):
        order = (base, fault) if b % 2 == 0 else (fault, base)
        for label, r in client.mixed(order, block_s, 2 * rate, deadline_s).items():
            sides[label].add(r)
        if between is not None:
            between(b)
    return Compared(sides[base], sides[fault])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(every)


def rss_mib(pid: int | None = None) -> float:
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")
