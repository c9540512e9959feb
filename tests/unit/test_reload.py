"""Config reload (shadowgrpc/reload.py) and the bounded stop, against an in-process fake Triton:
what a reload keeps, opens, closes and refuses; the Reload RPC's statuses. Under load, with the
real Triton, by SIGHUP and RPC: tests/triton/test_lifecycle.py."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from shadowgrpc.config import ConfigError, Settings
from shadowgrpc.reload import ReloadRefused, restart_keys
from shadowgrpc.server import Front
from shadowgrpc.state import CLOSED, MIRRORING
from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc
from tests.fakes import FakeTriton

pytestmark = pytest.mark.once  # no twin code on the path under test


def _request(model: str, rid: str) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, id=rid)
    req.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    req.raw_input_contents.append(np.arange(3, dtype=np.float32).tobytes())
    return req


def _toml(addr: str, routes: str, server: str = "") -> str:
    return f'[server]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\ndefault_live = "{addr}"\ngrace_s = 1.0\npoll_s = 60\n{server}\n{routes}'


ROUTE_A = '[[routes]]\nmodel = "echo"\n[[routes.shadows]]\nname = "a"\nmodel = "echo_a"\n'


def _settings(text: str) -> Settings:
    import tomllib

    return Settings.from_dict(tomllib.loads(text))


async def _with_front(routes: str, body, server: str = "", slow_s: float = 1.0):
    fake = FakeTriton(slow_s=slow_s)
    addr = await fake.start()
    front = Front(_settings(_toml(addr, routes, server)))
    try:
        await front.start()
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{front.port}")
        admin = grpc.aio.insecure_channel(f"127.0.0.1:{front.admin_port}")
        try:
            return await body(fake, addr, front, pb_grpc.GRPCInferenceServiceStub(ch), shadow_pb2_grpc.ShadowControlStub(admin))
        finally:
            await ch.close()
            await admin.close()
    finally:
        await front.stop(grace=0.5)
        await fake.stop()


def test_restart_keys_are_named_and_reloadable_keys_are_not():
    old = _settings(_toml("127.0.0.1:9001", ROUTE_A, '[log]\npath = "/tmp/x"\n'))
    changed = _toml("127.0.0.1:9002", "", 'max_message_mb = 64\nshadow_grace_s = 1\n[log]\npath = "/tmp/y"\nflush_rows = 10\nsample_rate = 0.5\n')
    new = _settings(changed.replace('listen = "127.0.0.1:0"\nadmin', 'listen = "127.0.0.1:1"\nadmin', 1))
    assert restart_keys(old, new) == ["server.listen", "server.max_message_mb", "log.path", "log.flush_rows"]
    # default_live, shadow_grace_s, routes and log.sample_rate reload
    assert restart_keys(old, _settings(_toml("127.0.0.1:9002", "", 'shadow_grace_s = 1\n[log]\npath = "/tmp/x"\nsample_rate = 0.5\n'))) == []
    assert restart_keys(old, _settings(_toml("127.0.0.1:9001", ROUTE_A))) == ["log.path (the [log] table on or off)"]


def test_stop_timeout_must_leave_time_to_flush():
    with pytest.raises(ConfigError, match=r"server.stop_timeout_s: must exceed grace_s \+ shadow_grace_s \(12 s\)"):
        Settings.from_dict({"server": {"grace_s": 10, "shadow_grace_s": 2, "stop_timeout_s": 12}})
    s = Settings.from_dict({"server": {"grace_s": 100}})
    assert (s.shadow_grace_s, s.stop_timeout_s) == (2.0, 112.0)  # the default grows with a long grace


def test_reload_keeps_counts_opens_closes_and_swaps_whole():
    async def body(fake, addr, front, stub, admin):
        for i in range(5):
            await stub.ModelInfer(_request("echo", f"r{i}"), timeout=5)
        await front.router.drain(5)
        a = front.router.state.routes["echo"].shadows[0]
        assert (a.status, a.stats.sent) == (MIRRORING, 5)
        entry0 = front.router.routes["echo"]
        new = ROUTE_A.replace('model = "echo_a"\n', 'model = "echo_a"\nmax_in_flight = 7\n')
        new += '[[routes.shadows]]\nname = "b"\nmodel = "echo_b"\n[[routes]]\nmodel = "echo2"\n[[routes.shadows]]\nname = "c"\nmodel = "echo_c"\n'
        changes = await front.reload(_settings(_toml(addr, new)))
        assert "route 'echo2' added" in changes and "route 'echo': shadow 'b' added" in changes
        assert any("shadow 'a' retuned" in c for c in changes), changes
        rs = front.router.state.routes["echo"]
        assert rs.shadows[0] is a and a.stats.sent == 5 and a.target.max_in_flight == 7  # counts go on
        entry = front.router.routes["echo"]
        assert entry is not entry0 and entry.generation > entry0.generation  # swapped, then published again by the poll
        assert [(leg.name, leg.mirroring) for leg in entry.shadows] == [("echo_a", True), ("echo_b", True)]  # checked before the RPC returned
        for i in range(4):
            await stub.ModelInfer(_request("echo", f"s{i}"), timeout=5)
            await stub.ModelInfer(_request("echo2", f"t{i}"), timeout=5)
        await front.router.drain(5)
        assert (a.stats.sent, rs.shadows[1].stats.sent, front.router.state.routes["echo2"].shadows[0].stats.sent) == (9, 4, 4)
        # Remove a (its window closes, kept in the report), drop echo2: the RPC this time.
        resp = await admin.Reload(shadow_pb2.ReloadRequest(config_toml=_toml(addr, '[[routes]]\nmodel = "echo"\n[[routes.shadows]]\nname = "b"\nmodel = "echo_b"\n')), timeout=10)
        assert resp.applied and "route 'echo2' removed" in resp.changes and "route 'echo': shadow 'a' removed" in resp.changes
        assert a.status == CLOSED and "removed from the config" in a.closed_reason
        before = len(fake.by_model("echo_a"))
        await stub.ModelInfer(_request("echo", "u0"), timeout=5)
        await stub.ModelInfer(_request("echo2", "u1"), timeout=5)  # unrouted now: live answers, nothing mirrored
        await front.router.drain(5)
        assert len(fake.by_model("echo_a")) == before and len(fake.by_model("echo_c")) == 4
        routes = await admin.ListRoutes(shadow_pb2.ListRoutesRequest(), timeout=5)
        assert [(r.model, [t.name for t in r.shadows]) for r in routes.routes] == [("echo", ["b"])]
        assert front.router.state.unrouted == 1
        # Re-adding a keeps the old window's counts under another name; the new one starts at zero.
        await front.reload(_settings(_toml(addr, ROUTE_A)))
        names = [(t.target.name, t.status, t.stats.sent) for t in front.router.state.routes["echo"].shadows]
        assert names[0] == ("a#2", CLOSED, 9) and names[-1] == ("a", MIRRORING, 0), names

    asyncio.run(_with_front(ROUTE_A, body))


def test_bad_configs_are_refused_with_the_error_and_the_old_one_serves():
    async def body(fake, addr, front, stub, admin):
        routes0, entries0 = front.router.state.routes, front.router.routes
        cases = [
            ("[server\n", grpc.StatusCode.INVALID_ARGUMENT, "not valid TOML"),
            (_toml(addr, ROUTE_A.replace('name = "a"', 'name = "a"\nsample_rat = 1')), grpc.StatusCode.INVALID_ARGUMENT, "routes[0].shadows[0].sample_rat"),
            (_toml(addr, ROUTE_A, "max_message_mb = 64"), grpc.StatusCode.FAILED_PRECONDITION, "server.max_message_mb: cannot change without a restart"),
            (_toml(addr, ROUTE_A).replace('admin_listen = "127.0.0.1:0"', 'admin_listen = "127.0.0.1:1"'), grpc.StatusCode.FAILED_PRECONDITION, "server.admin_listen"),
        ]
        for text, code, words in cases:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await admin.Reload(shadow_pb2.ReloadRequest(config_toml=text), timeout=10)
            assert e.value.code() == code and words in e.value.details(), (words, e.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as e:  # no --config to re-read
            await admin.Reload(shadow_pb2.ReloadRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "--config" in e.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await admin.Reload(shadow_pb2.ReloadRequest(config_path="/nonexistent/x.toml"), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "cannot read config" in e.value.details()
        assert front.router.state.routes is routes0 and front.router.routes is entries0  # nothing changed
        await stub.ModelInfer(_request("echo", "ok"), timeout=5)
        with pytest.raises(ReloadRefused, match="server.listen"):
            await front.reload(_settings(_toml(addr, ROUTE_A).replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:2"', 1)))

    asyncio.run(_with_front(ROUTE_A, body))


def test_stop_is_bounded_by_stop_timeout_and_cancels_shadows_past_their_grace():
    routes = '[[routes]]\nmodel = "echo"\n[[routes.shadows]]\nname = "slow"\nmodel = "slow"\ndeadline_ms = 20000\n'

    async def body(fake, addr, front, stub, admin):
        for i in range(3):
            await stub.ModelInfer(_request("echo", f"r{i}"), timeout=5)
        t0 = time.monotonic()
        await front.stop()
        took = time.monotonic() - t0
        s = front.router.state.routes["echo"].shadows[0].stats
        assert s.errors["CANCELLED"] == 3, s.errors  # cancelled after shadow_grace_s, counted
        assert 0.3 <= took < 2.5, took  # shadow grace 0.3 s, not the shadow's 10 s

    asyncio.run(_with_front(routes, body, server="shadow_grace_s = 0.3\nstop_timeout_s = 2.5", slow_s=10.0))


def test_reload_cli_applies_and_refuses(tmp_path, capsys):
    from shadowgrpc.cli import main

    async def body(fake, addr, front, stub, admin):
        target = f"127.0.0.1:{front.admin_port}"
        good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
        good.write_text(_toml(addr, ROUTE_A + '[[routes]]\nmodel = "echo2"\n'))
        bad.write_text(_toml(addr, ROUTE_A, "max_message_mb = 64"))
        assert await asyncio.to_thread(main, ["reload", "--target", target, "--config", str(good)]) == 0
        assert await asyncio.to_thread(main, ["reload", "--target", target, "--config", str(bad)]) == 1
        assert await asyncio.to_thread(main, ["reload", "--target", target, "--config", str(tmp_path / "none.toml")]) == 1
        assert list(front.router.routes) == ["echo", "echo2"]

    asyncio.run(_with_front(ROUTE_A, body))
    out, err = capsys.readouterr()
    assert "applied" in out and "route 'echo2' added" in out
    assert "refused: FAILED_PRECONDITION: server.max_message_mb: cannot change without a restart" in err
    assert "none.toml: cannot read" in err


def test_plan_restarts_a_route_whose_live_changed_and_closes_auto_windows_of_a_changed_policy():
    from shadowgrpc.reload import plan
    from shadowgrpc.state import FrontState, TargetState

    auto = '[[routes]]\nmodel = "fraud"\nlive = { version = "1" }\nshadow = "newest"\n'
    old = _settings(_toml("127.0.0.1:9001", ROUTE_A + auto))
    state = FrontState.for_routes(old.routes, 10, 60.0, 1 << 20)
    a, window = state.routes["echo"].shadows[0], TargetState(old.routes[0].shadows[0], auto=True, status=MIRRORING)
    a.stats.sent = 5
    state.routes["fraud"].shadows.append(window)
    new = _settings(_toml("127.0.0.1:9001", ROUTE_A.replace('model = "echo"\n', 'model = "echo"\nlive = { model = "other" }\n') + auto.replace('"newest"', "{ newest = 2 }")))
    p = plan(state, new)
    assert p.routes["echo"] is not state.routes["echo"] and p.routes["echo"].shadows[0].stats.sent == 0  # a fresh state
    assert "route 'echo': live target, outputs or slices changed: its counts start again" in p.changes
    assert p.routes["fraud"] is state.routes["fraud"] and "route 'fraud': auto-shadow policy changed" in p.changes
    assert [(ts, why) for ts, why, _ in p.close] == [(window, "config reload: the route's auto-shadow policy changed")]
    assert window.status == MIRRORING  # the plan changes nothing: the swap does


def test_reload_needs_the_admin_token_when_one_is_set(tmp_path, monkeypatch, capsys):
    from shadowgrpc.cli import main

    monkeypatch.setenv("SHADOWGRPC_TEST_RELOAD_TOKEN", "s3cret-token-0123456789")
    monkeypatch.delenv("SHADOWGRPC_ADMIN_TOKEN", raising=False)
    server = 'admin_token_env = "SHADOWGRPC_TEST_RELOAD_TOKEN"'

    async def body(fake, addr, front, stub, admin):
        target = f"127.0.0.1:{front.admin_port}"
        good = tmp_path / "good.toml"
        good.write_text(_toml(addr, ROUTE_A + '[[routes]]\nmodel = "echo2"\n', server))
        assert await asyncio.to_thread(main, ["reload", "--target", target, "--config", str(good)]) == 1
        assert list(front.router.routes) == ["echo"]
        token = tmp_path / "token"
        token.write_text("s3cret-token-0123456789\n")
        assert await asyncio.to_thread(main, ["reload", "--target", target, "--config", str(good), "--token-file", str(token)]) == 0
        assert list(front.router.routes) == ["echo", "echo2"]

    asyncio.run(_with_front(ROUTE_A, body, server=server))
    assert "refused: UNAUTHENTICATED" in capsys.readouterr().err
