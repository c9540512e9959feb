"""``shadowgrpc serve --workers N``: N data-plane processes on one port, one admin endpoint.

The recipe of grpc's examples/python/multiprocessing: the parent reserves ``server.listen`` with a SO_REUSEPORT
socket (bound, never listening; port 0 becomes a real port), kept open while the workers run, and forks the N workers
*before any grpc object exists in it* (grpc's C core does not survive a fork once started). Each worker is a normal
``server.Front`` on the reserved port (the kernel spreads new connections over the workers) with its own admin server
on a private ``127.0.0.1:0``, reported back through a pipe. Only then does the parent start grpc: its admin server on
``server.admin_listen`` serves ShadowControl for all of them:

- GetReport: every worker's snapshot, merged exactly (``snapshot.merge``), and the report built from the merge (plus
  the merged snapshot when asked): the report of one front that saw all the traffic (``replicas`` says N).
- RecordOutcomes: exactly one worker records each outcome, so every counter (accepted, unknown, duplicate, ...,
  rejected by reason) counts it once and the workers' reports add up to the parent's. Per batch of outcomes a private
  ``Peek`` asks every worker which ids it holds (a waiting pair, or answered before); each outcome then goes through
  the RecordOutcomes of the worker that holds it, or of worker 0 when none does (which answers unknown or rejects it
  as one front would); the caller gets the sum. Not detected: one id carried by requests that landed on two workers
  (one front would say "reused"): the first worker's pair is scored, the other expires.
- ListRoutes: worker 0's; ReportPairs (a client-side mirror's stream): one worker, round-robin; Reload (and SIGHUP
  to the parent): the config loaded and checked here, then each worker's Reload applies it (reload.py); health and
  reflection as on a single front's admin port.

Lifecycle: SIGTERM/SIGINT to the parent -> SIGTERM to every worker (each drains as one front does), wait
(server.stop_timeout_s + 15 s, then SIGKILL); exit 0 when every worker exited 0. A worker that dies on its own is
logged, the others stopped, exit 1 (no restart: forking once the parent runs grpc is what the recipe forbids).
Workers ignore SIGINT and SIGHUP (a terminal's reach the whole group; the parent relays them) and stop when the
parent dies (EOF on a pipe only it writes to). --metrics-port P: worker i on P + i (0: each a free port). Budgets
are split: worker i gets its share of each (budget.set_share), the merged report adds them up. """

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any

from . import __version__
from ._config_security import worker_security
from ._workers_control import PEEK
from .budget import set_share, startup_lines
from .config import Settings

log = logging.getLogger("shadowgrpc.workers")

MAX_WORKERS = 256
START_TIMEOUT_S = 60.0
STOP_MARGIN_S = 15.0


@dataclasses.dataclass
class Worker:
    index: int
    process: Any  # multiprocessing.Process
    ready_fd: int
    admin_port: int = 0
    metrics_port: int | None = None

    pid = property(lambda self: self.process.pid)
    admin_address = property(lambda self: f"127.0.0.1:{self.admin_port}")


def _run(coro, loop_kind: str):
    if loop_kind == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


# -- the port --------------------------------------------------------------------------------------
def reserve_port(listen: str) -> tuple[socket.socket, str]:
    """A bound (not listening) SO_REUSEPORT socket on ``listen`` and the address with its real port.
    Wildcards ("0.0.0.0", "[::]") reserve the port dual-stack, as grpc binds them."""
    host, _, port = listen.rpartition(":")
    bare = host[1:-1] if host.startswith("[") else host
    try:
        if bare in ("0.0.0.0", "::", "") and socket.has_ipv6:
            family, addr = socket.AF_INET6, ("::", int(port))
        else:
            family, _, _, _, addr = socket.getaddrinfo(bare, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise OSError(f"server.listen: cannot listen on {listen}: {e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and addr[0] == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise OSError(f"server.listen: cannot listen on {listen}: {e.strerror or e}") from None
    return sock, f"{host}:{sock.getsockname()[1]}"


# -- a worker (in the child) -----------------------------------------------------------------------
def _worker_main(index: int, settings: Settings, telemetry, loop_kind: str, ready_w: int, lifeline_r: int, lifeline_w: int, reserved: socket.socket) -> None:
    os.close(lifeline_w)  # only the parent holds it: EOF on lifeline_r means the parent is gone
    reserved.close()  # the parent's reservation; this worker binds the port through grpc
    for sig in (signal.SIGINT, signal.SIGHUP):  # the parent relays both
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(_run(_worker(index, settings, telemetry, ready_w, lifeline_r), loop_kind))


async def _worker(index: int, settings: Settings, telemetry, ready_w: int, lifeline_r: int) -> int:
    import grpc

    from .server import Front

    front = Front(settings, telemetry)
    front.pinned = {"listen": settings.listen, "admin_listen": settings.admin_listen, "gate_listen": "", "security": worker_security}  # reloads (reload.py)

    async def peek(raw: bytes, context) -> bytes:
        store = front.router.pairs
        return json.dumps([store.holds(rid) for rid in json.loads(raw)]).encode()  # anything but "unknown" (nothing counted)

    handler = grpc.unary_unary_rpc_method_handler(peek)
    front.admin.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(PEEK.split("/")[1], {"Peek": handler}),))
    try:
        await front.start()
    except OSError as e:
        print(f"shadowgrpc serve: worker {index}: {e}", file=sys.stderr, flush=True)
        return 1
    os.write(ready_w, (json.dumps({"port": front.port, "admin_port": front.admin_port, "metrics_port": front.metrics_port}) + "\n").encode())
    os.close(ready_w)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def parent_gone() -> None:
        loop.remove_reader(lifeline_r)
        log.warning("worker %d: the parent is gone, stopping", index)
        stop.set()

    loop.add_reader(lifeline_r, parent_gone)
    await stop.wait()
    await front.stop()
    return 0


