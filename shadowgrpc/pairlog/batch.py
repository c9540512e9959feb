"""Rows to Arrow, on the writer thread: a list of ``PairRow`` becomes a ``pa.Table`` of ``PAIRS``, a
list of ``OutcomeRow`` one of ``OUTCOMES``.

Vectorized where it counts: the answers are scanned once per row (``packing.scan_response``, no
copies), then every tensor's payload of one datatype is joined into one buffer, read with numpy and
handed to Arrow as values + offsets (``ListArray.from_arrays``); no per-value Python. A malformed
answer (the scan raises ValueError) logs that side's outputs as null and never fails the batch; a
tensor whose contents do not match its shape and datatype, or that came as typed (not raw)
contents, is logged with its name, datatype and shape and a null payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, compress, repeat
from operator import is_not, itemgetter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import packing
from ..codec import NUMPY_DTYPES
from ..config import Route
from .schema import DOWN, OUTCOMES, PAIRS, SHED, TENSOR, TS, OutcomeRow, PairRow

MAX_LIST_VALUES = (1 << 31) - 1  # Arrow list offsets are int32

# datatype -> the TENSOR payload field it goes to
_FIELD = {"FP16": "fp32", "FP32": "fp32", "FP64": "fp64", "BYTES": "bytes"}
_FIELD.update({dt: "ints" for dt in ("BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")})
_TARGET = {"fp32": np.dtype("<f4"), "fp64": np.dtype("<f8"), "ints": np.dtype("<i8")}
_PAYLOADS = ("fp32", "fp64", "ints", "bytes")
_TENSOR_FIELDS = list(TENSOR)
_FIELD_TYPES = {f.name: f.type for f in _TENSOR_FIELDS}
_SLICES = PAIRS.field("slice_buckets").type
_OUTPUTS = PAIRS.field("live_outputs").type
_EMPTY_I32 = np.zeros(1, dtype=np.int32)


class RouteInfo:
    """Per (route, target_index): the columns a PairRow does not carry (looked up once per batch)."""

    def __init__(self, routes: Sequence[Route]) -> None:
        keys: dict[tuple[str, int], int] = {}
        cols: dict[str, list] = {"target": [], "live_model": [], "live_version": [], "shadow_model": [], "shadow_version": [], "sample_rate": []}
        for r in routes:
            for i, s in enumerate(r.shadows):
                keys.setdefault((r.model, i), len(keys))
                for name, value in (("target", s.name), ("live_model", r.live.model), ("live_version", r.live.version),
                                    ("shadow_model", s.model), ("shadow_version", s.version), ("sample_rate", s.sample_rate)):  # fmt: skip
                    cols[name].append(value)
        self.keys = keys
        self.columns = {k: pa.array(v, type=PAIRS.field(k).type) for k, v in cols.items()}

    def take(self, routes: Sequence[str], indexes: Sequence[int]) -> dict[str, pa.Array]:
        n = len(routes)
        if n and routes.count(routes[0]) == n and indexes.count(indexes[0]) == n:  # one target
            i = self.keys.get((routes[0], indexes[0]))
            return {k: pa.repeat(v[i] if i is not None else pa.scalar(None, v.type), n) for k, v in self.columns.items()}
        get = self.keys.get
        idx = np.fromiter((get(k, -1) for k in zip(routes, indexes)), dtype=np.int64, count=len(routes))
        missing = idx < 0
        where = pa.array(idx, mask=missing) if missing.any() else pa.array(idx)
        return {k: v.take(where) for k, v in self.columns.items()}


def _offsets(counts: np.ndarray) -> pa.Array:
    out = np.empty(len(counts) + 1, dtype=np.int64)
    out[0] = 0
    np.cumsum(counts, out=out[1:])
    if out[-1] > MAX_LIST_VALUES:
        raise OverflowError("more list values than Arrow int32 offsets hold: write smaller batches")
    return pa.array(out.astype(np.int32))


def _list(counts: np.ndarray, values: pa.Array, null: np.ndarray | None, typ: pa.DataType) -> pa.Array:
    """A list array from per-row counts (nulls count 0) and the concatenated values."""
    mask = pa.array(null) if null is not None and null.any() else None
    return pa.ListArray.from_arrays(_offsets(counts), values, type=typ, mask=mask)


def _timestamps(values: Sequence[float | None]) -> pa.Array:
    a = np.array(values, dtype=np.float64)  # None -> nan
    null = np.isnan(a)
    us = np.rint(np.where(null, 0.0, a) * 1e6).astype(np.int64)
    return pa.array(us, type=TS, mask=null if null.any() else None)


def _elements(shapes: Sequence[tuple[int, ...]]) -> tuple[pa.Array, np.ndarray]:
    """The ``shape`` column and each tensor's element count (-1 when a dim is negative)."""
    n = len(shapes)
    ndims = np.fromiter(map(len, shapes), dtype=np.int64, count=n)
    total = int(ndims.sum())
    dims = np.fromiter(chain.from_iterable(shapes), dtype=np.int64, count=total)
    column = pa.ListArray.from_arrays(_offsets(ndims), pa.array(dims), type=_FIELD_TYPES["shape"])
    if n and total == ndims[0] * n:  # every tensor has the same rank (the usual case)
        k = int(ndims[0])
        per = dims.reshape(n, k) if k else np.zeros((n, 0), dtype=np.int64)
        counts = per.prod(axis=1) if k else np.ones(n, dtype=np.int64)
        bad = (per < 0).any(axis=1)
    else:
        counts = np.ones(n, dtype=np.int64)
        bad = np.zeros(n, dtype=bool)
        for i, s in enumerate(shapes):
            for d in s:
                counts[i] *= d
                bad[i] |= d < 0
    counts[bad] = -1
    return column, counts


