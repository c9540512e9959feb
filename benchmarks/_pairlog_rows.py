"""pairlog.py, part 1: the writer and ``analyze`` measured in this process.

The rows: one ``PairRow`` per request of a route ``fraud`` (v1 live, v2 shadow, no slices, as the
front's routes in the front phase), every field as the front fills it for a compared pair (mirror
``sent``, both statuses OK, latencies, ``slice_buckets`` ``[]``, no trace id, no request bytes),
and real ``ModelInferResponse`` bytes for live and shadow: one FP32 [1, 16] output, distinct values
per row (live: a softmax of random logits; shadow: the same logits plus noise), so the compressor
sees what a classifier's probabilities look like, not repeats. Building a million protobuf
messages one by one takes most of a minute, so each message is spliced from its serialized
fields (fixed head, the id field, the outputs field, the raw contents); ``build_rows`` checks
a sample against ``SerializeToString()`` byte for byte.

The writer: ``TimedPairLog`` is ``PairLog`` with its writer thread's CPU time (``time.thread_time``
inside the thread) and the time in rows-to-Arrow (``_arrow``) and in whole files (``_write``)
recorded; the cyclic GC's pauses (any thread) are summed through ``gc.callbacks``.
"""

from __future__ import annotations

import gc
import glob
import os
import time
from typing import Any

import numpy as np

REQUEST_RATE = 2000.0  # arrivals per second in the generated log (crosses an hour partition at 1M rows)
T0 = 1_796_635_800.0  # 2026-12-07 09:30:00 UTC
OUTPUT_SHAPE = (1, 16)
RAW_TENSOR_BYTES = 2 * 4 * OUTPUT_SHAPE[0] * OUTPUT_SHAPE[1]  # live + shadow FP32 contents per pair


def routes():
    from shadowgrpc.config import LiveTarget, Route, ShadowTarget

    return (
        Route(model="fraud", live=LiveTarget(address="127.0.0.1:8001", model="fraud", version="1"),
              shadows=(ShadowTarget(name="fraud-v2", address="127.0.0.1:8001", model="fraud", version="2", sample_rate=1.0),)),
    )  # fmt: skip


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype("<f4")


class _Splicer:
    """ModelInferResponse bytes of model ``fraud`` version ``version`` with one FP32 output:
    head (model_name, model_version) + id (field 3) + outputs (field 5) + raw contents (field 6)."""

    def __init__(self, version: str) -> None:
        from tritonclient.grpc import service_pb2 as pb

        self.pb = pb
        self.version = version
        self.head = pb.ModelInferResponse(model_name="fraud", model_version=version).SerializeToString()
        m = pb.ModelInferResponse()
        m.outputs.add(name="probability", datatype="FP32", shape=list(OUTPUT_SHAPE))
        self.outputs = m.SerializeToString()
        self.raw_tag = b"\x32" + _varint(4 * OUTPUT_SHAPE[0] * OUTPUT_SHAPE[1])

    def __call__(self, rid: bytes, raw: bytes) -> bytes:
        return b"".join((self.head, b"\x1a", _varint(len(rid)), rid, self.outputs, self.raw_tag, raw))

    def protobuf(self, rid: str, raw: bytes) -> bytes:
        m = self.pb.ModelInferResponse(model_name="fraud", model_version=self.version, id=rid)
        m.outputs.add(name="probability", datatype="FP32", shape=list(OUTPUT_SHAPE))
        m.raw_output_contents.append(raw)
        return m.SerializeToString()


