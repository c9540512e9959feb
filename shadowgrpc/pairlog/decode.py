"""Answers to Arrow, on the writer thread: ``tensors(raws)`` turns ModelInferResponse bytes (one
per row, or None) into a ``list<TENSOR>`` array (schema.py).

Vectorized where it counts. Answers of one length that match a template byte for byte outside the
request id and the raw contents (one model's answers: the usual case) are decoded together: their
bytes become one numpy matrix whose contents columns are the values (``_fast``). The others are
scanned one by one (``packing.scan_response``, no copies), then every tensor's payload of one
datatype is joined into one buffer and read with numpy (``_scanned``). Either way Arrow gets values
+ offsets (``ListArray.from_arrays``): no per-value Python. A malformed answer (the scan raises
ValueError) is a null list and never fails the batch; a tensor whose contents do not match its
shape and datatype, or that came as typed (not raw) contents, keeps its name, datatype and shape
with a null payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, compress, repeat
from operator import is_not

import numpy as np
import pyarrow as pa

from .. import packing
from ..codec import NUMPY_DTYPES
from .schema import PAIRS, TENSOR

MAX_LIST_VALUES = (1 << 31) - 1  # Arrow list offsets are int32
FAST_MIN_ROWS = 16  # answers of one length that make a template worth trying
FAST_MAX_BYTES = 64 << 10  # larger answers: the per-row scan is cheap next to the payload

# datatype -> the TENSOR payload field it goes to
_FIELD = {"FP16": "fp32", "FP32": "fp32", "FP64": "fp64", "BYTES": "bytes"}
_FIELD.update({dt: "ints" for dt in ("BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")})
_TARGET = {"fp32": np.dtype("<f4"), "fp64": np.dtype("<f8"), "ints": np.dtype("<i8")}
_PAYLOADS = ("fp32", "fp64", "ints", "bytes")
_TENSOR_FIELDS = list(TENSOR)
_FIELD_TYPES = {f.name: f.type for f in _TENSOR_FIELDS}
_OUTPUTS = PAIRS.field("live_outputs").type


def _offsets(counts: np.ndarray) -> pa.Array:
    out = np.empty(len(counts) + 1, dtype=np.int64)
    out[0] = 0
    np.cumsum(counts, out=out[1:])
    if out[-1] > MAX_LIST_VALUES:
        raise OverflowError("more list values than Arrow int32 offsets hold: write smaller batches")
    return pa.array(out.astype(np.int32))


def list_array(counts: np.ndarray, values: pa.Array, null: np.ndarray | None, typ: pa.DataType) -> pa.Array:
    """A list array from per-row counts (nulls count 0) and the concatenated values."""
    mask = pa.array(null) if null is not None and null.any() else None
    return pa.ListArray.from_arrays(_offsets(counts), values, type=typ, mask=mask)


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


def _scanned(raws: Sequence[bytes | memoryview | None]) -> pa.Array:
    """``tensors`` by scanning every answer."""
    found, counts = _scan_all(raws)
    null = counts < 0
    counts[null] = 0
    if not found:
        return list_array(counts, pa.array([], type=TENSOR), null, _OUTPUTS)
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
        payload.append(list_array(per, values, ~ok, _FIELD_TYPES[field]))
    struct = pa.StructArray.from_arrays(
        [pa.array(names, type=pa.string()), datatype_column, shape_column, *payload],
        fields=_TENSOR_FIELDS,
    )
    return list_array(counts, struct, null, _OUTPUTS)


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
    return list_array(per, pa.array(items, type=pa.binary()), ~ok, _FIELD_TYPES["bytes"])


# --- the fast path: answers that share a template ---------------------------------------------------


def _varint(b: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(b) or shift > 63:
            raise ValueError("bad varint")
        c = b[pos]
        value |= (c & 0x7F) << shift
        pos += 1
        shift += 7
        if c < 0x80:
            return value, pos


class _Template:
    """One valid answer's layout: the byte positions any answer of the same length must share with
    it (all but the id's and the raw contents' payloads) and where each output's contents lie. An
    answer equal to it there parses the same way (every tag, length and output header is the same
    bytes), so its contents are at the same offsets: no scan needed."""

    def __init__(self, raw: bytes) -> None:
        outputs = packing.scan_response(raw)  # ValueError: no template
        b = bytes(raw)
        free = np.zeros(len(b), dtype=bool)
        spans: list[tuple[int, int]] = []
        ids = 0
        pos = 0
        while pos < len(b):
            key, pos = _varint(b, pos)
            field, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(b, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                size, pos = _varint(b, pos)
                if field == 3:
                    ids += 1
                    free[pos : pos + size] = True
                elif field == 6:
                    spans.append((pos, pos + size))
                    free[pos : pos + size] = True
                pos += size
            else:
                raise ValueError("groups: no template")
        if pos != len(b) or ids > 1 or not outputs or len(spans) < len(outputs):
            raise ValueError("no template")
        self.tensors = []
        for (name, dt, shape, contents), (start, stop) in zip(outputs, spans):
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if dt not in NUMPY_DTYPES or contents is None or min(shape, default=0) < 0 or count * NUMPY_DTYPES[dt].itemsize != stop - start:
                raise ValueError("not a fixed-size numeric output: no template")
            self.tensors.append((name, dt, shape, count, start, stop))
        self.keep = np.flatnonzero(~free)
        self.bytes = np.frombuffer(b, dtype=np.uint8)[self.keep]
        self.length = len(b)


def _fast(group: list, t: _Template) -> tuple[np.ndarray, pa.Array | None]:
    """Which answers of ``group`` (all of ``t.length`` bytes) match the template, and their
    ``list<TENSOR>`` array built from one matrix of their bytes."""
    m = np.frombuffer(b"".join(group), dtype=np.uint8).reshape(len(group), t.length)
    ok = (m[:, t.keep] == t.bytes).all(axis=1)
    k = int(ok.sum())
    if not k:
        return ok, None
    if k < len(group):
        m = m[ok]
    n_out = len(t.tensors)
    tile = np.tile(np.arange(n_out), k)
    names, datatypes, shapes, counts, _, _ = zip(*t.tensors)
    shape_column, _ = _elements(shapes)
    field_of = np.array([_FIELD[d] for d in datatypes])
    payload = []
    for field in _PAYLOADS:
        mine = field_of == field
        typ = _FIELD_TYPES[field]
        if not mine.any():
            payload.append(pa.nulls(k * n_out, type=typ))
            continue
        parts = []
        for _, dt, _, _, start, stop in (x for x, yes in zip(t.tensors, mine) if yes):
            raw = np.ascontiguousarray(m[:, start:stop])
            parts.append(_convert(raw.view(NUMPY_DTYPES[dt] if dt != "BOOL" else np.uint8), dt, _TARGET[field]))
        values = (parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)).reshape(-1)
        per = np.where(mine, np.array(counts, dtype=np.int64), 0)[tile]
        payload.append(list_array(per, pa.array(values, type=typ.value_type), ~mine[tile], typ))
    struct = pa.StructArray.from_arrays(
        [pa.array(names, type=pa.string()).take(tile), pa.array(datatypes, type=pa.string()).take(tile), shape_column.take(tile), *payload],
        fields=_TENSOR_FIELDS,
    )
    return ok, list_array(np.full(k, n_out, dtype=np.int64), struct, None, _OUTPUTS)


def tensors(raws: Sequence[bytes | memoryview | None]) -> pa.Array:
    """A ``list<TENSOR>`` array: one list per answer, null where the answer is None or malformed."""
    n = len(raws)
    if n < FAST_MIN_ROWS:
        return _scanned(raws)
    lengths = np.fromiter((-1 if r is None else len(r) for r in raws), dtype=np.int64, count=n)
    values, counts = np.unique(lengths, return_counts=True)
    parts, order = [], []
    done = np.zeros(n, dtype=bool)
    for length in values[(counts >= FAST_MIN_ROWS) & (values > 0) & (values <= FAST_MAX_BYTES)].tolist():
        idx = np.flatnonzero(lengths == length)
        try:
            t = _Template(raws[idx[0]])
        except ValueError:
            continue
        ok, arr = _fast([raws[i] for i in idx.tolist()], t)
        if arr is not None:
            parts.append(arr)
            order.append(idx[ok])
            done[idx[ok]] = True
    if not parts:
        return _scanned(raws)
    rest = np.flatnonzero(~done)
    if len(rest):
        parts.append(_scanned([raws[i] for i in rest.tolist()]))
        order.append(rest)
    if len(parts) == 1:
        return parts[0]  # every answer matched one template: already in order
    where = np.empty(n, dtype=np.int64)
    where[np.concatenate(order)] = np.arange(n)
    return pa.concat_arrays(parts).take(pa.array(where))
