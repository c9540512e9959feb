"""Auto-shadowing from a Triton model repository in explicit model-control mode (repository.py):
a version folder dropped into the repository is loaded by the front (RepositoryModelLoad), checked
against live's contract and shadowed; an incompatible candidate is refused before any traffic; a
version that fails to load is reported with Triton's reason; removing the shadowed version closes
its comparison window (kept in the report); and route swaps under load never fail a live request
nor route one to a half-applied table.

Own tritonserver (module scope) on a temporary repository this module changes: ``fraud`` (v1 =
live, ``version_policy: all``) and later versions, and ``fraud_wide`` (an incompatible contract)."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shadowgrpc.examples.data import make_transactions
from shadowgrpc.local import example_repository
from tests.fixtures_triton import TEST_MODELS
from tests.frontctl import front_for
from tests.repo_triton import fraud_v1_triton
from tests.kserve import _raw, fraud_request

pytestmark = [pytest.mark.triton, pytest.mark.once]  # once: repository polling, the same with either twin

POLL_S = 5.0  # the default: the targets are stated for it


@pytest.fixture(scope="module")
def repo_triton(tmp_path_factory):
    yield from fraud_v1_triton(tmp_path_factory, "auto")


@pytest.fixture(scope="module")
def auto_front(repo_triton):
    server, repo = repo_triton
    routes = [
        {"model": "fraud", "live": {"version": "1"}, "shadow": {"newest": 1, "load": True, "repository": str(repo)}},
        {"model": "fraud_b", "live": {"model": "fraud", "version": "1"},
         "shadow": {"newest": 1, "model": "fraud_wide", "load": True, "repository": str(repo)}},
    ]  # fmt: skip
    ft = front_for(server.grpc_address, routes, poll_s=POLL_S, log={"path": str(repo.parent / "pairs"), "flush_s": 0.2})
    yield ft
    ft.stop()


def _windows(front, route="fraud"):
    return {ts.target.name: ts for ts in front.router.state.routes[route].shadows}


def _wait(cond, timeout: float, step: float = 0.05):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = cond()
        if got:
            return time.monotonic() - t0
        time.sleep(step)
    raise AssertionError(f"not within {timeout:.1f} s")


def _drop(repo, model: str, version: str, source) -> None:
    """Copy a version folder in the way a deploy does: into a temp name, then rename into place."""
    tmp = repo / model / f".{version}.tmp"
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("__pycache__"))
    tmp.rename(repo / model / version)


def _send(front, n: int, route: str = "fraud", seed: int = 3, prefix: str = "r") -> list[bytes]:
    feats, _ = make_transactions(4 * n, seed=seed)
    reqs = [fraud_request(feats[4 * i : 4 * i + 4], rid=f"{prefix}{i}", model=route, version="").SerializeToString() for i in range(n)]
    ch, call = _raw(front.address)
    with ch:
        return [call(r, timeout=10) for r in reqs]


def test_a_dropped_compatible_version_is_shadowed_within_two_polls(repo_triton, auto_front):
    server, repo = repo_triton
    assert _windows(auto_front) == {}  # v1 is live: nothing else READY
    assert auto_front.router.routes["fraud"].shadows == []
    _drop(repo, "fraud", "2", example_repository() / "fraud" / "2")
    took = _wait(lambda: (w := _windows(auto_front).get("fraud:2")) is not None and w.status == "MIRRORING", 4 * POLL_S)
    print(f"\ndropped version shadowed after {took:.2f} s (poll interval {POLL_S} s)")
    assert took <= 2 * POLL_S, f"shadowed after {took:.2f} s, poll interval {POLL_S} s"
    _send(auto_front, 60)
    auto_front.drain()
    w = _windows(auto_front)["fraud:2"]
    assert w.auto and w.stats.sent == 60 and w.stats.compared == 60 and w.contract == [] and w.parity == []
    cands = auto_front.router.state.routes["fraud"].auto.candidates
    assert (cands["1"].decision, cands["2"].decision) == ("live", "shadowed")


def test_an_incompatible_candidate_is_refused_before_traffic_with_the_reason(repo_triton, auto_front):
    from shadowgrpc.client import fetch_report

    server, repo = repo_triton
    (repo / ".fraud_wide").mkdir()
    cfg = (TEST_MODELS / "fraud_garbage" / "config.pbtxt").read_text().replace('name: "fraud_garbage"', 'name: "fraud_wide"')
    (repo / ".fraud_wide" / "config.pbtxt").write_text(cfg)
    shutil.copytree(TEST_MODELS / "fraud_garbage" / "1", repo / ".fraud_wide" / "1", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".fraud_wide").rename(repo / "fraud_wide")
    took = _wait(lambda: (w := _windows(auto_front, "fraud_b").get("fraud_wide:1")) is not None and w.status == "INCOMPATIBLE", 4 * POLL_S)
    # Decided at the first poll after the drop, in which the front has Triton load the new model.
    load_s = auto_front.router.state.routes["fraud_b"].auto.last_load_s
    print(f"\nincompatible candidate refused after {took:.2f} s (poll interval {POLL_S} s, Triton's load {load_s:.2f} s)")
    assert 0 < load_s and took <= POLL_S + load_s + 0.5, f"refused after {took:.2f} s, poll interval {POLL_S} s, load {load_s:.2f} s"
    got = _send(auto_front, 30, route="fraud_b", prefix="b")
    assert len(got) == 30
    auto_front.drain()
    w = _windows(auto_front, "fraud_b")["fraud_wide:1"]
    assert w.stats.sent == 0 and w.stats.not_ready == 30
    rep = fetch_report(auto_front.admin_address, "fraud_b")
    (sr,) = rep.routes[0].shadows
    assert sr.status == "INCOMPATIBLE" and sr.not_ready == 30 and sr.verdict.decision == "NOT_COMPARABLE"
    assert any("probability" in p and "INT32" in p and "FP32" in p for p in sr.contract_problems), list(sr.contract_problems)
    (c,) = [c for c in rep.routes[0].auto.candidates if c.version == "1"]
    assert c.decision == "refused" and "probability" in c.reason


def test_a_failed_load_is_reported_and_removal_closes_the_window(repo_triton, auto_front):
    from shadowgrpc.client import fetch_report

    server, repo = repo_triton
    broken = repo / ".broken"
    broken.mkdir()
    (broken / "model.py").write_text("raise ImportError('candidate 3 is broken')\n")
    broken.rename(repo / "fraud" / "3")
    cands = auto_front.router.state.routes["fraud"].auto.candidates
    _wait(lambda: "3" in cands and cands["3"].decision == "failed_to_load", 4 * POLL_S)
    assert "candidate 3 is broken" in cands["3"].reason
    assert _windows(auto_front)["fraud:2"].status == "MIRRORING"  # the newest READY version is still 2

    before = _windows(auto_front)["fraud:2"].stats.compared
    shutil.rmtree(repo / "fraud" / "3")
    shutil.rmtree(repo / "fraud" / "2")
    _wait(lambda: _windows(auto_front)["fraud:2"].status == "CLOSED", 4 * POLL_S)
    got = _send(auto_front, 20, prefix="after")
    assert len(got) == 20
    auto_front.drain()
    w = _windows(auto_front)["fraud:2"]
    assert w.stats.compared == before and w.closed > w.opened and "version 2" in w.closed_reason
    assert auto_front.router.routes["fraud"].shadows == []
    rep = fetch_report(auto_front.admin_address, "fraud")
    (sr,) = rep.routes[0].shadows  # the closed window stays readable
    assert sr.status == "CLOSED" and sr.window.closed > 0 and sr.compared == before and sr.window.auto


def test_route_swaps_under_load_never_fail_live_nor_half_apply(repo_triton, auto_front):
    """Four hammering clients while version 2 is dropped, removed and dropped again: every live answer
    equals Triton direct's v1 answer, no error, and every request's paired-log rows name exactly
    the targets of one published route entry."""
    import duckdb

    server, repo = repo_triton
    router = auto_front.router
    published: list[frozenset] = [frozenset(ss.index for ss in router.routes["fraud"].shadows)]
    publish = router.publish

    def recording(model, *a, **k):
        entry = publish(model, *a, **k)
        if model == "fraud":
            published.append(frozenset(ss.index for ss in entry.shadows))
        return entry

    router.publish = recording
    feats, _ = make_transactions(400, seed=11)
    reqs = [fraud_request(feats[i : i + 4], rid=f"h{i}", model="fraud", version="").SerializeToString() for i in range(0, 400, 4)]
    chd, direct = _raw(server.grpc_address)
    with chd:
        want = [direct(fraud_request(feats[i : i + 4], rid=f"h{i}", version="1").SerializeToString(), timeout=10) for i in range(0, 400, 4)]
    stop = threading.Event()
    errors: list[BaseException] = []
    mismatched = [0]
    sent = [0]

    def hammer():
        ch, via = _raw(auto_front.address)
        with ch:
            k = 0
            while not stop.is_set():
                i = k % len(reqs)
                try:
                    if via(reqs[i], timeout=10) != want[i]:
                        mismatched[0] += 1
                except Exception as e:  # noqa: BLE001 - any live failure fails the test
                    errors.append(e)
                sent[0] += 1
                k += 1

    try:
        with ThreadPoolExecutor(4) as pool:
            futs = [pool.submit(hammer) for _ in range(4)]
            for step in ("drop", "remove", "drop"):  # three swaps: on, off, on again (a new window)
                if step == "drop":
                    _drop(repo, "fraud", "2", example_repository() / "fraud" / "2")
                    _wait(lambda: router.routes["fraud"].shadows and router.routes["fraud"].shadows[0].mirroring, 6 * POLL_S)
                else:
                    shutil.rmtree(repo / "fraud" / "2")
                    _wait(lambda: router.routes["fraud"].shadows == [], 6 * POLL_S)
                time.sleep(0.5)
            stop.set()
            for f in futs:
                f.result(timeout=30)
    finally:
        stop.set()
        router.publish = publish
    print(f"\nswaps under load: {sent[0]} requests, {len(published) - 1} route tables published, {len(errors)} errors, {mismatched[0]} answers differing")
    assert errors == [] and mismatched[0] == 0 and sent[0] > 200
    assert len(published) >= 4  # three swaps at least, each one published entry
    auto_front.drain()
    auto_front.flush_log()
    rows = duckdb.sql(
        f"SELECT writer, request_seq, list(target_index ORDER BY target_index) FROM read_parquet('{repo.parent}/pairs/pairs/**/*.parquet', hive_partitioning=true) "
        "WHERE route = 'fraud' AND request_id LIKE 'h%' GROUP BY writer, request_seq"
    ).fetchall()
    seen = {frozenset(r[2]) for r in rows}
    assert rows and seen <= set(published), (seen, published)
