"""PROTOTYPE (issue 14, item 4; not wired into the front): the front's data port served by the
compiled HTTP/2 layer, to measure what a compiled front costs (benchmarks/h2_server_spike.py).

``H2Front`` answers unary gRPC over HTTP/2 cleartext (``shadowgrpc._h2srv_c``, libnghttp2's
server session on the running uvloop/asyncio loop). Only KServe ModelInfer is served: the request
is read with ``scan_request`` (model name), sent raw to the live Triton through the compiled
client (``shadowgrpc.h2.H2Channel``) and, when a shadow channel is given and the request is for
``route_model`` (without shared memory), mirrored once to the shadow as a bounded background call
(the model renamed with ``build_request(raw, shadow_model, shadow_version, True)``, as
router.py's ``_shadow`` does). The live answer goes back byte for byte; a live error goes back
with the upstream's code, details and trailing metadata (``abort_like``'s rule), any other
failure as UNAVAILABLE. Everything else is UNIMPLEMENTED. The shadow's answer is counted, not
compared (no pairing, sketches, telemetry, paired log).

Not here (what a production version needs): ModelStreamInfer and the other KServe RPCs (metadata,
health, repository, statistics: forwarded raw or handed to the grpcio server), reflection, TLS
(ALPN h2), drain on SIGTERM (``ServerConnection.goaway`` exists), telemetry context, config.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc.aio import AioRpcError

from .h2 import H2Channel
from .packing import build_request, scan_request

try:
    from ._h2srv_c import ServerConnection
except ImportError:  # not built (no libnghttp2 at build time), or pure-Python build
    ServerConnection = None  # type: ignore[assignment,misc]

AVAILABLE = ServerConnection is not None
MODEL_INFER = b"/inference.GRPCInferenceService/ModelInfer"
UNIMPLEMENTED, UNAVAILABLE = 12, 14
DEFAULT_DEADLINE_S = 30.0  # when the caller set none
MAX_MESSAGE = 64 * 1024 * 1024


class _Session:
    """One accepted connection: its protocol and the handler tasks on it (cancelled on RST_STREAM)."""

    __slots__ = ("front", "conn", "tasks")

    def __init__(self, front: H2Front, conn: Any) -> None:
        self.front = front
        self.conn = conn
        self.tasks: dict[int, asyncio.Task] = {}

    def handler(self, sid: int, path: bytes, metadata: tuple, timeout: float | None, message: bytes) -> None:
        if path != MODEL_INFER:
            self.conn.respond_error(sid, UNIMPLEMENTED, "Method not found!")
            return
        self.tasks[sid] = self.front.loop.create_task(self.front.infer(self, sid, message, metadata, timeout))

    def cancelled(self, sid: int) -> None:
        t = self.tasks.pop(sid, None)
        if t is not None:
            t.cancel()


class H2Front:
    """The prototype front (see the module doc). ``live`` / ``shadow``: H2Channels to Triton."""

    def __init__(self, live: H2Channel, shadow: H2Channel | None = None, *, route_model: str = "", shadow_model: str = "",
                 shadow_version: str = "", shadow_max_in_flight: int = 64, max_message: int = MAX_MESSAGE) -> None:
        if ServerConnection is None:
            raise RuntimeError("shadowgrpc._h2srv_c is not built (libnghttp2 missing at build time)")
        self.live = live
        self.shadow = shadow
        self.route_model = route_model
        self.shadow_model = shadow_model
        self.shadow_version = shadow_version
        self.shadow_max = shadow_max_in_flight
        self.max_message = max_message
        self.loop: Any = None
        self.server: asyncio.AbstractServer | None = None
        self._shadow_tasks: set[asyncio.Task] = set()
        # counters (the benchmark and tests read them)
        self.requests = self.live_errors = 0
        self.shadow_sent = self.shadow_ok = self.shadow_errors = self.shadow_shed = 0

    def _protocol(self) -> Any:
        conn = ServerConnection(self.loop, None, None, self.max_message)
        s = _Session(self, conn)
        conn.bind(s.handler, s.cancelled)
        return conn

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0: a free port); returns the port."""
        self.loop = asyncio.get_running_loop()
        self.server = await self.loop.create_server(self._protocol, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def infer(self, sess: _Session, sid: int, raw: bytes, metadata: tuple, timeout: float | None) -> None:
        conn = sess.conn
        try:
            self.requests += 1
            if timeout is None:
                timeout = DEFAULT_DEADLINE_S
            if self.shadow is not None:
                self._mirror(raw, metadata, timeout)
            try:
                response = await self.live.call(MODEL_INFER, raw, timeout, metadata or None)
            except AioRpcError as e:
                self.live_errors += 1
                md = e.trailing_metadata()
                conn.respond_error(sid, e.code().value[0], e.details() or "", tuple(md) if md else ())
                return
            except Exception as e:  # noqa: BLE001 - the caller gets UNAVAILABLE, as abort_like gives it
                self.live_errors += 1
                conn.respond_error(sid, UNAVAILABLE, f"upstream Triton call failed: {e!r}")
                return
            conn.respond(sid, response)
        finally:
            sess.tasks.pop(sid, None)

    def _mirror(self, raw: bytes, metadata: tuple, timeout: float) -> None:
        try:
            model, _, _, uses_shm = scan_request(raw)
        except ValueError:
            return  # not a ModelInferRequest we can read: live only
        if model != self.route_model or uses_shm:
            return
        if len(self._shadow_tasks) >= self.shadow_max:
            self.shadow_shed += 1
            return
        self.shadow_sent += 1
        t = self.loop.create_task(self._shadow(build_request(raw, self.shadow_model, self.shadow_version, True), metadata, timeout))
        self._shadow_tasks.add(t)
        t.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, req: bytes, metadata: tuple, timeout: float) -> None:
        assert self.shadow is not None
        try:
            await self.shadow.call(MODEL_INFER, req, timeout, metadata or None)
            self.shadow_ok += 1
        except Exception:  # noqa: BLE001 - a shadow problem never reaches the caller
            self.shadow_errors += 1

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self._shadow_tasks):
            t.cancel()
        await self.live.close()
        if self.shadow is not None:
            await self.shadow.close()


def stats(front: H2Front) -> dict[str, int]:
    return {k: getattr(front, k) for k in ("requests", "live_errors", "shadow_sent", "shadow_ok", "shadow_errors", "shadow_shed")}
