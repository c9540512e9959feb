"""The compiled data plane's client side: unary gRPC calls to a Triton over ``shadowgrpc._h2_c``
(libnghttp2's HTTP/2 session in C, driven by the running asyncio/uvloop event loop).

``H2Channel`` stands where a grpc.aio channel stands for unary calls: ``call(path, request,
timeout=, metadata=)`` returns the response bytes or raises ``H2Error``, a
``grpc.aio.AioRpcError`` (same ``code()``, ``details()``, ``trailing_metadata()``), so every caller
handles both data planes alike. The channel state follows gRPC's: IDLE until the first call or
``get_state(try_to_connect=True)``; CONNECTING (calls wait, within their deadline); READY; after
a failed connect, TRANSIENT_FAILURE (calls fail UNAVAILABLE at once, as grpc's do without
wait_for_ready) until the next attempt, which is made on demand after a backoff of 1 s growing
to at most 2 s (the grpc.aio channels' ``grpc.max_reconnect_backoff_ms``). A connection that the
server ends (GOAWAY) or that breaks is replaced by the next call; calls the server refused
unprocessed (REFUSED_STREAM after GOAWAY) are retried once on the new connection, as grpc-core
retries them transparently.

``AVAILABLE`` says whether the extension is built (see ``dataplane.py`` for the choice).
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from typing import Any

import grpc
from grpc.aio import AioRpcError, Metadata

from .dataplane import compiled_available

if compiled_available():
    from ._h2_c import Connection
else:  # not built (no libnghttp2 at build time), or SHADOWGRPC_NO_EXTENSIONS
    Connection = None  # type: ignore[assignment,misc]

AVAILABLE = Connection is not None
CONNECT_TIMEOUT_S = 20.0  # grpc's minimum connect timeout
BACKOFF_S, BACKOFF_MAX_S, BACKOFF_MULT, JITTER = 1.0, 2.0, 1.6, 0.2
_CODES = {c.value[0]: c for c in grpc.StatusCode}
_S = grpc.ChannelConnectivity
_perf = time.monotonic


class H2Error(AioRpcError):
    """A failed call on the compiled data plane; ``refused``: the server never processed it."""

    def __init__(self, code: int, details: str, initial: tuple = (), trailing: tuple = (), refused: bool = False) -> None:
        super().__init__(_CODES.get(code, grpc.StatusCode.UNKNOWN), Metadata(*initial), Metadata(*trailing), details)
        self.refused = refused


def _unavailable(details: str) -> H2Error:
    return H2Error(grpc.StatusCode.UNAVAILABLE.value[0], details)


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port``, ``[v6]:port`` or ``dns:///host:port``; None for what the
    compiled client does not dial (unix sockets, name lists, no port): grpc.aio serves those."""
    a = address[7:] if address.startswith("dns:///") else address
    if a.startswith("["):
        host, sep, port = a[1:].partition("]:")
    else:
        host, sep, port = a.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in a or "," in a or ":" in host and not a.startswith("["):
        return None
    return host, int(port)