def build_rows(n: int, seed: int = 1, ids: str = "seq") -> list:
    """``n`` PairRows as the front hands them to the log (see the module docstring). ``ids``:
    ``seq`` (``req-<n>``, like the load generator's ``bench-<n>``) or ``uuid`` (random uuid4)."""
    import uuid

    from shadowgrpc.pairlog.schema import COMPARED, SENT, PairRow

    rng = np.random.default_rng(seed)
    k = OUTPUT_SHAPE[0] * OUTPUT_SHAPE[1]
    logits = rng.normal(0.0, 2.0, size=(n, k)).astype(np.float32)
    live = _softmax(logits)
    shadow = _softmax(logits + rng.normal(0.0, 0.3, size=(n, k)).astype(np.float32))
    del logits
    live_b, shadow_b = live.tobytes(), shadow.tobytes()
    step = 4 * k
    arrival = T0 + np.arange(n) / REQUEST_RATE + rng.uniform(0, 1 / REQUEST_RATE, n)
    live_lat = rng.lognormal(np.log(0.0015), 0.35, n)
    shadow_lat = rng.lognormal(np.log(0.0018), 0.35, n)
    front_added = rng.lognormal(np.log(80e-6), 0.3, n)
    live_done = (arrival + live_lat + front_added).tolist()
    shadow_done = (arrival + shadow_lat + front_added + 50e-6).tolist()
    arrival_l, live_lat_l, shadow_lat_l, front_l = arrival.tolist(), live_lat.tolist(), shadow_lat.tolist(), front_added.tolist()
    lv, sv = _Splicer("1"), _Splicer("2")
    rows = []
    append = rows.append
    for i in range(n):
        rid = str(uuid.UUID(bytes=rng.bytes(16), version=4)) if ids == "uuid" else f"req-{i:010d}"
        rb = rid.encode()
        lo = i * step
        append(PairRow("fraud", 0, rid, i, arrival_l[i], live_done[i], shadow_done[i], SENT, True, "OK", "OK", COMPARED,
                       live_lat_l[i], shadow_lat_l[i], front_l[i], None, [], lv(rb, live_b[lo : lo + step]),
                       sv(rb, shadow_b[lo : lo + step]), None))  # fmt: skip
    for i in sorted({0, n // 2, n - 1}) if n else ():  # the splice is exactly what protobuf writes
        r = rows[i]
        lo = i * step
        if r.live != lv.protobuf(r.request_id, live_b[lo : lo + step]) or r.shadow != sv.protobuf(r.request_id, shadow_b[lo : lo + step]):
            raise AssertionError(f"row {i}: spliced response bytes differ from protobuf's")
    return rows


def _timed_log_class():
    from shadowgrpc.pairlog.writer import PairLog

    class TimedPairLog(PairLog):
        """PairLog + the writer thread's CPU time and the time (wall and thread CPU) in rows-to-Arrow
        (``_arrow``) and in whole files (``_write``: partitioning, Arrow, Parquet, fsync, rename)."""

        thread_cpu_s = 0.0
        arrow_s = 0.0
        write_s = 0.0
        arrow_thread_cpu_s = 0.0
        write_thread_cpu_s = 0.0

        def _run(self) -> None:
            c0 = time.thread_time()
            try:
                super()._run()
            finally:
                self.thread_cpu_s = time.thread_time() - c0

        def _arrow(self, rows, pairs):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return super()._arrow(rows, pairs)
            finally:
                self.arrow_s += time.perf_counter() - t0
                self.arrow_thread_cpu_s += time.thread_time() - c0

        def _write(self, table, rows):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return super()._write(table, rows)
            finally:
                self.write_s += time.perf_counter() - t0
                self.write_thread_cpu_s += time.thread_time() - c0

    return TimedPairLog


class GcTimer:
    """Sums the cyclic GC's pauses (every thread) while active, by generation."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._t0 = 0.0

    def _cb(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            g = info.get("generation", 2)
            self.seconds[g] += time.perf_counter() - self._t0
            self.count[g] += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._cb)


def parquet_files(root: str, table: str = "pairs") -> list[str]:
    return sorted(glob.glob(os.path.join(root, table, "**", "*.parquet"), recursive=True))


def measure_writer(rows: list, path: str, flush_rows: int, flush_s: float = 3600.0) -> dict[str, Any]:
    """Hand every row to ``PairLog.pair()`` as fast as possible (max_queue_rows above the count,
    so nothing is shed), then ``close()``: rows/s = rows / (first pair() -> close() returned, every
    file finished, fsynced and renamed). ``rows`` is emptied (the queue holds the only references,
    as in a front)."""
    from shadowgrpc._config_log import LogSettings

    n = len(rows)
    raw = RAW_TENSOR_BYTES * n
    cfg = LogSettings(path=path, sample_rate=1.0, max_queue_rows=n + 1, flush_rows=flush_rows, flush_s=flush_s, max_disk_mb=1 << 20)
    lg = _timed_log_class()(cfg, routes(), writer_id="bench")
    lg.start()
    gc.collect()
    with GcTimer() as gct:
        p0 = time.process_time()
        w0 = time.perf_counter()
        pair = lg.pair
        for r in rows:
            pair(r)
        fed_s = time.perf_counter() - w0
        rows.clear()
        lg.close(timeout=3600)
        wall = time.perf_counter() - w0
        proc_cpu = time.process_time() - p0
    st = lg.stats
    found = parquet_files(path)
    on_disk = sum(os.path.getsize(f) for f in found)
    per_row = on_disk / st.rows_written if st.rows_written else None
    return {
        "rows": n, "flush_rows": flush_rows, "rows_written": st.rows_written, "rows_shed": st.rows_shed,
        "rows_dropped": st.rows_dropped, "write_errors": st.write_errors, "last_error": st.last_error,
        "files": len(found), "wall_s": wall, "feed_s": fed_s, "rows_per_s": st.rows_written / wall if wall > 0 else None,
        "writer_thread_cpu_s": lg.thread_cpu_s, "process_cpu_s": proc_cpu,
        "rows_per_writer_cpu_s": st.rows_written / lg.thread_cpu_s if lg.thread_cpu_s > 0 else None,
        "cores_used": proc_cpu / wall if wall > 0 else None,
        "arrow_s": lg.arrow_s, "arrow_thread_cpu_s": lg.arrow_thread_cpu_s, "file_s": lg.write_s,
        "parquet_s": lg.write_s - lg.arrow_s, "parquet_thread_cpu_s": lg.write_thread_cpu_s - lg.arrow_thread_cpu_s,
        "gc_s": sum(gct.seconds), "gc_s_by_generation": gct.seconds, "gc_count_by_generation": gct.count,
        "bytes_on_disk": on_disk, "bytes_per_pair": per_row, "raw_tensor_bytes_per_pair": RAW_TENSOR_BYTES,
        "bytes_per_pair_over_raw": per_row / RAW_TENSOR_BYTES if per_row else None, "raw_tensor_bytes": raw,
    }


_QUERY_NAMES = (  # a marker in each of sql.py's queries -> its name
    ("GROUP BY route, live_status, mirror", "route_counts"), ("GROUP BY route, target_index, mirror", "target_counts"),
    ("live_latency_s, front_added_s", "live_latency"), ("shadow_latency_s FROM fp", "shadow_latency"),
    ("p.live_outputs", "compared"), ("'received' AS what", "outcome_counts"),
)  # fmt: skip


class TimedEngine:
    """A DuckEngine whose queries are timed (DuckDB's run + the export to Python / Arrow): wall
    and process CPU (DuckDB's threads included), per query."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.sql_s = 0.0
        self.sql_cpu_s = 0.0
        self.per_query: list[dict[str, Any]] = []

    def _timed(self, fn, query):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(query)
        finally:
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            self.sql_s += wall
            self.sql_cpu_s += cpu
            name = next((n for marker, n in _QUERY_NAMES if marker in query), "other")
            self.per_query.append({"query": name, "wall_s": wall, "cpu_s": cpu})

    def rows(self, query: str):
        return self._timed(self.engine.rows, query)

    def arrow(self, query: str):
        return self._timed(self.engine.arrow, query)

    def routes(self):
        return self.engine.routes()


def measure_analyze(path: str) -> dict[str, Any]:
    """``analyze([path])`` timed, split into DuckEngine's start (the files read into DuckDB temp
    tables: the load) and the rest (routes from metadata + rebuild: SQL queries vs Python)."""
    import duckdb  # noqa: F401 - imported before the clock starts, as a running CLI has it

    import pyarrow.parquet as pq

    from shadowgrpc.analysis import analyze
    from shadowgrpc.analysis.engine import DuckEngine

    files = parquet_files(path)
    n = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    gc.collect()
    c0 = time.process_time()
    t0 = time.perf_counter()
    eng = TimedEngine(DuckEngine([path]))
    t1, c1 = time.perf_counter(), time.process_time()
    state = analyze([path], engine=eng)
    t2 = time.perf_counter()
    cpu = time.process_time() - c0
    compared = sum(ts.stats.compared for rs in state.routes.values() for ts in rs.shadows)
    wall = t2 - t0
    eng.engine.con.close()
    return {
        "rows": n, "files": len(files), "wall_s": wall, "rows_per_s": n / wall if wall > 0 else None,
        "load_s": t1 - t0, "load_cpu_s": c1 - c0, "analyze_after_load_s": t2 - t1, "sql_s": eng.sql_s, "sql_cpu_s": eng.sql_cpu_s,
        "per_query": eng.per_query, "python_s": (t2 - t1) - eng.sql_s, "python_cpu_s": cpu - (c1 - c0) - eng.sql_cpu_s,
        "process_cpu_s": cpu, "cores_used": cpu / wall if wall > 0 else None,
        "compared_in_state": compared,
    }


def measure_request_log(n: int = 100_000) -> dict[str, Any]:
    """The event loop's share of logging one request with one shadow (as router.py does it):
    ``RequestLog`` made, the shadow task's ``target`` and live's ``answered`` (the last part emits
    the PairRow into ``PairLog.pair``). Thread CPU per request, best of 5 rounds."""
    import itertools
    import tempfile

    from shadowgrpc._config_log import LogSettings
    from shadowgrpc.pairlog.request import RequestLog
    from shadowgrpc.pairlog.schema import COMPARED
    from shadowgrpc.pairlog.writer import PairLog

    sample = build_rows(1)[0]
    live, shadow = sample.live, sample.shadow
    with tempfile.TemporaryDirectory(prefix="pairlog-bench-") as d:
        lg = PairLog(LogSettings(path=d, max_queue_rows=n + 1, flush_rows=10_000_000, flush_s=3600.0), routes(), writer_id="bench")
        seq = itertools.count()
        pair, now = lg.pair, time.time
        per_round = max(1, n // 5)
        best = float("inf")
        for _ in range(5):
            lg._pairs.clear()  # nothing is written: the writer thread is never started
            c0 = time.thread_time()
            for _ in range(per_round):
                rl = RequestLog(pair, "fraud", "req-0000000001", next(seq), now(), None)
                rl.sent()
                rl.target(0, "OK", COMPARED, 0.0018, [], live, shadow)
                rl.answered("OK", 0.0015, 8e-5, live)
            best = min(best, (time.thread_time() - c0) / per_round)
        lg._pairs.clear()
    return {"requests": per_round, "event_loop_us_per_request": best * 1e6}
