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
failure as UNAVAILABLE. The other unary KServe RPCs (ServerLive, ModelMetadata, ...) are
forwarded raw to the live Triton; everything else (ModelStreamInfer, health, reflection) is
UNIMPLEMENTED. The shadow's answer is counted, not
compared (no pairing, sketches, telemetry, paired log).

``callbacks=True`` skips the task per call: when the channel's connection is READY, the call goes
straight to ``shadowgrpc._h2_c.Connection.submit`` with a future whose done-callback answers the
caller (a prototype reaching into H2Channel: production wants a public callback form of ``call``);
otherwise (connecting, a refused stream to retry) it takes the task path.

Not here (what a production version needs): ModelStreamInfer (bidirectional streams), the front's
own services on the data port (health, reflection: answered here or handed to a grpcio server),
per-model routing of the pass-through RPCs, TLS (ALPN h2), drain on SIGTERM
(``ServerConnection.goaway`` exists), telemetry context, the pairing/compare stage, config.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from functools import partial
from typing import Any

from grpc.aio import AioRpcError

from .codec import SERVICE, UNARY_METHODS
from .h2 import H2Channel
from .packing import build_request, scan_request

try:
    from ._h2srv_c import ServerConnection
except ImportError:  # not built (no libnghttp2 at build time), or pure-Python build
    ServerConnection = None  # type: ignore[assignment,misc]

AVAILABLE = ServerConnection is not None
MODEL_INFER = f"/{SERVICE}/ModelInfer".encode()
PASSTHROUGH = frozenset(f"/{SERVICE}/{m}".encode() for m in UNARY_METHODS if m != "ModelInfer")
UNIMPLEMENTED, UNAVAILABLE = 12, 14
_monotonic = time.monotonic
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
        front = self.front
        if front.router is not None:  # the real front's Router behind the compiled server
            if path == MODEL_INFER or path in PASSTHROUGH:
                self.tasks[sid] = front.loop.create_task(front.routed(self, sid, path, message, metadata, timeout))
            else:
                self.conn.respond_error(sid, UNIMPLEMENTED, "Method not found!")
            return
        if path != MODEL_INFER:
            if path in PASSTHROUGH:
                self.tasks[sid] = front.loop.create_task(front.passthrough(self, sid, path, message, metadata, timeout))
            else:
                self.conn.respond_error(sid, UNIMPLEMENTED, "Method not found!")
            return
        if front.callbacks:
            up = front.live._conn
            if up is not None and up.usable:  # no task: the upstream call's future answers the caller
                front.requests += 1
                if timeout is None:
                    timeout = DEFAULT_DEADLINE_S
                if front.shadow is not None:
                    front._mirror(message, metadata, timeout)
                fut = front.loop.create_future()
                self.tasks[sid] = (up, up.submit(MODEL_INFER, message, metadata, timeout, fut), message, metadata, timeout)
                fut.add_done_callback(partial(self._answered, sid))
                return
        self.tasks[sid] = front.loop.create_task(front.infer(self, sid, message, metadata, timeout))

    def _answered(self, sid: int, fut: asyncio.Future) -> None:
        held = self.tasks.pop(sid, None)
        e = None if fut.cancelled() else fut.exception()  # retrieved even when the caller is gone
        if held is None or fut.cancelled():
            return
        if e is None:
            self.conn.respond(sid, fut.result())
        elif getattr(e, "refused", False):  # not processed (GOAWAY): H2Channel.call retries it on a new connection
            _, _, message, metadata, timeout = held
            self.tasks[sid] = self.front.loop.create_task(self.front.infer(self, sid, message, metadata, timeout, count=False))
        else:
            self.front.answer_error(self.conn, sid, e)

    def cancelled(self, sid: int) -> None:
        t = self.tasks.pop(sid, None)
        if type(t) is tuple:
            t[0].cancel(t[1])
        elif t is not None:
            t.cancel()


class _Abort(Exception):
    def __init__(self, code: Any, details: str, trailing: Any) -> None:
        super().__init__(details)
        self.code, self.details, self.trailing = code, details, trailing


class _Context:
    """What Router.infer / Router.unary use of grpc.aio's ServicerContext."""

    __slots__ = ("_md", "_deadline")

    def __init__(self, metadata: tuple, timeout: float | None) -> None:
        self._md = metadata
        self._deadline = None if timeout is None else _monotonic() + timeout

    def invocation_metadata(self) -> tuple:
        return self._md

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - _monotonic(), 0.0)

    async def abort(self, code: Any, details: str = "", trailing_metadata: Any = ()) -> None:
        raise _Abort(code, details, trailing_metadata)


