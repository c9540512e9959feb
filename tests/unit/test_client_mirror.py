"""The client-side mirror's plumbing against in-process fakes: ReportPairs' rejections and
accounting on a real front, the mirror's bounds (max_in_flight, bytes, report queue), the outlier
breaker, the deadline and sampling rules, reconnection to the front, and the interceptors leaving the live outcome
untouched. Against the real Triton: tests/triton/test_client_mirror.py."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc.client import AsyncShadowMirror, ShadowMirror, mirror_interceptor
from shadowgrpc.client._breaker import EJECTED, PROBE, SEND, Breaker
from shadowgrpc.client.intercept import MirroredUnary
from shadowgrpc.config import Settings
from shadowgrpc.packing import sample_key
from shadowgrpc.server import Front
from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc
from tests.fakes import FakeTriton

INFER = "/inference.GRPCInferenceService/ModelInfer"
ROUTES = [{"model": "echo", "shadows": [{"name": "v2", "model": "echo2"}]}]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _req(rid: str = "", rows: int = 2, model: str = "echo") -> bytes:
    x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    req = pb.ModelInferRequest(model_name=model, id=rid)
    req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req.SerializeToString()


async def _env(body, slow_s: float = 0.5, admin_port: int = 0, routes=ROUTES):
    """A FakeTriton (live and shadow endpoint) and a collector front on it; ``body(fake, front)``."""
    fake = FakeTriton(slow_s=slow_s)
    addr = await fake.start()
    server = {"listen": "127.0.0.1:0", "admin_listen": f"127.0.0.1:{admin_port}", "default_live": addr, "grace_s": 0.5}
    front = Front(Settings.from_dict({"server": server, "routes": routes}))
    await front.start()
    try:
        return await body(fake, front)
    finally:
        await front.stop(grace=0.5)
        await fake.stop()


def _target(front, route="echo"):
    rs = front.router.routes[route]
    return rs.stats, rs.shadows[0].stats


def test_report_pairs_rejects_by_reason_and_accounts_the_rest():
    """Batches (one empty) of good and bad pairs: each pair counted on its own; shed / down pairs
    carry no bytes and still count in the route's live figures."""
    async def body(fake, front):
        live_ch = grpc.aio.insecure_channel(fake.address)
        infer = live_ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        raw = _req("p1")
        live = await infer(raw, timeout=5)
        await live_ch.close()
        P = shadow_pb2.ObservedPair
        good = {"route": "echo", "target": "v2", "request": raw, "live_status": "OK", "live_latency_s": 0.002}
        pairs = [
            P(**{**good, "route": "nope"}, shadow_status="SHED"),
            P(**{**good, "target": "nope"}, shadow_status="SHED"),
            P(**{**good, "live_status": "FINE"}, shadow_status="SHED"),
            P(**good, live_response=live, shadow_status="MAYBE"),
            P(**{**good, "live_latency_s": float("nan")}, shadow_status="SHED"),
            P(**{**good, "request": b""}, live_response=live, shadow_status="OK", shadow_response=live),
            P(**{**good, "request": b"\xff\xff\xff"}, live_response=live, shadow_status="UNAVAILABLE"),
            P(**good, shadow_status="OK", shadow_response=live),
            P(**good, live_response=live, shadow_status="OK"),
            # accepted: shed, down (no bytes needed), compared, a shadow error, live failed
            P(route="echo", target="v2", live_status="OK", live_latency_s=0.001, shadow_status="SHED"),
            P(route="echo", target="v2", live_status="OK", live_latency_s=0.001, shadow_status="DOWN"),
            P(**good, live_response=live, shadow_status="OK", shadow_response=live, shadow_latency_s=0.003),
            P(**good, live_response=live, shadow_status="DEADLINE_EXCEEDED"),
            P(**{**good, "live_status": "UNAVAILABLE"}, shadow_status="OK", shadow_response=live, shadow_latency_s=0.003),
        ]
        batches = [shadow_pb2.ObservedPairs(pairs=pairs[:4]), shadow_pb2.ObservedPairs(), shadow_pb2.ObservedPairs(pairs=pairs[4:])]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{front.admin_port}") as ch:
            resp = await shadow_pb2_grpc.ShadowControlStub(ch).ReportPairs(iter(batches), timeout=10)
        assert (resp.received, resp.accepted, resp.rejected) == (14, 5, 9)  # pairs, not messages
        assert dict(resp.rejected_reasons) == {
            "unknown_route": 1, "unknown_target": 1, "unknown_live_status": 1, "unknown_shadow_status": 1,
            "bad_latency": 1, "no_request": 1, "unparseable_request": 1, "no_live_response": 1, "no_shadow_response": 1,
        }  # fmt: skip
        rst, s = _target(front)
        assert (rst.requests, rst.live_ok, dict(rst.live_errors), rst.live_latency.count) == (5, 4, {"UNAVAILABLE": 1}, 4)
        assert (s.sampled, s.shed, s.down, s.sent, s.ok, dict(s.errors)) == (5, 1, 1, 3, 2, {"DEADLINE_EXCEEDED": 1})
        assert (s.compared, s.live_failed, s.internal_errors, s.latency.count) == (1, 1, 0, 2)
        assert front.router.routes["echo"].shadows[0].in_flight == 0
        assert fake.by_model("echo2") == []  # a collector sends nothing itself

    asyncio.run(_env(body))