def ssl_context(ca: bytes = b"", cert: str = "", key: str = "") -> ssl.SSLContext:
    """TLS for an upstream: ``ca`` PEM roots (b"" = the system's), ``cert`` + ``key`` files of a
    client certificate (mTLS, read now); ALPN h2, TLS 1.2+, as gRPC requires."""
    ctx = ssl.create_default_context(cadata=ca.decode("ascii") if ca else None)
    if cert:
        ctx.load_cert_chain(cert, key or None)
    ctx.set_alpn_protocols(["h2"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class H2Channel:
    """Unary gRPC calls to one address over one HTTP/2 connection at a time (see the module doc)."""

    def __init__(
        self, address: str, max_message_bytes: int, tls: ssl.SSLContext | None = None, server_name: str = "", max_metadata_bytes: int = 0,
    ) -> None:  # fmt: skip
        if Connection is None:
            raise RuntimeError("shadowgrpc._h2_c is not built (libnghttp2 missing at build time)")
        hp = split_address(address)
        if hp is None:
            raise ValueError(f"{address!r}: the compiled data plane dials host:port addresses only")
        self.address = address
        self.host, self.port = hp
        self._authority = (server_name or address.removeprefix("dns:///")).encode()
        self._scheme = b"https" if tls is not None else b"http"
        self._tls = tls
        self._server_name = server_name or self.host
        self._max = max_message_bytes
        self._max_md = max_metadata_bytes  # per received header block; 0 = grpc's default (16 KiB)
        self._conn: Any = None  # the connection new calls use, once READY
        self._connecting: asyncio.Future[Any] | None = None
        self._state = _S.IDLE
        self._retry_at = 0.0
        self._backoff = BACKOFF_S
        self._closed = False
        self._open: set[Any] = set()  # connections whose socket is not closed yet (GOAWAY'd ones too)
        self.connects = 0  # connections made (tests, metrics)

    # -- state --------------------------------------------------------------------------------
    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        c = self._conn
        if c is not None and not c.usable:
            self._conn = None
            self._state = _S.IDLE
        if try_to_connect and self._state in (_S.IDLE, _S.TRANSIENT_FAILURE) and _perf() >= self._retry_at:
            self._start_connect()
        return self._state

    # -- calls --------------------------------------------------------------------------------
    async def call(self, path: bytes, request: bytes, timeout: float | None = None, metadata: Any = None) -> bytes:
        conn = self._conn
        if conn is None or not conn.usable:
            conn = await self._ready(timeout)
        md = tuple(metadata) if metadata else ()
        try:
            return await _call_on(conn, path, request, md, timeout)
        except H2Error as e:
            if not e.refused or self._closed:
                raise
        # Refused unprocessed (GOAWAY, or the connection broke before the request left): once more.
        return await _call_on(await self._ready(timeout), path, request, md, timeout)

    async def _ready(self, timeout: float | None) -> Any:
        if self._closed:
            raise _unavailable("channel closed")
        state = self.get_state(try_to_connect=True)
        if state is _S.READY:
            return self._conn
        if state is _S.TRANSIENT_FAILURE:
            raise _unavailable(f"failed to connect to {self.address} (retrying in {max(self._retry_at - _perf(), 0):.1f} s)")
        assert self._connecting is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self._connecting), timeout)
        except asyncio.TimeoutError:
            raise H2Error(grpc.StatusCode.DEADLINE_EXCEEDED.value[0], "Deadline Exceeded") from None

    def _start_connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._state = _S.CONNECTING
        self._connecting = fut = loop.create_future()
        fut.add_done_callback(_consume)
        loop.create_task(self._connect(fut))

    async def _connect(self, fut: asyncio.Future[Any]) -> None:
        loop = asyncio.get_running_loop()
        conn = Connection(loop, self._authority, self._scheme, self._max, H2Error, self._lost, max_metadata=self._max_md)
        conn.on_gone = self._open.discard
        try:
            kw: dict[str, Any] = {"ssl": self._tls, "server_hostname": self._server_name} if self._tls is not None else {}
            await asyncio.wait_for(loop.create_connection(lambda: conn, self.host, self.port, **kw), CONNECT_TIMEOUT_S)
            if self._tls is not None:
                proto = conn.transport.get_extra_info("ssl_object").selected_alpn_protocol()
                if proto != "h2":
                    conn.close()
                    raise ConnectionError(f"TLS peer did not agree to HTTP/2 (ALPN {proto!r})")
        except (OSError, asyncio.TimeoutError, ssl.SSLError, ConnectionError) as e:
            self._state = _S.TRANSIENT_FAILURE
            self._retry_at = _perf() + self._backoff * random.uniform(1 - JITTER, 1 + JITTER)
            self._backoff = min(self._backoff * BACKOFF_MULT, BACKOFF_MAX_S)
            fut.set_exception(_unavailable(f"failed to connect to {self.address}: {e}"))
            return
        if self._closed:
            conn.close()
            fut.set_exception(_unavailable("channel closed"))
            return
        self.connects += 1
        if not conn.transport_gone:
            self._open.add(conn)
        self._conn = conn
        self._state = _S.READY
        self._backoff = BACKOFF_S
        fut.set_result(conn)

    def _lost(self, conn: Any, exc: BaseException | None) -> None:
        if conn is self._conn:
            self._conn = None
            if not self._closed:
                self._state = _S.IDLE  # reconnected by the next call, as grpc does after a GOAWAY

    async def close(self, grace: float | None = None) -> None:
        """No new calls; open calls get ``grace`` seconds (None: they fail now), then every
        connection closes; returns once their sockets are closed (at most ~1 s more)."""
        self._closed = True
        self._state = _S.SHUTDOWN
        self._conn = None
        if self._connecting is not None and not self._connecting.done():
            await asyncio.wait([self._connecting], timeout=1.0)  # a connect under way ends (and is closed) first
        if grace:
            end = _perf() + grace
            while any(c.in_flight for c in self._open) and _perf() < end:
                await asyncio.sleep(0.05)
        for c in list(self._open):
            c.close(abort=self._tls is not None)  # TLS: no close_notify wait (asyncio's is up to 30 s)
        end = _perf() + 1.0
        while self._open and _perf() < end:
            await asyncio.sleep(0.005)
        for c in list(self._open):  # a plaintext close that did not finish in time: the socket now
            c.close(abort=True)
        if self._open:
            await asyncio.sleep(0)  # connection_lost runs on the next loop turn


async def _call_on(conn: Any, path: bytes, request: bytes, metadata: tuple, timeout: float | None) -> bytes:
    fut = asyncio.get_running_loop().create_future()
    sid = conn.submit(path, request, metadata, timeout, fut)
    try:
        return await fut
    except asyncio.CancelledError:
        conn.cancel(sid)  # RST_STREAM: the server stops working on it
        raise


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a failed connect nobody waited for is not "never retrieved"
