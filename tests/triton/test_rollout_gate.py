"""The rollout gate drives a real decision: a real ``shadowgrpc serve`` on the real Triton, with
``server.gate_listen`` and an admin token, and the shipped example manifests
(shadowgrpc/examples/rollout) used the way Flagger and Argo Rollouts use them: the webhook URLs and
metadata of the Canary, the web metrics' url / headers / jsonPath / successCondition /
failureCondition of the AnalysisTemplate with the Rollout step's args (only host:port substituted, and
the token put where the example says). tests/rollout_schemas/tools.py does what each tool does
with the answer.

Route ``fraud``: live fraud v2; shadow ``fraud-v2`` (the name the examples gate on) is fraud_batched,
fraud v2's answers under another config, so with ground truth every gate PASSes; shadow ``faulty``
(fraud_faulty) fails every call, so its error_rate gate FAILs. Before any traffic every verdict is
NOT_ENOUGH_DATA. ``shadowgrpc gate`` exits 2, 0 and 1 in the three cases."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from shadowgrpc import cli
from shadowgrpc.client import fetch_report
from shadowgrpc.examples.data import make_transactions
from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc
from tests.kserve import _raw, fraud_request
from tests.rollout_schemas import tools
from tests.serveproc import serve

pytestmark = [pytest.mark.triton, pytest.mark.once]  # once: HTTP and the verdict's plumbing; no twin-dependent result

TOKEN = "rollout-gate-token-5f1c9a2e"
N = 60  # requests of 1..4 rows: > min_pairs calls and > min_outcomes outcome rows
GATES = '[routes.gates]\nmin_pairs = 40\nmin_outcomes = 40\np99_ratio_max = 1000.0\np99_delta_ms_min = 60000.0\np99_ms_max = 60000.0\n'
ROUTES = (
    '[[routes]]\nmodel = "fraud"\nlive = { version = "2" }\n' + GATES
    + '[[routes.shadows]]\nname = "fraud-v2"\nmodel = "fraud_batched"\n'
    + '[[routes.shadows]]\nname = "faulty"\nmodel = "fraud_faulty"\n'
)  # fmt: skip
SECRETS = {("shadowgrpc-admin-token", "token"): TOKEN}
MD = (("authorization", f"Bearer {TOKEN}"),)
TOKEN_FILE = [""]  # the current test's admin token file


def _start(tmp_path, triton, *args: str):
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    TOKEN_FILE[0] = str(token)
    out = tmp_path / "serve.log"
    body = f'gate_listen = "127.0.0.1:0"\nadmin_token_file = "{token}"\n' + ROUTES
    proc, port, admin = serve(tmp_path, triton.grpc_address, body, args=args, output=out, grace_s=2.0, start_s=60)
    m = re.search(r"rollout gate on http://(127\.0\.0\.1:\d+): GET /gate", out.read_text())
    assert m, out.read_text()
    return proc, port, admin, m.group(1), out


def _stop(proc) -> int:
    proc.terminate()
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def _gate_cli(admin: str, *argv: str) -> tuple[int, str]:
    """``shadowgrpc gate`` in this process (cli.main: the same code as the command)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(["gate", "--target", admin, "--token-file", TOKEN_FILE[0], *argv])
    return code, out.getvalue()


def _flagger(hostport: str, shadow: str | None = None) -> dict[str, tuple[bool, int, str]]:
    """Every gate webhook of the example Canary, called as Flagger calls it (``shadow``: another
    shadow than the example's, in the webhook's metadata)."""
    (canary,) = tools.load_docs("flagger-canary.yaml")
    out = {}
    for hook in canary["spec"]["analysis"]["webhooks"]:
        if shadow is not None:
            hook = {**hook, "metadata": {**hook["metadata"], "shadow": shadow}}
        phase = {"pre-rollout": "Progressing", "confirm-promotion": "WaitingPromotion", "rollback": "Progressing"}[hook["type"]]
        out[hook["type"]] = tools.flagger_call(canary, hook, hostport, phase, TOKEN)
    return out


def _argo(hostport: str, shadow: str | None = None) -> dict[str, tuple[str, object]]:
    """Every metric of the example AnalysisTemplate measured once, with the example Rollout's
    step args (``shadow``: another value for its shadow arg)."""
    template, rollout = tools.load_docs("argo-analysistemplate.yaml")
    given = rollout["spec"]["strategy"]["canary"]["steps"][0]["analysis"]["args"]
    if shadow is not None:
        given = [a if a["name"] != "shadow" else {"name": "shadow", "value": shadow} for a in given]
    args = tools.argo_args(template, given, SECRETS)
    return {m["name"]: tools.argo_measure(m, args, hostport) for m in template["spec"]["metrics"]}


def _traffic(port: int) -> list[tuple[str, list[int]]]:
    feats, labels = make_transactions(N * 4, seed=15)
    rng = np.random.default_rng(15)
    sent, pos = [], 0
    ch, call = _raw(f"127.0.0.1:{port}")
    with ch:
        for i in range(N):
            k = int(rng.integers(1, 5))
            rid = f"gate-{i}"
            call(fraud_request(feats[pos : pos + k], rid=rid, version="2").SerializeToString(), timeout=10)
            sent.append((rid, [int(x) for x in labels[pos : pos + k]]))
            pos += k
    return sent


