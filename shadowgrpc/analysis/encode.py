"""The replay's data path (``shadowgrpc replay``, replay.py): logged rows in, a paired log out.

In: ``plan`` checks the log, the route and the replay's folder and writes the SQL that selects the
logged requests still to replay (their first rows, with request bytes, live answered OK, not yet
in the replay's own log: an anti-join on ``writer`` + ``request_seq``), streamed in batches; each
batch is turned into what a call needs off the event loop (``read_batch``), live's logged outputs
re-encoded as ModelInferResponse bytes (``encode_outputs``).
Out: ``ReplayLog``, the replay's paired log: one PairLog per original writer, so the rows keep the
original request's key and a rerun knows what is done; ``pair_of`` decides compared or not.

The logged outputs go back to their original datatype: FP16 from the exact fp32 widening, BOOL
from 0/1, UINT64 from the same 64 bits kept as int64, BYTES re-serialized (4-byte little-endian
length per element). A tensor logged without values (typed contents, or contents that did not match
its shape) gets empty contents, which the writer logs again as a null payload; datatypes it does
not know likewise. The writer decodes the bytes again (``pairlog.batch.tensors``) into the same
column values.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..codec import NUMPY_DTYPES
from ..packing import encode_bytes_tensor
from .sql import files_sql, lit
from .tensors import payload_field

_PAYLOADS = ("fp32", "fp64", "ints", "bytes")
NOT_REPLAYED = ("shared_memory", "explicit_version")  # never mirrored online either
FLUSH_S = 2.0  # the replay log finishes a file at least this often (what a kill -9 may lose)
FLUSH_ROWS = 5000
MAX_OPEN_WRITERS = 32  # PairLogs open at once (the least recently used is closed)


def _contents(datatype: str, values: Any) -> bytes:
    """One tensor's raw contents from its logged payload (None: logged without values)."""
    if values is None:
        return b""
    if datatype == "BYTES":
        return encode_bytes_tensor([bytes(v) for v in values])
    dt = NUMPY_DTYPES.get(datatype)
    if dt is None:
        return b""
    a = np.asarray(values)
    if datatype == "UINT64":
        return a.astype(np.int64, copy=False).view(np.uint64).astype(dt, copy=False).tobytes()
    if datatype == "BOOL":
        return (a != 0).astype(dt).tobytes()
    return a.astype(dt, copy=False).tobytes()


def encode_outputs(tensors: Sequence[Mapping[str, Any]]) -> bytes:
    """A serialized ModelInferResponse holding ``tensors``: dicts with ``name``, ``datatype``,
    ``shape`` and the payload field of the datatype (``fp32``, ``fp64``, ``ints`` or ``bytes``, as
    the TENSOR struct logs it: a list or a numpy array, None when logged without values)."""
    from tritonclient.grpc import service_pb2 as kserve

    resp = kserve.ModelInferResponse()
    for t in tensors:
        dt = t["datatype"] or ""
        resp.outputs.add(name=t["name"] or "", datatype=dt, shape=list(t["shape"] or ()))
        resp.raw_output_contents.append(_contents(dt, t.get(payload_field(dt))))
    return resp.SerializeToString()


