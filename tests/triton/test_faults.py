"""Faults under load against the real Triton (issue 13, item 2). Each scenario starts two fronts
(``shadowgrpc serve`` processes): a baseline front with healthy shadows and a fault front. One load
client process (tests/faultkit.py) offers ``RATE`` requests/s to each, open loop, the two fronts'
requests alternating one by one, so that the noise of a shared machine hits both. Every scenario
asserts zero live errors outside a live outage, every live answer byte-equal to Triton direct's,
and the fault front's live p99 within ``P99_RATIO`` of the baseline's, measured at the same time.

a. the shadow's own tritonserver SIGKILLed mid-load, then restarted on the same port;
b. a shadow 10x slower than its deadline; c. shadows answering a wrong dtype, a wrong shape, NaN,
another output name (and one refused before traffic); d. live's tritonserver SIGKILLed, then
restarted; e. a hung OTLP collector and a full disk (RLIMIT_FSIZE) under a faulty shadow.
The measured numbers are printed (``pytest -s``); benchmarks/faults.py runs the same longer.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from tests.faultkit import LoadClient, interleave, rss_mib, wait_until
from tests.faultprocs import KillableTriton, route_toml, serve_fronts
from tests.fixtures_triton import TEST_MODELS, copy_models, require_pytriton
from tests.otlp import HangingPort, OtlpReceiver
from tests.serveproc import FULL_DISK

pytestmark = [pytest.mark.triton, pytest.mark.once]

RATE = 150.0  # requests/s offered to each front during its blocks (open loop)
BLOCKS = 10  # per side
BLOCK_S = 0.25
DEADLINE_S = 1.0  # each caller's deadline
# Fault p99 / baseline p99 (375 answers a side). On the shared 2-core machine (load average 3-20
# from other jobs) the 1.25 held in 62 of 65 measurements (13 runs of the file); the misses
# were 1.41, 1.61 and 1.80 (d, e, d) with the fault front doing no more work than the baseline:
# noise, a front process descheduled for tens of ms moves the 4th-worst answer. 2.0 never failed;
# benchmarks/faults.py measures the same scenarios longer against the 1.10.
P99_RATIO = 2.0
SLEEPY_S = 1.0  # the own Triton's fraud_sleepy: 10x the slow shadow's 100 ms deadline
SLOW_DEADLINE_MS = 100


def _pair(load, tmp_path, live: str, base: str, fault: str, env: dict | None = None, wrap=()) -> tuple:
    """The baseline and the fault front (``shadowgrpc serve`` processes, repository poll every
    second: a shadow found down is checked again that soon), opened and warmed up."""
    server = "poll_s = 1.0\n"
    fronts = serve_fronts(tmp_path, live, {"base": {"body": base, "env": (env or {}).get("base"), "server": server},
                                           "fault": {"body": fault, "env": (env or {}).get("fault"), "wrap": wrap, "server": server}})
    for label, f in fronts.items():
        load.open(label, f.address)
    load.mixed(("base", "fault"), 0.4, 2 * RATE)  # warm-up, not measured
    return fronts["base"], fronts["fault"]


def _shadows(front) -> dict:
    route = front.report("fraud").routes[0]
    return {"route": route, **{s.target.name: s for s in route.shadows}}


def _live_clean(cmp, name: str) -> None:
    """No live error, no changed answer, no hung call, and the p99 ratio."""
    print(cmp.line(name))
    for side in (cmp.base, cmp.fault):
        assert not side.errors and side.mismatches == 0 and side.hung == 0 and side.ok == side.sent, side.row()
    assert cmp.p99_ratio <= P99_RATIO, cmp.line(name)


def _stop(*fronts) -> None:
    for f in fronts:
        f.terminate()
    for f in fronts:
        assert f.stop() == 0, f.output()[-3000:]


@pytest.fixture(scope="module")
def tritons(tmp_path_factory):
    """Two tritonservers of this module's own (fraud 1+2, fraud_sleepy sleeping SLEEPY_S), started
    side by side: ``own`` gets killed (so the session Triton never is), ``twin`` stands in for it in
    the baseline front, so that both fronts have the same topology."""
    require_pytriton()
    from shadowgrpc.local import example_repository

    repo = copy_models(tmp_path_factory.mktemp("faults-repo"), example_repository(), TEST_MODELS, only={"fraud", "fraud_sleepy"})
    env = {"SHADOWGRPC_SLEEPY_SECONDS": str(SLEEPY_S)}
    started: dict = {}
    t = threading.Thread(target=lambda: started.__setitem__("twin", KillableTriton(repo, tmp_path_factory.mktemp("faults-twin"), env)))
    t.start()
    own = None
    try:
        own = KillableTriton(repo, tmp_path_factory.mktemp("faults-own"), env)
        t.join(240)
        assert "twin" in started, "the twin tritonserver did not start"
        yield own, started["twin"]
    finally:
        t.join(240)
        for server in (own, started.get("twin")):
            if server is not None:
                server.close()


@pytest.fixture(scope="module")
def load(triton):
    with LoadClient(256) as client:
        assert client.expect(triton.grpc_address) == 256  # the reference answers: Triton direct
        yield client


def _measure(load, share: float = 1.0, **kw):
    """``share`` of RATE for a scenario whose fronts cost Triton more per request (several shadows,
    tracing), for as much longer, so that neither saturates the machine and the sample stays 375."""
    return interleave(load, "base", "fault", blocks=round(BLOCKS / share), block_s=BLOCK_S, rate=RATE * share, deadline_s=DEADLINE_S, **kw)


def test_shadow_triton_killed_mid_load_then_restarted(triton, tritons, load, tmp_path):
    own, twin = tritons
    base, fault = _pair(load, tmp_path, triton.grpc_address, route_toml({"name": "v2", "version": "2", "address": twin.address}),
                        route_toml({"name": "v2", "version": "2", "address": own.address}))
    try:
        timers = []

        def kill_after_first_block(i: int) -> None:
            if i == 0:
                timers.append(own.kill_later(BLOCK_S / 2))  # mid-way through the second block

        cmp = _measure(load, between=kill_after_first_block)
        timers[0].join(10)
        s = _shadows(fault)["v2"]
        lost = sum(s.errors.values())
        print(f"[a] shadow down: sent {s.sent} ok {s.ok} errors {dict(s.errors)} down {s.down}; restart ...")
        assert s.down > 0 and s.sent == s.ok + lost  # the outage is counted: calls that failed, then calls not sent
        assert set(s.errors) <= {"UNAVAILABLE", "CANCELLED"}, dict(s.errors)
        took = own.restart()
        ok0 = s.ok
        t0 = time.monotonic()
        after = []

        def resumed() -> bool:
            after.append(load.block("fault", 0.3, RATE, DEADLINE_S))
            return _shadows(fault)["v2"].ok >= ok0 + 20

        wait_until(resumed, 20.0, "mirroring to the restarted shadow Triton resumes", every=0.0)
        print(f"[a] restart took {took:.1f} s; mirroring resumed {time.monotonic() - t0:.1f} s after it")
        for r in after:  # live clean across the restart too
            assert not r["errors"] and r["mismatches"] == 0 and r["hung"] == 0, r
        rep = _shadows(fault)
        assert not rep["route"].live_errors and rep["v2"].internal_errors == 0
        assert rep["v2"].status == "MIRRORING"
        _live_clean(cmp, "a shadow Triton killed")
    finally:
        _stop(base, fault)


def test_shadow_ten_times_slower_than_its_deadline_is_shed_or_timed_out_and_memory_stays_flat(triton, tritons, load, tmp_path):
    own, twin = tritons
    mk = dict(max_in_flight=4, deadline_ms=SLOW_DEADLINE_MS)
    base, fault = _pair(load, tmp_path, triton.grpc_address, route_toml({"name": "v2", "version": "2", "address": twin.address, **mk}),
                        route_toml({"name": "slow", "model": "fraud_sleepy", "address": own.address, **mk}))
    try:
        seen = {"in_flight": 0, "rss": []}
        stop = threading.Event()

        def sample() -> None:  # the fault front's in-flight shadow calls (its report) and RSS, during the load
            while not stop.wait(0.1):
                seen["in_flight"] = max(seen["in_flight"], _shadows(fault)["slow"].in_flight)
                seen["rss"].append(rss_mib(fault.proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        rss0 = rss_mib(fault.proc.pid)
        sampler.start()
        try:
            cmp = _measure(load)
        finally:
            stop.set()
            sampler.join(5)
        s = wait_until(lambda: (x := _shadows(fault)["slow"]).in_flight == 0 and x, 5.0, "the slow shadow's calls end (their deadline)")
        rss1 = rss_mib(fault.proc.pid)
        print(f"[b] slow shadow: sent {s.sent} ok {s.ok} errors {dict(s.errors)} shed {s.shed}; most in flight {seen['in_flight']}; "
              f"fault front RSS {rss0:.1f} -> peak {max(seen['rss']):.1f} -> {rss1:.1f} MiB")
        assert s.errors["DEADLINE_EXCEEDED"] > 0 and s.shed > 0 and s.ok == 0
        assert s.sent == sum(s.errors.values()) and s.sampled == s.sent + s.shed  # every one counted once
        assert 0 < seen["in_flight"] <= 4  # bounded by max_in_flight
        assert max(seen["rss"]) - rss0 < 10.0 and rss1 - rss0 < 10.0
        _live_clean(cmp, "b shadow 10x slower than its deadline")
    finally:
        _stop(base, fault)


def test_shadow_answers_of_another_contract_or_nan_are_reported_never_raised_into_live(triton, load, tmp_path):
    bad = [{"name": "f64", "model": "fraud_f64"}, {"name": "shape", "model": "fraud_loose"}, {"name": "nan", "model": "fraud_nan"},
           {"name": "renamed", "model": "fraud_renamed"}, {"name": "garbage", "model": "fraud_garbage"}]
    good = [{"name": f"v2-{i}", "version": "2"} for i in range(4)]
    base, fault = _pair(load, tmp_path, triton.grpc_address, route_toml(*good), route_toml(*bad))
    try:
        cmp = _measure(load, share=0.4)  # five Triton calls a request
        def settled() -> dict | None:
            r = _shadows(fault)
            return r if all(x.in_flight == 0 for x in r["route"].shadows) else None

        rep = wait_until(settled, 5.0, "the shadow calls end")
        for name in ("f64", "shape", "nan", "renamed", "garbage"):
            s = rep[name]
            print(f"[c] {name}: status {s.status} sent {s.sent} ok {s.ok} compared {s.compared} contract_mismatch {s.contract_mismatch} "
                  f"not_ready {s.not_ready} invalid {[o.shadow_invalid_rows for o in s.outputs]} errors {dict(s.errors)}")
            assert s.internal_errors == 0 and set(s.errors) <= {"DEADLINE_EXCEEDED"}  # a busy machine can time a shadow out
        for name in ("f64", "shape", "renamed"):  # passed the check before traffic; every answer is caught
            s = rep[name]
            assert s.status == "MIRRORING" and s.ok > 0.9 * s.sent and s.contract_mismatch == s.ok and s.compared == 0
        nan = rep["nan"]
        assert nan.compared == nan.ok > 0.9 * nan.sent and nan.contract_mismatch == 0
        assert nan.outputs[0].shadow_invalid_rows > 0 and nan.outputs[0].live_invalid_rows == 0
        garbage = rep["garbage"]  # INT32 [3] declared: refused before traffic, reported with why
        assert garbage.status == "INCOMPATIBLE" and garbage.sent == 0 and garbage.not_ready > 0
        assert any("datatype INT32" in p for p in garbage.contract_problems), list(garbage.contract_problems)
        assert not rep["route"].live_errors
        _live_clean(cmp, "c shadow contract faults")
    finally:
        _stop(base, fault)


def test_live_triton_killed_callers_get_unavailable_in_time_and_the_front_serves_again(triton, tritons, load, tmp_path):
    own, twin = tritons
    shadow = {"name": "v2", "version": "2", "address": triton.grpc_address}
    base, fault = _pair(load, tmp_path, triton.grpc_address, route_toml(shadow, live={"address": twin.address}),
                        route_toml(shadow, live={"address": own.address}))
    try:
        timer = own.kill_later(0.3)
        outage = load.block("fault", 1.5, RATE, DEADLINE_S)  # killed 0.3 s in
        timer.join(10)
        errs = outage["errors"]
        print(f"[d] during the outage: ok {len(outage['lat'])} errors {errs}, slowest failed call {max(outage['call_s'], default=0):.3f} s")
        assert outage["hung"] == 0 and outage["mismatches"] == 0
        assert set(errs) == {"UNAVAILABLE"} and errs["UNAVAILABLE"] > 0.5 * RATE  # nothing else, and most of the outage
        assert max(outage["call_s"]) < DEADLINE_S + 0.25  # within the caller's deadline: no hang
        assert fault.proc.poll() is None  # the front keeps running
        took = own.restart()
        t0 = time.monotonic()
        wait_until(lambda: load.block("fault", 0.2, 20.0, DEADLINE_S)["lat"], 20.0, "the front answers OK again after live returns", every=0.0)
        back = time.monotonic() - t0
        print(f"[d] restart took {took:.1f} s; the front answered OK again {back:.2f} s after it")
        warm = load.block("fault", 1.0, RATE, DEADLINE_S)  # the restarted Triton's first second (fresh stubs), not measured
        assert not warm["errors"] and warm["mismatches"] == 0, warm["errors"]
        cmp = _measure(load)
        route = _shadows(fault)["route"]
        assert set(route.live_errors) == {"UNAVAILABLE"}  # the outage only, answered as Triton's status
        _live_clean(cmp, "d live Triton back after a kill")
    finally:
        _stop(base, fault)


def test_hung_collector_and_full_disk_with_a_faulty_shadow_leave_live_unaffected(triton, load, tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)
    tracing = {"SHADOWGRPC_TRACE": "1", "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_EXPORTER_OTLP_TIMEOUT": "1", "OTEL_METRICS_EXPORTER": "none",
               "OTEL_BSP_MAX_QUEUE_SIZE": "256", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64"}
    hang = HangingPort()
    fronts = ()
    try:
        with OtlpReceiver(keep_spans=False) as rx:
            env = {"base": {**tracing, "OTEL_EXPORTER_OTLP_ENDPOINT": rx.grpc_endpoint},
                   "fault": {**tracing, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{hang.port}"}}
            fronts = _pair(load, tmp_path, triton.grpc_address,
                           f'[log]\npath = "{tmp_path / "log-ok"}"\nflush_s = 0.2\n' + route_toml({"name": "v2", "version": "2"}),
                           f'[log]\npath = "{tmp_path / "log-full"}"\nflush_s = 0.2\n' + route_toml({"name": "faulty", "model": "fraud_faulty"}),
                           env=env, wrap=FULL_DISK)
            base, fault = fronts
            cmp = _measure(load, share=0.6)  # spans and log rows on top
            rep = wait_until(lambda: (r := fault.report()).log.stopped and r, 10.0, "the full disk stops the log")
            base_rep = base.report()
            exported = rx.span_count
        s = rep.routes[0].shadows[0]
        print(f"[e] fault front: log stopped {rep.log.stopped} write_errors {rep.log.write_errors} rows_dropped {rep.log.rows_dropped} "
              f"({rep.log.last_error[:60]}...); faulty errors {dict(s.errors)}; collector connections held {len(hang.accepted)}; "
              f"base: log rows {base_rep.log.rows_written}, spans received {exported}")
        assert rep.log.write_errors >= 1 and "File too large" in rep.log.last_error
        assert s.errors["INTERNAL"] > 0 and s.internal_errors == 0
        assert not rep.routes[0].live_errors and rep.routes[0].live_ok == rep.routes[0].requests
        assert not base_rep.log.stopped and not base_rep.routes[0].live_errors and exported > 0
        assert len(hang.accepted) >= 1  # the exporter did try the hung collector
        _live_clean(cmp, "e hung collector + full disk + faulty shadow")
        t0 = time.monotonic()
        _stop(*fronts)  # both still stop cleanly, bounded, with the collector hung
        assert time.monotonic() - t0 < 15
    finally:
        for f in fronts:
            f.kill()
        hang.close()
