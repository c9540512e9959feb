"""Router plumbing against an in-process fake Triton: shedding, timeouts, metadata, statuses.
The same promises are tested against the real Triton in tests/triton/test_front_*.py."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from shadowgrpc.config import Settings
from shadowgrpc.server import Front
from tests.fakes import FakeTriton


def _request(model: str, rid: str = "", rows: int = 2) -> pb.ModelInferRequest:
    x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    req = pb.ModelInferRequest(model_name=model, id=rid)
    req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req


async def _with_front(cfg_routes: list[dict], body, slow_s: float = 1.0):
    fake = FakeTriton(slow_s=slow_s)
    addr = await fake.start()
    cfg = {"server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "default_live": addr, "grace_s": 1.0}, "routes": cfg_routes}
    try:
        front = Front(Settings.from_dict(cfg))
        await front.start()
    except BaseException:
        await fake.stop()
        raise
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{front.port}")
    try:
        return await body(fake, front, pb_grpc.GRPCInferenceServiceStub(ch))
    finally:
        await ch.close()
        await front.stop(grace=0.5)
        await fake.stop()


def test_slow_shadow_does_not_delay_live_and_is_shed_past_max_in_flight():
    routes = [{"model": "echo", "shadows": [{"name": "slow", "model": "slow", "max_in_flight": 2, "deadline_ms": 3000}]}]

    async def body(fake, front, stub):
        t0 = time.perf_counter()
        resps = await asyncio.gather(*(stub.ModelInfer(_request("echo", f"r{i}"), timeout=5) for i in range(6)))
        live_s = time.perf_counter() - t0
        assert all(r.model_name == "echo" for r in resps)
        assert live_s < 0.5 * fake.slow_s, f"live waited for the slow shadow: {live_s:.3f} s"
        s = front.router.routes["echo"].shadows[0].stats
        assert (s.sampled, s.sent, s.shed) == (6, 2, 4)
        assert await front.router.drain(timeout=5) == 0
        # Both answered (the slow one late): the two pairs were compared, identical outputs.
        assert s.ok == 2 and s.compared == 2 and s.contract_mismatch == 0
        assert s.outputs["out"].abs_diff_max == 0.0 and s.outputs["out"].agreed_rows == s.outputs["out"].rows == 4
        assert s.latency.quantile(0.5) >= 0.6 * 0.99  # quantiles are bucket midpoints: within 1%

    asyncio.run(_with_front(routes, body, slow_s=0.6))


def test_shadow_deadline_defaults_to_the_live_deadline_and_errors_are_classified():
    routes = [{"model": "echo", "shadows": [{"name": "slow", "model": "slow"}, {"name": "fail", "model": "fail"}]}]

    async def body(fake, front, stub):
        resp = await stub.ModelInfer(_request("echo", "a"), timeout=0.3)
        assert resp.model_name == "echo"
        await front.router.drain(timeout=3)
        slow, fail = (ss.stats for ss in front.router.routes["echo"].shadows)
        assert dict(slow.errors) == {"DEADLINE_EXCEEDED": 1}
        assert dict(fail.errors) == {"INVALID_ARGUMENT": 1}
        remaining = {r.model_name: t for r, _, t in fake.requests}
        # grpc sends the deadline as a grpc-timeout header rounded *up* to a coarse unit, so the
        # upstream can see a hair more than the caller's 0.3 s (0.30025 s seen); never seconds.
        assert remaining["echo"] is not None and 0.1 < remaining["echo"] <= 0.3 + 0.005
        assert remaining["slow"] is not None and 0.1 < remaining["slow"] <= 0.3 + 0.005

    asyncio.run(_with_front(routes, body, slow_s=1.0))


def test_metadata_is_forwarded_to_live_and_only_the_allow_list_to_the_marked_shadow():
    routes = [{"model": "echo", "shadows": [{"name": "s", "model": "echo_shadow", "version": "2"}]}]

    async def body(fake, front, stub):
        md = (("x-tenant", "acme"), ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
        await stub.ModelInfer(_request("echo", "id-1"), metadata=md, timeout=5)
        await front.router.drain(timeout=3)
        (live, live_md, _), = [x for x in fake.requests if x[0].model_name == "echo"]
        (shadow, shadow_md, _), = [x for x in fake.requests if x[0].model_name == "echo_shadow"]
        assert live_md["x-tenant"] == "acme" and live_md["traceparent"].startswith("00-0af7")
        assert "x-shadow-request" not in live_md and "shadow" not in live.parameters
        # server.shadow_metadata_allow (default traceparent, tracestate): x-tenant is live's only
        assert shadow_md["x-shadow-request"] == "1" and "x-tenant" not in shadow_md and shadow_md["traceparent"].startswith("00-0af7")
        assert shadow.parameters["shadow"].bool_param is True
        assert shadow.model_version == "2" and shadow.id == "id-1"
        assert shadow.raw_input_contents == live.raw_input_contents
        s = front.router.routes["echo"].shadows[0].stats
        assert s.compared == 1 and s.outputs["out"].kind == "classifier" and s.outputs["out"].agreed_rows == 2

    asyncio.run(_with_front(routes, body))


def test_sampling_by_request_id_is_deterministic_and_roughly_the_rate():
    routes = [{"model": "echo", "shadows": [{"name": "s", "model": "echo2", "sample_rate": 0.25, "max_in_flight": 1000}]}]

    async def body(fake, front, stub):
        for _ in range(2):  # the same ids twice: the same requests are shadowed
            await asyncio.gather(*(stub.ModelInfer(_request("echo", f"req-{i}"), timeout=5) for i in range(400)))
        await front.router.drain(timeout=5)
        shadowed = [r.id for r in fake.by_model("echo2")]
        first, second = shadowed[: len(shadowed) // 2], shadowed[len(shadowed) // 2 :]
        assert sorted(first) == sorted(second)
        assert 60 <= len(first) <= 140, len(first)

    asyncio.run(_with_front(routes, body))


def test_live_errors_keep_tritons_status_and_unrouted_models_pass_through():
    routes = [{"model": "fail", "shadows": [{"name": "s", "model": "echo"}]}]

    async def body(fake, front, stub):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ModelInfer(_request("fail", "x1"), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details() == "[request id: x1] fake failure in fail"
        r = await stub.ModelInfer(_request("echo_unrouted"), timeout=5)
        assert r.model_name == "echo_unrouted"
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ModelMetadata(pb.ModelMetadataRequest(name="missing"), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        await front.router.drain(timeout=3)
        rs = front.router.routes["fail"]
        assert dict(rs.stats.live_errors) == {"INVALID_ARGUMENT": 1}
        assert rs.shadows[0].stats.live_failed == 1 and rs.shadows[0].stats.compared == 0
        assert front.router.state.unrouted == 1

    asyncio.run(_with_front(routes, body))


def test_unreachable_shadow_never_fails_live():
    """A shadow Triton unreachable when the front starts fails its check before traffic: nothing
    is sent (``not_ready``). One that passed its check and then went down is sent to until the
    channel knows, then counted ``down``, never sent at full per-call cost."""

    async def body(fake, front, stub):
        shadow = FakeTriton()
        s_addr = await shadow.start()
        routes = [{"model": "echo", "shadows": [{"name": "gone", "address": "127.0.0.1:1", "model": "echo", "version": "9"},
                                                 {"name": "dies", "address": s_addr, "model": "echo", "version": "9", "deadline_ms": 200}]}]  # fmt: skip
        cfg = {"server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "default_live": fake.address, "grace_s": 1.0, "poll_s": 60}, "routes": routes}
        f2 = Front(Settings.from_dict(cfg))
        await f2.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{f2.port}") as ch:
                st = pb_grpc.GRPCInferenceServiceStub(ch)
                gone, dies = (ss.stats for ss in f2.router.routes["echo"].shadows)
                assert [ss.state.status for ss in f2.router.routes["echo"].shadows] == ["NOT_READY", "MIRRORING"]
                assert "127.0.0.1:1" in f2.router.routes["echo"].shadows[0].state.reason
                await asyncio.gather(*(st.ModelInfer(_request("echo", f"a{i}"), timeout=5) for i in range(10)))
                await f2.router.drain(timeout=3)
                assert (gone.sampled, gone.not_ready, gone.sent) == (10, 10, 0)
                assert (dies.sent, dies.ok) == (10, 10)
                await shadow.stop()
                resps = await asyncio.gather(*(st.ModelInfer(_request("echo", f"d{i}"), timeout=5) for i in range(20)))
                assert len(resps) == 20
                await f2.router.drain(timeout=3)
                assert dies.sent == 10 + sum(dies.errors.values()) and dies.sampled == dies.sent + dies.down == 30
                assert set(dies.errors) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
                # Once the channel knows the target is down, requests are counted as `down`, not sent.
                await asyncio.sleep(0.3)
                sent = dies.sent
                await asyncio.gather(*(st.ModelInfer(_request("echo", f"e{i}"), timeout=5) for i in range(20)))
                assert dies.sent == sent and dies.down >= 20
        finally:
            await f2.stop(grace=0.5)
            await shadow.stop()

    asyncio.run(_with_front([], body))


def test_list_routes_on_the_admin_port():
    from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc

    routes = [{"model": "echo", "live": {"version": "3"}, "shadows": [{"name": "s", "model": "echo2", "sample_rate": 0.5, "deadline_ms": 250}]}]

    async def body(fake, front, stub):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{front.admin_port}") as ch:
            resp = await shadow_pb2_grpc.ShadowControlStub(ch).ListRoutes(shadow_pb2.ListRoutesRequest(), timeout=5)
        assert resp.default_live == fake.address
        (r,) = resp.routes
        assert (r.model, r.live.name, r.live.version, r.live.address) == ("echo", "live", "3", fake.address)
        (s,) = r.shadows
        assert (s.name, s.model, s.sample_rate, s.deadline_s, s.max_in_flight) == ("s", "echo2", 0.5, 0.25, 64)

    asyncio.run(_with_front(routes, body))
