"""The paired log's faults with a real front process serving real traffic: kill -9 mid-write loses
at most the flush window and leaves every finished file readable, and the next start continues the
table; a disk that refuses writes (a file-size limit, the stand-in for a full disk that needs no
mount) stops logging with a clear error and a counter, never the serving."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from tests.serveproc import FULL_DISK, serve

pytestmark = [pytest.mark.triton, pytest.mark.once]  # once: the log writer's faults in a serve process; no twin-dependent result (make test's pure-Python pass skips it)

ROUTE = '[[routes]]\nmodel = "fraud"\nlive = { version = "1" }\n[[routes.shadows]]\nname = "v2"\nversion = "2"\n'


def _serve(tmp_path: Path, triton: str, log: str, name: str, wrap=()) -> tuple[subprocess.Popen, int, int]:
    return serve(tmp_path, triton, f"{log}\n{ROUTE}", name=name, grace_s=5.0, wrap=wrap)


class Traffic:
    """Requests in a loop on one channel until stopped; the time of every OK answer is kept."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port, self.prefix = port, prefix
        self.ok: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        feats = np.ones((1, 8), np.float32)
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None, response_deserializer=None)
            i = 0
            while not self._stop.is_set() and i < 20000:
                req = pb.ModelInferRequest(model_name="fraud", id=f"{self.prefix}-{i}")
                req.inputs.add(name="features", datatype="FP32", shape=[1, 8])
                req.raw_input_contents.append(feats.tobytes())
                try:
                    call(req.SerializeToString(), timeout=10)
                    self.ok.append(time.time())
                except grpc.RpcError as e:
                    self.errors.append(e.code().name)
                    if e.code() == grpc.StatusCode.UNAVAILABLE:
                        return  # the front is gone (killed)
                i += 1

    def start(self) -> Traffic:
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join(20)


def _report(admin: int):
    from shadowgrpc.client import fetch_report

    return fetch_report(f"127.0.0.1:{admin}", "", 5.0)


def test_kill_9_mid_write_loses_at_most_the_flush_window_and_the_next_start_continues(triton, tmp_path):
    from shadowgrpc.analysis import analyze

    log_dir = tmp_path / "log"
    flush_s = 0.3
    log = f'[log]\npath = "{log_dir}"\nflush_s = {flush_s}\n'
    proc, port, _ = _serve(tmp_path, triton.grpc_address, log, "first")
    traffic = Traffic(port, "a").start()
    try:
        time.sleep(2.5)
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        traffic.stop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    answered = [t for t in traffic.ok if t <= killed_at]
    assert len(answered) > 50
    first = analyze([str(log_dir)]).routes["fraud"].stats.requests  # every finished file reads
    recent = sum(1 for t in answered if t > killed_at - (flush_s + 0.5))  # the flush window, with margin
    assert len(answered) - recent <= first <= len(answered)

    proc, port, admin = _serve(tmp_path, triton.grpc_address, log, "second")
    try:
        assert not [p for p in log_dir.rglob("*") if p.name.endswith(".tmp")]  # the dead writer's temp files: removed at start
        traffic = Traffic(port, "b").start()
        time.sleep(1.0)
        traffic.stop()
        proc.send_signal(signal.SIGTERM)  # drains, flushes the log
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    both = analyze([str(log_dir)]).routes["fraud"].stats
    assert both.requests == first + len(traffic.ok)  # the table continued: nothing acknowledged after the restart was lost
    assert both.live_ok == both.requests


def test_a_disk_that_refuses_writes_stops_logging_never_serving(triton, tmp_path):
    log = f'[log]\npath = "{tmp_path / "log"}"\nflush_s = 0.2\n'
    proc, port, admin = _serve(tmp_path, triton.grpc_address, log, "limited", wrap=FULL_DISK)
    try:
        traffic = Traffic(port, "c").start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _report(admin).log.stopped:
            time.sleep(0.2)
        before = len(traffic.ok)
        time.sleep(1.0)  # still serving after logging stopped
        traffic.stop()
        rep = _report(admin)
        assert rep.log.stopped and rep.log.write_errors >= 1
        assert "File too large" in rep.log.last_error and str(tmp_path / "log") in rep.log.last_error
        assert rep.log.rows_dropped > 0  # rows after the stop are counted, not silently lost
        assert traffic.errors == [] and len(traffic.ok) > before  # every caller answered, before and after
        assert rep.routes[0].live_ok == rep.routes[0].requests == len(traffic.ok)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "File too large" in out  # the error is logged, clearly
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
