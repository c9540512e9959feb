"""`shadowgrpc serve` and `shadowgrpc report` as a user runs them: a real process, real Triton."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from tests.serveproc import serve

pytestmark = [pytest.mark.triton, pytest.mark.once]  # once: the serve process, its CLI and SIGTERM; no twin-dependent result (make test's pure-Python pass skips it)


def _infer(port: int, model: str, rid: str, timeout: float = 15.0) -> bytes:
    req = pb.ModelInferRequest(model_name=model, id=rid)
    req.inputs.add(name="features", datatype="FP32", shape=[1, 8])
    req.raw_input_contents.append(np.ones((1, 8), np.float32).tobytes())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None, response_deserializer=None)
        return call(req.SerializeToString(), timeout=timeout)


def test_sigterm_lets_in_flight_live_requests_finish(triton, tmp_path):
    # fraud_sleepy answers after SHADOWGRPC_SLEEPY_SECONDS (2 s in the test Triton).
    proc, port, _ = serve(tmp_path, triton.grpc_address, '[[routes]]\nmodel = "fraud_sleepy"\n')
    try:
        with ThreadPoolExecutor(2) as pool:
            futs = [pool.submit(_infer, port, "fraud_sleepy", f"term-{i}") for i in range(2)]
            time.sleep(0.7)  # both are now in flight at Triton
            proc.send_signal(signal.SIGTERM)
            answers = [pb.ModelInferResponse.FromString(f.result(timeout=20)) for f in futs]
        assert [a.id for a in answers] == ["term-0", "term-1"]
        assert all(a.raw_output_contents[0] for a in answers)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "stopping" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_report_cli_table_and_json(triton, tmp_path):
    routes = '[[routes]]\nmodel = "fraud"\nlive = { version = "1" }\n[[routes.shadows]]\nname = "fraud-v2"\nversion = "2"\n'
    proc, port, admin = serve(tmp_path, triton.grpc_address, routes)
    try:
        for i in range(20):
            _infer(port, "fraud", f"rep-{i}")
        time.sleep(0.5)
        env = dict(os.environ)
        table = subprocess.run(
            [sys.executable, "-m", "shadowgrpc", "report", "--target", f"127.0.0.1:{admin}"], capture_output=True, text=True, env=env, timeout=30
        )
        assert table.returncode == 0, table.stderr
        assert "route 'fraud'" in table.stdout and "fraud-v2" in table.stdout and "top-label agreement" in table.stdout
        js = subprocess.run(
            [sys.executable, "-m", "shadowgrpc", "report", "--json", "--target", f"127.0.0.1:{admin}"], capture_output=True, text=True, timeout=30
        )
        rep = json.loads(js.stdout)
        (route,) = rep["routes"]
        assert int(route["requests"]) == 20 and int(route["live_ok"]) == 20
        (shadow,) = route["shadows"]
        assert int(shadow["sent"]) == 20 and int(shadow["ok"]) == 20 and int(shadow["compared"]) == 20
        # The data port does not serve the admin API.
        bad = subprocess.run(
            [sys.executable, "-m", "shadowgrpc", "report", "--target", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=30
        )
        assert bad.returncode == 1 and "UNIMPLEMENTED" in bad.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