def test_max_in_flight_sheds_reports_shed_and_never_blocks_the_caller():
    async def body(fake, front):
        mirror = AsyncShadowMirror(fake.address, f"127.0.0.1:{front.admin_port}", "echo", "v2", model="slow", max_in_flight=2, deadline_s=3.0)
        t0 = time.perf_counter()
        for i in range(6):
            mirror.observe(_req(f"m{i}"), b"", "UNAVAILABLE", 0.001)
        assert time.perf_counter() - t0 < 0.05
        await asyncio.sleep(0.05)
        st = mirror.stats()
        assert (st["sampled"], st["sent"], st["shed"], st["in_flight"]) == (6, 2, 4, 2)
        await mirror.aclose(5)
        st = mirror.stats()
        assert (st["ok"], st["reported"], st["acknowledged"], st["buffered_bytes"]) == (2, 6, 6, 0)
        rst, s = _target(front)
        assert (s.sampled, s.sent, s.shed, s.ok, s.live_failed) == (6, 2, 4, 2, 2)
        assert dict(rst.live_errors) == {"UNAVAILABLE": 6}

    asyncio.run(_env(body))


def test_byte_budget_sheds_and_deadline_rules():
    async def body(fake, front):
        control = f"127.0.0.1:{front.admin_port}"
        big = _req("big", rows=200)  # ~2.4 kB
        mirror = AsyncShadowMirror(fake.address, control, "echo", "v2", model="slow", max_buffer_mb=4000 / 2**20)
        mirror.observe(big, None, "CANCELLED", 0.0, timeout=0.25)  # no deadline_s: the live call's
        mirror.observe(big, None, "CANCELLED", 0.0, timeout=0.25)  # over the byte budget
        mirror.observe(_req("nodeadline"), None, "CANCELLED", 0.0)  # neither: the 1 s fallback
        await mirror.aclose(5)
        st = mirror.stats()
        assert (st["sent"], st["shed"], st["errors"], st["ok"]) == (2, 1, {"DEADLINE_EXCEEDED": 1}, 1), st
        remaining = sorted(t for r, _, t in fake.requests if r.model_name == "slow")
        assert remaining[0] <= 0.26 and 0.5 < remaining[1] <= 1.05  # grpc-timeout on the wire: a few ms of rounding

    asyncio.run(_env(body, slow_s=0.4))


def test_sampling_is_the_front_s_by_request_id():
    async def body(fake, front):
        mirror = AsyncShadowMirror(fake.address, f"127.0.0.1:{front.admin_port}", "echo", "v2", model="echo2", sample_rate=0.3, max_in_flight=200)
        ids = [f"s{i}" for i in range(200)]
        for rid in ids:
            mirror.observe(_req(rid), None, "UNAVAILABLE", 0.0)
        await mirror.aclose(5)
        want = {rid for rid in ids if sample_key(rid) < 0.3}
        assert {r.id for r in fake.by_model("echo2")} == want
        assert mirror.stats()["not_sampled"] == len(ids) - len(want)

    asyncio.run(_env(body))


