"""The PROTOTYPE compiled HTTP/2 server (shadowgrpc._h2srv_c, issue 14 item 4) against a grpc.aio
client: the same echo service served by grpc.aio's server and by ServerConnection with a plain
handler, and the client must get the same answers, statuses, details and trailing metadata from
both (echo, empty messages, an error with unicode/percent details and text + binary trailing
metadata, 20 MiB both ways, an unknown method, a message over the limit, gzip); the handler sees
the caller's metadata and grpc-timeout; a client that cancels resets the stream and the
``cancelled`` callback fires."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

pytestmark = [pytest.mark.c_extension, pytest.mark.once]

try:
    from shadowgrpc._h2srv_c import ServerConnection
except ImportError:  # not built, or the pure-Python pass (where these tests are deselected: c_extension)
    ServerConnection = None


@pytest.fixture(autouse=True)
def _built():
    if ServerConnection is None:  # in the compiled pass a missing build fails
        pytest.fail("shadowgrpc._h2srv_c is not built: `make build` (libnghttp2-dev)", pytrace=False)

ECHO = "/test.Echo/Echo"
BIG = 20 * 1024 * 1024 + 3
LIMIT = 24 * 1024 * 1024
DETAILS = "bad thing: 100% \u00fcnicode\nline 2"


def _fail_md(metadata) -> tuple:
    return tuple((k, v) for k, v in metadata if k.startswith("x-"))


class GrpcEcho:
    """The reference: grpc.aio's server."""

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request.startswith(b"fail"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, DETAILS, trailing_metadata=_fail_md(context.invocation_metadata()))
        return request


class H2Echo:
    """The same service as a ServerConnection handler; records what it saw."""

    def __init__(self) -> None:
        self.conns: list = []
        self.seen: list[tuple] = []
        self.cancelled: list[int] = []
        self.tasks: dict = {}
        self.started = asyncio.Event()

    def protocol(self):
        conn = ServerConnection(asyncio.get_running_loop(), None, None, LIMIT)
        self.conns.append(conn)

        def handler(sid, path, metadata, timeout, message):
            self.seen.append((path, metadata, timeout, len(message)))
            if path != ECHO.encode():
                conn.respond_error(sid, grpc.StatusCode.UNIMPLEMENTED.value[0], "Method not found!")
            elif message.startswith(b"fail"):
                conn.respond_error(sid, grpc.StatusCode.INVALID_ARGUMENT.value[0], DETAILS, _fail_md(metadata))
            elif message.startswith(b"sleep"):
                self.started.set()
                self.tasks[sid] = asyncio.get_running_loop().call_later(5.0, conn.respond, sid, b"slept")
            else:
                conn.respond(sid, message)

        def cancelled(sid):
            self.cancelled.append(sid)
            self.tasks.pop(sid).cancel()

        conn.bind(handler, cancelled)
        return conn


@contextlib.asynccontextmanager
async def servers():
    """(grpc.aio server's address, the prototype's address, its H2Echo)."""
    ref = GrpcEcho()
    s = grpc.aio.server(options=[("grpc.max_send_message_length", LIMIT), ("grpc.max_receive_message_length", LIMIT),
                                 ("grpc.so_reuseport", 0)])
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(ref.echo)}),))
    port = s.add_insecure_port("127.0.0.1:0")
    await s.start()
    h2 = H2Echo()
    srv = await asyncio.get_running_loop().create_server(h2.protocol, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{port}", f"127.0.0.1:{srv.sockets[0].getsockname()[1]}", h2
    finally:
        srv.close()
        for c in h2.conns:
            c.close()
        await s.stop(None)


async def outcome(address: str, request: bytes, method: str = ECHO, metadata=None, timeout: float = 10.0, **kw):
    """The response bytes, or (code, details, trailing metadata) of the error, as grpc.aio's client gets them."""
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", LIMIT),
                                                           ("grpc.max_send_message_length", 256 << 20)]) as ch:
        mc = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            return await mc(request, timeout=timeout, metadata=metadata, **kw)
        except grpc.aio.AioRpcError as e:
            return (e.code(), e.details(), tuple(e.trailing_metadata()))


