"""``shadowgrpc replay`` against the real Triton: a front logs fraud traffic (live v1, shadows v2 and
fraud_nan, ``keep_inputs``) with outcomes; replaying the log to fraud v2 must give the online v2
shadow's figures exactly (counts, agreement, confusion, drift, ground truth, the verdict; not the
latencies), fraud_nan the online fraud_nan shadow's, fraud_garbage a contract mismatch on every
request. A replay cut short (--limit, SIGTERM, kill -9) and rerun counts every request exactly once.
Bad inputs fail fast with a message and exit code 1 or 2."""

from __future__ import annotations

import copy
import os
import pathlib
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from tests.pairlog_run import ROUTES as LOGGED_ROUTES, as_dict, diff

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAX_LATENCY = {"p99_ratio_max": 1000.0, "p99_delta_ms_min": 10_000.0}  # the replay's latencies are its own
ROUTES = [  # the offline test's fraud route, latency gate relaxed, and merchant_intent (no basket_value)
    {**LOGGED_ROUTES[0], "gates": {**LOGGED_ROUTES[0]["gates"], **LAX_LATENCY}},
    LOGGED_ROUTES[1],
]
# What a replay cannot reproduce: its own latencies and target, and what the log does not hold.
NOT_REPLAYED = {"latency", "target", "cost", "in_flight", "sketch_bytes"}


def _traffic(address: str, rows: int) -> list:
    from shadowgrpc.examples.data import make_merchant_texts, make_transactions
    from tests.kserve import INFER, fraud_request, intent_request
    from shadowgrpc.v1 import shadow_pb2

    feats, labels = make_transactions(rows, seed=7)
    texts, _ = make_merchant_texts(8, seed=7)
    rng = np.random.default_rng(7)
    outcomes = []
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        i = 0
        while i < rows:
            k = int(rng.integers(1, 5))
            rid = f"fr-{i}" if i % 13 else ""  # some callers set no id
            call(fraud_request(feats[i : i + k], rid=rid).SerializeToString(), timeout=10)
            if rid:
                outcomes.append(shadow_pb2.Outcome(request_id=rid, labels=[int(x) for x in labels[i : i + k]]))
            i += k
        for j, t in enumerate(texts):  # a second route with request bytes: replay must pick one
            call(intent_request([t.encode()], rid=f"mi-{j}").SerializeToString(), timeout=10)
    return outcomes


@pytest.fixture(scope="module")
def logged(triton, tmp_path_factory):
    """(log folder, the online report as a dict, Triton's address)."""
    from shadowgrpc.report import build_report
    from shadowgrpc.v1 import shadow_pb2_grpc
    from tests.frontctl import front_for

    log_dir = tmp_path_factory.mktemp("replay") / "log"
    ft = front_for(triton.grpc_address, ROUTES, log={"path": str(log_dir), "flush_s": 0.5, "keep_inputs": True})
    try:
        outcomes = _traffic(ft.address, 360)
        ft.drain()
        with grpc.insecure_channel(ft.admin_address) as ch:
            shadow_pb2_grpc.ShadowControlStub(ch).RecordOutcomes(iter(outcomes), timeout=30)
        online = as_dict(build_report(ft.router.state, "fraud"))
        ft.flush_log()
    finally:
        ft.stop()
    return log_dir, online, triton.grpc_address


def replay(capsys, *args: str) -> tuple[int, dict | None, str]:
    """Run ``shadowgrpc replay`` in-process: (exit code, the report as a dict or None, stderr)."""
    from google.protobuf import json_format

    from shadowgrpc.cli import main
    from shadowgrpc.v1 import shadow_pb2

    code = main(["replay", "--deadline-ms", "30000", *map(str, args), "--json"])  # no DEADLINE_EXCEEDED on a loaded box
    out, err = capsys.readouterr()
    return code, as_dict(json_format.Parse(out, shadow_pb2.Report())) if code == 0 else None, err


def _shadow(report: dict, i: int = 0) -> dict:
    route = report["routes"][0]
    return {k: v for k, v in route["shadows"][i].items() if k not in NOT_REPLAYED}


def _no_latency_gate(s: dict) -> dict:
    s = dict(s)
    s["verdict"] = {**s["verdict"], "gates": [g for g in s["verdict"]["gates"] if not g["name"].startswith("latency")]}
    return s


def _route_figures(report: dict) -> dict:
    r = report["routes"][0]
    return {k: r.get(k) for k in ("model", "requests", "live_ok", "live_errors", "live_latency", "front_added")}


