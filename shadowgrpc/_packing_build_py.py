"""Building a serialized KServe v2 ``ModelInferRequest`` from tensors, pure-Python reference.

``ext/shadowgrpc/_packing_build_c.pyx`` is the compiled twin: same bytes, same exceptions, same
messages (tests/unit/test_packing_pack_request.py). ``pack_request`` writes the wire format directly:
no protobuf message is built, and each tensor's bytes are copied once, into the result.

What it writes, in field-number order as protobuf does: model_name (1), model_version (2), id (3)
when not empty (proto3 leaves empty strings out); one parameters (4) entry per item of
``parameters``, in the mapping's order, key and value both written (as upb writes map entries); one
InferInputTensor (5) per input (name when not empty, datatype, packed shape when not empty), one
InferRequestedOutputTensor (6) per output name, and one raw_input_contents (7) entry per input.
Parsed with ``ModelInferRequest.FromString`` it equals the request tritonclient builds from the same
tensors; with at most one parameter (or the parameters in upb's deterministic map order) the bytes
are identical too (``SerializeToString``, deterministic or not).

The choices, for both twins:

- a non-BYTES input's data is any C-contiguous buffer (a numpy array): its bytes are sent as they
  are (native byte order, as tritonclient's ``tobytes()``); its size must be the product of the
  shape times the element size. A non-contiguous array is refused (``ValueError``), not copied
  silently: ``np.ascontiguousarray`` is the caller's explicit copy (``TypedClient`` makes it);
- a BYTES input's data is a numpy array (flattened in C order; ``tolist()`` elements) or any
  iterable of elements, one per shape element; an element is ``str`` (sent as UTF-8, like
  tritonclient) or a bytes-like object; each is sent as a uint32 little-endian length + bytes
  (``encode_bytes_tensor``'s format);
- a parameter value is ``bool`` (bool_param), ``int`` (int64_param), ``str`` (string_param) or
  ``float`` (double_param, as tritonclient accepts it);
- wrong types raise ``TypeError``, wrong values (unknown datatype, negative or too large dimension,
  data size or element count not matching the shape, non-contiguous data, an int parameter out of
  int64 range) ``ValueError``; each message names the input, output or parameter.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from operator import index

__all__ = ("ELEMENT_SIZES", "pack_request")

# Bytes per element of each KServe v2 datatype; 0: BYTES (variable length).
ELEMENT_SIZES = {
    "BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
    "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8, "BYTES": 0,
}
_INT64_MAX = (1 << 63) - 1
_U64 = (1 << 64) - 1
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")


def _varint(n: int) -> bytes:
    n &= _U64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: int, payload: bytes) -> bytes:
    """A length-delimited field with a one-byte tag."""
    return bytes((tag,)) + _varint(len(payload)) + payload


def _type_name(obj: object) -> str:
    dtype = getattr(obj, "dtype", None)
    return type(obj).__name__ if dtype is None else f"{type(obj).__name__} of dtype {dtype}"


def _parameter(key: object, value: object) -> bytes:
    """One parameters map entry: key (1), InferParameter value (2)."""
    if not isinstance(key, str):
        raise TypeError(f"parameter names must be str, not {type(key).__name__}")
    if isinstance(value, bool):
        param = b"\x08\x01" if value else b"\x08\x00"
    elif isinstance(value, int):
        if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
            raise ValueError(f"parameter {key!r}: {value} is out of int64 range")
        param = b"\x10" + _varint(value)
    elif isinstance(value, str):
        param = _ld(0x1A, value.encode("utf-8"))
    elif isinstance(value, float):
        param = b"\x21" + _F64.pack(value)
    else:
        raise TypeError(f"parameter {key!r}: value must be bool, int, str or float, not {type(value).__name__}")
    return _ld(0x0A, key.encode("utf-8")) + _ld(0x12, param)


def _dims(name: str, shape: object) -> list[int]:
    try:
        dims = [index(d) for d in shape]  # type: ignore[attr-defined]
    except TypeError:
        raise TypeError(f"input {name!r}: shape must be a sequence of ints, not {_type_name(shape)}") from None
    for d in dims:
        if d < 0:
            raise ValueError(f"input {name!r}: negative dimension {d} in shape {dims}")
        if d > _INT64_MAX:
            raise ValueError(f"input {name!r}: dimension {d} in shape {dims} is out of int64 range")
    return dims


def _bytes_elements(name: str, data: object, count: int, dims: list[int]) -> tuple[list[object], int]:
    """(parts, size) of a BYTES tensor: each element's length prefix and bytes."""
    items = data.ravel().tolist() if hasattr(data, "ravel") else list(data)  # type: ignore[attr-defined, call-overload]
    if len(items) != count:
        raise ValueError(f"input {name!r}: {len(items)} BYTES elements for shape {dims} ({count} expected)")
    parts: list[object] = []
    size = 0
    for k, item in enumerate(items):
        if isinstance(item, str):
            item = item.encode("utf-8")
        try:
            mv = memoryview(item)  # type: ignore[arg-type]
        except TypeError:
            mv = None
        if mv is None or "O" in mv.format:
            raise TypeError(f"input {name!r}: BYTES element {k} must be bytes or str, not {_type_name(item)}")
        if not mv.c_contiguous:
            raise ValueError(f"input {name!r}: BYTES element {k} is not C-contiguous")
        if mv.nbytes > 0xFFFFFFFF:
            raise ValueError(f"input {name!r}: BYTES element {k} is longer than 4 GiB - 1")
        parts.append(_U32.pack(mv.nbytes))
        parts.append(mv)
        size += 4 + mv.nbytes
    return parts, size


