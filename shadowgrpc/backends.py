"""Upstream Triton connections: one long-lived grpc.aio channel per (address, role).

Live and shadow never share a channel (nor an HTTP/2 connection: each channel gets its own
subchannel pool), so a shadow that floods or stalls its connection cannot hold back live streams.
Calls carry raw bytes: requests are forwarded and responses returned without a protobuf parse.

ModelInfer goes over the data plane ``server.data_plane`` resolves to (dataplane.py): the
compiled HTTP/2 client (h2.H2Channel, one connection per upstream, its own beside the grpc.aio
channel's) or the grpc.aio channel. Either way ``infer(request, timeout=, metadata=)`` gives the
response bytes or raises grpc.aio.AioRpcError, and ``get_state()`` its connectivity. Every other
RPC (control plane, ModelStreamInfer) uses the grpc.aio channel.
"""

from __future__ import annotations

import asyncio
from functools import partial

import grpc

from ._config_security import ClientTls, Security
from . import h2
from .codec import SERVICE, UNARY_METHODS
from .dataplane import resolve
from .security import _read, channel_credentials, metadata_options

RETIRE_GRACE_S = 600.0  # an old channel's calls (streams too) get this long after a TLS reload

COMPRESSION = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}


class Upstream:
    """A Triton endpoint: raw-bytes callables for every method of the KServe v2 service, over TLS
    when ``tls`` (a _config_security.ClientTls); ModelInfer on the compiled client when
    ``data_plane`` is "nghttp2" and the address is host:port. ``swap()`` puts in new channels
    (certificates read again); the old ones close once their calls finish (``retired``)."""

    def __init__(
        self, address: str, role: str, max_message_bytes: int, compression: str = "none", tls: ClientTls | None = None, extra_options: list | None = None,
        data_plane: str = "grpcio", max_metadata_bytes: int = 0,
    ) -> None:  # fmt: skip
        self.address = address
        self.role = role
        self.tls = tls
        self._max = max_message_bytes
        self._max_md = max_metadata_bytes  # server.max_metadata_kb (0: grpc's default), on the compiled client too
        self.compiled = data_plane == "nghttp2" and h2.split_address(address) is not None
        self._compression = COMPRESSION[compression]
        self._options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.enable_retries", 0),
            # A Triton that comes back is reconnected within 2 s: gRPC's default backoff grows to
            # 120 s, and a call on a channel in TRANSIENT_FAILURE fails at once without trying: after
            # a 150 s outage a default channel kept failing 33 s after Triton was back (1.6 s with
            # this; a front whose live Triton was down 60 s answered OK again 1.8 s after it).
            ("grpc.max_reconnect_backoff_ms", 2_000),
            *(extra_options or ()),
        ]
        self._use(self.prepare(tls))

    def prepare(self, tls: ClientTls | None) -> tuple[grpc.aio.Channel, h2.H2Channel | None]:
        """New channels, over TLS with the certificate files of ``tls`` read now (ConfigError
        when one is bad): the grpc.aio one, and the compiled one when this upstream uses it."""
        if tls is None:
            channel = grpc.aio.insecure_channel(self.address, options=self._options, compression=self._compression)
        else:
            creds, extra = channel_credentials(tls)
            channel = grpc.aio.secure_channel(self.address, creds, options=self._options + extra, compression=self._compression)
        if not self.compiled:
            return channel, None
        if tls is None:
            return channel, h2.H2Channel(self.address, self._max, max_metadata_bytes=self._max_md)
        ctx = h2.ssl_context(_read(tls.ca, tls.where + ".ca") if tls.ca else b"", tls.cert, tls.key)
        return channel, h2.H2Channel(self.address, self._max, ctx, tls.server_name, self._max_md)

    def _use(self, channels: tuple[grpc.aio.Channel, h2.H2Channel | None]) -> None:
        channel, self.h2 = channels
        self.channel = channel
        self.unary = {
            m: channel.unary_unary(f"/{SERVICE}/{m}", request_serializer=None, response_deserializer=None, _registered_method=True)
            for m in UNARY_METHODS
        }
        self.infer = self.unary["ModelInfer"] if self.h2 is None else partial(self.h2.call, _MODEL_INFER)
        self.stream_infer = channel.stream_stream(
            f"/{SERVICE}/ModelStreamInfer", request_serializer=None, response_deserializer=None, _registered_method=True
        )

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The connectivity of the channel ModelInfer uses."""
        return (self.channel if self.h2 is None else self.h2).get_state(try_to_connect)

    def swap(self, channels: tuple[grpc.aio.Channel, h2.H2Channel | None], tls: ClientTls | None) -> _Retired:
        """Use ``channels`` for new calls; returns the old ones (their calls go on until closed)."""
        old = _Retired(self.channel, self.h2)
        self.tls = tls
        self._use(channels)
        return old

    async def close(self) -> None:
        await _Retired(self.channel, self.h2).close()


_MODEL_INFER = f"/{SERVICE}/ModelInfer".encode()


class _Retired:
    """An upstream's channels replaced by a TLS reload: closed together, after a grace."""

    __slots__ = ("channel", "h2")

    def __init__(self, channel: grpc.aio.Channel, compiled: h2.H2Channel | None) -> None:
        self.channel = channel
        self.h2 = compiled

    async def close(self, grace: float | None = None) -> None:
        if self.h2 is not None:
            await self.h2.close(grace)
        await self.channel.close(grace)


