"""Feature completeness: what the inputs of shadowed requests look like.

Per input tensor: values seen, NaN and inf counts (float types), empty strings (BYTES), and
requests whose datatype or shape differ from the live model's metadata (fetched once per route
from Triton's ModelMetadata, within ``METADATA_TIMEOUT_S``; a failure of any kind is recorded and
retried on a later request, never left pending), or that lack an input the model declares.
Statistics are kept per *declared* input only: names the model does not declare are counted
together under ``UNDECLARED`` (callers choose names; they must not grow memory). While the
metadata is unknown, at most ``MAX_UNKNOWN_NAMES`` names get their own entry.
Checked in the pairing stage on the request decoded once (``pairing.MirroredRequest.prepare``),
never on the live path.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np

from tritonclient.grpc import service_pb2 as kserve

from .backends import Upstream
from .codec import FLOAT_TYPES, NUMPY_DTYPES
from .packing import decode_bytes_tensor

log = logging.getLogger("shadowgrpc.completeness")

METADATA_TIMEOUT_S = 5.0
UNDECLARED = "(undeclared)"
MAX_UNKNOWN_NAMES = 64


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


@dataclass(slots=True)
class InputsState:
    """Feature completeness of one route's shadowed requests (completeness.Completeness writes it)."""

    inputs: dict[str, InputStats] = field(default_factory=dict)
    not_checked: int = 0
    metadata_error: str = ""


class Completeness:
    """Per route: counts into ``state`` (the route's InputsState in the comparison state), with the
    live model's declared inputs (lazily fetched)."""

    @property
    def inputs(self) -> dict[str, InputStats]:
        return self.state.inputs

    @property
    def not_checked(self) -> int:
        return self.state.not_checked

    @property
    def metadata_error(self) -> str:
        return self.state.metadata_error

    def __init__(self, upstream: Upstream, model: str, version: str, state: InputsState | None = None) -> None:
        self.state = state if state is not None else InputsState()
        self._upstream, self._model, self._version = upstream, model, version
        self._declared: asyncio.Future[dict[str, tuple[str, tuple[int, ...]]] | None] | None = None

    async def declared(self) -> dict[str, tuple[str, tuple[int, ...]]] | None:
        """The model's declared inputs, or None when unknown. One fetch at a time; every waiter
        gets an answer within METADATA_TIMEOUT_S whatever goes wrong (the future is always
        resolved), and a failed fetch is tried again by a later request."""
        fut = self._declared
        if fut is None:
            fut = self._declared = asyncio.get_running_loop().create_future()
            result = None
            try:
                raw = await asyncio.wait_for(
                    self._upstream.unary["ModelMetadata"](
                        kserve.ModelMetadataRequest(name=self._model, version=self._version).SerializeToString(), timeout=METADATA_TIMEOUT_S
                    ),
                    METADATA_TIMEOUT_S + 1.0,
                )
                meta = kserve.ModelMetadataResponse.FromString(raw)
                result = {t.name: (t.datatype, tuple(t.shape)) for t in meta.inputs}
                self.state.metadata_error = ""
            except asyncio.CancelledError:
                self._declared = None
                fut.set_result(None)
                raise
            except Exception as e:  # AioRpcError, timeout, a bad answer, an injected failure: all the same
                code = getattr(e, "code", None)
                why = f"{code().name}: {e.details()}" if callable(code) and hasattr(e, "details") else f"{type(e).__name__}: {e}"
                error = f"ModelMetadata({self._model}): {why}"
                if error != self.metadata_error:  # once per distinct reason, not once per request
                    log.warning("%s", error)
                self.state.metadata_error = error
                self._declared = None  # try again on a later request
            finally:
                if not fut.done():
                    fut.set_result(result)
            return result
        if fut.done():  # the common case: fetched once, read by every request after
            return fut.result()
        return await asyncio.wait_for(asyncio.shield(fut), METADATA_TIMEOUT_S + 2.0)

    def _stats(self, name: str, declared: dict | None) -> InputStats:
        if declared and name not in declared:
            name = UNDECLARED
        st = self.state.inputs.get(name)
        if st is None:
            if not declared and len(self.state.inputs) >= MAX_UNKNOWN_NAMES:
                name = UNDECLARED
                st = self.state.inputs.get(name)
            if st is None:
                st = self.state.inputs[name] = InputStats()
        return st

    async def check(self, req) -> None:
        """Count one decoded ModelInferRequest (None: too large or not parseable)."""
        if req is None:
            self.state.not_checked += 1
            return
        try:
            declared = await self.declared()
        except asyncio.TimeoutError:
            declared = None
        declared = declared or {}
        seen = set()
        for i, t in enumerate(req.inputs):
            seen.add(t.name)
            st = self._stats(t.name, declared)
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
            elif t.datatype in FLOAT_TYPES:
                dt = NUMPY_DTYPES[t.datatype]
                if len(contents) % dt.itemsize:
                    continue
                a = np.frombuffer(contents, dtype=dt)
                st.values += a.size
                st.nan += int(np.isnan(a).sum())
                st.inf += int(np.isinf(a).sum())
            elif t.datatype in NUMPY_DTYPES:
                st.values += len(contents) // NUMPY_DTYPES[t.datatype].itemsize
        for name in declared:
            if name not in seen:
                self._stats(name, declared).missing += 1


def _shape_ok(got: tuple[int, ...], want: tuple[int, ...]) -> bool:
    return len(got) == len(want) and all(w == -1 or g == w for g, w in zip(got, want))