def test_dead_front_drops_and_counts_then_reconnects():
    port = _free_port()

    async def body() -> None:
        fake = FakeTriton()
        addr = await fake.start()
        mirror = ShadowMirror(addr, f"127.0.0.1:{port}", "echo", "v2", model="echo2", report_queue=5)
        try:
            for i in range(20):
                mirror.observe(_req(f"d{i}"), None, "UNAVAILABLE", 0.0)
            await asyncio.sleep(0.5)
            st = mirror.stats()
            assert st["report_errors"] >= 1 and st["reported"] <= 1 and st["report_dropped"] >= 14, st

            async def later(fake2, front):
                await asyncio.sleep(2.5)  # the reporter's backoff (at most 2 s) brings it back
                for i in range(10):
                    mirror.observe(_req(f"e{i}"), None, "UNAVAILABLE", 0.0)
                    await asyncio.sleep(0.02)
                await asyncio.to_thread(mirror.close, 5)
                st = mirror.stats()
                assert st["acknowledged"] >= 10 and st["reported"] + st["report_dropped"] == 30, repr(st)
                assert _target(front)[1].sampled == st["acknowledged"]

            await _env(later, admin_port=port)
        finally:
            await asyncio.to_thread(mirror.close, 1)
            await fake.stop()

    asyncio.run(body())


@pytest.mark.parametrize("hook", ["interceptor", "multicallable"])
def test_interceptor_leaves_the_live_outcome_untouched(hook):
    """The raw grpc interceptor and ``MirroredUnary`` (what mirror_tritonclient puts in place of the
    stub's ModelInfer): blocking, ``with_call``, ``future`` and a failing call give the caller
    exactly what the plain channel gives; each call is mirrored and reported."""

    async def body(fake, front):
        def calls(with_mirror: bool):
            mirror = ShadowMirror(fake.address, f"127.0.0.1:{front.admin_port}", "echo", "v2", model="echo2")
            ch = grpc.insecure_channel(fake.address)
            if with_mirror and hook == "interceptor":
                ch = grpc.intercept_channel(ch, mirror_interceptor(mirror))
            stub = ch.unary_unary(INFER, request_serializer=pb.ModelInferRequest.SerializeToString, response_deserializer=pb.ModelInferResponse.FromString)
            if with_mirror and hook == "multicallable":
                stub = MirroredUnary(stub, mirror)
            ok = stub(pb.ModelInferRequest.FromString(_req("i1")), timeout=5)
            fut = stub.future(pb.ModelInferRequest.FromString(_req("i2")), timeout=5).result()
            wc = stub.with_call(pb.ModelInferRequest.FromString(_req("i4")), timeout=5)[0]
            with pytest.raises(grpc.RpcError) as err:
                stub(pb.ModelInferRequest.FromString(_req("i3", model="fail")), timeout=5)
            ch.close()
            mirror.close(5)
            return ok, fut, wc, (err.value.code(), err.value.details()), mirror.stats()

        plain = await asyncio.to_thread(calls, False)
        mirrored = await asyncio.to_thread(calls, True)
        assert mirrored[:4] == plain[:4]
        assert mirrored[3][0] == grpc.StatusCode.INVALID_ARGUMENT
        assert (mirrored[4]["sent"], mirrored[4]["reported"], mirrored[4]["acknowledged"]) == (4, 4, 4)
        rst, _ = _target(front)
        assert (rst.live_ok, dict(rst.live_errors)) == (3, {"INVALID_ARGUMENT": 1})

    asyncio.run(_env(body))


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_breaker_ejects_after_consecutive_failures_probes_and_closes():
    clock = _Clock()
    b = Breaker(3, 5.0, 12.0, clock)
    for st in ("DEADLINE_EXCEEDED", "UNAVAILABLE", "OK", "DEADLINE_EXCEEDED", "INVALID_ARGUMENT", "UNAVAILABLE", None, "UNAVAILABLE"):
        b.record(st, False)  # an answer (OK or not) resets the count; no outcome (None) leaves it
    assert (b.state, b.failures, b.admit()) == ("closed", 2, SEND)
    b.record("DEADLINE_EXCEEDED", False)
    assert (b.state, b.ejections, b.interval, b.admit()) == ("ejected", 1, 5.0, EJECTED)
    b.record("OK", False)  # a call started before the ejection does not close it
    clock.t += 4.9
    assert b.admit() == EJECTED
    clock.t += 0.1
    assert (b.admit(), b.admit(), b.state, b.probes) == (PROBE, EJECTED, "probing", 1)  # one probe at a time
    b.record("UNAVAILABLE", False)  # not the probe: ignored
    b.record(None, True)  # the probe had no outcome (cancelled): the next call probes again
    assert (b.state, b.admit(), b.state, b.probes) == ("ejected", PROBE, "probing", 2)
    b.record("DEADLINE_EXCEEDED", True)  # probe failed: twice the interval
    assert (b.state, b.ejections, b.interval) == ("ejected", 2, 10.0)
    clock.t += 10.0
    assert b.admit() == PROBE
    b.record("UNAVAILABLE", True)
    assert (b.interval, b.ejections) == (12.0, 3)  # capped
    clock.t += 11.9
    assert b.admit() == EJECTED
    clock.t += 0.1
    assert b.admit() == PROBE
    b.record("RESOURCE_EXHAUSTED", True)  # the endpoint answered: closed, interval back to eject_s
    assert (b.state, b.admit(), b.failures) == ("closed", SEND, 0)
    for _ in range(3):
        b.record("UNAVAILABLE", False)
    assert (b.state, b.interval, b.ejections, b.probes) == ("ejected", 5.0, 4, 4)
    assert b.snapshot() == {"state": "ejected", "ejections": 4, "probes": 4, "interval_s": 5.0}