def _wait_compared(admin: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        shadows = {s.target.name: s for s in fetch_report(admin, "fraud", token=TOKEN).routes[0].shadows}
        if shadows["fraud-v2"].compared == N and sum(shadows["faulty"].errors.values()) == N:
            return
        assert time.monotonic() < deadline, {n: (s.compared, dict(s.errors)) for n, s in shadows.items()}
        time.sleep(0.1)


def test_flagger_and_argo_examples_and_the_gate_command_decide_on_the_real_verdict(tmp_path, triton):
    proc, port, admin, gate, _ = _start(tmp_path, triton)
    try:
        # Before any traffic: not enough data. Flagger holds, Argo's measurement is Inconclusive, exit 2.
        env = {**os.environ, "SHADOWGRPC_ADMIN_TOKEN": TOKEN}
        r = subprocess.run([sys.executable, "-m", "shadowgrpc", "gate", "--target", f"127.0.0.1:{admin}", "--route", "fraud", "--shadow", "fraud-v2"],
                           capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
        assert r.returncode == 2 and r.stdout.startswith("NOT_ENOUGH_DATA: route fraud, shadow fraud-v2"), r.stdout + r.stderr
        hooks = _flagger(gate)
        assert hooks["pre-rollout"][:2] == (False, 412) and hooks["confirm-promotion"][:2] == (False, 412)
        assert "NOT_ENOUGH_DATA" in hooks["confirm-promotion"][2] and "error_rate" in hooks["confirm-promotion"][2]
        assert hooks["rollback"][:2] == (False, 412)  # not enough data is no reason to roll back
        measured = _argo(gate)
        assert measured["shadow-verdict"][0] == "Inconclusive" and measured["shadow-verdict"][1]["decision"] == "NOT_ENOUGH_DATA"
        assert measured["shadow-error-rate"][0] == "Inconclusive"

        sent = _traffic(port)
        _wait_compared(f"127.0.0.1:{admin}")
        with grpc.insecure_channel(f"127.0.0.1:{admin}") as ch:
            resp = shadow_pb2_grpc.ShadowControlStub(ch).RecordOutcomes(iter(shadow_pb2.Outcome(request_id=rid, labels=y) for rid, y in sent), timeout=30, metadata=MD)
        assert resp.accepted == N, resp

        # The passing shadow: Flagger proceeds, Argo's conditions hold, exit 0.
        hooks = _flagger(gate)
        assert hooks["pre-rollout"][:2] == (True, 200) and hooks["confirm-promotion"][:2] == (True, 200), hooks
        assert hooks["rollback"][:2] == (False, 412)
        measured = _argo(gate)
        assert measured["shadow-verdict"][0] == "Successful", measured
        doc = measured["shadow-verdict"][1]
        assert doc["decision"] == "PASS" and doc["pass"] is True and doc["shadows"]["fraud-v2"]["compared"] == N
        assert {"latency_p99", "error_rate", "accuracy", "calibration_ece"} <= {n for n, g in doc["gates"].items() if g["status"] == "PASS"}
        assert measured["shadow-error-rate"] == ("Successful", doc["gates"]["error_rate"])
        assert _gate_cli(f"127.0.0.1:{admin}", "--route", "fraud", "--shadow", "fraud-v2")[0] == 0

        # The failing shadow: Flagger holds naming the gate (and its rollback hook rolls back),
        # Argo's failureCondition holds, exit 1; the route as a whole fails with it.
        hooks = _flagger(gate, shadow="faulty")
        assert hooks["confirm-promotion"][:2] == (False, 412) and hooks["pre-rollout"][:2] == (False, 412)
        held = json.loads(hooks["confirm-promotion"][2])
        assert held["decision"] == "FAIL" and held["failing_gates"] == ["error_rate"] and "faulty: error_rate:" in held["message"]
        assert hooks["rollback"][:2] == (True, 200)
        measured = _argo(gate, shadow="faulty")
        assert measured["shadow-verdict"][0] == "Failed" and measured["shadow-error-rate"][0] == "Failed"
        assert measured["shadow-error-rate"][1]["value"] == 1.0
        assert _argo(gate, shadow="")["shadow-verdict"][0] == "Failed"  # the template's default: every shadow
        code, out = _gate_cli(f"127.0.0.1:{admin}", "--route", "fraud", "--shadow", "faulty")
        assert code == 1 and "failing error_rate" in out
        code, out = _gate_cli(f"127.0.0.1:{admin}", "--route", "fraud", "--json")
        assert code == 1 and json.loads(out)["shadows"]["fraud-v2"]["decision"] == "PASS"

        # Could not decide: exit 3, HTTP 404 / 401 (an Argo measurement Error)
        assert _gate_cli(f"127.0.0.1:{admin}", "--route", "nope")[0] == 3
        assert _argo(gate, shadow="nope")["shadow-verdict"] == ("Error", "received non 2xx response code: 404")
        status, body = tools.request("GET", f"http://{gate}/gate?route=fraud")
        assert status == 401 and "Bearer" in json.loads(body)["error"]
    finally:
        assert _stop(proc) == 0


def test_workers_parent_gates_on_the_merged_report(tmp_path, triton):
    proc, port, admin, gate, out = _start(tmp_path, triton, "--workers", "2")
    try:
        status, body = tools.request("GET", f"http://{gate}/gate?route=fraud&shadow=fraud-v2", headers={"Authorization": f"Bearer {TOKEN}"})
        doc = json.loads(body)
        assert status == 200 and doc["decision"] == "NOT_ENOUGH_DATA" and doc["report"]["replicas"] == 2
        assert _flagger(gate)["confirm-promotion"][:2] == (False, 412)
        # the workers serve no gate of their own (gate_listen pinned off), so a reload of the same config applies
        with grpc.insecure_channel(f"127.0.0.1:{admin}") as ch:
            shadow_pb2_grpc.ShadowControlStub(ch).Reload(shadow_pb2.ReloadRequest(), timeout=60, metadata=MD)
        assert tools.request("GET", f"http://{gate}/healthz")[0] == 200
    finally:
        assert _stop(proc) == 0, out.read_text()