class Upstreams:
    """Channel registry keyed by (address, role); created at start, closed at shutdown. TLS per
    address from ``security`` (Settings.security): the target's override, else server.upstream_tls."""

    def __init__(self, max_message_bytes: int, compression: str = "none", security: Security | None = None, data_plane: str = "grpcio") -> None:
        self._max = max_message_bytes
        self._compression = compression
        self.data_plane, self.data_plane_why = resolve(data_plane, compression)
        self._security = security if security is not None else Security()
        self._by_key: dict[tuple[str, str], Upstream] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._old: list[_Retired] = []

    def get(self, address: str, role: str) -> Upstream:
        key = (address, role)
        up = self._by_key.get(key)
        if up is None:
            sec = self._security
            up = self._by_key[key] = Upstream(address, role, self._max, self._compression, sec.upstream_for(address), metadata_options(sec), self.data_plane, sec.max_metadata_bytes)
        return up

    def reload_tls(self, security: Security | None = None, grace_s: float = RETIRE_GRACE_S) -> int:
        """New channels (certificate files read again) for every TLS upstream (``security``: a
        reloaded config's, whose TLS settings then apply); all are prepared before any is
        swapped, so a bad file raises ConfigError and nothing changes. The old channels close once
        their in-flight calls end (at most ``grace_s`` later: calls still running then are
        cancelled). Call on the event loop. Returns how many were swapped."""
        sec = security if security is not None else self._security
        plan = [(u, sec.upstream_for(u.address)) for u in self._by_key.values()]
        plan = [(u, t) for u, t in plan if t is not None or u.tls is not None]
        fresh = [u.prepare(t) for u, t in plan]
        self._security = sec
        for (u, t), ch in zip(plan, fresh):
            old = u.swap(ch, t)
            self._old.append(old)
            task = asyncio.get_running_loop().create_task(old.close(grace_s))
            self._retiring.add(task)
            task.add_done_callback(partial(self._retired, old))
        return len(plan)

    def _retired(self, channel: _Retired, task: asyncio.Task[None]) -> None:
        """A retired channel is closed: forget it (each reload would otherwise keep one per TLS upstream)."""
        self._retiring.discard(task)
        if channel in self._old:
            self._old.remove(channel)

    async def close(self) -> None:
        for up in self._by_key.values():
            await up.close()
        self._by_key.clear()
        for t in list(self._retiring):
            t.cancel()
        for ch in self._old:  # closed at once at shutdown (no-op for those already closed)
            await ch.close()
        self._old.clear()