def _same_as_online(online: dict, rep: dict, i: int) -> None:
    assert _route_figures(rep) == _route_figures(online)  # the logged live figures, latencies included
    assert diff(_no_latency_gate(_shadow(online, i)), _no_latency_gate(_shadow(rep))) == []
    assert rep["routes"][0]["shadows"][0]["verdict"]["decision"] == online["routes"][0]["shadows"][i]["verdict"]["decision"]


def _keys(out: pathlib.Path) -> tuple[int, int]:
    """(rows, distinct writer + request_seq) in a replay log's finished files."""
    import duckdb

    glob = str(out / "pairs" / "**" / "*.parquet")
    return duckdb.sql(f"SELECT count(*), count(DISTINCT (writer, request_seq)) FROM read_parquet('{glob}')").fetchall()[0]


@pytest.mark.triton
def test_replay_v2_equals_online_shadow(logged, capsys, tmp_path):
    log, online, addr = logged
    code, rep, err = replay(capsys, log, "--target", addr, "--model", "fraud", "--version", "2", "--rate", 0, "--out", tmp_path / "v2")
    assert code == 0, err
    v2 = online["routes"][0]["shadows"][0]
    assert int(v2["compared"]) > 80 and int(v2["ground_truth"]["rows"]) > 200  # not vacuous
    assert int(v2["ground_truth"]["regressions"]) > 0 and v2["verdict"]["decision"] == "FAIL"  # v2 is worse on this data
    _same_as_online(online, rep, 0)
    assert rep["routes"][0]["shadows"][0]["target"]["name"] == "replay:fraud:2"
    assert {g["name"]: g["status"] for g in v2["verdict"]["gates"]}["invalid_outputs"] == "PASS"
    assert int(rep["routes"][0]["shadows"][0]["latency"]["count"]) == int(v2["compared"])  # its own latencies: every OK answer
    assert "requests replayed this run" in err and f"{v2['compared']} of {v2['compared']} selected requests" in err
    # --where picks the requests (here those whose caller set no id: none of them has an outcome).
    import duckdb

    glob = str(log / "pairs" / "route=fraud" / "**" / "*.parquet")
    no_id = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}') WHERE target_index = 0 AND request_id = ''").fetchall()[0][0]
    code, rep, err = replay(capsys, log, "--target", addr, "--model", "fraud", "--version", "2", "--rate", 0, "--where", "request_id = ''", "--out", tmp_path / "no_id")
    assert code == 0, err
    assert 0 < no_id == int(rep["routes"][0]["requests"]) < int(v2["compared"])
    assert int(rep["routes"][0]["shadows"][0].get("ground_truth", {}).get("rows", 0)) == 0
    # The comparison catches a difference: one compared pair fewer is seen.
    bad = copy.deepcopy(rep)
    bad["routes"][0]["shadows"][0]["compared"] = str(int(v2["compared"]) - 1)
    assert diff(_shadow(online), _shadow(bad)) != []


@pytest.mark.triton
def test_replay_other_candidates(logged, capsys, tmp_path):
    log, online, addr = logged
    # fraud_nan: not a route of the log, so --route picks the logged route; its figures are the online nan shadow's.
    code, _, err = replay(capsys, log, "--target", addr, "--model", "fraud_nan", "--rate", 0, "--out", tmp_path / "nan")
    assert code == 2 and "pick one with --route (fraud, merchant_intent)" in err
    code, rep, err = replay(capsys, log, "--target", addr, "--model", "fraud_nan", "--route", "fraud", "--rate", 0, "--out", tmp_path / "nan")
    assert code == 0, err
    _same_as_online(online, rep, 1)
    nan = rep["routes"][0]["shadows"][0]
    assert int(nan["outputs"][0]["shadow_invalid_rows"]) > 0 and nan["verdict"]["decision"] == "FAIL"
    assert any(g["name"] == "invalid_outputs" and g["status"] == "FAIL" for g in nan["verdict"]["gates"])
    # fraud_garbage answers INT32 [n, 3]: nothing is comparable.
    code, rep, err = replay(capsys, log, "--target", addr, "--model", "fraud_garbage", "--route", "fraud", "--rate", 0, "--out", tmp_path / "garbage")
    assert code == 0, err
    g = rep["routes"][0]["shadows"][0]
    assert g["verdict"]["decision"] == "NOT_COMPARABLE" and int(g.get("compared", 0)) == 0
    assert int(g["contract_mismatch"]) == int(online["routes"][0]["requests"])


