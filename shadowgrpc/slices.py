"""Slices: which bucket of a configured input column each row of a request falls in, so that
paired and ground-truth statistics are kept per region or amount band as well as overall (a model
better on average can be worse for one slice).

A slice reads one input tensor of the ModelInfer request (rows = its first axis):
- numeric: ``column`` of the last axis (0 for a 1-D tensor) binned by ``edges`` [e0 < e1 < ...]
  into ``< e0``, ``[e0, e1)``, ..., ``>= ek`` (labels may be given instead);
- BYTES: the element (``column`` of each row) compared with ``values``: one bucket per value,
  plus ``other``.
Every slice has a last bucket ``missing``: the input is absent, in shared memory or typed contents,
not decodable, NaN, or its rows do not match the output's rows. Assignment runs in the pairing
stage on the request decoded once (``pairing.MirroredRequest.prepare``: large requests are
decoded off the event loop, larger than its cap not at all), never on the live path.
"""

from __future__ import annotations

import numpy as np

from .codec import as_array
from .config import Slice
from .packing import decode_bytes_tensor


def _column(t, raw: bytes | None, column: int):
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
    a = as_array(t.datatype, (rows, per_row), raw)
    if a is None:
        return None
    return rows, a[:, column].astype(np.float64)


def assign(slices: tuple[Slice, ...], req) -> list[np.ndarray | None]:
    """For each slice: the bucket index of every row of the decoded ModelInferRequest ``req``
    (int16), or None when the input cannot be read (all rows then count as ``missing``); ``req``
    None (too large to decode, not parseable): all None."""
    if req is None:
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
