"""Typed KServe v2 clients: numpy arrays in, numpy arrays out, on a raw-bytes gRPC stub.

``TypedClient`` (sync, ``grpc``) and ``AsyncTypedClient`` (``grpc.aio``) call
``inference.GRPCInferenceService/ModelInfer`` of one model on a Triton server or a shadowgrpc front.
The request is written straight to the wire by ``packing.pack_request`` and the response read by
``packing.scan_response`` (both compiled when the extension is built): no protobuf message is built
on either side, and the stub sends and returns bytes as they are.

- Datatypes come from the arrays' numpy dtypes (codec.NUMPY_DTYPES inverted: float32 -> FP32,
  bool -> BOOL, ...); object, bytes (``S``) and str (``U``) arrays are BYTES, their elements bytes or
  str (sent as UTF-8). A big-endian array is converted to little-endian and a non-contiguous one
  made contiguous (one copy each, here, explicitly: pack_request itself refuses them).
- Outputs come back as read-only numpy views on the response bytes (like tritonclient's
  ``as_numpy``); BYTES outputs as object arrays of ``bytes``.
- A failed call raises the ``grpc.RpcError`` (``grpc.aio.AioRpcError``) as grpc raised it, with
  Triton's status and message; wrong argument types raise ``TypeError`` naming the input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
import numpy as np

from ..codec import NUMPY_DTYPES, SERVICE, as_array
from ..packing import decode_bytes_tensor, pack_request, scan_response

__all__ = ["AsyncTypedClient", "TypedClient"]

METHOD = f"/{SERVICE}/ModelInfer"
# Unlimited message sizes both ways unless the caller passes options (tritonclient does the same).
DEFAULT_OPTIONS = (("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))
DATATYPES = {dtype: name for name, dtype in NUMPY_DTYPES.items()}  # numpy dtype -> KServe v2 datatype
Parameters = Mapping[str, "bool | int | str | float"]


def _tensor(name: object, array: object) -> tuple[str, str, tuple[int, ...], Any]:
    """(name, datatype, shape, data) of one input, for pack_request."""
    if not isinstance(name, str):
        raise TypeError(f"input names must be str, not {type(name).__name__}")
    if not isinstance(array, np.ndarray):
        raise TypeError(f"input {name!r}: expected a numpy array, got {type(array).__name__}")
    if array.dtype.kind in "OSU":
        return name, "BYTES", array.shape, array
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    datatype = DATATYPES.get(array.dtype)
    if datatype is None:
        raise TypeError(f"input {name!r}: numpy dtype {array.dtype} has no KServe v2 datatype "
                        f"(one of {', '.join(str(d) for d in DATATYPES)}, or object/bytes/str for BYTES)")
    return name, datatype, array.shape, np.ascontiguousarray(array)


def encode(model: str, version: str, inputs: Mapping[str, np.ndarray], outputs: Iterable[str], request_id: str,
           parameters: Parameters | None) -> bytes:
    """The serialized ModelInferRequest of ``inputs`` (in the mapping's order)."""
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping of name -> numpy array, not {type(inputs).__name__}")
    if isinstance(outputs, str):
        raise TypeError("outputs must be a sequence of output names, not str")
    tensors = [_tensor(name, array) for name, array in inputs.items()]
    return pack_request(model, version, request_id, tensors, outputs, parameters)


def decode(raw: bytes) -> dict[str, np.ndarray]:
    """Output name -> numpy array of a serialized ModelInferResponse."""
    result: dict[str, np.ndarray] = {}
    for name, datatype, shape, contents in scan_response(raw):
        if contents is None:
            raise ValueError(f"output {name!r}: no raw contents in the response (shared memory or typed contents "
                             "are not read by this client)")
        if datatype == "BYTES":
            items = decode_bytes_tensor(contents)
            array = np.empty(len(items), dtype=object)
            array[:] = items
            if array.size != _count(shape):
                raise ValueError(f"output {name!r}: {array.size} BYTES elements for shape {list(shape)}")
            result[name] = array.reshape(shape)
            continue
        array = as_array(datatype, shape, contents)
        if array is None:
            raise ValueError(f"output {name!r}: cannot read {len(contents)} bytes as {datatype} of shape {list(shape)}")
        result[name] = array
    return result


def _count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class TypedClient:
    """``infer`` numpy arrays on ``model`` (``version``; "" for Triton's policy) at ``address``
    ("host:port"), over one insecure grpc channel; ``timeout`` in seconds per call (None: none)."""

    def __init__(self, address: str, model: str, version: str = "", *, timeout: float | None = None,
                 options: Sequence[tuple[str, Any]] | None = None) -> None:
        self.model = model
        self.version = version
        self.timeout = timeout
        self._channel = grpc.insecure_channel(address, options=list(DEFAULT_OPTIONS if options is None else options))
        self._infer = self._channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Iterable[str] = (), request_id: str = "",
              parameters: Parameters | None = None) -> dict[str, np.ndarray]:
        """Output name -> array (all outputs, or those named in ``outputs``); raises grpc.RpcError."""
        raw = encode(self.model, self.version, inputs, outputs, request_id, parameters)
        return decode(self._infer(raw, timeout=self.timeout))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TypedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTypedClient:
    """``TypedClient`` on grpc.aio: ``await infer(...)``, ``await close()``, ``async with``. Create
    it inside the event loop that uses it."""

    def __init__(self, address: str, model: str, version: str = "", *, timeout: float | None = None,
                 options: Sequence[tuple[str, Any]] | None = None) -> None:
        self.model = model
        self.version = version
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(address, options=list(DEFAULT_OPTIONS if options is None else options))
        self._infer = self._channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)

    async def infer(self, inputs: Mapping[str, np.ndarray], outputs: Iterable[str] = (), request_id: str = "",
                    parameters: Parameters | None = None) -> dict[str, np.ndarray]:
        """Output name -> array (all outputs, or those named in ``outputs``); raises grpc.aio.AioRpcError."""
        raw = encode(self.model, self.version, inputs, outputs, request_id, parameters)
        return decode(await self._infer(raw, timeout=self.timeout))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncTypedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
