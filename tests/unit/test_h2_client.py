"""The compiled HTTP/2 client (shadowgrpc._h2_c through shadowgrpc.h2.H2Channel) against grpc-core
servers: a grpc.aio server in the test (GOAWAY by max connection age, 80 MiB messages both ways,
a server killed mid-call and restarted, cancellation, binary metadata, limits) — the same answers
and statuses grpc.aio's own client gets from it. tests/triton/test_h2_triton.py does the same
against the real Triton."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import grpc
import pytest

from shadowgrpc import h2

pytestmark = [pytest.mark.c_extension]



@pytest.fixture(autouse=True)
def _built():
    """Deselected in the pure-Python pass (c_extension); in the compiled one a missing build fails."""
    if not h2.AVAILABLE:
        pytest.fail("shadowgrpc._h2_c is not built: `make build` (libnghttp2-dev)", pytrace=False)

ECHO = b"/test.Echo/Echo"
BIG = 80 * 1024 * 1024 + 7


class Echo:
    """Echo answers the request; a request starting with a command word does something else."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.seen_timeouts: list[float | None] = []
        self.started = asyncio.Event()

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.seen_timeouts.append(context.time_remaining())
        if request.startswith(b"sleep"):
            self.started.set()
            try:
                await asyncio.sleep(float(request[5:]))
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return b"slept"
        if request.startswith(b"fail"):
            md = tuple((k, v) for k, v in context.invocation_metadata() if k.startswith("x-"))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad thing: 100% \u00fcnicode\nline 2", trailing_metadata=md)
        if request.startswith(b"trailer"):  # an error with trailing metadata of this many bytes
            await context.abort(grpc.StatusCode.INTERNAL, "big trailer", trailing_metadata=(("x-t", "v" * int(request[7:])),))
        if request == b"empty":
            return b""
        if request == b"big":
            return b"b" * BIG
        return request


@contextlib.asynccontextmanager
async def server(port: int = 0, compression: grpc.Compression | None = None, **options):
    echo = Echo()
    opts = [("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20), ("grpc.so_reuseport", 0)]
    opts += list(options.items())
    s = grpc.aio.server(options=opts, compression=compression)
    handler = grpc.unary_unary_rpc_method_handler(echo.echo)
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Echo": handler}),))
    port = s.add_insecure_port(f"127.0.0.1:{port}")
    await s.start()
    try:
        yield f"127.0.0.1:{port}", echo, s
    finally:
        await s.stop(None)


async def both(address: str, request: bytes, timeout: float | None = 5.0, metadata=None, max_message: int = 256 << 20, max_metadata: int = 0):
    """(grpc.aio's outcome, the compiled client's outcome): the response bytes, or (code, details,
    trailing metadata) of the error. ``max_metadata``: as server.max_metadata_kb sets both."""
    out = []
    md_opts = [("grpc.max_metadata_size", max_metadata), ("grpc.absolute_max_metadata_size", max_metadata)] if max_metadata else []
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", max_message),
                                                           ("grpc.max_send_message_length", 256 << 20), *md_opts]) as ch:
        mc = ch.unary_unary(ECHO.decode(), request_serializer=None, response_deserializer=None)
        try:
            out.append(await mc(request, timeout=timeout, metadata=metadata))
        except grpc.aio.AioRpcError as e:
            out.append((e.code(), e.details(), tuple(e.trailing_metadata())))
    hc = h2.H2Channel(address, max_message, max_metadata_bytes=max_metadata)
    try:
        out.append(await hc.call(ECHO, request, timeout, metadata))
    except grpc.aio.AioRpcError as e:
        out.append((e.code(), e.details(), tuple(e.trailing_metadata())))
    finally:
        await hc.close()
    return out