def test_same_answers_statuses_details_and_trailers_as_grpc_aio_server():
    async def main():
        async with servers() as (ref, proto, h2):
            md = (("x-a", "1"), ("x-b-bin", b"\x00\xff\x10"), ("x-c-bin", b"\x01\x02"), ("other", "kept"))
            cases = [(b"hello", ECHO, None), (b"", ECHO, None), (b"fail", ECHO, md), (b"fail", ECHO, None), (b"x", "/test.Echo/Nope", None)]
            for req, method, metadata in cases:
                g, c = await outcome(ref, req, method, metadata), await outcome(proto, req, method, metadata)
                assert g == c, (req, method, g, c)
            g = await outcome(proto, b"fail", metadata=md)
            assert g[0] is grpc.StatusCode.INVALID_ARGUMENT and g[1] == DETAILS and g[2] == md[:3]
            # the handler got the caller's metadata (binary decoded, grpc's own headers left out) and deadline
            path, metadata, timeout, _ = h2.seen[2]
            assert path == ECHO.encode() and metadata == md and 9.0 < timeout <= 10.5  # grpc-core rounds the deadline up
            # gzip from the client: decompressed before the handler sees it
            c = await outcome(proto, b"z" * 1000, compression=grpc.Compression.Gzip)
            assert c == b"z" * 1000 and h2.seen[-1][3] == 1000

    asyncio.run(main())