# -- the parent: start, wait for ready -------------------------------------------------------------
def _start_workers(n: int, settings: Settings, telemetry, loop_kind: str, reserved: socket.socket, lifeline: tuple[int, int]) -> list[Worker]:
    ctx = multiprocessing.get_context("fork")
    workers = []
    for i in range(n):
        mp = telemetry.metrics_port
        opts = telemetry if mp in (None, 0) else dataclasses.replace(telemetry, metrics_port=mp + i)
        r, w = os.pipe()
        p = ctx.Process(target=_worker_main, args=(i, settings, opts, loop_kind, w, lifeline[0], lifeline[1], reserved), name=f"shadowgrpc-worker-{i}")
        set_share(i, n)  # budget.py: the forked worker gets its share of every budget (K // n, remainders to the first)
        p.start()
        os.close(w)
        workers.append(Worker(i, p, r))
    set_share(0, 1)
    return workers


def _await_ready(workers: list[Worker], port: int, timeout: float = START_TIMEOUT_S) -> None:
    """Read each worker's ready line; raise RuntimeError when one exits or the time is up."""
    pending, bufs = {w.ready_fd: w for w in workers}, {w.ready_fd: b"" for w in workers}
    deadline = time.monotonic() + timeout
    while pending:
        left = deadline - time.monotonic()
        readable = select.select(list(pending), [], [], max(left, 0))[0] if left > 0 else []
        if not readable:
            raise RuntimeError(f"{len(pending)} worker(s) not serving after {timeout:g} s")
        for fd in readable:
            w = pending[fd]
            chunk = os.read(fd, 4096)
            if not chunk:
                w.process.join(5)
                raise RuntimeError(f"worker {w.index} (pid {w.pid}) did not start: {_status(w.process.exitcode)}")
            bufs[fd] += chunk
            if b"\n" in bufs[fd]:
                info = json.loads(bufs[fd])
                if info["port"] != port:
                    raise RuntimeError(f"worker {w.index} serves port {info['port']}, not the reserved {port}")
                w.admin_port, w.metrics_port = info["admin_port"], info["metrics_port"]
                os.close(fd)
                del pending[fd]


def _status(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name if -code in signal.valid_signals() else f'signal {-code}'}"
    return f"exit status {code}"


def _stop_workers(workers: list[Worker], timeout: float) -> bool:
    """SIGTERM to every worker still running, wait up to ``timeout``, SIGKILL the rest; True when
    all exited 0."""
    for w in workers:
        if w.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for w in workers:
        w.process.join(max(deadline - time.monotonic(), 0))
    ok = True
    for w in workers:
        if w.process.exitcode is None:
            log.error("worker %d (pid %d) still running %.0f s after SIGTERM: killed", w.index, w.pid, timeout)
            w.process.kill()
            w.process.join(5)
            ok = False
        elif w.process.exitcode != 0:
            log.error("worker %d (pid %d) stopped with %s", w.index, w.pid, _status(w.process.exitcode))
            ok = False
    return ok