@pytest.mark.triton
def test_replay_resumes_exactly_once(logged, capsys, tmp_path):
    log, online, addr = logged
    n = int(online["routes"][0]["requests"])
    args = [log, "--target", addr, "--model", "fraud", "--version", "2", "--out", tmp_path / "cut"]
    code, rep, err = replay(capsys, *args, "--rate", 0, "--limit", 40)
    assert code == 0 and int(rep["routes"][0]["requests"]) == 40 and f"{n - 40} left" in err
    code, rep, err = replay(capsys, *args, "--rate", 0)
    assert code == 0, err
    assert "40 of" not in err and f"{n - 40} requests replayed this run" in err
    assert _keys(tmp_path / "cut") == (n, n)
    _same_as_online(online, rep, 0)
    # SIGTERM midway: the answered rows are written, the rerun sends only the others.
    for sig, out in ((signal.SIGTERM, tmp_path / "term"), (signal.SIGKILL, tmp_path / "kill")):
        cmd = [sys.executable, "-m", "shadowgrpc", "replay", str(log), "--target", addr, "--model", "fraud", "--version", "2", "--rate", "30", "--deadline-ms", "30000", "--out", str(out)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 20
        # SIGTERM once rows are being written (it writes every answered row); kill -9 once a first file
        # is finished (FLUSH_S after the first row): at 30 requests/s both are well before the end.
        started = (lambda: (out / "pairs").is_dir()) if sig == signal.SIGTERM else (lambda: list((out / "pairs").glob("**/*.parquet")))
        while not started() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5 if sig == signal.SIGTERM else 0.0)
        proc.send_signal(sig)
        _, perr = proc.communicate(timeout=20)
        done = _keys(out)
        if sig == signal.SIGTERM:
            assert proc.returncode == 128 + signal.SIGTERM and "rerun the same command to resume" in perr, perr
        assert 0 < done[0] == done[1] < n, (sig, done, perr)
        code, rep, err = replay(capsys, *cmd[4:], "--rate", "0")
        assert code == 0, err
        assert _keys(out) == (n, n), sig
        _same_as_online(online, rep, 0)