def test_20_mib_both_ways_and_the_receive_limit():
    async def main():
        async with servers() as (ref, proto, _):
            payload = bytes(range(256)) * (BIG // 256) + b"y" * (BIG % 256)
            g, c = await outcome(ref, payload, timeout=30), await outcome(proto, payload, timeout=30)
            assert c == payload and g == payload
            over = b"o" * (LIMIT + 1)
            g, c = await outcome(ref, over, timeout=30), await outcome(proto, over, timeout=30)
            assert c[0] is g[0] is grpc.StatusCode.RESOURCE_EXHAUSTED, (g, c)
            assert c[1] == f"Received message larger than max ({LIMIT + 1} vs. {LIMIT})", c
            assert await outcome(proto, b"after") == b"after"

    asyncio.run(main())


def test_client_cancel_resets_the_stream_and_calls_cancelled():
    async def main():
        async with servers() as (_, proto, h2):
            async with grpc.aio.insecure_channel(proto) as ch:
                mc = ch.unary_unary(ECHO, request_serializer=None, response_deserializer=None)
                call = mc(b"sleep", timeout=10.0)
                await asyncio.wait_for(h2.started.wait(), 5)
                call.cancel()
                for _ in range(100):
                    if h2.cancelled:
                        break
                    await asyncio.sleep(0.02)
                assert len(h2.cancelled) == 1 and not h2.tasks
                assert await mc(b"next", timeout=5.0) == b"next"  # the connection goes on
                assert h2.conns[0].open_streams == 0 and h2.conns[0].closed_early == 1
            # a call whose deadline passes: the client resets it, the handler hears of it
            g = await outcome(proto, b"sleep", timeout=0.3)
            assert g[0] is grpc.StatusCode.DEADLINE_EXCEEDED
            for _ in range(100):
                if len(h2.cancelled) == 2:
                    break
                await asyncio.sleep(0.02)
            assert len(h2.cancelled) == 2

    asyncio.run(main())


# -- shadowgrpc/h2server.py's H2Front over a grpc.aio stand-in for Triton ------------------------
INFER = "/inference.GRPCInferenceService/ModelInfer"


class FakeTriton:
    """ModelInfer answers b"<model>:<version>|" + the request; a request id starting with "fail"
    is refused INVALID_ARGUMENT with the caller's x- metadata as trailing metadata."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool]] = []
        self.cancelled = 0

    async def infer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        from shadowgrpc.packing import scan_request

        model, version, rid, _ = scan_request(request)
        self.seen.append((model, version, b"shadow" in request))
        if rid.startswith("sleep") and version == "1":
            try:
                await asyncio.sleep(5.0)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if rid.startswith("fail"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"model {model}: {DETAILS}", trailing_metadata=_fail_md(context.invocation_metadata()))
        return f"{model}:{version}|".encode() + request

    async def live(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"live:" + request


def infer_request(rid: str) -> bytes:
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name="fraud", model_version="1", id=rid)
    req.inputs.add(name="features", datatype="FP32", shape=[1, 2])
    req.raw_input_contents.append(b"\x00" * 8)
    return req.SerializeToString()


@pytest.mark.parametrize("callbacks", [False, True])
def test_h2front_forwards_live_mirrors_one_shadow_and_maps_errors(callbacks):
    from shadowgrpc.h2 import H2Channel
    from shadowgrpc.h2server import H2Front

    async def main():
        fake = FakeTriton()
        s = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(fake.infer),
                                               "ServerLive": grpc.unary_unary_rpc_method_handler(fake.live)}),))
        up = f"127.0.0.1:{s.add_insecure_port('127.0.0.1:0')}"
        await s.start()
        front = H2Front(H2Channel(up, LIMIT), H2Channel(up, LIMIT), route_model="fraud", shadow_model="fraud", shadow_version="2",
                        callbacks=callbacks)
        address = f"127.0.0.1:{await front.start()}"
        try:
            md = (("x-a", "1"), ("x-b-bin", b"\x01\x02\x03"))
            odd = (("x-c-bin", b"\x01\x02"),)  # base64 "AQI": unpadded on the wire, as grpc-core sends it
            for rid, metadata in (("ok-1", None), ("ok-2", md), ("ok-3", odd), ("fail-1", md)):
                direct = await outcome(up, infer_request(rid), INFER, metadata)
                n = len(fake.seen)
                via = await outcome(address, infer_request(rid), INFER, metadata)
                assert via == direct, (rid, via, direct)  # the live answer / status / details / trailers, byte for byte
                for _ in range(100):  # the shadow: renamed to version 2, marked, sent once
                    if len(fake.seen) == n + 2:
                        break
                    await asyncio.sleep(0.01)
                assert sorted(fake.seen[n:]) == [("fraud", "1", False), ("fraud", "2", True)], fake.seen[n:]
            assert via[0] is grpc.StatusCode.INVALID_ARGUMENT and via[2] == md
            live = "/inference.GRPCInferenceService/ServerLive"  # another unary KServe RPC: forwarded raw
            assert await outcome(address, b"\x08\x01", live, md) == await outcome(up, b"\x08\x01", live, md) == b"live:\x08\x01"
            assert await outcome(address, b"", live) == b"live:"
            stream = "/inference.GRPCInferenceService/ModelStreamInfer"  # not in the prototype
            assert (await outcome(address, b"", stream))[0] is grpc.StatusCode.UNIMPLEMENTED
            assert front.requests == 4 and front.live_errors == 1 and front.shadow_sent == 4 and front.shadow_in_flight == 0
            assert front.shadow_ok == 3 and front.shadow_errors == 1
            # the caller cancels: the front's live call is cancelled upstream (RST_STREAM) too
            async with grpc.aio.insecure_channel(address) as ch:
                call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)(infer_request("sleep-1"), timeout=10.0)
                await asyncio.sleep(0.2)
                call.cancel()
                for _ in range(100):
                    if fake.cancelled:
                        break
                    await asyncio.sleep(0.02)
                assert fake.cancelled == 1
            await s.stop(None)  # the live Triton gone: UNAVAILABLE, as the front gives it
            c = await outcome(address, infer_request("ok-4"), INFER)
            assert c[0] is grpc.StatusCode.UNAVAILABLE, c
        finally:
            await front.close()
            await s.stop(None)

    asyncio.run(main())


def test_h2front_unpadded_binary_trailer_from_upstream():
    """(Found by this test: the client padded base64 with -len % 4, negative under cdivision.)"""
    from shadowgrpc.h2 import H2Channel
    from shadowgrpc.h2server import H2Front

    async def main():
        fake = FakeTriton()
        s = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(fake.infer)}),))
        up = f"127.0.0.1:{s.add_insecure_port('127.0.0.1:0')}"
        await s.start()
        front = H2Front(H2Channel(up, LIMIT))
        address = f"127.0.0.1:{await front.start()}"
        try:
            md = (("x-c-bin", b"\x01\x02"),)
            assert await outcome(address, infer_request("fail-2"), INFER, md) == await outcome(up, infer_request("fail-2"), INFER, md)
        finally:
            await front.close()
            await s.stop(None)

    asyncio.run(main())