def run(settings: Settings, n: int, ready_file: str | None = None, telemetry=None, loop_kind: str = "asyncio", config_path: str | None = None) -> int:
    """``serve --workers n`` (n >= 2); returns the exit code."""
    from .telemetry import TelemetryOptions

    telemetry = telemetry if telemetry is not None else TelemetryOptions.from_env()
    if threading.active_count() > 1:
        log.warning("%d threads exist before forking the workers: only the main thread is copied", threading.active_count())
    reserved, listen = reserve_port(settings.listen)
    port = int(listen.rpartition(":")[2])
    worker_settings = dataclasses.replace(settings, listen=listen, admin_listen="127.0.0.1:0", gate_listen="", security=worker_security(settings.security))
    lifeline = os.pipe()
    workers: list[Worker] = []
    try:
        workers = _start_workers(n, worker_settings, telemetry, loop_kind, reserved, lifeline)
        os.close(lifeline[0])
        _await_ready(workers, port)
        return _run(_parent(settings, workers, port, ready_file, config_path), loop_kind)
    except RuntimeError as e:
        print(f"shadowgrpc serve: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the workers were all serving
        return 130
    finally:
        if any(w.process.exitcode is None for w in workers):  # startup failed, or Ctrl-C during it
            _stop_workers(workers, settings.stop_timeout_s + STOP_MARGIN_S)
        reserved.close()
        os.close(lifeline[1])


# -- the parent: one admin endpoint ----------------------------------------------------------------
async def _parent(settings: Settings, workers: list[Worker], port: int, ready_file: str | None, config_path: str | None = None) -> int:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from .gate_http import start_gate, startup_line
    from .security import admin_interceptors, server_source, token_interceptors
    from .reload import install_parent
    from .server import SHADOW_CONTROL, Front
    from .v1 import shadow_pb2, shadow_pb2_grpc

    from ._workers_control import MergedControl

    control = MergedControl(workers, settings.max_message_bytes, token_interceptors(worker_security(settings.security).admin_token))
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_send_message_length", -1)], interceptors=admin_interceptors(settings.security))
    shadow_pb2_grpc.add_ShadowControlServicer_to_server(control, server)
    hs = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    reflection.enable_server_reflection((SHADOW_CONTROL, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    control.admin_tls = server_source(settings.security.admin_tls)  # a reload reads its files again (reload.parent_reload)
    try:
        admin_port = Front._bind(server, settings.admin_listen, "server.admin_listen", control.admin_tls)
        gate = control.gate = await start_gate(settings, control, shadow_pb2.GetReportRequest, lambda: settings.security.admin_token)  # the merged report
    except OSError as e:
        print(f"shadowgrpc serve: {e}", file=sys.stderr, flush=True)
        return 1
    await server.start()
    for name in ("", SHADOW_CONTROL):
        await hs.set(name, health_pb2.HealthCheckResponse.SERVING)
    pids = ", ".join(str(w.pid) for w in workers)
    print(f"shadowgrpc {__version__}: KServe v2 gRPC on port {port}, ShadowControl on port {admin_port}, {len(workers)} workers (pids {pids})", flush=True)
    print(f"  default live Triton {settings.default_live}; {len(settings.routes)} route(s): "
          + ", ".join(f"{r.model} -> live {r.live.model}:{r.live.version or '*'} + {len(r.shadows)} shadow(s)" for r in settings.routes),
          flush=True)  # fmt: skip
    print("  each worker's own ShadowControl: " + ", ".join(f"pid {w.pid} on {w.admin_address}" for w in workers), flush=True)
    for line in startup_lines(settings.routes, len(workers)):  # budget.py
        print(line, flush=True)
    if gate is not None:
        print(startup_line(gate), flush=True)
    if any(w.metrics_port is not None for w in workers):
        print("  Prometheus metrics per worker on ports " + ", ".join(str(w.metrics_port) for w in workers), flush=True)
    if ready_file:
        with open(ready_file, "w") as f:
            f.write(f"{port} {admin_port}\n")

    loop, stop, died = asyncio.get_running_loop(), asyncio.Event(), []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    install_parent(loop, control, settings, config_path)  # SIGHUP: control.settings follows the reloads

    def exited(w: Worker) -> None:
        loop.remove_reader(w.process.sentinel)
        if not stop.is_set():
            died.append(w)
            stop.set()

    for w in workers:
        loop.add_reader(w.process.sentinel, exited, w)
    await stop.wait()
    for w in workers:
        loop.remove_reader(w.process.sentinel)
    for w in died:
        w.process.join(1)
        log.error("worker %d (pid %d) exited on its own (%s): stopping the others", w.index, w.pid, _status(w.process.exitcode))
    print(f"shadowgrpc: stopping {len(workers)} workers (grace {control.settings.grace_s:g} s for in-flight requests)", flush=True)
    await hs.enter_graceful_shutdown()
    if gate is not None:
        await gate.stop()
    ok = await loop.run_in_executor(None, _stop_workers, workers, control.settings.stop_timeout_s + STOP_MARGIN_S)
    await server.stop(0.5)
    await asyncio.gather(*(c.close() for c in control.channels))
    return 0 if ok and not died else 1


__all__ = ["MAX_WORKERS", "reserve_port", "run"]
