"""Auto-shadow's comparison windows in the paired log, end to end on the real Triton: a front with
``shadow = {newest = 1, load = true}`` logs traffic while version 2 is dropped into the repository
(window fraud:2), then version 3 (fraud:2 closes as superseded, fraud:3 opens: its requests' rows
start at target_index 1), then ``analyze`` over the files must give both windows, by the online
names, with the online counts, and the route's request counts (each request counted by its first
row, whatever its index).

Own tritonserver (module scope) on a temporary repository this module changes, as
test_auto_shadow.py's (explicit model-control mode: the front loads the dropped versions)."""

from __future__ import annotations

import shutil
import time

import pytest

from shadowgrpc.examples.data import make_transactions
from shadowgrpc.local import example_repository
from tests.frontctl import front_for
from tests.repo_triton import fraud_v1_triton
from tests.kserve import _raw, fraud_request
from tests.pairlog_run import as_dict, diff

pytestmark = [pytest.mark.triton, pytest.mark.once]  # once: repository polling, the same with either twin

POLL_S = 1.0  # windows, not timing, are under test here


@pytest.fixture(scope="module")
def repo_triton(tmp_path_factory):
    yield from fraud_v1_triton(tmp_path_factory, "auto-log")


def _drop(repo, version: str) -> None:
    """The example's fraud v2 as ``version``, copied in the way a deploy does: into a temp name,
    then renamed into place (its model.py knows versions 1 and 2: later ones are v2's weights)."""
    tmp = repo / "fraud" / f".{version}.tmp"
    shutil.copytree(example_repository() / "fraud" / "2", tmp, ignore=shutil.ignore_patterns("__pycache__"))
    if version != "2":
        with open(tmp / "model.py", "a") as f:
            f.write(f"\nVERSIONS[{version!r}] = VERSIONS['2']\n")
    tmp.rename(repo / "fraud" / version)


def _wait(cond, timeout: float) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"not within {timeout:.1f} s"
        time.sleep(0.05)


def _send(front, n: int, seed: int, prefix: str) -> None:
    feats, _ = make_transactions(4 * n, seed=seed)
    ch, call = _raw(front.address)
    with ch:
        for i in range(n):
            call(fraud_request(feats[4 * i : 4 * i + 4], rid=f"{prefix}{i}", version="").SerializeToString(), timeout=10)


@pytest.fixture(scope="module")
def logged(repo_triton, tmp_path_factory):
    """(log folder, the online report as a dict, the route's windows online)."""
    from shadowgrpc.report import build_report

    server, repo = repo_triton
    log_dir = tmp_path_factory.mktemp("auto-pairlog") / "log"
    routes = [{"model": "fraud", "live": {"version": "1"}, "shadow": {"newest": 1, "load": True, "repository": str(repo)}}]
    ft = front_for(server.grpc_address, routes, poll_s=POLL_S, log={"path": str(log_dir), "flush_s": 0.2})
    try:
        windows = lambda: {ts.target.name: ts for ts in ft.router.state.routes["fraud"].shadows}  # noqa: E731
        _drop(repo, "2")
        _wait(lambda: (w := windows().get("fraud:2")) is not None and w.status == "MIRRORING", 20 * POLL_S)
        _send(ft, 40, seed=5, prefix="a")
        ft.drain()
        _drop(repo, "3")
        _wait(lambda: (w := windows().get("fraud:3")) is not None and w.status == "MIRRORING", 20 * POLL_S)
        assert windows()["fraud:2"].status == "CLOSED" and "superseded" in windows()["fraud:2"].closed_reason
        _send(ft, 30, seed=6, prefix="b")
        ft.drain()
        online = as_dict(build_report(ft.router.state))
        ft.flush_log()
        return log_dir, online, windows()
    finally:
        ft.stop()


def test_auto_windows_offline_equal_the_online_ones(logged):
    import duckdb

    from shadowgrpc.analysis import analyze
    from shadowgrpc.report import build_report

    log_dir, online, windows = logged
    assert list(windows) == ["fraud:2", "fraud:3"] and windows["fraud:2"].stats.compared == 40 and windows["fraud:3"].stats.compared == 30
    # The log: fraud:3's requests have one row, at target_index 1, and it is their first row.
    got = duckdb.sql(
        f"SELECT target, target_index, first_row, count(*) FROM read_parquet('{log_dir}/pairs/**/*.parquet', hive_partitioning = true) "
        "GROUP BY ALL ORDER BY target_index"
    ).fetchall()
    assert got == [("fraud:2", 0, True, 40), ("fraud:3", 1, True, 30)]

    offline = as_dict(build_report(analyze([str(log_dir)])))
    (on,), (off,) = online["routes"], offline["routes"]
    for k in ("requests", "live_ok", "live_errors", "shm_not_mirrored", "explicit_version_not_mirrored"):
        assert on.get(k) == off.get(k), k
    assert int(off["requests"]) == 70
    assert [s["target"]["name"] for s in off["shadows"]] == ["fraud:2", "fraud:3"]
    # The whole route, each window's counts, outputs and verdict included, less what the log does not
    # hold (status, window times, checks: from the front's polls; tests/pairlog_run.NOT_LOGGED).
    assert diff(on, off) == []
    assert [s["window"].get("auto") for s in off["shadows"]] == [True, True]
    assert (int(off["shadows"][0]["compared"]), int(off["shadows"][1]["compared"])) == (40, 30)
