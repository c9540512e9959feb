"""Rows to Arrow, on the writer thread: a list of ``PairRow`` becomes a ``pa.Table`` of ``PAIRS``
(the answers decoded by ``decode.tensors``), a list of ``OutcomeRow`` one of ``OUTCOMES``; per-row
Python only where a row holds Python objects (the transposition, slice buckets, outcome arrays)."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import Route
from .decode import list_array, tensors
from .schema import DOWN, OUTCOMES, PAIRS, SHED, TS, OutcomeRow, PairRow

_SLICES = PAIRS.field("slice_buckets").type


class RouteInfo:
    """Per (route, target_index): the columns a PairRow does not carry (looked up once per batch)."""

    def __init__(self, routes: Sequence[Route], targets: dict[str, Sequence] | None = None) -> None:
        """``targets``: route -> its targets by index (every comparison window, auto-shadow's
        included), when they differ from the route's configured shadows."""
        keys: dict[tuple[str, int], int] = {}
        cols: dict[str, list] = {"target": [], "live_model": [], "live_version": [], "shadow_model": [], "shadow_version": [], "sample_rate": []}
        for r in routes:
            for i, s in enumerate((targets or {}).get(r.model, r.shadows)):
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


def _timestamps(values: Sequence[float | None]) -> pa.Array:
    a = np.array(values, dtype=np.float64)  # None -> nan
    null = np.isnan(a)
    us = np.rint(np.where(null, 0.0, a) * 1e6).astype(np.int64)
    return pa.array(us, type=TS, mask=null if null.any() else None)


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
    inner_list = list_array(np.array(inner, dtype=np.int64), pa.array(flat), np.array(inner_null, dtype=bool), _SLICES.value_type)
    return list_array(outer, inner_list, outer_null, _SLICES)


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
    return list_array(counts, pa.array(flat, type=typ.value_type), null, typ)


def pairs_table(rows: Sequence[PairRow], writer: str, info: RouteInfo, log_sample_rate: float) -> pa.Table:
    """The rows as one table of schema ``PAIRS`` (partition columns excluded: they are the path)."""
    n = len(rows)
    (route, target_index, request_id, request_seq, arrival, live_answered, shadow_answered, mirror, sampled,
     live_status, shadow_status, pair, live_latency, shadow_latency, front_added, trace_id, slice_buckets,
     live, shadow, request, first_row) = zip(*rows) if n else ((),) * len(PairRow._fields)  # fmt: skip
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
        "first_row": pa.array([i == 0 if f is None else f for i, f in zip(target_index, first_row)], type=pa.bool_()),
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

