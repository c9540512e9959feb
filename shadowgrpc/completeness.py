"""Feature completeness: what the inputs of shadowed requests look like.

Per input tensor: values seen, NaN and inf counts (float types), empty strings (BYTES), and
requests whose datatype or shape differ from the live model's metadata (fetched once per route
from Triton's ModelMetadata), or that lack an input the model declares. Checked in the shadow task,
after the shadow call is on its way, never on the live path. Requests larger than
``MAX_CHECK_BYTES`` are counted as not checked (the check would copy them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as kserve

from .backends import Upstream
from .compare import NUMPY_DTYPES
from .packing import decode_bytes_tensor

MAX_CHECK_BYTES = 1 << 20
_FLOAT = frozenset({"FP16", "FP32", "FP64"})


@dataclass(slots=True)
class InputStats:
    requests: int = 0
    values: int = 0
    nan: int = 0
    inf: int = 0
    empty_strings: int = 0
    dtype_mismatch: int = 0
    shape_mismatch: int = 0
    missing: int = 0  # declared by the model, absent from the request
    undeclared: int = 0  # in the request, not declared by the model


class Completeness:
    """Per route: input stats plus the live model's declared inputs (lazily fetched)."""

    def __init__(self, upstream: Upstream, model: str, version: str) -> None:
        self.inputs: dict[str, InputStats] = {}
        self.not_checked = 0
        self.metadata_error = ""
        self._upstream, self._model, self._version = upstream, model, version
        self._declared: asyncio.Future[dict[str, tuple[str, tuple[int, ...]]]] | None = None

    async def declared(self) -> dict[str, tuple[str, tuple[int, ...]]] | None:
        if self._declared is None:
            self._declared = asyncio.get_running_loop().create_future()
            try:
                raw = await self._upstream.unary["ModelMetadata"](
                    kserve.ModelMetadataRequest(name=self._model, version=self._version).SerializeToString(), timeout=5.0
                )
                meta = kserve.ModelMetadataResponse.FromString(raw)
                self._declared.set_result({t.name: (t.datatype, tuple(t.shape)) for t in meta.inputs})
            except grpc.aio.AioRpcError as e:
                self.metadata_error = f"ModelMetadata({self._model}): {e.code().name}: {e.details()}"
                self._declared.set_result({})
                self._declared = None  # try again on a later request
                return None
        return await asyncio.shield(self._declared)

    def _stats(self, name: str) -> InputStats:
        st = self.inputs.get(name)
        if st is None:
            st = self.inputs[name] = InputStats()
        return st

    async def check(self, raw: bytes) -> None:
        if len(raw) > MAX_CHECK_BYTES:
            self.not_checked += 1
            return
        try:
            req = kserve.ModelInferRequest.FromString(raw)
        except Exception:  # malformed: Triton answers the caller; nothing to count per input
            self.not_checked += 1
            return
        declared = await self.declared() or {}
        seen = set()
        for i, t in enumerate(req.inputs):
            seen.add(t.name)
            st = self._stats(t.name)
            st.requests += 1
            want = declared.get(t.name)
            if declared and want is None:
                st.undeclared += 1
            elif want is not None:
                if t.datatype != want[0]:
                    st.dtype_mismatch += 1
                if not _shape_ok(tuple(t.shape), want[1]):
                    st.shape_mismatch += 1
            contents = req.raw_input_contents[i] if i < len(req.raw_input_contents) else None
            if contents is None:
                continue  # typed contents or shared memory: not inspected
            if t.datatype == "BYTES":
                try:
                    items = decode_bytes_tensor(contents)
                except ValueError:
                    continue
                st.values += len(items)
                st.empty_strings += sum(1 for x in items if not x)
            elif t.datatype in _FLOAT:
                dt = NUMPY_DTYPES[t.datatype]
                if len(contents) % dt.itemsize:
                    continue
                a = np.frombuffer(contents, dtype=dt)
                st.values += a.size
                nan = np.isnan(a)
                st.nan += int(nan.sum())
                st.inf += int(np.isinf(a).sum())
            elif t.datatype in NUMPY_DTYPES:
                st.values += len(contents) // NUMPY_DTYPES[t.datatype].itemsize
        for name in declared:
            if name not in seen:
                self._stats(name).missing += 1


def _shape_ok(got: tuple[int, ...], want: tuple[int, ...]) -> bool:
    return len(got) == len(want) and all(w == -1 or g == w for g, w in zip(got, want))