def _fixed(field: str, sel: np.ndarray, datatypes: Sequence[str], contents: Sequence) -> pa.Array:
    """The concatenated values of the selected tensors (in order), widened to ``field``'s type."""
    target = _TARGET[field]
    if len(sel) == len(datatypes):  # every tensor (the usual case): no gather
        picked_types, picked = datatypes, contents
    else:
        idx = sel.tolist()
        picked_types, picked = [datatypes[i] for i in idx], [contents[i] for i in idx]
    kinds = set(picked_types)
    if len(kinds) == 1:
        dt = next(iter(kinds))
        buf = b"".join(picked)
        a = _convert(np.frombuffer(buf, dtype=NUMPY_DTYPES[dt] if dt != "BOOL" else np.uint8), dt, target)
    else:
        parts = [_convert(np.frombuffer(c, dtype=NUMPY_DTYPES[d] if d != "BOOL" else np.uint8), d, target) for d, c in zip(picked_types, picked)]
        a = np.concatenate(parts) if parts else np.empty(0, dtype=target)
    return pa.array(a, type=_FIELD_TYPES[field].value_type)


def _convert(a: np.ndarray, datatype: str, target: np.dtype) -> np.ndarray:
    if datatype == "BOOL":
        return (a != 0).astype(target)
    if datatype == "UINT64":
        return a.view(target)  # the same 64 bits: read back with a uint64 view
    return a.astype(target, copy=False)


def _scan_all(raws: Sequence[bytes | memoryview | None]) -> tuple[list, np.ndarray]:
    """Every tensor of every answer, in order, and the tensor count per answer (-1: null). The
    usual case (no None, nothing malformed) iterates in C (map / chain): no bytecode per row."""
    scan = packing.scan_response
    n = len(raws)
    present = list(map(is_not, raws, repeat(None)))
    nonnull = raws if all(present) else list(compress(raws, present))
    try:
        results = list(map(scan, nonnull))
        lens = np.fromiter(map(len, results), dtype=np.int64, count=len(results))
    except ValueError:  # a malformed answer: find which, one by one
        results, found_lens = [], []
        for raw in nonnull:
            try:
                results.append(scan(raw))
                found_lens.append(len(results[-1]))
            except ValueError:
                found_lens.append(-1)
        lens = np.array(found_lens, dtype=np.int64)
    if len(nonnull) == n:
        counts = lens
    else:
        counts = np.full(n, -1, dtype=np.int64)
        counts[np.array(present, dtype=bool)] = lens
    return list(chain.from_iterable(results)), counts