def test_answers_statuses_and_trailers_as_grpc_aio_gets_them():
    async def main():
        async with server() as (address, _, _):
            cases = ((b"hello", None), (b"empty", None), (b"", None), (b"fail", (("x-a", "1"), ("x-b-bin", b"\x00\xff\x10"))),
                     (b"fail", (("x-c-bin", b"\x01\x02"), ("x-d-bin", b"\x01"))))  # unpadded base64 on the wire
            for req, md in cases:
                g, c = await both(address, req, metadata=md)
                assert g == c, (req, g, c)
            g, c = await both(address, b"fail", metadata=(("x-a", "v"),))
            assert c[0] is grpc.StatusCode.INVALID_ARGUMENT and c[1] == "bad thing: 100% \u00fcnicode\nline 2" and ("x-a", "v") in c[2]
            # an unknown method: grpc-core's UNIMPLEMENTED, as a trailers-only answer
            hc = h2.H2Channel(address, 1 << 20)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await hc.call(b"/test.Echo/Nope", b"x", 5.0)
            assert e.value.code() is grpc.StatusCode.UNIMPLEMENTED
            await hc.close()

    asyncio.run(main())


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_compressed_answers_are_decompressed(compression):
    async def main():
        async with server(compression=compression) as (address, _, _):
            payload = b"compress me " * 5000
            g, c = await both(address, payload)
            assert g == c == payload

    asyncio.run(main())


def test_received_metadata_limits_as_grpc_aio():
    """Trailers from the server past the limit: RESOURCE_EXHAUSTED on both clients (grpc's default
    hard limit 16 KiB, or max_metadata_kb); under it the same answer. (Between grpc's 8 KiB soft and
    16 KiB hard limits grpc refuses at random; the compiled client applies the hard one.)"""
    async def main():
        async with server() as (address, _, _):
            g, c = await both(address, b"trailer7000")
            assert g == c and g[0] is grpc.StatusCode.INTERNAL and len(c[2][0][1]) == 7000
            g, c = await both(address, b"trailer20000")
            assert g[0] is c[0] is grpc.StatusCode.RESOURCE_EXHAUSTED and "exceeds hard limit" in c[1] and "16384" in c[1], (g, c)
            g, c = await both(address, b"trailer5000", max_metadata=4096)
            assert g[0] is c[0] is grpc.StatusCode.RESOURCE_EXHAUSTED and "4096" in c[1], (g, c)
            g, c = await both(address, b"trailer3000", max_metadata=4096)
            assert g == c and g[0] is grpc.StatusCode.INTERNAL

    asyncio.run(main())


def test_80_mib_both_ways_and_the_receive_limit():
    async def main():
        async with server() as (address, _, _):
            payload = bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256)
            g, c = await both(address, payload, timeout=60)
            assert c == payload and g == payload
            g, c = await both(address, b"big", timeout=60, max_message=64 << 20)  # over the limit: as grpc says it
            assert c[0] is g[0] is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert c[1] == f"Stream removed (CLIENT: Received message larger than max ({BIG} vs. {64 << 20}))" == g[1]
            hc = h2.H2Channel(address, 1 << 20)
            with pytest.raises(grpc.aio.AioRpcError, match="Sent message larger than max") as e:
                await hc.call(ECHO, payload, 5.0)
            assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await hc.call(ECHO, b"still fine", 5.0) == b"still fine"
            await hc.close()

    asyncio.run(main())


def test_deadlines_one_timer_per_connection_and_grpc_timeout_sent():
    async def main():
        async with server() as (address, echo, _):
            hc = h2.H2Channel(address, 1 << 20)
            assert await hc.call(ECHO, b"warm", 5.0) == b"warm"
            t0 = time.monotonic()
            res = await asyncio.gather(*(hc.call(ECHO, b"sleep5", 0.3) for _ in range(100)), *(hc.call(ECHO, b"quick", 5.0) for _ in range(100)),
                                       return_exceptions=True)
            took = time.monotonic() - t0
            late = res[:100]
            assert all(isinstance(r, grpc.aio.AioRpcError) and r.code() is grpc.StatusCode.DEADLINE_EXCEEDED for r in late), late[:3]
            assert res[100:] == [b"quick"] * 100
            assert took < 2.0, took  # the deadline, not the server's 5 s sleep
            conn = hc._conn
            assert conn.timers_armed <= 3, conn.timers_armed  # one timer at a time, not one per call
            assert conn.in_flight == 0
            seen = sorted(t for t in echo.seen_timeouts[1:] if t is not None)  # grpc-timeout reached the server
            # every call reaching the server had a deadline: 0.3 s (the sleepers) or 5 s (the quick ones)
            assert len([t for t in seen if t > 4.0]) == 100 and all(0 < t <= 0.3 or 4.0 < t <= 5.0 for t in seen), seen
            await hc.close()

    asyncio.run(main())


