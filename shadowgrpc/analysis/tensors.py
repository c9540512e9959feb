"""Output tensors of the paired log (list<TENSOR> columns, pairlog/schema.py) back to numpy, many
rows at a time: rows are grouped by their outputs' signature (names, datatypes, shapes), and each
group's outputs come back as one array per output, the rows' tensors concatenated along the first
axis, exactly as the front would have seen them one request at a time (a 0-d tensor counts as one
row). No per-value Python: offsets and flattened buffers only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..codec import NUMPY_DTYPES

_PAYLOAD = {"FP16": "fp32", "FP32": "fp32", "FP64": "fp64", "BYTES": "bytes"}


def payload_field(datatype: str) -> str:
    return _PAYLOAD.get(datatype, "ints")


@dataclass(frozen=True, slots=True)
class Output:
    name: str
    datatype: str
    shape: tuple[int, ...]


def _flat(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col


def _uniform(col: pa.Array) -> tuple[Output, ...] | None:
    """The one signature of every row, when all rows share it (the common case: checked on
    dictionary codes, no string per row), else None."""
    if col.null_count or col.offset or not len(col):
        return None
    off = as_numpy(col.offsets)
    k = int(off[1] - off[0])
    n = len(col)
    if k == 0 or not (np.diff(off) == k).all():
        return None
    structs = col.values
    if structs.null_count or len(structs) != n * k:
        return None
    for name in ("name", "datatype"):
        codes = as_numpy(pc.dictionary_encode(structs.field(name)).indices)
        if not (codes.reshape(n, k) == codes[:k]).all():
            return None
    shapes = structs.field("shape")
    if shapes.null_count or shapes.offset:
        return None
    soff = as_numpy(shapes.offsets)
    lens = np.diff(soff)
    if not (lens.reshape(n, k) == lens[:k]).all():
        return None
    vals = as_numpy(shapes.values)[soff[0] : soff[-1]]
    per_row = int(lens[:k].sum())
    if per_row and not (vals.reshape(n, per_row) == vals[:per_row]).all():
        return None
    first = structs.slice(0, k).to_pylist()
    return tuple(Output(o["name"] or "", o["datatype"] or "", tuple(o["shape"] or ())) for o in first)


def as_numpy(a) -> np.ndarray:
    """An Arrow array (or chunked array) as numpy, copying only where Arrow must (nulls, chunks)."""
    return a.to_numpy(zero_copy_only=False)


def signatures(col: pa.Array) -> tuple[np.ndarray, list[tuple[Output, ...]]]:
    """Per row: the index of its signature (-1: null), and the signatures (each a tuple of
    Output), in first-seen order."""
    col = _flat(col)
    n = len(col)
    if n == 0:
        return np.zeros(0, dtype=np.int64), []
    one_sig = _uniform(col)
    if one_sig is not None:
        return np.zeros(n, dtype=np.int64), [one_sig]
    structs = col.flatten()  # one entry per output of every row
    names = structs.field("name")
    dts = structs.field("datatype")
    shapes = structs.field("shape")
    shape_str = pc.binary_join(pa.ListArray.from_arrays(shapes.offsets, pc.cast(shapes.flatten(), pa.string())), "x")
    per_out = pc.binary_join_element_wise(pc.fill_null(names, ""), pc.fill_null(dts, ""), pc.fill_null(shape_str, "?"), "\x1f")
    offsets = as_numpy(col.offsets)
    if col.offset or len(offsets) != n + 1:
        offsets = offsets[: n + 1]
    per_row = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), per_out), "\x1e")
    valid = as_numpy(col.is_valid())
    enc = pc.dictionary_encode(per_row)
    idx = as_numpy(enc.indices).astype(np.int64)
    sigs = []
    for s in enc.dictionary.to_pylist():
        outs = []
        for o in s.split("\x1e") if s else []:
            name, dt, shp = o.split("\x1f")
            outs.append(Output(name, dt, tuple(int(x) for x in shp.split("x")) if shp else ()))
        sigs.append(tuple(outs))
    idx[~valid] = -1
    return idx, sigs


def arrays(col: pa.Array, rows: np.ndarray, sig: tuple[Output, ...]) -> list[np.ndarray | None]:
    """For the rows ``rows`` (all of signature ``sig``): per output, the rows' tensors
    concatenated along the first axis (None: BYTES, or a tensor logged without contents)."""
    col = _flat(col)
    starts = as_numpy(col.offsets)[rows]
    structs = col.values
    every = len(rows) == len(col) and not col.offset and (len(rows) == 0 or (rows[0] == 0 and rows[-1] == len(rows) - 1))
    out: list[np.ndarray | None] = []
    for j, o in enumerate(sig):
        dt = NUMPY_DTYPES.get(o.datatype)
        if dt is None:
            out.append(None)
            continue
        field = structs.field(payload_field(o.datatype))
        flat = _strided(field, sig, j) if every and len(structs) == len(rows) * len(sig) else None
        if flat is None:
            sel = field.take(pa.array(starts + j))
            if sel.null_count:
                out.append(None)
                continue
            flat = as_numpy(sel.flatten())
        count = 1
        for d in o.shape:
            count *= d
        if len(flat) != count * len(rows):
            out.append(None)
            continue
        if o.datatype == "UINT64":
            flat = flat.view(np.uint64)
        a = flat.astype(dt, copy=False)
        shape = o.shape if o.shape else (1,)  # 0-d tensors: one row each
        out.append(a.reshape((len(rows) * shape[0],) + tuple(shape[1:])) if shape[0] else a.reshape((0,) + tuple(shape[1:])))
    return out


def one(arr: np.ndarray, i: int, shape: tuple[int, ...]) -> np.ndarray:
    """Request ``i``'s own tensor (its original shape) out of a group array from ``arrays``."""
    r = shape[0] if shape else 1
    return arr[i * r : (i + 1) * r].reshape(shape)


def _strided(field: pa.Array, sig: tuple[Output, ...], j: int) -> np.ndarray | None:
    """Output ``j`` of every row when all rows have signature ``sig`` (rows in order, outputs in
    order): a view on the payload's flat values, no take. None when the payload has nulls."""
    if field.null_count or field.offset:
        return None
    kind = payload_field(sig[j].datatype)
    sizes = [int(np.prod(o.shape)) if o.shape else 1 for o in sig]
    mine = [i for i, o in enumerate(sig) if payload_field(o.datatype) == kind]
    per_row = sum(sizes[i] for i in mine)
    off = as_numpy(field.offsets)
    values = as_numpy(field.values)[off[0] : off[-1]]
    n = len(field) // len(sig)
    if per_row == 0 or len(values) != n * per_row:
        return None
    start = sum(sizes[i] for i in mine if i < j)
    m = values.reshape(n, per_row)[:, start : start + sizes[j]]
    return m.reshape(-1)
