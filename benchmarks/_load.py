"""Client load generator for the benchmarks: a grpc.aio client in its own process.

The client sends pre-serialized ``inference.ModelInferRequest`` bytes through a raw-bytes stub
(``request_serializer=None, response_deserializer=None``), so the client does no protobuf work per
call and the same bytes go to Triton directly or to the front.

``ClientProcess`` starts the client (multiprocessing, spawn) and talks to it over a pipe in lock
step, so that the caller can read the server's CPU counters right before and right after a
measured phase::

    with ClientProcess() as client:
        client.open("127.0.0.1:8001")
        client.run(Phase("warmup", count=500, concurrency=8))
        before = read_cpu(pid)
        seq = client.run(Phase("seq", count=1000, concurrency=1))
        after = read_cpu(pid)

Every phase is bounded in count *and* in time (``max_seconds``). Latency is measured around each
``await`` in the client (perf_counter); every non-OK status is counted by code name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import sys
import time
from collections import Counter
from typing import Any

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),  # a channel of its own, never shared
    ("grpc.enable_retries", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@dataclasses.dataclass(frozen=True)
class Phase:
    """One measured (or warm-up) phase.

    ``count`` requests with ``concurrency`` in flight (1 = sequential), each with ``deadline_s``;
    the phase stops early when ``max_seconds`` have passed (``truncated`` is then set in the
    result). ``progress`` prints a line on stderr every ``progress_every_s`` seconds.
    """

    name: str
    count: int
    concurrency: int = 1
    deadline_s: float = 1.0
    max_seconds: float = 120.0
    progress: bool = False
    progress_every_s: float = 10.0
    keep_latencies: bool = False  # return every latency (seconds, in completion order)
    traceparent: bool = False  # send a sampled W3C traceparent (a new trace id per request, up to 1024 ids) as a traced caller would


def build_requests(n: int = 256, *, model: str = "fraud", version: str = "1", seed: int = 7, prefix: str = "bench") -> list[bytes]:
    """``n`` serialized ModelInferRequests for ``model``:``version``, one row each, features from
    ``shadowgrpc.examples.data.make_transactions`` (non-finite rows never occur there), request
    ids ``<prefix>-<i>``."""
    import numpy as np
    from tritonclient.grpc import service_pb2

    from shadowgrpc.examples.data import make_transactions

    features, _ = make_transactions(n, seed=seed)
    out = []
    for i in range(n):
        req = service_pb2.ModelInferRequest(model_name=model, model_version=version, id=f"{prefix}-{i:06d}")
        req.inputs.add(name="features", datatype="FP32", shape=[1, 8])
        req.outputs.add(name="probability")
        req.raw_input_contents.append(np.ascontiguousarray(features[i : i + 1], dtype="<f4").tobytes())
        out.append(req.SerializeToString())
    return out


def summarize(latencies_s: list[float], errors: Counter, wall_s: float, count_sent: int) -> dict[str, Any]:
    """Latency percentiles (ms) of successful calls, throughput, errors by code."""
    import numpy as np

    ok = len(latencies_s)
    res: dict[str, Any] = {
        "sent": count_sent,
        "ok": ok,
        "errors": dict(errors),
        "error_count": int(sum(errors.values())),
        "wall_s": wall_s,
        "rps": (count_sent / wall_s) if wall_s > 0 else 0.0,
        "ok_rps": (ok / wall_s) if wall_s > 0 else 0.0,
    }
    if ok:
        a = np.asarray(latencies_s, dtype=np.float64) * 1e3
        p = np.percentile(a, [50, 90, 99, 99.9])
        res.update(p50_ms=float(p[0]), p90_ms=float(p[1]), p99_ms=float(p[2]), p999_ms=float(p[3]),
                   mean_ms=float(a.mean()), min_ms=float(a.min()), max_ms=float(a.max()))
    else:
        res.update(p50_ms=None, p90_ms=None, p99_ms=None, p999_ms=None, mean_ms=None, min_ms=None, max_ms=None)
    return res


# -------------------------------------------------------------------------------------------
# The client process
# -------------------------------------------------------------------------------------------


class _Client:
    def __init__(self, requests: list[bytes], label: str) -> None:
        self.requests = requests
        self.label = label
        self.channel = None
        self.call = None
        self.target = ""

    async def open(self, target: str, timeout: float) -> None:
        import grpc

        await self.close()
        self.target = target
        self.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.call = self.channel.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
        await asyncio.wait_for(self.channel.channel_ready(), timeout)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        self.channel = self.call = None

    async def one(self, index: int, deadline_s: float) -> bytes:
        return await self.call(self.requests[index % len(self.requests)], timeout=deadline_s)

    async def run(self, ph: Phase) -> dict[str, Any]:
        import grpc

        assert self.call is not None, "open() first"
        call = self.call
        reqs = self.requests
        nreq = len(reqs)
        lat: list[float] = []
        errors: Counter = Counter()
        perf = time.perf_counter
        # Made before the clock starts: the client does no trace work per request.
        tps = [(("traceparent", f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"),) for _ in range(1024)] if ph.traceparent else None
        t_start = perf()
        t_stop = t_start + ph.max_seconds
        state = {"next": 0, "truncated": False}
        cpu0 = time.process_time()

        async def worker() -> None:
            while True:
                i = state["next"]
                if i >= ph.count:
                    return
                if perf() >= t_stop:
                    state["truncated"] = True
                    return
                state["next"] = i + 1
                t0 = perf()
                try:
                    await call(reqs[i % nreq], timeout=ph.deadline_s, metadata=tps[i & 1023] if tps else None)
                except grpc.aio.AioRpcError as e:
                    errors[e.code().name] += 1
                    continue
                except Exception as e:  # noqa: BLE001 - counted, never fatal for the load
                    errors[f"CLIENT_{type(e).__name__}"] += 1
                    continue
                lat.append(perf() - t0)

        async def progress() -> None:
            last_n, last_t = 0, t_start
            while True:
                await asyncio.sleep(ph.progress_every_s)
                n, t = state["next"], perf()
                print(
                    f"  [{self.label}] {ph.name}: {n}/{ph.count} requests, {(n - last_n) / (t - last_t):.0f} req/s, "
                    f"errors {sum(errors.values())}",
                    file=sys.stderr, flush=True,
                )
                last_n, last_t = n, t

        prog = asyncio.create_task(progress()) if ph.progress else None
        try:
            await asyncio.gather(*(worker() for _ in range(max(1, ph.concurrency))))
        finally:
            if prog is not None:
                prog.cancel()
        wall = perf() - t_start
        res = summarize(lat, errors, wall, state["next"])
        res.update(name=ph.name, concurrency=ph.concurrency, deadline_s=ph.deadline_s, truncated=state["truncated"],
                   client_cpu_s=time.process_time() - cpu0)
        if ph.keep_latencies:
            res["latencies_s"] = lat
        return res


def _serve(conn, requests: list[bytes], label: str, loop_kind: str) -> None:
    """The client process: run commands from ``conn`` until 'exit'.

    Blocking on the pipe between commands is fine: no RPC is in flight then.
    """

    async def main() -> None:
        client = _Client(requests, label)
        try:
            while True:
                cmd, arg = conn.recv()
                try:
                    if cmd == "exit":
                        conn.send(("ok", None))
                        return
                    if cmd == "open":
                        await client.open(arg["target"], arg.get("timeout", 10.0))
                        conn.send(("ok", None))
                    elif cmd == "close":
                        await client.close()
                        conn.send(("ok", None))
                    elif cmd == "run":
                        conn.send(("ok", await client.run(arg)))
                    elif cmd == "one":
                        conn.send(("ok", await client.one(arg["index"], arg.get("deadline_s", 1.0))))
                    else:
                        conn.send(("error", f"unknown command {cmd!r}"))
                except Exception as e:  # noqa: BLE001 - reported to the caller
                    conn.send(("error", f"{type(e).__name__}: {e}"))
        finally:
            await client.close()

    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def _child_main(conn, n_requests: int, label: str, loop_kind: str) -> None:
    # Keep the client off the benchmark's stdout; errors still go to stderr.
    requests = build_requests(n_requests)
    conn.send(("ready", os.getpid()))
    _serve(conn, requests, label, loop_kind)


class ClientProcess:
    """The load client in a separate process (multiprocessing, spawn), driven in lock step."""

    def __init__(self, *, n_requests: int = 256, label: str = "client", loop: str = "asyncio", start_timeout: float = 60.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(child, n_requests, label, loop), name=f"bench-{label}", daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(start_timeout):
            self.kill()
            raise RuntimeError(f"load client did not start within {start_timeout:.0f} s")
        try:
            kind, pid = self._conn.recv()
        except EOFError:
            self._proc.join(5)
            raise RuntimeError(f"load client exited at start (exit code {self._proc.exitcode}); see its stderr") from None
        if kind != "ready":
            self.kill()
            raise RuntimeError(f"load client: unexpected first message {kind!r}")
        self.pid = pid

    def _cmd(self, cmd: str, arg: Any = None, timeout: float = 60.0, on_wait=None) -> Any:
        self._conn.send((cmd, arg))
        deadline = time.monotonic() + timeout
        while not self._conn.poll(0.5 if on_wait else min(5.0, timeout)):
            if on_wait is not None:
                on_wait()
            if not self._proc.is_alive():
                raise RuntimeError(f"load client died (exit code {self._proc.exitcode}) during {cmd!r}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"load client: {cmd!r} did not finish within {timeout:.0f} s")
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"load client: {cmd!r} failed: {value}")
        return value

    def open(self, target: str, timeout: float = 15.0) -> None:
        self._cmd("open", {"target": target, "timeout": timeout}, timeout + 10)

    def close_channel(self) -> None:
        self._cmd("close", None, 15)

    def one(self, index: int = 0, deadline_s: float = 1.0) -> bytes:
        """Send request ``index`` once; its raw response bytes (for byte-identity checks)."""
        return self._cmd("one", {"index": index, "deadline_s": deadline_s}, deadline_s + 15)

    def run(self, phase: Phase, on_wait=None) -> dict[str, Any]:
        """Run a phase; ``on_wait()`` is called about every 0.5 s meanwhile (e.g. to sample RSS)."""
        return self._cmd("run", phase, phase.max_seconds + phase.deadline_s + 30, on_wait)

    def kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(5)

    def close(self) -> None:
        try:
            if self._proc.is_alive():
                self._cmd("exit", None, 10)
        except (RuntimeError, OSError, EOFError):
            pass
        self._proc.join(10)
        if self._proc.is_alive():
            self.kill()
        self._conn.close()

    def __enter__(self) -> ClientProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
