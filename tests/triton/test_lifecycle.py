"""Lifecycle under load, a real `shadowgrpc serve` process and the real Triton: SIGTERM drains
(every accepted call answered, its paired-log rows on disk, exit 0 within server.stop_timeout_s),
and the config reloads by SIGHUP and by ShadowControl.Reload (`shadowgrpc reload`): a good config
swaps in with zero live errors, a bad one is refused with its error and the old one serves on;
`serve --workers`: SIGHUP to the parent reloads every worker."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import grpc
import numpy as np
import pytest

from tests.kserve import _raw, fraud_request
from tests.serveproc import serve

pytestmark = [pytest.mark.triton, pytest.mark.once]

FRAUD = '[[routes]]\nmodel = "fraud"\nlive = { version = "1" }\n'
SHADOW = '[[routes.shadows]]\nname = "{name}"\nversion = "2"\n'
ROWS = np.random.default_rng(3).random((1, 8), dtype=np.float32)


class Load:
    """``clients`` threads sending ModelInfer (each its own channel, unique request ids) until
    ``stop`` is set, ``max_s`` passed or ``max_calls`` each were sent; records (id, status, time)."""

    def __init__(self, port: int, clients: int = 4, model: str = "fraud", max_s: float = 20.0, max_calls: int = 4000, prefix: str = "c") -> None:
        self.results: list[tuple[str, str, float]] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(port, model, f"{prefix}{k}", max_s, max_calls), daemon=True) for k in range(clients)]
        for t in self._threads:
            t.start()

    def _run(self, port: int, model: str, prefix: str, max_s: float, max_calls: int) -> None:
        ch, infer = _raw(f"127.0.0.1:{port}")
        end, refused = time.monotonic() + max_s, 0
        with ch:
            for i in range(max_calls):
                if self.stop.is_set() or time.monotonic() > end or refused >= 3:
                    return
                rid = f"{prefix}-{i}"
                try:
                    infer(fraud_request(ROWS, rid, version="", model=model).SerializeToString(), timeout=15)
                    status = "OK"
                except grpc.RpcError as e:
                    status = e.code().name
                    refused += status == "UNAVAILABLE"
                    time.sleep(0.02)
                with self._lock:
                    self.results.append((rid, status, time.monotonic()))

    def sent(self) -> int:
        with self._lock:
            return len(self.results)

    def join(self) -> list[tuple[str, str, float]]:
        self.stop.set()
        for t in self._threads:
            t.join(30)
        return list(self.results)


def _wait(cond, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _admin(admin: int):
    from shadowgrpc.v1 import shadow_pb2_grpc

    ch = grpc.insecure_channel(f"127.0.0.1:{admin}")
    return ch, shadow_pb2_grpc.ShadowControlStub(ch)


def _shadow_names(stub) -> dict[str, list[str]]:
    from shadowgrpc.v1 import shadow_pb2

    return {r.model: [t.name for t in r.shadows] for r in stub.ListRoutes(shadow_pb2.ListRoutesRequest(), timeout=5).routes}


def _sent(stub) -> dict[tuple[str, str], int]:
    from shadowgrpc.v1 import shadow_pb2

    rep = stub.GetReport(shadow_pb2.GetReportRequest(), timeout=10)
    return {(r.model, s.target.name): s.sent for r in rep.routes for s in r.shadows}


def test_sigterm_under_load_answers_every_accepted_call_and_logs_its_rows(triton, tmp_path):
    import duckdb

    log_dir = tmp_path / "pairs"
    sleepy = '[[routes]]\nmodel = "fraud_sleepy"\n[[routes.shadows]]\nname = "v2"\nmodel = "fraud"\nversion = "2"\n'
    body = f'shadow_grace_s = 2.0\nstop_timeout_s = 12.0\n[log]\npath = "{log_dir}"\nflush_s = 60\n{FRAUD}{SHADOW.format(name="v2")}{sleepy}'
    out = tmp_path / "serve.log"
    proc, port, _ = serve(tmp_path, triton.grpc_address, body, grace_s=5.0, output=out)
    try:
        fast = Load(port, clients=4)
        slow = Load(port, clients=2, model="fraud_sleepy", prefix="s")  # 2 s calls: in flight at SIGTERM
        _wait(lambda: fast.sent() >= 40 and slow.sent() == 0, "load", 15)
        time.sleep(0.6)  # the sleepy calls are in flight at Triton
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
        took = time.monotonic() - t_term
        results = fast.join() + slow.join()
    finally:
        if proc.poll() is None:
            proc.kill()
    said = out.read_text()
    assert rc == 0, said
    assert took < 12.0 + 2.0, f"exit {took:.1f} s after SIGTERM, stop_timeout_s 12: {said}"
    statuses = Counter(s for _, s, _ in results)
    assert set(statuses) <= {"OK", "UNAVAILABLE"}, (statuses, [(r, s, round(t - t_term, 2)) for r, s, t in results if s == "CANCELLED"], said)  # accepted: answered; after the stop: refused
    assert all(t >= t_term for _, s, t in results if s != "OK"), "a call was refused before the stop"
    ok = {rid for rid, s, _ in results if s == "OK"}
    assert len([r for r in ok if r.startswith("s")]) == 2, statuses  # the two in-flight sleepy calls were answered
    assert len(ok) >= 42 and statuses["UNAVAILABLE"] >= 1, statuses  # load before and after the stop
    rows = duckdb.sql(
        f"SELECT request_id, route, target, live_status, count(*) FROM read_parquet('{log_dir}/pairs/**/*.parquet', hive_partitioning = true) GROUP BY ALL"
    ).fetchall()
    logged = {r[0]: r for r in rows}
    assert len(logged) == len(rows), "a request has more than one row for its one target"
    assert ok <= set(logged), f"{len(ok - set(logged))} answered calls have no row on disk"
    assert set(logged) <= ok | {rid for rid, s, _ in results}, "rows of calls nobody sent"
    assert all(r[2] == "v2" and r[3] == "OK" and r[4] == 1 for r in rows if r[0] in ok)
    assert "stopped in" in said and "not written" not in said


def test_reload_under_load_by_sighup_and_rpc(triton, tmp_path):
    out = tmp_path / "serve.log"
    proc, port, admin = serve(tmp_path, triton.grpc_address, f"poll_s = 60\n{FRAUD}{SHADOW.format(name='a')}", output=out)
    cfg = tmp_path / "front.toml"
    head = cfg.read_text().split("[[routes]]")[0]
    ch, stub = _admin(admin)
    load = Load(port, clients=3)
    try:
        _wait(lambda: load.sent() >= 30, "load")
        assert _shadow_names(stub) == {"fraud": ["a"]}
        # (a) good config by SIGHUP: shadow a removed, b added, a second route.
        cfg.write_text(head + FRAUD + SHADOW.format(name="b") + '[[routes]]\nmodel = "basket_value"\n')
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: _shadow_names(stub) == {"fraud": ["b"], "basket_value": []}, "the SIGHUP reload")
        before = _sent(stub)
        n = load.sent()
        _wait(lambda: load.sent() >= n + 30, "load after the reload")
        after = _sent(stub)
        assert after[("fraud", "a")] == before[("fraud", "a")], "the removed shadow is still mirrored to"
        assert after[("fraud", "b")] > before[("fraud", "b")], (before, after)
        # (b) bad config by SIGHUP: refused, logged, the old one serves on.
        cfg.write_text(head + FRAUD + "[[routes.shadows]\n")
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: "config reload refused" in out.read_text(), "the refusal in the log")
        assert "not valid TOML" in out.read_text()
        assert _shadow_names(stub) == {"fraud": ["b"], "basket_value": []}
        # (a) good config by RPC (`shadowgrpc reload`): a back, b retuned to half the traffic.
        good = tmp_path / "good.toml"
        good.write_text(head + FRAUD + SHADOW.format(name="a") + SHADOW.format(name="b").replace('version = "2"', 'version = "2"\nsample_rate = 0.5'))
        cli = subprocess.run([sys.executable, "-m", "shadowgrpc", "reload", "--target", f"127.0.0.1:{admin}", "--config", str(good)],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert "applied" in cli.stdout and "route 'basket_value' removed" in cli.stdout and "shadow 'b' retuned" in cli.stdout
        assert _shadow_names(stub) == {"fraud": ["b", "a"]}
        before = _sent(stub)
        n = load.sent()
        _wait(lambda: load.sent() >= n + 30, "load after the RPC reload")
        after = _sent(stub)
        assert after[("fraud", "a")] > 0 and after[("fraud", "b")] > before[("fraud", "b")]
        # (b) bad configs by RPC: a key that needs a restart, a bad value (the CLI's refusal: tests/unit/test_reload.py).
        from shadowgrpc.v1 import shadow_pb2

        for text, code, words in (
            (good.read_text().replace("[server]\n", "[server]\nmax_message_mb = 64\n"), grpc.StatusCode.FAILED_PRECONDITION, "server.max_message_mb: cannot change without a restart"),
            (good.read_text().replace("sample_rate = 0.5", "sample_rate = 2"), grpc.StatusCode.INVALID_ARGUMENT, "routes[0].shadows[1].sample_rate: must be in [0, 1]"),
        ):
            with pytest.raises(grpc.RpcError) as e:
                stub.Reload(shadow_pb2.ReloadRequest(config_toml=text), timeout=30)
            assert e.value.code() == code and words in e.value.details(), e.value.details()
        assert out.read_text().count("config reload refused") == 3
        assert _shadow_names(stub) == {"fraud": ["b", "a"]}
        results = load.join()
        statuses = Counter(s for _, s, _ in results)
        assert statuses == {"OK": len(results)}, statuses  # zero live errors through every swap and refusal
    finally:
        load.join()
        ch.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, out.read_text()


def test_sighup_to_the_workers_parent_reloads_every_worker(triton, tmp_path):
    out = tmp_path / "serve.log"
    proc, port, admin = serve(tmp_path, triton.grpc_address, f"poll_s = 60\n{FRAUD}{SHADOW.format(name='a')}", args=("--workers", "2"), output=out, start_s=60)
    cfg = tmp_path / "front.toml"
    ch, stub = _admin(admin)
    try:
        cfg.write_text(cfg.read_text() + '[[routes]]\nmodel = "basket_value"\n')
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: "config reloaded by 2 workers" in out.read_text(), "the reload", 20)
        assert _shadow_names(stub) == {"fraud": ["a"], "basket_value": []}
        # The merged report needs every worker on the same routes: both reloaded.
        assert set(_sent(stub)) == {("fraud", "a")}
        from shadowgrpc.v1 import shadow_pb2

        rep = stub.GetReport(shadow_pb2.GetReportRequest(), timeout=10)
        assert [r.model for r in rep.routes] == ["fraud", "basket_value"] and rep.replicas == 2
    finally:
        ch.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
    assert proc.returncode == 0, out.read_text()
