"""Slices: which bucket of a configured input column each row of a request falls in, so that
paired and ground-truth statistics are kept per region or amount band as well as overall (a model
better on average can be worse for one slice).

A slice reads one input tensor of the ModelInfer request (rows = its first axis):
- numeric: ``column`` of the last axis (0 for a 1-D tensor) binned by ``edges`` [e0 < e1 < ...]
  into ``< e0``, ``[e0, e1)``, ..., ``>= ek`` (labels may be given instead);
- BYTES: the element (``column`` of each row) compared with ``values``: one bucket per value,
  plus ``other``.
Every slice has a last bucket ``missing``: the input is absent, in shared memory or typed contents,
not decodable, NaN, or its rows do not match the output's rows. Assignment runs in the shadow
task, once per request, never on the live path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import service_pb2 as kserve

from .packing import decode_bytes_tensor

MISSING = "missing"
OTHER = "other"
MAX_BUCKETS = 64  # per route, all slices together (config refuses more)

_DTYPES = {
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "BOOL": "?",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Slice:
    name: str
    input: str
    column: int = 0
    edges: tuple[float, ...] = ()  # numeric slices
    values: tuple[str, ...] = ()  # BYTES slices
    labels: tuple[str, ...] = ()  # bucket names, "missing" excluded

    @property
    def buckets(self) -> tuple[str, ...]:
        """Bucket names in index order; the last one is ``missing``."""
        return (*self.labels, MISSING)

    @staticmethod
    def edge_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
        names = [f"< {edges[0]:g}"]
        names += [f"[{a:g}, {b:g})" for a, b in zip(edges, edges[1:])]
        names.append(f">= {edges[-1]:g}")
        return tuple(names)


def _column(t: kserve.ModelInferRequest.InferInputTensor, raw: bytes | None, column: int):
    """(rows, values of ``column`` per row) of one input, or None when it cannot be read."""
    if raw is None or not t.shape:
        return None
    shape = tuple(t.shape)
    rows = shape[0]
    per_row = 1
    for d in shape[1:]:
        per_row *= d
    if rows < 0 or per_row < 1 or column >= per_row:
        return None
    if t.datatype == "BYTES":
        try:
            items = decode_bytes_tensor(raw)
        except ValueError:
            return None
        if len(items) != rows * per_row:
            return None
        return rows, items[column::per_row]
    dt = _DTYPES.get(t.datatype)
    if dt is None or len(raw) != rows * per_row * np.dtype(dt).itemsize:
        return None
    return rows, np.frombuffer(raw, dtype=dt).reshape(rows, per_row)[:, column].astype(np.float64)


def assign(slices: tuple[Slice, ...], raw_request: bytes) -> list[np.ndarray | None]:
    """For each slice: the bucket index of every request row (int16), or None when the input
    cannot be read (all rows then count as ``missing``)."""
    try:
        req = kserve.ModelInferRequest.FromString(raw_request)
    except Exception:  # not a ModelInferRequest: Triton already told the caller
        return [None] * len(slices)
    index = {t.name: i for i, t in enumerate(req.inputs)}
    out: list[np.ndarray | None] = []
    for s in slices:
        i = index.get(s.input)
        raw = req.raw_input_contents[i] if i is not None and i < len(req.raw_input_contents) else None
        got = _column(req.inputs[i], raw, s.column) if raw is not None else None
        if got is None:
            out.append(None)
            continue
        rows, col = got
        missing = len(s.labels)
        if s.values:
            lookup = {v.encode(): k for k, v in enumerate(s.values)}
            other = len(s.values)  # "other" is the label after the values
            b = np.array([lookup.get(bytes(x), other) for x in col], dtype=np.int16).reshape(rows)
        else:
            b = np.searchsorted(np.asarray(s.edges), col, side="right").astype(np.int16)
            b[np.isnan(col)] = missing
        out.append(b)
    return out


def rows_for(buckets: np.ndarray | None, rows: int, missing: int) -> np.ndarray:
    """Bucket per output row: the slice's assignment when the row counts match, else all
    ``missing``."""
    if buckets is None or len(buckets) != rows:
        return np.full(rows, missing, dtype=np.int16)
    return buckets


def groups(buckets: np.ndarray) -> list[tuple[int, np.ndarray | None]]:
    """(bucket, row mask) for each bucket present; the mask is None when every row is in it."""
    if len(buckets) == 0:
        return []
    first = int(buckets[0])
    if (buckets == first).all():
        return [(first, None)]
    return [(int(b), buckets == b) for b in np.unique(buckets)]