class H2Front:
    """The prototype front (see the module doc). ``live`` / ``shadow``: H2Channels to Triton;
    ``router``: instead of them, the real front's ``Router`` (its routing, sampling, shadows,
    pairing and statistics) answers ModelInfer and the unary pass-through RPCs."""

    def __init__(self, live: H2Channel | None, shadow: H2Channel | None = None, *, route_model: str = "", shadow_model: str = "",
                 shadow_version: str = "", shadow_max_in_flight: int = 64, max_message: int = MAX_MESSAGE, callbacks: bool = False,
                 router: Any = None) -> None:
        if ServerConnection is None:
            raise RuntimeError("shadowgrpc._h2srv_c is not built (libnghttp2 missing at build time)")
        self.router = router
        self.live = live
        self.shadow = shadow
        self.route_model = route_model
        self.shadow_model = shadow_model
        self.shadow_version = shadow_version
        self.shadow_max = shadow_max_in_flight
        self.max_message = max_message
        self.callbacks = callbacks  # True: no task per call (the H2 connection's future + a callback; see the module doc)
        self.shadow_in_flight = 0
        self.conns: weakref.WeakSet[Any] = weakref.WeakSet()  # accepted connections (the transports hold them)
        self.loop: Any = None
        self.server: asyncio.AbstractServer | None = None
        self._shadow_tasks: set[asyncio.Task] = set()
        # counters (the benchmark and tests read them)
        self.requests = self.live_errors = 0
        self.shadow_sent = self.shadow_ok = self.shadow_errors = self.shadow_shed = 0

    def _protocol(self) -> Any:
        conn = ServerConnection(self.loop, None, None, self.max_message)
        self.conns.add(conn)
        s = _Session(self, conn)
        conn.bind(s.handler, s.cancelled)
        return conn

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0: a free port); returns the port."""
        self.loop = asyncio.get_running_loop()
        self.server = await self.loop.create_server(self._protocol, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def infer(self, sess: _Session, sid: int, raw: bytes, metadata: tuple, timeout: float | None, count: bool = True) -> None:
        conn = sess.conn
        try:
            if count:
                self.requests += 1
                if timeout is None:
                    timeout = DEFAULT_DEADLINE_S
                if self.shadow is not None:
                    self._mirror(raw, metadata, timeout)
            try:
                response = await self.live.call(MODEL_INFER, raw, timeout, metadata or None)
            except Exception as e:  # noqa: BLE001 - every failure answers the caller
                self.answer_error(conn, sid, e)
                return
            conn.respond(sid, response)
        finally:
            sess.tasks.pop(sid, None)

    async def routed(self, sess: _Session, sid: int, path: bytes, raw: bytes, metadata: tuple, timeout: float | None) -> None:
        """Router mode: Router.infer / Router.unary with a context stand-in; its abort becomes the answer."""
        conn = sess.conn
        self.requests += 1
        ctx = _Context(metadata, timeout)
        try:
            if path == MODEL_INFER:
                response = await self.router.infer(raw, ctx)
            else:
                response = await self.router.unary(path.rpartition(b"/")[2].decode(), raw, ctx)
        except _Abort as a:
            conn.respond_error(sid, a.code.value[0], a.details or "", tuple(a.trailing) if a.trailing else ())
        except Exception as e:  # noqa: BLE001 - as grpc answers a handler that raised
            conn.respond_error(sid, 2, f"Exception calling application: {e}")
        else:
            conn.respond(sid, response)
        finally:
            sess.tasks.pop(sid, None)

    async def passthrough(self, sess: _Session, sid: int, path: bytes, raw: bytes, metadata: tuple, timeout: float | None) -> None:
        """Another unary KServe RPC: raw to the live Triton and back (Router.unary's pass-through, one upstream here)."""
        try:
            response = await self.live.call(path, raw, DEFAULT_DEADLINE_S if timeout is None else timeout, metadata or None)
        except Exception as e:  # noqa: BLE001 - every failure answers the caller
            self.answer_error(sess.conn, sid, e)
        else:
            sess.conn.respond(sid, response)
        finally:
            sess.tasks.pop(sid, None)

    def answer_error(self, conn: Any, sid: int, e: BaseException) -> None:
        """The upstream's code, details and trailing metadata; UNAVAILABLE for anything else (abort_like's rule)."""
        self.live_errors += 1
        if isinstance(e, AioRpcError):
            md = e.trailing_metadata()
            conn.respond_error(sid, e.code().value[0], e.details() or "", tuple(md) if md else ())
        else:
            conn.respond_error(sid, UNAVAILABLE, f"upstream Triton call failed: {e!r}")

    def _mirror(self, raw: bytes, metadata: tuple, timeout: float) -> None:
        try:
            model, _, _, uses_shm = scan_request(raw)
        except ValueError:
            return  # not a ModelInferRequest we can read: live only
        if model != self.route_model or uses_shm:
            return
        if self.shadow_in_flight >= self.shadow_max:
            self.shadow_shed += 1
            return
        self.shadow_sent += 1
        self.shadow_in_flight += 1
        req = build_request(raw, self.shadow_model, self.shadow_version, True)
        up = self.shadow._conn if self.callbacks else None
        if up is not None and up.usable:
            fut = self.loop.create_future()
            up.submit(MODEL_INFER, req, metadata, timeout, fut)
            fut.add_done_callback(self._shadow_done)
            return
        t = self.loop.create_task(self._shadow(req, metadata, timeout))
        self._shadow_tasks.add(t)
        t.add_done_callback(self._shadow_tasks.discard)

    def _shadow_done(self, fut: asyncio.Future) -> None:
        self.shadow_in_flight -= 1
        if fut.cancelled() or fut.exception() is not None:
            self.shadow_errors += 1
        else:
            self.shadow_ok += 1

    async def _shadow(self, req: bytes, metadata: tuple, timeout: float) -> None:
        assert self.shadow is not None
        try:
            await self.shadow.call(MODEL_INFER, req, timeout, metadata or None)
            self.shadow_ok += 1
        except Exception:  # noqa: BLE001 - a shadow problem never reaches the caller
            self.shadow_errors += 1
        finally:
            self.shadow_in_flight -= 1

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):  # asyncio's Server.close() leaves accepted connections open
            conn.close()
        for t in list(self._shadow_tasks):
            t.cancel()
        if self.live is not None:
            await self.live.close()
        if self.shadow is not None:
            await self.shadow.close()


def stats(front: H2Front) -> dict[str, int]:
    return {k: getattr(front, k) for k in ("requests", "live_errors", "shadow_sent", "shadow_ok", "shadow_errors", "shadow_shed")}