def encode_column(col: pa.Array | pa.ChunkedArray) -> list[bytes | None]:
    """``encode_outputs`` for every row of a ``list<TENSOR>`` column (None where the row is null):
    the payloads are read as numpy slices of the column's buffers, not as Python lists."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(col)
    if n == 0:
        return []
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    offsets = col.offsets.to_numpy(zero_copy_only=False)  # absolute positions into col.values
    structs = col.values
    lo, hi = int(offsets[0]), int(offsets[-1])
    names = structs.field("name").slice(lo, hi - lo).to_pylist()
    datatypes = structs.field("datatype").slice(lo, hi - lo).to_pylist()
    shapes = structs.field("shape").slice(lo, hi - lo).to_pylist()
    fields: dict[str, tuple[np.ndarray, np.ndarray, Any]] = {}
    for f in _PAYLOADS:
        arr = structs.field(f)
        off = arr.offsets.to_numpy(zero_copy_only=False)
        ok = arr.is_valid().to_numpy(zero_copy_only=False)
        values = arr.values
        if f == "bytes":
            flat: Any = values  # a binary array: elements taken one tensor at a time
        else:
            flat = values.to_numpy(zero_copy_only=False) if len(values) else np.zeros(0)
        fields[f] = (off, ok, flat)
    out: list[bytes | None] = []
    for i in range(n):
        if not valid[i]:
            out.append(None)
            continue
        tensors = []
        for j in range(int(offsets[i]), int(offsets[i + 1])):
            k = j - lo
            dt = datatypes[k] or ""
            f = payload_field(dt)
            off, ok, flat = fields[f]
            if not ok[j]:
                payload = None
            elif f == "bytes":
                payload = flat.slice(int(off[j]), int(off[j + 1] - off[j])).to_pylist()
            else:
                payload = flat[int(off[j]) : int(off[j + 1])]
            tensors.append({"name": names[k], "datatype": dt, "shape": shapes[k], f: payload})
        out.append(encode_outputs(tensors))
    return out


# --- the source rows ---------------------------------------------------------------------------------


_ON = "ON s.writer = d.writer AND s.request_seq = d.request_seq"


def source_sql(route: str, where: str) -> str:
    """``src``: the replayable requests of ``route`` matching ``where`` (views ``pairs``, ``done``)."""
    return (
        "src AS (SELECT writer, request_seq, request_id, epoch_us(arrival) AS arrival_us, epoch_us(live_answered) AS answered_us, "
        "live_latency_s, front_added_s, log_sample_rate, slice_buckets, live_outputs, request FROM pairs "
        f"WHERE first_row AND request IS NOT NULL AND live_status = 'OK' AND mirror NOT IN ({', '.join(map(lit, NOT_REPLAYED))}) "
        f"AND route = {lit(route)} AND ({where or 'TRUE'}))"
    )


def counts_sql(src: str) -> str:
    """(requests selected, of them already in the replay log)."""
    return f"WITH {src} SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM src s SEMI JOIN done d {_ON})"


def todo_sql(src: str, limit: int | None) -> str:
    """The selected requests not in the replay log, in arrival order. live_outputs of the
    request's first row is null when that target's shadow call failed online: live's answer is then
    taken from another target's row of the same request."""
    return (
        f"WITH {src}, todo AS (SELECT s.* FROM src s ANTI JOIN done d {_ON}), "
        "alt AS (SELECT p.writer, p.request_seq, any_value(p.live_outputs) AS lo FROM pairs p SEMI JOIN "
        "(SELECT writer, request_seq FROM todo WHERE live_outputs IS NULL) m ON p.writer = m.writer AND p.request_seq = m.request_seq "
        "WHERE NOT p.first_row AND p.live_outputs IS NOT NULL GROUP BY p.writer, p.request_seq) "
        "SELECT t.writer, t.request_seq, t.request_id, t.arrival_us, t.answered_us, t.live_latency_s, t.front_added_s, "
        "t.log_sample_rate, t.slice_buckets, coalesce(t.live_outputs, alt.lo) AS live_outputs, t.request FROM todo t "
        "LEFT JOIN alt ON t.writer = alt.writer AND t.request_seq = alt.request_seq "
        "ORDER BY t.arrival_us, t.writer, t.request_seq" + (f" LIMIT {int(limit)}" if limit else "")
    )


def stream(con, sql: str, rows: int):
    """The query's rows as a pyarrow RecordBatchReader (DuckDB streams them: not all in memory)."""
    rel = con.sql(sql)
    return rel.to_arrow_reader(rows) if hasattr(rel, "to_arrow_reader") else rel.fetch_arrow_reader(rows)  # duckdb 2 / 1.x


