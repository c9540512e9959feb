"""The request's first row (``first_row``, schema version 2) and comparison windows offline: a
request whose rows start past target_index 0 (auto-shadow's windows) is counted by its first row,
windows the routes' config does not list are rebuilt from their rows, and version-1 files (no
``first_row`` column: there it is target_index 0) still read, alone or beside version-2 files,
for the analysis and the replay's source rows. The real front and Triton: tests/triton/test_pairlog_auto.py."""

from __future__ import annotations

import os

import duckdb
import pyarrow.parquet as pq
import pytest

from shadowgrpc._config_auto import AutoShadow
from shadowgrpc._config_log import LogSettings
from shadowgrpc.analysis import analyze
from shadowgrpc.analysis.encode import counts_sql, source_sql
from shadowgrpc.analysis.engine import pairs_sql
from shadowgrpc.config import LiveTarget, Route, ShadowTarget
from shadowgrpc.pairlog.request import RequestLog
from shadowgrpc.pairlog.schema import COMPARED, NOT_SAMPLED, SENT, PairRow
from shadowgrpc.pairlog.writer import PairLog

T0 = 1_796_601_599.25
STATIC = Route(model="static", live=LiveTarget(address="l:1", model="static", version="1"),
               shadows=(ShadowTarget(name="v2", address="l:1", model="static", version="2"),))  # fmt: skip
AUTO = Route(model="fraud", live=LiveTarget(address="l:1", model="fraud", version="1"), auto=AutoShadow(newest=1))
WINDOWS = [ShadowTarget(name=f"fraud:{v}", address="l:1", model="fraud", version=v, sample_rate=r) for v, r in (("2", 1.0), ("3", 0.5))]


def row(route: str, seq: int, index: int, first: bool | None, **kw) -> PairRow:
    base = dict(route=route, target_index=index, request_id=f"id-{seq}", request_seq=seq, arrival=T0 + seq,
                live_answered=T0 + seq + 0.002, shadow_answered=T0 + seq + 0.003, mirror=SENT, sampled=True,
                live_status="OK", shadow_status="OK", pair=None, live_latency_s=0.0015, shadow_latency_s=0.0025,
                front_added_s=1e-4, trace_id=None, slice_buckets=None, live=None, shadow=None, request=b"req", first_row=first)  # fmt: skip
    base.update(kw)
    return PairRow(**base)


def write(path, rows, routes=(STATIC, AUTO), targets=None, writer="w1") -> None:
    lg = PairLog(LogSettings(path=str(path), flush_s=3600.0), routes, writer_id=writer)
    for route, ts in (targets or {}).items():
        lg.set_targets(route, ts)
    lg.start()
    for r in rows:
        lg.pair(r)
    lg.flush()
    lg.close(timeout=10)


def as_version_1(root) -> None:
    """Rewrite every pairs file under ``root`` as a version-1 writer wrote it: no first_row."""
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".parquet"):
                p = os.path.join(d, n)
                t = pq.read_table(p)
                meta = {**t.schema.metadata, b"shadowgrpc.schema_version": b"1"}
                pq.write_table(t.drop_columns(["first_row"]).replace_schema_metadata(meta), p)


def test_request_log_marks_its_first_emitted_row_whatever_its_index():
    out: list[PairRow] = []
    rl = RequestLog(out.append, "fraud", "a", 7, T0, b"req")
    rl.not_sent(3, NOT_SAMPLED, False)
    rl.sent()
    rl.target(2, "OK", COMPARED, 0.001, None, b"l", b"s")
    rl.answered("OK", 0.001, 1e-4, b"l")
    assert [(r.target_index, r.first_row, r.request) for r in out] == [(2, True, b"req"), (3, False, None)]


def test_windows_past_the_config_are_rebuilt_and_requests_counted_by_their_first_row(tmp_path):
    rows = [row("static", 0, 0, True)]
    # fraud: requests 1-4 while window 0 (fraud:2) was open, 5-7 after it closed: rows at index 1 only.
    rows += [row("fraud", s, 0, True, mirror=NOT_SAMPLED if s == 4 else SENT, sampled=s != 4) for s in range(1, 5)]
    rows += [row("fraud", s, 1, True, shadow_status="UNAVAILABLE" if s == 7 else "OK") for s in range(5, 8)]
    write(tmp_path, rows, targets={"fraud": WINDOWS})
    assert pq.read_table(tmp_path / "pairs").column("first_row").to_pylist().count(True) == 8
    st = analyze([str(tmp_path)])
    fraud = st.routes["fraud"]
    assert fraud.stats.requests == 7 and fraud.stats.live_ok == 7 and st.routes["static"].stats.requests == 1
    w2, w3 = fraud.shadows
    assert (w2.target.name, w2.target.version, w2.auto, w2.target.sample_rate) == ("fraud:2", "2", True, 1.0)
    assert (w3.target.name, w3.target.version, w3.auto, w3.target.sample_rate) == ("fraud:3", "3", True, 0.5)
    assert (w2.stats.sampled, w2.stats.sent, w2.stats.ok) == (3, 3, 3)
    assert (w3.stats.sampled, w3.stats.sent, w3.stats.ok, dict(w3.stats.errors)) == (3, 3, 2, {"UNAVAILABLE": 1})
    assert w3.stats.latency.count == 2 and fraud.stats.live_latency.count == 7
    assert [ts.auto for ts in st.routes["static"].shadows] == [False]  # configured: as before
    # A filter that leaves none of a window's rows keeps the window, empty (as a configured target).
    only = analyze([str(tmp_path)], "request_seq < 5").routes["fraud"]
    assert [ts.target.name for ts in only.shadows] == ["fraud:2", "fraud:3"] and only.shadows[1].stats.sent == 0


@pytest.mark.parametrize("mixed", [False, True], ids=["v1-only", "v1-and-v2"])
def test_version_1_files_without_first_row_still_read(tmp_path, mixed):
    old = tmp_path / "old"
    write(old, [row("static", s, 0, None) for s in range(3)] + [row("static", 3, 0, None, request=None)])
    as_version_1(old)
    assert "first_row" not in pq.read_schema(next(old.glob("pairs/**/*.parquet"))).names
    paths = [str(old)]
    if mixed:  # a version-2 writer beside it: its rows carry the column, the old ones read null
        new = tmp_path / "new"
        write(new, [row("fraud", 10, 1, True)], targets={"fraud": WINDOWS}, writer="w2")
        paths.append(str(new))
    st = analyze(paths)
    assert st.routes["static"].stats.requests == 4 and st.routes["static"].shadows[0].stats.sent == 4
    if mixed:
        # Only window 1 has rows: window 0 is not known offline (no row names it).
        assert st.routes["fraud"].stats.requests == 1 and [ts.target.name for ts in st.routes["fraud"].shadows] == ["fraud:3"]
    # The replay's source rows: the first rows with request bytes.
    con = duckdb.connect()
    files = sorted(str(p) for p in old.glob("pairs/**/*.parquet"))
    con.execute(f"CREATE VIEW pairs AS {pairs_sql(con, files)}")
    con.execute("CREATE TABLE done (writer VARCHAR, request_seq BIGINT)")
    assert con.execute(counts_sql(source_sql("static", ""))).fetchall() == [(3, 0)]