def test_breaker_off():
    b = Breaker(0, 5.0, 60.0)
    for _ in range(100):
        b.record("DEADLINE_EXCEEDED", False)
    assert (b.state, b.admit(), b.ejections) == ("closed", SEND, 0)
    with pytest.raises(ValueError, match="eject_after"):
        ShadowMirror("127.0.0.1:1", "127.0.0.1:2", "echo", "v2", eject_after=-1)
    with pytest.raises(ValueError, match="eject_s"):
        ShadowMirror("127.0.0.1:1", "127.0.0.1:2", "echo", "v2", eject_s=10.0, max_eject_s=5.0)


def test_mirror_ejects_a_timing_out_shadow_sheds_probes_and_recovers():
    """Three timeouts eject the shadow: sampled calls are shed (reason ``ejected``) and reported as
    SHED; after the interval one probe goes; it times out (ejected again, twice as long); the next
    probe answers and the breaker closes. The collector counts each pair."""

    async def body(fake, front):
        control = f"127.0.0.1:{front.admin_port}"
        mirror = AsyncShadowMirror(fake.address, control, "echo", "v2", deadline_s=0.05, eject_after=3, eject_s=0.3, max_eject_s=5)
        obs = lambda rid, model="slow": mirror.observe(_req(rid, model=model), None, "UNAVAILABLE", 0.001)  # noqa: E731
        for i in range(3):
            obs(f"a{i}")  # model "slow": answers after 0.5 s, past the 50 ms deadline
        await asyncio.sleep(0.2)
        st = mirror.stats()
        assert (st["sent"], st["errors"], st["breaker"]["state"], st["breaker"]["ejections"]) == (3, {"DEADLINE_EXCEEDED": 3}, "ejected", 1)
        for i in range(4):
            obs(f"b{i}", "echo2")  # ejected: not sent, even to a model that would answer
        await asyncio.sleep(0.35)  # the 0.3 s interval is over
        obs("p1")  # the probe (times out)
        obs("c1", "echo2")  # shed: the probe is in flight
        await asyncio.sleep(0.03)
        assert mirror.stats()["breaker"]["state"] == "probing"
        await asyncio.sleep(0.1)
        st = mirror.stats()
        assert (st["breaker"]["state"], st["breaker"]["ejections"], st["breaker"]["interval_s"]) == ("ejected", 2, 0.6)
        await asyncio.sleep(0.65)
        obs("p2", "echo2")  # this probe answers: closed
        await asyncio.sleep(0.1)
        obs("d1", "echo2")
        await mirror.aclose(5)
        st = mirror.stats()
        assert st["breaker"] == {"state": "closed", "ejections": 2, "probes": 2, "interval_s": 0.0}
        assert (st["sampled"], st["sent"], st["ok"], st["errors"]) == (11, 6, 2, {"DEADLINE_EXCEEDED": 4}), st  # a0-a2, p1 failed
        assert (st["shed"], st["shed_reasons"], st["down"]) == (5, {"ejected": 5}, 0)
        assert (st["reported"], st["acknowledged"]) == (11, 11)
        assert sorted(r.id for r in fake.by_model("echo2")) == ["d1", "p2"]
        _, s = _target(front)
        assert (s.sampled, s.sent, s.shed, s.ok, dict(s.errors)) == (11, 6, 5, 2, {"DEADLINE_EXCEEDED": 4})

    asyncio.run(_env(body))
