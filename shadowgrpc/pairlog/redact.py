"""``[log.redact]``: tensors the paired log must not hold as they were (_config_log.Redaction).

Applied by the writer thread to each pairs table before it is written, so nothing configured ever
reaches a file:

- ``live_outputs`` / ``shadow_outputs``: a tensor named in ``drop`` is removed from the list; in
  ``hash``: its values become one HMAC-SHA256 digest (32 bytes, in the ``bytes`` field) per element,
  keyed by the configured secret, over the element's little-endian bytes (FP16/FP32 as float32,
  FP64 as float64, integers as int64, BYTES as given), ``datatype`` set to ``"HMAC-SHA256"``
  (equal values stay equal and can be joined; nobody without the key can test a guess); in
  ``redact``: its values become the single marker ``b"[REDACTED]"``, ``datatype`` ``"REDACTED"``.
  Name and shape stay.
- ``request`` (``keep_inputs``): an input named in any list is removed from the
  ModelInferRequest (with its raw contents), whatever the action.

Only rows that hold such a tensor are rebuilt (as Python objects: a cost paid only with a
redaction configured).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pyarrow as pa

from .._config_log import Redaction
from .schema import TENSOR

MARKER = b"[REDACTED]"
HASHED = "HMAC-SHA256"
REDACTED = "REDACTED"
_PACK = {"fp32": struct.Struct("<f").pack, "fp64": struct.Struct("<d").pack, "ints": struct.Struct("<q").pack, "bytes": bytes}
_TENSORS = pa.list_(TENSOR)


def redact_table(table: pa.Table, r: Redaction) -> pa.Table:
    names = r.names
    if not names:
        return table
    for col in ("live_outputs", "shadow_outputs"):
        i = table.schema.get_field_index(col)
        rows = table.column(i).to_pylist()
        if not any(t["name"] in names for row in rows if row for t in row):
            continue
        new = [None if row is None else [x for t in row if (x := _tensor(t, r)) is not None] for row in rows]
        table = table.set_column(i, col, pa.array(new, type=_TENSORS))
    if "request" in table.schema.names:
        i = table.schema.get_field_index("request")
        reqs = table.column(i).to_pylist()
        if any(b is not None for b in reqs):
            table = table.set_column(i, "request", pa.array([None if b is None else strip_inputs(b, names) for b in reqs], type=pa.binary()))
    return table


def _tensor(t: dict, r: Redaction) -> dict | None:
    name = t["name"]
    if name in r.drop:
        return None
    if name in r.redact:
        return {"name": name, "datatype": REDACTED, "shape": t["shape"], "fp32": None, "fp64": None, "ints": None, "bytes": [MARKER]}
    if name in r.hash:
        digests = []
        for field in ("fp32", "fp64", "ints", "bytes"):
            pack = _PACK[field]
            digests += [hmac.new(r.key, pack(v), hashlib.sha256).digest() for v in t[field] or ()]
        return {"name": name, "datatype": HASHED, "shape": t["shape"], "fp32": None, "fp64": None, "ints": None, "bytes": digests}
    return t


def strip_inputs(raw: bytes, names: frozenset[str]) -> bytes:
    """The ModelInferRequest ``raw`` without the inputs in ``names`` (and their raw contents)."""
    if not any(n.encode() in raw for n in names):
        return raw  # the name's bytes are nowhere in it: no such input
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest.FromString(raw)
    gone = [k for k, t in enumerate(req.inputs) if t.name in names]
    if not gone:
        return raw
    raw_contents = len(req.raw_input_contents) == len(req.inputs)
    for k in reversed(gone):
        del req.inputs[k]
        if raw_contents:
            del req.raw_input_contents[k]
    return req.SerializeToString()
