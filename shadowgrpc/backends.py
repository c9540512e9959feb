"""Upstream Triton connections: one long-lived grpc.aio channel per (address, role).

Live and shadow never share a channel (nor an HTTP/2 connection: each channel gets its own
subchannel pool), so a shadow that floods or stalls its connection cannot hold back live streams.
Calls carry raw bytes: requests are forwarded and responses returned without a protobuf parse.
"""

from __future__ import annotations

import grpc

from .codec import SERVICE, UNARY_METHODS

COMPRESSION = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}


class Upstream:
    """A Triton endpoint: raw-bytes callables for every method of the KServe v2 service."""

    def __init__(self, address: str, role: str, max_message_bytes: int, compression: str = "none") -> None:
        self.address = address
        self.role = role
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.enable_retries", 0),
        ]
        self.channel = grpc.aio.insecure_channel(address, options=options, compression=COMPRESSION[compression])
        self.unary = {
            m: self.channel.unary_unary(f"/{SERVICE}/{m}", request_serializer=None, response_deserializer=None, _registered_method=True)
            for m in UNARY_METHODS
        }
        self.infer = self.unary["ModelInfer"]
        self.stream_infer = self.channel.stream_stream(
            f"/{SERVICE}/ModelStreamInfer", request_serializer=None, response_deserializer=None, _registered_method=True
        )

    async def close(self) -> None:
        await self.channel.close()


class Upstreams:
    """Channel registry keyed by (address, role); created at start, closed at shutdown."""

    def __init__(self, max_message_bytes: int, compression: str = "none") -> None:
        self._max = max_message_bytes
        self._compression = compression
        self._by_key: dict[tuple[str, str], Upstream] = {}

    def get(self, address: str, role: str) -> Upstream:
        key = (address, role)
        up = self._by_key.get(key)
        if up is None:
            up = self._by_key[key] = Upstream(address, role, self._max, self._compression)
        return up

    async def close(self) -> None:
        for up in self._by_key.values():
            await up.close()
        self._by_key.clear()
