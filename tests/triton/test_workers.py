"""`shadowgrpc serve --workers N`: N processes on one data port behind one admin endpoint whose
report is the exact sum of the workers' (shadowgrpc/workers.py). A real process tree; the traffic
test runs against the real Triton."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from shadowgrpc.client import fetch_report
from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc
from tests.kserve import INFER, fraud_request
from tests.serveproc import serve

pytestmark = pytest.mark.once  # once: worker processes and their lifecycle; no twin-dependent result (make test's pure-Python pass skips it)

ROUTES = '[[routes]]\nmodel = "fraud"\nlive = { version = "1" }\n[[routes.shadows]]\nname = "v2"\nversion = "2"\n'
GRACE_S = 4.0
STOP_BOUND_S = GRACE_S + 15 + 10  # the parent's own bound (grace + 15 s) and some slack


class Served:
    def __init__(self, proc: subprocess.Popen, out: Path, port: int, admin: int) -> None:
        self.proc, self.out, self.port, self.admin = proc, out, port, admin
        text = out.read_text()
        self.pids = [int(p) for p in re.search(r"2 workers \(pids ([\d, ]+)\)", text).group(1).split(", ")]
        self.worker_admins = re.findall(r"pid \d+ on (127\.0\.0\.1:\d+)", text)
        assert len(self.pids) == 2 and len(self.worker_admins) == 2, text

    def log(self) -> str:
        return self.out.read_text()


def _serve(tmp_path: Path, live: str, routes: str = ROUTES, workers: int = 2) -> Served:
    out = tmp_path / "serve.log"
    proc, port, admin = serve(tmp_path, live, routes, args=("--workers", str(workers)), grace_s=GRACE_S, output=out, start_s=60)
    return Served(proc, out, port, admin)

def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_all_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(_gone(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if not _gone(p)]}"
        time.sleep(0.05)


def _kill_tree(s: Served) -> None:
    for pid in [*s.pids, s.proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    s.proc.wait(10)


def _route(rep) -> tuple:
    (route,) = rep.routes
    (shadow,) = route.shadows
    return route, shadow


def test_workers_flag_is_validated(tmp_path):
    cfg = tmp_path / "front.toml"
    cfg.write_text('[server]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\n')
    for bad in ("0", "257", "-1"):
        r = subprocess.run([sys.executable, "-m", "shadowgrpc", "serve", "--workers", bad, "--config", str(cfg)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "--workers: must be 1 to 256" in r.stderr, r.stderr


def test_a_worker_that_dies_stops_the_others_and_the_parent_exits_1(tmp_path):
    s = _serve(tmp_path, "127.0.0.1:1", '[[routes]]\nmodel = "fraud"\n')
    try:
        os.kill(s.pids[1], signal.SIGKILL)
        assert s.proc.wait(STOP_BOUND_S) == 1, s.log()
        _wait_all_gone(s.pids, 10)
        assert re.search(rf"worker 1 \(pid {s.pids[1]}\) exited on its own \(killed by SIGKILL\)", s.log()), s.log()
    finally:
        _kill_tree(s)


@pytest.mark.triton
def test_two_workers_share_the_port_and_the_report_is_their_exact_sum(triton, tmp_path):
    log_dir = tmp_path / "log"
    s = _serve(tmp_path, triton.grpc_address, f'[log]\npath = "{log_dir}"\nflush_s = 0.5\n' + ROUTES)
    rng = np.random.default_rng(7)
    try:
        # Many separate connections (no shared subchannel): SO_REUSEPORT spreads them over the workers.
        n_conn, per_conn, rows = 24, 5, 3
        ids, labels = [], {}
        for c in range(n_conn):
            with grpc.insecure_channel(f"127.0.0.1:{s.port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                infer = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
                for k in range(per_conn):
                    rid = f"w-{c}-{k}"
                    infer(fraud_request(rng.normal(size=(rows, 8)).astype(np.float32), rid=rid).SerializeToString(), timeout=15)
                    ids.append(rid)
                    labels[rid] = rng.integers(0, 2, rows).tolist()
        n = len(ids)
        deadline = time.monotonic() + 30  # the shadow calls finish after the callers' answers
        while _route(fetch_report(f"127.0.0.1:{s.admin}", timeout=10))[1].compared < n:
            assert time.monotonic() < deadline, "the shadow comparisons did not all finish"
            time.sleep(0.1)

        # Outcomes through the parent: two batches (the parent takes 512 at a time), each outcome
        # recorded by exactly one worker; duplicates within a batch and across batches.
        outcomes = [shadow_pb2.Outcome(request_id=r, labels=labels[r]) for r in ids]
        outcomes.append(shadow_pb2.Outcome(request_id=ids[0], labels=labels[ids[0]]))
        outcomes += [shadow_pb2.Outcome(request_id=f"nobody-{i}", labels=[1]) for i in range(700)]
        outcomes.append(shadow_pb2.Outcome(request_id=ids[1], labels=labels[ids[1]]))
        outcomes.append(shadow_pb2.Outcome(labels=[1]))  # no id: rejected
        with grpc.insecure_channel(f"127.0.0.1:{s.admin}") as ch:
            resp = shadow_pb2_grpc.ShadowControlStub(ch).RecordOutcomes(iter(outcomes), timeout=60)
        assert (resp.received, resp.accepted, resp.unknown, resp.duplicate, resp.rejected) == (n + 703, n, 700, 2, 1), resp
        assert dict(resp.rejected_reasons) == {"no_request_id": 1}

        parent = fetch_report(f"127.0.0.1:{s.admin}", timeout=20)
        workers = [fetch_report(a, timeout=20) for a in s.worker_admins]
        merged_snapshot = fetch_report(f"127.0.0.1:{s.admin}", timeout=20, snapshot=True)
        with grpc.insecure_channel(f"127.0.0.1:{s.admin}") as ch:
            listed = shadow_pb2_grpc.ShadowControlStub(ch).ListRoutes(shadow_pb2.ListRoutesRequest(), timeout=10)
    except BaseException:
        _kill_tree(s)
        raise

    try:
        assert parent.replicas == 2 and all(w.replicas == 1 for w in workers)
        pr, ps = _route(parent)
        wr = [_route(w) for w in workers]
        assert all(r.requests > 0 for r, _ in wr), [r.requests for r, _ in wr]  # both workers served
        assert pr.requests == pr.live_ok == n == sum(r.requests for r, _ in wr)
        assert pr.live_ok == sum(r.live_ok for r, _ in wr)
        assert pr.live_latency.count == n == sum(r.live_latency.count for r, _ in wr)
        assert pr.front_added.count == sum(r.front_added.count for r, _ in wr)
        for f in ("sampled", "sent", "ok", "compared", "shed", "down", "contract_mismatch", "live_failed", "internal_errors"):
            assert getattr(ps, f) == sum(getattr(sh, f) for _, sh in wr), f
        assert ps.sent == ps.ok == ps.compared == n and not ps.errors
        assert ps.latency.count == n == sum(sh.latency.count for _, sh in wr)
        assert ps.outputs[0].rows == n * rows == sum(sh.outputs[0].rows for _, sh in wr)
        assert ps.outputs[0].agreed_rows == sum(sh.outputs[0].agreed_rows for _, sh in wr)
        gt = ps.ground_truth
        assert gt.rows == n * rows == sum(sh.ground_truth.rows for _, sh in wr)
        for f in ("improvements", "regressions", "both_right", "both_wrong"):
            assert getattr(gt, f) == sum(getattr(sh.ground_truth, f) for _, sh in wr), f
        o = parent.outcomes
        for f in ("unknown", "duplicate", "mismatch", "reused", "rejected", "waiting", "stored"):
            assert getattr(o, f) == sum(getattr(w.outcomes, f) for w in workers), f
        assert (o.unknown, o.duplicate, o.rejected, o.waiting, o.stored) == (700, 2, 1, 0, n)
        assert merged_snapshot.snapshot and _route(merged_snapshot)[0].requests == n
        assert [r.model for r in listed.routes] == ["fraud"] and listed.default_live == triton.grpc_address
    finally:
        s.proc.send_signal(signal.SIGTERM)
        try:
            rc = s.proc.wait(STOP_BOUND_S)
        finally:
            _kill_tree(s)
    assert rc == 0, s.log()
    _wait_all_gone(s.pids, 10)
    assert "stopping 2 workers" in s.log()
    # Logs from every worker in the same table: each wrote its own files, and together they hold
    # every request and every accepted outcome once; offline, their report is the merged one's.
    from shadowgrpc.analysis import analyze
    from shadowgrpc.analysis.engine import DuckEngine

    writers = DuckEngine([str(log_dir)]).rows("SELECT DISTINCT writer FROM pairs")
    assert len(writers) == 2 and all(any(w.endswith(f"-{p}") for p in s.pids) for (w,) in writers)  # host-pid
    offline = analyze([str(log_dir)])
    st, sh = offline.routes["fraud"].stats, offline.routes["fraud"].shadows[0]
    assert st.requests == st.live_ok == n and sh.stats.compared == n and sh.outcomes.live.rows == n * rows