def tensors(raws: Sequence[bytes | memoryview | None]) -> pa.Array:
    """A ``list<TENSOR>`` array: one list per answer, null where the answer is None or malformed."""
    found, counts = _scan_all(raws)
    null = counts < 0
    counts[null] = 0
    if not found:
        return _list(counts, pa.array([], type=TENSOR), null, _OUTPUTS)
    names, datatypes, shapes, contents = zip(*found)
    m = len(found)
    shape_column, elements = _elements(shapes)
    if None in contents:  # typed (not raw) contents: a null payload
        nbytes = np.fromiter((-1 if c is None else len(c) for c in contents), dtype=np.int64, count=m)
    else:
        nbytes = np.fromiter(map(len, contents), dtype=np.int64, count=m)
    datatype_column = pa.array(datatypes, type=pa.string())
    kinds = set(datatypes)
    if len(kinds) == 1:
        dt = next(iter(kinds))
        field_of = np.full(m, _FIELD.get(dt, ""))
        size = np.full(m, NUMPY_DTYPES[dt].itemsize if dt in NUMPY_DTYPES else 0, dtype=np.int64)
    else:
        coded = datatype_column.dictionary_encode()
        codes = coded.indices.to_numpy(zero_copy_only=False)
        names_of = coded.dictionary.to_pylist()
        field_of = np.array([_FIELD.get(d, "") for d in names_of])[codes]
        size = np.array([NUMPY_DTYPES[d].itemsize if d in NUMPY_DTYPES else 0 for d in names_of], dtype=np.int64)[codes]
    payload: list[pa.Array] = []
    for field in _PAYLOADS:
        is_field = field_of == field
        if field == "bytes":
            payload.append(_bytes_payload(np.flatnonzero(is_field & (nbytes >= 0)), elements, contents, m))
            continue
        ok = is_field & (nbytes >= 0) & (elements >= 0) & (elements * size == nbytes)
        sel = np.flatnonzero(ok)
        per = np.where(ok, elements, 0)
        values = _fixed(field, sel, datatypes, contents) if len(sel) else pa.array([], type=_FIELD_TYPES[field].value_type)
        payload.append(_list(per, values, ~ok, _FIELD_TYPES[field]))
    struct = pa.StructArray.from_arrays(
        [pa.array(names, type=pa.string()), datatype_column, shape_column, *payload],
        fields=_TENSOR_FIELDS,
    )
    return _list(counts, struct, null, _OUTPUTS)


def _bytes_payload(sel: np.ndarray, elements: np.ndarray, contents: Sequence, n: int) -> pa.Array:
    per = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    items: list[bytes] = []
    for i in sel.tolist():
        try:
            els = packing.decode_bytes_tensor(contents[i])
        except ValueError:
            continue
        if len(els) != elements[i]:
            continue
        ok[i] = True
        per[i] = len(els)
        items.extend(els)
    return _list(per, pa.array(items, type=pa.binary()), ~ok, _FIELD_TYPES["bytes"])


def _slice_buckets(values: Sequence[list | None]) -> pa.Array:
    """list<list<int16>>: per row (null when None), per slice (null when None): the buckets."""
    n = len(values)
    if all(v is None for v in values):
        return pa.nulls(n, type=_SLICES)
    outer = np.zeros(n, dtype=np.int64)
    outer_null = np.zeros(n, dtype=bool)
    inner: list[int] = []
    inner_null: list[bool] = []
    arrays: list[np.ndarray] = []
    for i, v in enumerate(values):
        if v is None:
            outer_null[i] = True
            continue
        outer[i] = len(v)
        for a in v:
            if a is None:
                inner.append(0)
                inner_null.append(True)
            else:
                a = np.asarray(a).reshape(-1)
                inner.append(len(a))
                inner_null.append(False)
                arrays.append(a)
    flat = np.concatenate(arrays).astype(np.int16) if arrays else np.empty(0, dtype=np.int16)
    inner_list = _list(np.array(inner, dtype=np.int64), pa.array(flat), np.array(inner_null, dtype=bool), _SLICES.value_type)
    return _list(outer, inner_list, outer_null, _SLICES)