def test_cancelled_call_resets_its_stream_only():
    async def main():
        async with server() as (address, echo, _):
            hc = h2.H2Channel(address, 1 << 20)
            task = asyncio.ensure_future(hc.call(ECHO, b"sleep5", 10.0))
            await asyncio.wait_for(echo.started.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(100):
                if echo.cancelled:
                    break
                await asyncio.sleep(0.02)
            assert echo.cancelled == 1  # the server saw the RST_STREAM
            assert await hc.call(ECHO, b"next", 5.0) == b"next" and hc.connects == 1
            await hc.close()

    asyncio.run(main())


def test_goaway_by_max_connection_age_reconnects_without_errors():
    async def main():
        async with server(**{"grpc.max_connection_age_ms": 200, "grpc.max_connection_age_grace_ms": 5000}) as (address, _, _):
            hc = h2.H2Channel(address, 1 << 20)
            end = time.monotonic() + 1.5
            n = 0
            while time.monotonic() < end:
                rs = await asyncio.gather(*(hc.call(ECHO, b"%d" % i, 5.0) for i in range(8)))
                assert rs == [b"%d" % i for i in range(8)]
                n += 8
            assert hc.connects >= 3, hc.connects  # GOAWAY every 200 ms: new connections, no failed call
            await hc.close()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_gone_mid_call_then_back():
    async def main():
        port = free_port()
        hc = h2.H2Channel(f"127.0.0.1:{port}", 1 << 20)
        async with server(port) as (_, echo, s):
            assert await hc.call(ECHO, b"a", 5.0) == b"a"
            task = asyncio.ensure_future(hc.call(ECHO, b"sleep5", 10.0))
            await asyncio.wait_for(echo.started.wait(), 5)
            t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as e:  # server stopped: the open call fails
            await task
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE and time.monotonic() - t0 < 2
        with pytest.raises(grpc.aio.AioRpcError) as e:  # nobody listens: connect fails, then fail fast
            await hc.call(ECHO, b"b", 5.0)
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE
        assert hc.get_state() is grpc.ChannelConnectivity.TRANSIENT_FAILURE
        async with server(port) as _:
            t0 = time.monotonic()
            while True:  # as the router does: ask for a connection, send when not failing
                if hc.get_state(try_to_connect=True) is not grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        if await hc.call(ECHO, b"c", 5.0) == b"c":
                            break
                assert time.monotonic() - t0 < 5, "not reconnected within 5 s"
                await asyncio.sleep(0.05)
            assert time.monotonic() - t0 < 3.0  # backoff at most 2 s (+ jitter)
        await hc.close()

    asyncio.run(main())


def test_addresses_the_compiled_client_dials():
    assert h2.split_address("127.0.0.1:8001") == ("127.0.0.1", 8001)
    assert h2.split_address("dns:///triton.svc:8001") == ("triton.svc", 8001)
    assert h2.split_address("[::1]:8001") == ("::1", 8001)
    for a in ("unix:/tmp/s", "localhost", "a:b", "ipv4:1.2.3.4:1,1.2.3.5:1", "::1:80"):
        assert h2.split_address(a) is None, a
    from shadowgrpc._h2_c import grpc_timeout

    assert grpc_timeout(1.0) == b"1000000u" and grpc_timeout(0.0) == b"1u" and grpc_timeout(1000.0) == b"1000000m"
    assert grpc_timeout(1e7) == b"10000000S" and grpc_timeout(1e12) == b"99999999S"