def _raw(name: str, datatype: str, data: object, count: int, dims: list[int]) -> tuple[list[object], int]:
    """(parts, size) of a fixed-size tensor: the buffer's bytes, as they are."""
    try:
        mv = memoryview(data)  # type: ignore[arg-type]
    except (TypeError, ValueError, BufferError):
        mv = None
    if mv is None or "O" in mv.format:  # an object array exports its pointers: never sent
        raise TypeError(f"input {name!r}: {datatype} data must be a buffer (a numeric numpy array), "
                        f"not {_type_name(data)}")
    if not mv.c_contiguous:
        raise ValueError(f"input {name!r}: data is not C-contiguous (np.ascontiguousarray(data) is a contiguous copy)")
    expected = count * ELEMENT_SIZES[datatype]
    if mv.nbytes != expected:
        raise ValueError(f"input {name!r}: {mv.nbytes} bytes of data for shape {dims} of {datatype} "
                         f"({expected} bytes expected)")
    return [mv.cast("B") if mv.nbytes else b""], mv.nbytes


def _input(i: int, item: object) -> tuple[bytes, list[object], int]:
    """(InferInputTensor bytes, contents parts, contents size) of input ``i``."""
    fields = tuple(item)  # type: ignore[call-overload]
    if len(fields) != 4:
        raise ValueError(f"input {i}: expected (name, datatype, shape, data), got {len(fields)} items")
    name, datatype, shape, data = fields
    if not isinstance(name, str):
        raise TypeError(f"input {i}: name must be str, not {type(name).__name__}")
    if not isinstance(datatype, str):
        raise TypeError(f"input {name!r}: datatype must be str, not {type(datatype).__name__}")
    if datatype not in ELEMENT_SIZES:
        raise ValueError(f"input {name!r}: unknown datatype {datatype!r}")
    dims = _dims(name, shape)
    count = 1
    for d in dims:
        count *= d
    if datatype == "BYTES":
        parts, size = _bytes_elements(name, data, count, dims)
    else:
        parts, size = _raw(name, datatype, data, count, dims)
    header = _ld(0x0A, name.encode("utf-8")) if name else b""
    header += _ld(0x12, datatype.encode("ascii"))
    if dims:
        header += _ld(0x1A, b"".join(_varint(d) for d in dims))
    return header, parts, size


def pack_request(
    model_name: str,
    model_version: str,
    request_id: str,
    inputs: Iterable[tuple[str, str, Sequence[int], object]],
    outputs: Iterable[str] = (),
    parameters: Mapping[str, bool | int | str | float] | None = None,
) -> bytes:
    """A serialized ModelInferRequest of ``inputs`` ((name, datatype, shape, data) each, data's
    bytes in raw_input_contents), requesting ``outputs`` (names), with request ``parameters``."""
    head: list[bytes] = []
    for label, s, tag in (("model_name", model_name, 0x0A), ("model_version", model_version, 0x12),
                          ("request_id", request_id, 0x1A)):
        if not isinstance(s, str):
            raise TypeError(f"{label} must be str, not {type(s).__name__}")
        if s:
            head.append(_ld(tag, s.encode("utf-8")))
    if parameters:
        head += [_ld(0x22, _parameter(key, value)) for key, value in parameters.items()]
    contents: list[object] = []
    for i, item in enumerate(inputs):
        header, parts, size = _input(i, item)
        head.append(_ld(0x2A, header))
        contents += (b"\x3a", _varint(size), *parts)
    for i, name in enumerate(outputs):
        if not isinstance(name, str):
            raise TypeError(f"output {i}: name must be str, not {type(name).__name__}")
        head.append(_ld(0x32, _ld(0x0A, name.encode("utf-8")) if name else b""))
    return b"".join([*head, *contents])  # type: ignore[list-item]
