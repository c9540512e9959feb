"""`shadowgrpc report` reads reports larger than grpc's default 4 MiB receive limit (no Triton)."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import grpc
import pytest

from shadowgrpc.client import channel_options, fetch_report
from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc

BIG = 5 * 1024 * 1024 + 123  # over grpc's default max receive length (4 MiB)


class BigReport(shadow_pb2_grpc.ShadowControlServicer):
    """GetReport answers a Report of more than 5 MiB (its snapshot field filled)."""

    async def GetReport(self, request, context):
        return shadow_pb2.Report(version="test", snapshot=b"x" * BIG, replicas=1)


@contextlib.contextmanager
def admin_server():
    """A grpc.aio ShadowControl server in its own thread, built with the admin server's own options
    (shadowgrpc/server.py: ``grpc.aio.server(options=[("grpc.so_reuseport", 0)])``, no send limit
    set, so grpc's server default applies). Yields its address."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="admin", daemon=True)
    thread.start()

    async def start():
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        shadow_pb2_grpc.add_ShadowControlServicer_to_server(BigReport(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_fetch_report_reads_a_report_over_4_mib():
    with admin_server() as addr:
        rep = fetch_report(addr, timeout=30)
        assert rep.version == "test" and len(rep.snapshot) == BIG
        # The same call with grpc's default receive limit fails: what fetch_report did before.
        with grpc.insecure_channel(addr) as ch, pytest.raises(grpc.RpcError) as e:
            shadow_pb2_grpc.ShadowControlStub(ch).GetReport(shadow_pb2.GetReportRequest(), timeout=30)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_report_cli_prints_a_report_over_4_mib_and_honours_max_message_mb(capsys):
    from shadowgrpc.cli import main

    with admin_server() as addr:
        assert main(["report", "--target", addr, "--timeout", "30"]) == 0
        out = capsys.readouterr()
        assert "shadowgrpc test" in out.out, out
        assert main(["report", "--target", addr, "--timeout", "30", "--max-message-mb", "4"]) == 1
        assert "RESOURCE_EXHAUSTED" in capsys.readouterr().err
        assert main(["report", "--target", addr, "--timeout", "30", "--max-message-mb", "0"]) == 0  # 0: no limit
        capsys.readouterr()
    assert main(["report", "--target", "127.0.0.1:1", "--max-message-mb", "-1"]) == 2
    assert "--max-message-mb" in capsys.readouterr().err


def test_channel_options():
    assert channel_options(256) == [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
    assert channel_options(0) == [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    with pytest.raises(ValueError, match="max_message_mb"):
        channel_options(4096)


def test_the_fronts_admin_server_sends_a_report_over_4_mib(monkeypatch):
    """The real admin server (Front.admin) sets no send limit: grpc's server default (none) lets a
    report of 6 MiB through; only the client's receive limit mattered."""
    import shadowgrpc.servicer as servicer
    from tests.frontctl import FrontThread

    build = servicer.build_report

    def big(router, model, costs):
        rep = build(router, model, costs)
        rep.snapshot = b"y" * (6 << 20)
        return rep

    monkeypatch.setattr(servicer, "build_report", big)
    cfg = {"server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "default_live": "127.0.0.1:1"}, "routes": []}
    ft = FrontThread(cfg).start()
    try:
        rep = fetch_report(ft.admin_address, timeout=30)
    finally:
        ft.stop()
    assert len(rep.snapshot) == 6 << 20 and rep.version
