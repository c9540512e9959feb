"""The paired-prediction log's writer (shadowgrpc/pairlog): every datatype round-trips through
Parquet (DuckDB and pyarrow.dataset read Hive-partitioned tables), files are finished by rows and
by time and only appear complete, the queue sheds past its bound without the caller waiting, the
disk budget deletes the oldest files first. Faults: test_pairlog_faults.py."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import threading
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc import packing
from shadowgrpc._config_log import LogSettings
from shadowgrpc.config import LiveTarget, Route, ShadowTarget
from shadowgrpc.pairlog import decode, files
from shadowgrpc.pairlog.schema import COMPARED, NOT_SAMPLED, PAIRS, SENT, SHED, OutcomeRow, PairRow
from shadowgrpc.pairlog.writer import PairLog

ODD = "fraud/v2=x y%:z"  # '/', '=', ' ', '%', ':' in a route name
ROUTES = (
    Route(model=ODD, live=LiveTarget(address="l:1", model="fraud", version="1"),
          shadows=(ShadowTarget(name="cand", address="s:1", model="fraud", version="2", sample_rate=0.5),
                   ShadowTarget(name="other", address="s:2", model="fraud_b"))),
    Route(model="plain", live=LiveTarget(address="l:1", model="plain"), shadows=(ShadowTarget(name="p2", address="s:1", model="plain", version="7"),)),
)  # fmt: skip
T0 = 1_796_601_599.25  # 2026-12-06 23:59:59.25 UTC: rows on both sides of midnight


def response(*outputs: tuple[str, str, np.ndarray], typed: bool = False) -> bytes:
    m = pb.ModelInferResponse(model_name="m", model_version="1", id="rid")
    for name, dt, a in outputs:
        m.outputs.add(name=name, datatype=dt, shape=list(a.shape))
        if typed:
            m.outputs[-1].contents.fp32_contents.extend(a.reshape(-1).tolist())
        elif dt == "BYTES":
            m.raw_output_contents.append(packing.encode_bytes_tensor(list(a.reshape(-1))))
        else:
            m.raw_output_contents.append(np.ascontiguousarray(a).tobytes())
    return m.SerializeToString()


def row(route: str = "plain", seq: int = 0, arrival: float = T0, **kw) -> PairRow:
    base = dict(route=route, target_index=0, request_id=f"id-{seq}", request_seq=seq, arrival=arrival,
                live_answered=arrival + 0.002, shadow_answered=arrival + 0.003, mirror=SENT, sampled=True,
                live_status="OK", shadow_status="OK", pair=COMPARED, live_latency_s=0.0015, shadow_latency_s=0.0025,
                front_added_s=1e-4, trace_id=None, slice_buckets=None, live=None, shadow=None, request=None)  # fmt: skip
    base.update(kw)
    return PairRow(**base)


def fp32_row(seq: int, **kw) -> PairRow:
    a = np.full((1, 16), seq, dtype=np.float32)
    return row(seq=seq, live=response(("p", "FP32", a)), shadow=response(("p", "FP32", a + 1)), **kw)


def settings(path, **kw) -> LogSettings:
    return LogSettings(path=str(path), **{"flush_s": 3600.0, **kw})


@pytest.fixture
def open_log():
    logs: list[PairLog] = []

    def make(path, routes=ROUTES, writer_id="w1", **kw) -> PairLog:
        lg = PairLog(settings(path, **kw), routes, writer_id=writer_id)
        lg.start()
        logs.append(lg)
        return lg

    yield make
    for lg in logs:
        lg.close(timeout=10)


def parquet_files(root, table: str = "pairs") -> list[str]:
    return sorted(glob.glob(os.path.join(str(root), table, "**", "*.parquet"), recursive=True))


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def tensor(name, dt, shape, **payload):
    return {"name": name, "datatype": dt, "shape": list(shape), "fp32": None, "fp64": None, "ints": None, "bytes": None, **payload}


def test_rows_of_every_datatype_round_trip_through_duckdb_and_pyarrow(tmp_path, open_log):
    f32 = np.array([[1.5, -2.25, 3.0e-8], [np.inf, -0.0, 7.0]], dtype=np.float32)
    f16 = np.array([0.1, 65504.0, -3.5], dtype=np.float16)
    f64 = np.array([1 / 3, -1e300], dtype=np.float64)
    i64 = np.array([[-(2**63), 2**63 - 1], [0, -5]], dtype=np.int64)
    u64 = np.array([2**64 - 1, 2**63, 7], dtype=np.uint64)
    flag = np.array([True, False, True, True])
    i8, u32 = np.array([-128, 127], dtype=np.int8), np.array([2**32 - 1], dtype=np.uint32)
    words = np.array([[b"a"], [b"\x00\xffxyz"]], dtype=object)
    out = pb.ModelInferResponse.InferOutputTensor(name="a", datatype="FP32", shape=[2, 3])
    bad = pb.ModelInferResponse(outputs=[out], raw_output_contents=[b"\x00" * 20])
    rows = [
        row(ODD, 0, T0, live=response(("a", "FP32", f32), ("b", "FP16", f16), ("c", "FP64", f64)),
            shadow=response(("d", "INT64", i64), ("e", "UINT64", u64), ("f", "BOOL", flag)),
            slice_buckets=[np.array([0, 3], dtype=np.int16), None], request=b"\x0a\x05fraud", trace_id="ab" * 16),
        row(ODD, 1, T0 + 0.5, target_index=1, mirror=NOT_SAMPLED, sampled=False, shadow_status=None, pair=None,
            shadow_answered=None, shadow_latency_s=None, live=None, shadow=None),
        row("plain", 2, T0 + 1.0, live=response(("w", "BYTES", words), ("g", "INT8", i8), ("h", "UINT32", u32)),
            shadow=b"\x0a\xff\xff", mirror=SHED, slice_buckets=[]),  # shadow: malformed bytes
        row("unrouted", 3, T0 + 3600.0, live=response(("t", "FP32", f32), typed=True), shadow=response()),
        row("plain", 4, T0 + 2.0, live=bad.SerializeToString()),  # 20 bytes of contents for 6 FP32: no payload
    ]  # fmt: skip
    lg = open_log(tmp_path, sample_rate=0.25)
    for r in rows:
        lg.pair(r)
    lg.flush()
    assert (lg.stats.rows_written, lg.stats.write_errors, lg.stats.last_error) == (5, 0, "")

    us = lambda t: None if t is None else round(t * 1e6)  # noqa: E731
    want_live = [
        [tensor("a", "FP32", (2, 3), fp32=f32.reshape(-1).tolist()), tensor("b", "FP16", (3,), fp32=f16.astype(np.float32).tolist()),
         tensor("c", "FP64", (2,), fp64=f64.tolist())],
        None,
        [tensor("w", "BYTES", (2, 1), bytes=[b"a", b"\x00\xffxyz"]), tensor("g", "INT8", (2,), ints=[-128, 127]),
         tensor("h", "UINT32", (1,), ints=[2**32 - 1])],
        [tensor("t", "FP32", (2, 3))],  # typed contents: no payload
        [tensor("a", "FP32", (2, 3))],  # contents do not match the shape: no payload
    ]  # fmt: skip
    want_shadow = [
        [tensor("d", "INT64", (2, 2), ints=i64.reshape(-1).tolist()), tensor("e", "UINT64", (3,), ints=u64.view(np.int64).tolist()),
         tensor("f", "BOOL", (4,), ints=[1, 0, 1, 1])],
        None, None, [], None,
    ]  # fmt: skip

    table = ds.dataset(str(tmp_path / "pairs"), format="parquet", partitioning="hive").to_table().sort_by("request_seq")
    got = table.to_pylist()
    assert [g["route"] for g in got] == [ODD, ODD, "plain", "unrouted", "plain"]
    for g, r, lo, so in zip(got, rows, want_live, want_shadow):
        assert g["live_outputs"] == lo and g["shadow_outputs"] == so, r.request_seq
        assert (g["request_id"], g["writer"], g["request_seq"], g["target_index"]) == (r.request_id, "w1", r.request_seq, r.target_index)
        assert (g["mirror"], g["sampled"], g["shed"], g["down"]) == (r.mirror, r.sampled, r.mirror == SHED, False)
        assert (g["live_status"], g["shadow_status"], g["pair"], g["trace_id"]) == (r.live_status, r.shadow_status, r.pair, r.trace_id)
        assert (g["live_latency_s"], g["shadow_latency_s"], g["front_added_s"]) == (r.live_latency_s, r.shadow_latency_s, r.front_added_s)
        assert g["request"] == r.request and g["log_sample_rate"] == 0.25
    assert [g["target"] for g in got] == ["cand", "other", "p2", None, "p2"]
    assert [(g["live_model"], g["live_version"], g["shadow_model"], g["shadow_version"], g["sample_rate"]) for g in got[:3]] == [
        ("fraud", "1", "fraud", "2", 0.5), ("fraud", "1", "fraud_b", "", 1.0), ("plain", "", "plain", "7", 1.0)]  # fmt: skip
    assert [g["slice_buckets"] for g in got] == [[[0, 3], None], None, [], None, None]
    assert [g["first_row"] for g in got] == [True, False, True, True, True]  # not given: target_index 0
    micros = {c: table.column(c).cast(pa.int64()).to_pylist() for c in ("arrival", "live_answered", "shadow_answered")}
    for c in micros:
        assert micros[c] == [us(getattr(r, c)) for r in rows]
    # UINT64 reads back with a uint64 view; FP16 widened exactly.
    assert np.array(got[0]["shadow_outputs"][1]["ints"], dtype=np.int64).view(np.uint64).tolist() == u64.tolist()

    glob_path = os.path.join(str(tmp_path), "pairs", "**", "*.parquet")
    con = duckdb.connect()
    q = f"""select route, strftime(date, '%Y-%m-%d'), hour, request_seq, epoch_us(arrival), live_outputs, shadow_outputs, request
            from read_parquet('{glob_path}', hive_partitioning=true) order by request_seq"""
    dd = con.sql(q).fetchall()
    assert [d[:5] for d in dd] == [(ODD, "2026-12-06", "23", 0, us(T0)), (ODD, "2026-12-06", "23", 1, us(T0 + 0.5)),
                                   ("plain", "2026-12-07", "00", 2, us(T0 + 1.0)), ("unrouted", "2026-12-07", "00", 3, us(T0 + 3600.0)),
                                   ("plain", "2026-12-07", "00", 4, us(T0 + 2.0))]  # fmt: skip
    assert [d[5] for d in dd] == want_live and [d[6] for d in dd] == want_shadow
    assert dd[0][7] == b"\x0a\x05fraud"
    # The files: partition columns only in the path (Spark refuses duplicates), metadata versioned.
    paths = parquet_files(tmp_path)
    assert any(f"route={files.escape(ODD)}" in p and "%2F" in p for p in paths) and len(paths) == 3
    for p in paths:
        assert pq.read_schema(p).names == PAIRS.names
        meta = pq.read_metadata(p).metadata
        assert meta[b"shadowgrpc.schema_version"] == b"2" and meta[b"shadowgrpc.table"] == b"pairs"
        assert json.loads(meta[b"shadowgrpc.routes"]) == json.loads(json.dumps([dataclasses.asdict(r) for r in ROUTES]))


def test_answers_decoded_by_template_equal_answers_scanned_one_by_one(monkeypatch):
    rng = np.random.default_rng(7)

    def answer(i: int) -> bytes | None:
        kind = int(rng.integers(0, 16))  # 8..15: a plain answer
        m = pb.ModelInferResponse(model_name="fraud", model_version="2" if kind == 1 else "1", id=f"req-{i}")
        if kind == 2:
            return None
        if kind == 3:
            m.parameters["sequence_id"].int64_param = i  # a varying header: no template match
        name = "q" if kind == 4 else "p"  # same length, another name: must not take the template's
        outputs = [(name, "FP32", rng.random((1, 4), dtype=np.float32)), ("n", "INT64", rng.integers(-9, 9, (1,)))]
        if kind == 5:
            outputs = [("h", "FP16", rng.random(3).astype(np.float16)), ("b", "BOOL", rng.random(2) > 0.5), ("u", "UINT64", rng.integers(0, 2**63, 2, dtype=np.uint64) * 2)]
        if kind == 6:
            outputs.append(("w", "BYTES", np.array([b"x" * int(rng.integers(0, 3))], dtype=object)))
        for o, dt, a in outputs:
            m.outputs.add(name=o, datatype=dt, shape=list(a.shape))
            m.raw_output_contents.append(packing.encode_bytes_tensor(list(a)) if dt == "BYTES" else a.tobytes())
        raw = m.SerializeToString()
        return raw[:-3] if kind == 7 else raw  # 7: truncated (malformed)

    matched = []
    real = decode._fast

    def counting(group, t):
        ok, arr = real(group, t)
        matched.append(int(ok.sum()))
        return ok, arr

    monkeypatch.setattr(decode, "_fast", counting)
    raws = [answer(i) for i in range(600)]
    fast, scanned = decode.tensors(raws), decode._scanned(raws)
    assert fast.type == scanned.type and fast.to_pylist() == scanned.to_pylist() and fast.equals(scanned)
    assert sum(matched) > 250 and scanned.null_count > 50  # most went by template; None and malformed stay null
    same = [r for r in (answer(1000 + i) for i in range(40)) if r]  # one template for all: no reordering
    assert decode.tensors(same).equals(decode._scanned(same))


def test_outcomes_round_trip_with_their_own_metadata(tmp_path, open_log):
    lg = open_log(tmp_path)
    lg.outcome(OutcomeRow("a", T0, np.array([1, 0, 2]), None, "accepted", None))
    lg.outcome(OutcomeRow("b", T0 + 1.0, None, np.array([0.5, -1.0]), "rejected", "bad shape"))
    lg.flush()
    assert lg.stats.outcomes_written == 2 and lg.stats.rows_written == 0
    got = duckdb.connect().sql(
        f"select request_id, writer, epoch_us(received), true_labels, true_values, status, reason, date, hour "
        f"from read_parquet('{tmp_path}/outcomes/**/*.parquet', hive_partitioning=true) order by request_id"
    ).fetchall()
    assert [g[:7] for g in got] == [("a", "w1", round(T0 * 1e6), [1, 0, 2], None, "accepted", None),
                                    ("b", "w1", round((T0 + 1) * 1e6), None, [0.5, -1.0], "rejected", "bad shape")]  # fmt: skip
    (p0, p1) = parquet_files(tmp_path, "outcomes")
    assert "date=2026-12-06" in p0 and "date=2026-12-07" in p1 and "route=" not in p0
    assert pq.read_metadata(p0).metadata[b"shadowgrpc.table"] == b"outcomes"


def test_partition_values_escape_hive_style_and_stay_short():
    assert (files.escape("a/b=c d%e:f"), files.escape("")) == ("a%2Fb%3Dc%20d%25e%3Af", files.HIVE_NULL)
    assert files.escape("naïve.v1-x_y~") == "naïve.v1-x_y~"  # non-ASCII kept, as Hive does
    long = files.escape("é/" * 300)
    assert len(long.encode()) <= files.MAX_COMPONENT and long != files.escape("é/" * 301)
    assert files.writer_name("../host name:1") == "_host_name_1"


def test_a_file_is_finished_every_flush_rows_rows(tmp_path, open_log):
    lg = open_log(tmp_path, flush_rows=10)
    for i in range(25):
        lg.pair(fp32_row(i))
    wait_for(lambda: lg.stats.rows_written == 20)
    assert [pq.read_metadata(p).num_rows for p in parquet_files(tmp_path)] == [10, 10]
    assert lg.stats.rows_queued == 5  # under flush_rows: waits for flush_s (an hour here) or close
    lg.close()
    assert [pq.read_metadata(p).num_rows for p in parquet_files(tmp_path)] == [10, 10, 5]
    assert lg.stats.files_written == 3 and lg.stats.stopped


def test_a_queue_shorter_than_flush_rows_wakes_the_writer_when_full(tmp_path, open_log):
    lg = open_log(tmp_path, max_queue_rows=5, flush_rows=100)  # flush_s: an hour
    for i in range(5):
        lg.pair(fp32_row(i))
    wait_for(lambda: lg.stats.rows_written == 5)
    assert lg.stats.rows_shed == 0 and len(parquet_files(tmp_path)) == 1


def test_a_file_is_finished_every_flush_s_seconds(tmp_path, open_log):
    lg = open_log(tmp_path, flush_rows=1000, flush_s=0.2)
    for i in range(5):
        lg.pair(fp32_row(i))
    wait_for(lambda: parquet_files(tmp_path))  # no flush() call: the timer finishes the file
    assert pq.read_metadata(parquet_files(tmp_path)[0]).num_rows == 5
    lg.pair(fp32_row(5))
    wait_for(lambda: len(parquet_files(tmp_path)) == 2)
    # The writer thread counts a file just after renaming it into place: the count follows (a
    # clean-clone CI run read it in between once, 5 of 6).
    wait_for(lambda: lg.stats.rows_written == 6)
    assert lg.stats.files_written == 2 and lg.stats.rows_queued == 0


def test_a_quiet_table_is_flushed_by_time_while_a_busy_one_flushes_by_rows(tmp_path, open_log):
    lg = open_log(tmp_path, flush_rows=10, flush_s=0.3)
    lg.outcome(OutcomeRow("o", T0, None, None, "unknown", None))
    deadline, rows = time.monotonic() + 10, iter(range(10**6))
    while not parquet_files(tmp_path, "outcomes"):  # the pairs table keeps finishing files by rows
        assert time.monotonic() < deadline, "the outcome waited for the pairs to stop"
        lg.pair(fp32_row(next(rows)))
        time.sleep(0.002)
    assert lg.stats.outcomes_written == 1


def test_readers_only_ever_see_complete_files(tmp_path, open_log):
    lg = open_log(tmp_path, flush_rows=50, flush_s=0.02)
    seen: dict[str, int] = {}
    errors: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            for p in glob.glob(str(tmp_path / "**" / "*.parquet"), recursive=True):
                if p in seen:
                    continue
                try:
                    seen[p] = pq.read_metadata(p).num_rows  # complete: the footer is there
                except Exception as e:  # a torn file
                    errors.append(f"{p}: {e}")

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(3000):
            lg.pair(fp32_row(i))
            if i % 100 == 0:
                time.sleep(0.01)
        lg.flush()
    finally:
        done.set()
        t.join(10)
    assert not errors and len(seen) > 3
    assert all(not os.path.basename(p).startswith(".") for p in seen)
    n = duckdb.connect().sql(f"select count(*), count(distinct request_seq) from read_parquet('{tmp_path}/pairs/**/*.parquet')").fetchall()[0]
    assert n == (3000, 3000) and lg.stats.rows_written == 3000
    assert not glob.glob(str(tmp_path / "**" / ".*.tmp"), recursive=True)


def test_past_max_queue_rows_rows_are_shed_and_the_caller_never_waits(tmp_path, open_log, monkeypatch):
    entered, gate = threading.Event(), threading.Event()
    real = files.write_parquet

    def blocked(*a, **kw):
        entered.set()
        gate.wait(20)
        return real(*a, **kw)

    monkeypatch.setattr(files, "write_parquet", blocked)
    lg = open_log(tmp_path, max_queue_rows=50, flush_rows=10)
    rows = [fp32_row(i) for i in range(200)]
    for r in rows[:10]:
        lg.pair(r)
    assert entered.wait(10)  # the writer holds 10 rows and is stuck in the disk
    t = time.monotonic()
    for r in rows[10:]:
        lg.pair(r)
    lg.outcome(OutcomeRow("x", T0, None, None, "unknown", None))
    assert not gate.is_set() and time.monotonic() - t < 5  # returned while the writer is still stuck
    st = lg.stats
    assert (st.rows_shed, st.rows_queued, st.rows_written) == (151, 50, 0)  # 10 in flight + 40 queued
    gate.set()
    lg.close()
    st = lg.stats
    assert (st.rows_written, st.rows_shed, st.rows_dropped, st.write_errors) == (50, 151, 0, 0)
    assert duckdb.connect().sql(f"select min(request_seq), max(request_seq) from read_parquet('{tmp_path}/pairs/**/*.parquet')").fetchall()[0] == (0, 49)


def test_the_disk_budget_deletes_the_oldest_files_first(tmp_path, open_log):
    rng = np.random.default_rng(1)
    big = lambda: response(("x", "FP32", rng.random((1, 40_000), dtype=np.float32)))  # noqa: E731  ~150 kB compressed
    lg = open_log(tmp_path, max_disk_mb=1)
    lg.outcome(OutcomeRow("o", T0, np.arange(60_000), None, "accepted", None))  # the outcomes table counts too
    lg.flush()
    order = parquet_files(tmp_path, "outcomes")
    sizes = {order[0]: os.path.getsize(order[0])}
    for i in range(8):
        lg.pair(row(seq=i, live=big(), shadow=big()))
        lg.flush()
        (p,) = set(parquet_files(tmp_path)) - set(order)  # the newest file is never deleted
        order.append(p)
        sizes[p] = os.path.getsize(p)
    st = lg.stats
    assert len(order) == 9 and st.files_written == 9 and st.write_errors == 0
    kept = [p for p in order if os.path.exists(p)]
    deleted = [p for p in order if not os.path.exists(p)]
    assert kept == order[-len(kept):] and order[0] in deleted  # oldest first, the outcome file included
    assert st.files_deleted == len(deleted) >= 5 and st.bytes_deleted == sum(sizes[p] for p in deleted)
    assert st.bytes_on_disk == sum(sizes[p] for p in kept) <= 1 << 20
    seqs = duckdb.connect().sql(f"select request_seq from read_parquet('{tmp_path}/pairs/**/*.parquet') order by 1").fetchall()
    assert [s for (s,) in seqs] == list(range(8 - len(kept), 8))


def test_a_restart_continues_the_table_with_new_file_names(tmp_path, open_log):
    first = open_log(tmp_path)
    first.pair(fp32_row(0))
    first.close()
    second = open_log(tmp_path)  # the same writer id: numbering goes on after the files it finds
    second.pair(fp32_row(1))
    second.flush()
    names = [os.path.basename(p) for p in parquet_files(tmp_path)]
    assert names == [files.file_name("w1", 0), files.file_name("w1", 1)]
    assert duckdb.connect().sql(f"select count(*) from read_parquet('{tmp_path}/pairs/**/*.parquet')").fetchall()[0] == (2,)


def test_the_default_writer_id_names_host_and_the_process_that_starts_it(tmp_path, monkeypatch):
    lg = PairLog(settings(tmp_path), ROUTES)
    assert lg.writer_id.endswith(f"-{os.getpid()}") and "/" not in lg.writer_id
    monkeypatch.setattr(os, "getpid", lambda: 4242)  # a worker forked after __init__
    lg.start()
    lg.close()
    assert lg.writer_id.endswith("-4242")
    with pytest.raises(ValueError):
        PairLog(LogSettings(), ROUTES)  # no path: the front builds no log