@pytest.mark.triton
def test_replay_errors(logged, capsys, tmp_path, monkeypatch):
    from shadowgrpc.analysis import replay as rp

    log, _, addr = logged
    code, _, err = replay(capsys, tmp_path, "--target", addr, "--model", "fraud")
    assert code == 1 and "no paired-log files" in err
    code, _, err = replay(capsys, _log_without_requests(tmp_path / "plain"), "--target", addr, "--model", "fraud")
    assert code == 1 and "logged without [log] keep_inputs = true: nothing to replay" in err
    monkeypatch.setattr(rp, "CONNECT_TIMEOUT_S", 1.0)
    t0 = time.monotonic()
    code, _, err = replay(capsys, log, "--target", "127.0.0.1:1", "--model", "fraud", "--out", tmp_path / "x")
    assert code == 1 and "UNAVAILABLE" in err and time.monotonic() - t0 < 10
    code, _, err = replay(capsys, log, "--target", addr, "--model", "no_such_model", "--route", "fraud", "--out", tmp_path / "y")
    assert code == 1 and "has no model no_such_model" in err and "NOT_FOUND" in err, err
    assert not list((tmp_path / "y").glob("pairs/**/*.parquet"))  # nothing counted
    code, _, err = replay(capsys, log, "--target", addr, "--model", "fraud", "--where", "no_such_column = 1", "--out", tmp_path / "z")
    assert code == 2 and "no_such_column" in err
    code, _, err = replay(capsys, log, "--target", addr, "--model", "fraud", "--rate", -1)
    assert code == 2
    # An OUT that holds another candidate's replay is not mixed with this one.
    code, _, err = replay(capsys, log, "--target", addr, "--model", "fraud", "--version", "2", "--limit", 5, "--rate", 0, "--out", tmp_path / "o")
    assert code == 0, err
    code, _, err = replay(capsys, log, "--target", addr, "--model", "fraud_nan", "--route", "fraud", "--out", tmp_path / "o")
    assert code == 2 and "holds another replay" in err
    # Nor do two replays write the same OUT at once.
    import fcntl

    with open(tmp_path / "o" / ".replay.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, _, err = replay(capsys, log, "--target", addr, "--model", "fraud", "--version", "2", "--out", tmp_path / "o")
    assert code == 1 and "another replay is writing there" in err


@pytest.mark.triton
def test_replay_target_trouble(logged, capsys, tmp_path, monkeypatch):
    """The model vanishes after the check: the first NOT_FOUND stops the run, nothing is counted. The
    target goes away (a run of UNAVAILABLE): the run stops without writing that run, so a rerun
    retries it; UNAVAILABLE answers between OK ones are errors like any other."""
    from shadowgrpc.analysis import replay as rp

    log, online, addr = logged
    n = int(online["routes"][0]["requests"])

    async def no_check(self, up):
        return None

    with monkeypatch.context() as m:
        m.setattr(rp.Replayer, "_check", no_check)
        code, _, err = replay(capsys, log, "--target", addr, "--model", "no_such_model", "--route", "fraud", "--rate", 0, "--out", tmp_path / "nf")
    assert code == 1 and "answered NOT_FOUND for no_such_model" in err and "Request for unknown model" in err, err
    assert not (tmp_path / "nf").exists()
    with _fake_target(lambda i: True) as fake:
        code, _, err = replay(capsys, log, "--target", fake, "--model", "fraud", "--rate", 0, "--out", tmp_path / "gone")
    assert code == 1 and f"stopped answering ({rp.UNAVAILABLE_STREAK} UNAVAILABLE in a row)" in err, err
    assert not list((tmp_path / "gone").glob("pairs/**/*.parquet"))  # the rerun retries them all
    with _fake_target(lambda i: i % 3 == 0) as fake:
        code, rep, err = replay(capsys, log, "--target", fake, "--model", "fraud", "--rate", 0, "--out", tmp_path / "flaky")
    assert code == 0, err
    s = rep["routes"][0]["shadows"][0]
    errors = int(s["errors"]["UNAVAILABLE"])
    assert int(s["sent"]) == n and 0 < errors < n and int(s["contract_mismatch"]) == n - errors  # its empty answers
    # The model goes away after 30 answers: stopped, the 30 kept; the rerun (the real model) sends the rest.
    out = tmp_path / "vanish"
    with _fake_target(lambda i: i >= 30, grpc.StatusCode.NOT_FOUND) as fake:
        code, _, err = replay(capsys, log, "--target", fake, "--model", "fraud", "--version", "2", "--rate", 0, "--out", out)
    assert code == 1 and f"({rp.UNAVAILABLE_STREAK} NOT_FOUND in a row)" in err and "after 30 requests replayed" in err, err
    assert _keys(out) == (30, 30)
    code, rep, err = replay(capsys, log, "--target", addr, "--model", "fraud", "--version", "2", "--rate", 0, "--out", out)
    assert code == 0 and _keys(out) == (n, n) and f"{n - 30} requests replayed this run" in err
    assert int(rep["routes"][0]["shadows"][0]["contract_mismatch"]) == 30  # the fake's empty answers, kept once


class _fake_target:
    """A sync gRPC server posing as Triton: has every model; ModelInfer call i fails with ``code``
    when ``unavailable(i)``, else answers with no outputs."""

    def __init__(self, unavailable, code=grpc.StatusCode.UNAVAILABLE) -> None:
        import itertools
        from concurrent.futures import ThreadPoolExecutor

        from tritonclient.grpc import service_pb2 as kserve

        calls = itertools.count()

        def infer(raw, ctx):
            if unavailable(next(calls)):
                ctx.abort(code, "fake: going away")
            return kserve.ModelInferResponse(model_name="fraud").SerializeToString()

        methods = {"ModelInfer": infer, "ModelMetadata": lambda raw, ctx: b"", "ModelReady": lambda raw, ctx: kserve.ModelReadyResponse(ready=True).SerializeToString()}
        self.server = grpc.server(ThreadPoolExecutor(4))
        handlers = {m: grpc.unary_unary_rpc_method_handler(f) for m, f in methods.items()}
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers)])
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"

    def __enter__(self) -> str:
        self.server.start()
        return self.address

    def __exit__(self, *exc) -> None:
        self.server.stop(0).wait(5)


def _log_without_requests(path: pathlib.Path) -> pathlib.Path:
    """A paired log written without keep_inputs (two requests, no request bytes)."""
    from shadowgrpc._config_log import LogSettings
    from shadowgrpc.config import Settings
    from shadowgrpc.pairlog.schema import SENT, PairRow
    from shadowgrpc.pairlog.writer import PairLog

    routes = Settings.from_dict({"server": {"default_live": "127.0.0.1:1"}, "routes": ROUTES[:1]}).routes
    pl = PairLog(LogSettings(path=str(path)), routes, writer_id="w")
    pl.start()
    for seq in range(2):
        pl.pair(PairRow("fraud", 0, f"r{seq}", seq, time.time(), time.time(), time.time(), SENT, True, "OK", "OK", None, 0.001, 0.001, 0.0, None, None, None, None, None))
    pl.close()
    return path


def test_token_bucket_bounds_the_rate():
    import asyncio

    from shadowgrpc.analysis.replay import TokenBucket

    async def go(rate: float, n: int) -> float:
        b = TokenBucket(rate)
        t0 = time.monotonic()
        for _ in range(n):
            await b.take()
        return time.monotonic() - t0

    assert 0.44 <= asyncio.run(go(200.0, 100)) < 3.0  # 100 at 200/s: ~0.5 s (bursts of 10 at most)
    assert asyncio.run(go(0.0, 10_000)) < 0.5  # 0: no limit