class ReplayError(Exception):
    """Why a replay cannot start or go on; ``code``: the exit status (2: the arguments, 1: the rest)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class Plan:
    path: str
    out: str
    target: str
    model: str
    version: str
    route: str
    name: str  # the candidate's target name in the replay log
    route_cfg: Any  # config.Route with the candidate as its only shadow
    deadline_s: float
    total: int  # selected source requests
    done: int  # of them already in OUT
    sql: str  # the source rows still to send, in arrival order


def plan(args, con) -> Plan:
    """Check the log, the route and OUT; create DuckDB views ``pairs`` and ``done``; count."""
    from ..config import FALLBACK_SHADOW_DEADLINE_S, ShadowTarget
    from . import where_clause
    from .engine import LogError, pair_files, pairs_sql, readable, routes_from_metadata

    try:
        files, skipped = readable(pair_files([args.path]), b"pairs")
    except LogError as e:
        raise ReplayError(str(e)) from None
    for why in skipped:  # a torn or foreign file never stops the replay of the others
        print(f"shadowgrpc replay: skipped {why}", file=sys.stderr)
    if not files:
        raise ReplayError(f"{args.path}: no readable paired-log file")
    con.execute("SET TimeZone = 'UTC'")  # --since/--until and TIMESTAMP literals are UTC (as analyze)
    con.execute(f"CREATE VIEW pairs AS {pairs_sql(con, files)}")
    rows = con.execute("SELECT route, count(request) FROM pairs WHERE first_row GROUP BY route ORDER BY route").fetchall()
    have = [r for r, n in rows if n]
    if not have:
        raise ReplayError(f"{args.path}: logged without [log] keep_inputs = true: nothing to replay")
    route = args.route or (args.model if args.model in have else have[0] if len(have) == 1 else "")
    if route not in have:
        what = f"no route {route!r} with request bytes" if route else "several routes"
        raise ReplayError(f"{what} in {args.path}: pick one with --route ({', '.join(have)})", 2)
    cfg = routes_from_metadata(files).get(route)
    if cfg is None:
        raise ReplayError(f"{args.path}: no config for route {route!r} in the files' metadata")
    version = args.version or ""
    name = f"replay:{args.model}" + (f":{version}" if version else "")
    deadline_s = args.deadline_ms / 1000.0 if args.deadline_ms else (cfg.live.deadline_s or FALLBACK_SHADOW_DEADLINE_S)
    shadow = ShadowTarget(name=name, address=args.target, model=args.model, version=version, deadline_s=deadline_s)
    out = args.out or os.path.join(args.path, "replays", args.model + (f"-{version}" if version else ""))
    done_files = readable(pair_files([out]), b"pairs")[0] if has_files(out) else []
    if done_files:
        prev = routes_from_metadata(done_files)
        p = prev.get(route)
        if p is None or len(prev) != 1 or not p.shadows or (p.shadows[0].model, p.shadows[0].version) != (args.model, version):
            was = ", ".join(f"{r}: {s.model}:{s.version or '*'}" for r, c in prev.items() for s in c.shadows[:1])
            raise ReplayError(f"{out} holds another replay ({was}), not {route}: {args.model}:{version or '*'}: give another --out", 2)
        con.execute(f"CREATE VIEW done AS {files_sql(done_files, 'writer, request_seq')}")
    else:
        con.execute("CREATE TABLE done (writer VARCHAR, request_seq BIGINT)")
    try:
        src = source_sql(route, where_clause(args.where, args.since, args.until))
    except ValueError as e:
        raise ReplayError(str(e), 2) from None
    total, done = con.execute(counts_sql(src)).fetchall()[0]
    route_cfg = dataclasses.replace(cfg, shadows=(shadow,))
    return Plan(args.path, out, args.target, args.model, version, route, name, route_cfg, deadline_s, total, done, todo_sql(src, args.limit))


def read_batch(reader, route) -> list[tuple] | None:
    """The next source rows as (writer, seq, id, arrival, live answered, live latency, front added,
    log sample rate, slice buckets, live's answer as bytes, request bytes); None at the end. Slice
    buckets the log lacks (the request was not mirrored online) are assigned from the request, with
    ``route``'s slices. Runs off the event loop."""
    from ..codec import decode_request
    from ..slices import assign

    try:
        b = reader.read_next_batch()
    except StopIteration:
        return None
    cols = [b.column(i).to_pylist() for i in range(9)] + [encode_column(b.column(9)), b.column(10).to_pylist()]
    if route.slices:
        for i, buckets in enumerate(cols[8]):
            if buckets is None:
                cols[8][i] = assign(route.slices, decode_request(cols[10][i]))
    for k in (3, 4):
        cols[k] = [None if us is None else us / 1e6 for us in cols[k]]
    return list(zip(*cols))


# --- the replay log --------------------------------------------------------------------------------


def pair_of(live: bytes | None, shadow: bytes) -> str:
    """compared when both answers carry the same outputs (names, datatypes, shapes; any order), as
    the front decides (compare.compare_responses), else contract_mismatch."""
    from ..packing import scan_response
    from ..pairlog.schema import COMPARED, CONTRACT_MISMATCH

    try:
        a = sorted(t[:3] for t in scan_response(live)) if live is not None else None
        b = sorted(t[:3] for t in scan_response(shadow))
    except ValueError:
        return CONTRACT_MISMATCH
    return COMPARED if a == b else CONTRACT_MISMATCH


class ReplayLog:
    """The replay's paired log under ``out``: one ``PairLog`` per writer of the original log, named
    after it, so each row's ``writer`` + ``request_seq`` are the original request's (what a rerun
    anti-joins on). ``pair`` on the event loop; ``close`` writes everything and returns the rows
    lost to a write fault."""

    def __init__(self, out: str, route) -> None:
        self.out, self.route = out, route
        self.logs: OrderedDict[str, Any] = OrderedDict()
        self.lost = 0

    def pair(self, row, writer: str, log_rate: float) -> None:
        from .._config_log import LogSettings
        from ..pairlog.writer import PairLog

        pl = self.logs.get(writer)
        if pl is None:
            if len(self.logs) >= MAX_OPEN_WRITERS:
                self.lost += _close(self.logs.popitem(last=False)[1])
            rate = 1.0 if log_rate is None else float(log_rate)
            cfg = LogSettings(path=self.out, sample_rate=rate, max_queue_rows=1 << 30, flush_rows=FLUSH_ROWS, flush_s=FLUSH_S, max_disk_mb=1 << 30)
            pl = PairLog(cfg, (self.route,), writer_id=writer)
            pl.host = "\0replay"  # its temp-file clean-up: the other writers here are ours, never a dead front's
            pl.start()
            self.logs[writer] = pl
        self.logs.move_to_end(writer)
        pl.pair(row)

    def health(self) -> tuple[int, str]:
        """(rows waiting for the writers, a write fault that stopped one, or "")."""
        stats = [pl.stats for pl in self.logs.values()]
        return sum(s.rows_queued for s in stats), next((s.last_error for s in stats if s.stopped and s.last_error), "")

    def close(self) -> int:
        while self.logs:
            self.lost += _close(self.logs.popitem()[1])
        return self.lost


def _close(pl) -> int:
    pl.close(60.0)
    s = pl.stats
    if s.last_error:
        print(f"shadowgrpc replay: {s.last_error}", file=sys.stderr)
    return s.rows_shed + s.rows_dropped


def has_files(out: str) -> bool:
    """Whether ``out`` holds finished pairs files."""
    return any(n.endswith(".parquet") and not n.startswith(".") for _, _, names in os.walk(os.path.join(out, "pairs")) for n in names)