def _number_lists(values: Sequence[object], dtype: np.dtype, typ: pa.DataType) -> pa.Array:
    n = len(values)
    counts = np.zeros(n, dtype=np.int64)
    null = np.zeros(n, dtype=bool)
    arrays = []
    for i, v in enumerate(values):
        if v is None:
            null[i] = True
            continue
        a = np.asarray(v, dtype=dtype).reshape(-1)
        counts[i] = len(a)
        arrays.append(a)
    flat = np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)
    return _list(counts, pa.array(flat, type=typ.value_type), null, typ)


def pairs_table(rows: Sequence[PairRow], writer: str, info: RouteInfo, log_sample_rate: float) -> pa.Table:
    """The rows as one table of schema ``PAIRS`` (partition columns excluded: they are the path)."""
    n = len(rows)
    (route, target_index, request_id, request_seq, arrival, live_answered, shadow_answered, mirror, sampled,
     live_status, shadow_status, pair, live_latency, shadow_latency, front_added, trace_id, slice_buckets,
     live, shadow, request) = zip(*rows) if n else ((),) * len(PairRow._fields)  # fmt: skip
    looked_up = info.take(route, target_index)
    mirror_column = pa.array(mirror, type=pa.string())
    f64 = pa.float64()
    columns = {
        "request_id": pa.array(request_id, type=pa.string()),
        "writer": pa.repeat(pa.scalar(writer, pa.string()), n),
        "request_seq": pa.array(request_seq, type=pa.int64()),
        "arrival": _timestamps(arrival),
        "live_answered": _timestamps(live_answered),
        "shadow_answered": _timestamps(shadow_answered),
        "target_index": pa.array(target_index, type=pa.int16()),
        "target": looked_up["target"],
        "live_model": looked_up["live_model"],
        "live_version": looked_up["live_version"],
        "shadow_model": looked_up["shadow_model"],
        "shadow_version": looked_up["shadow_version"],
        "mirror": mirror_column,
        "sampled": pa.array(sampled, type=pa.bool_()),
        "shed": pc.equal(mirror_column, SHED),
        "down": pc.equal(mirror_column, DOWN),
        "sample_rate": looked_up["sample_rate"],
        "log_sample_rate": pa.repeat(pa.scalar(float(log_sample_rate), f64), n),
        "live_status": pa.array(live_status, type=pa.string()),
        "shadow_status": pa.array(shadow_status, type=pa.string()),
        "pair": pa.array(pair, type=pa.string()),
        "live_latency_s": pa.array(live_latency, type=f64),
        "shadow_latency_s": pa.array(shadow_latency, type=f64),
        "front_added_s": pa.array(front_added, type=f64),
        "trace_id": pa.array(trace_id, type=pa.string()),
        "slice_buckets": _slice_buckets(slice_buckets),
        "live_outputs": tensors(live),
        "shadow_outputs": tensors(shadow),
        "request": pa.array(request, type=pa.binary()),
    }
    return pa.Table.from_arrays([columns[f.name] for f in PAIRS], schema=PAIRS)


def outcomes_table(rows: Sequence[OutcomeRow], writer: str) -> pa.Table:
    n = len(rows)
    request_id, received, labels, values, status, reason = zip(*rows) if n else ((),) * 6
    columns = [
        pa.array(request_id, type=pa.string()),
        pa.repeat(pa.scalar(writer, pa.string()), n),
        _timestamps(received),
        _number_lists(labels, np.dtype(np.int64), OUTCOMES.field("true_labels").type),
        _number_lists(values, np.dtype(np.float64), OUTCOMES.field("true_values").type),
        pa.array(status, type=pa.string()),
        pa.array(reason, type=pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=OUTCOMES)


def arrivals(rows: Sequence[tuple], position: int) -> np.ndarray:
    """The float timestamps at ``position`` of each row (for partitioning by hour)."""
    return np.fromiter(map(itemgetter(position), rows), dtype=np.float64, count=len(rows))
