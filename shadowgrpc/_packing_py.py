"""Wire-level packing, pure-Python reference: the test oracle and the source of types.

``ext/shadowgrpc/_packing_c.pyx`` is the compiled twin; both give identical results and raise
identical exceptions with identical messages (``tests/unit/test_packing_*.py`` checks it). Nothing here
parses a whole protobuf message: the KServe v2 ``ModelInferRequest`` / ``ModelInferResponse`` wire
format is walked field by field, and length-delimited fields that are not needed are skipped in O(1).

Wire-format rules, shared by both twins (they follow upb, the runtime behind ``FromString``):

- a varint has at most 10 bytes (bits past 64 are dropped); a tag at most 5 bytes and <= 2**32-1;
- field number 0, wire types 6 and 7, a stray end-group tag, an unterminated group or one closed
  by another field's end-group tag, groups nested deeper than 100, and a length or fixed-size value
  running past the end are rejected;
- unknown fields of every wire type, groups included, are skipped;
- strings that are returned are validated as strict UTF-8 (every occurrence, not only the last);
- singular fields: the last occurrence wins.

One deliberate difference from protobuf: a *known* field with the wrong wire type (checked for
every field of the top-level message, and for the nested fields that are read) is rejected with
``ValueError``, where protobuf would keep it as an unknown field. Every malformed input raises
``ValueError("<what> at offset <n>")``; the offset is the byte position in ``raw``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ._packing_build_py import pack_request  # its own module (the request builder), re-exported

__all__ = (
    "build_request",
    "decode_bytes_tensor",
    "encode_bytes_tensor",
    "pack_request",
    "sample_key",
    "scan_request",
    "scan_response",
)

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5
_MAX_GROUP_DEPTH = 100
_SHM_KEY = b"shared_memory_region"
# ModelInferRequest.parameters (field 4) entry {key: "shadow", value: InferParameter{bool_param: true}}
SHADOW_PARAMETER = b"\x22\x0c\x0a\x06shadow\x12\x02\x08\x01"
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_U64 = 0xFFFFFFFFFFFFFFFF
_U32 = struct.Struct("<I")


# (field, wire type) of every valid one-byte tag; None where the byte needs _tag (longer or invalid).
_TAG1: tuple[tuple[int, int] | None, ...] = tuple(
    (b >> 3, b & 7) if b < 0x80 and b >> 3 and (b & 7) <= 5 else None for b in range(256)
)


def _byte_view(obj: object) -> memoryview:
    """A flat unsigned-byte view of any C-contiguous buffer, without a copy."""
    mv = memoryview(obj)  # type: ignore[arg-type]
    if not mv.c_contiguous:
        raise BufferError("buffer is not C-contiguous")
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv


def _varint(buf: memoryview | bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``pos`` (at most 10 bytes)."""
    start = pos
    result = 0
    for shift in range(0, 70, 7):
        if pos >= end:
            raise ValueError(f"truncated varint at offset {start}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _U64, pos
    raise ValueError(f"varint longer than 10 bytes at offset {start}")


def _tag(buf: memoryview | bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(field number, wire type, next position) of the tag at ``pos`` (at most 5 bytes)."""
    start = pos
    b = buf[pos]
    pos += 1
    tag = b & 0x7F
    shift = 7
    while b >= 0x80:
        if shift == 35:
            raise ValueError(f"invalid tag at offset {start}")
        if pos >= end:
            raise ValueError(f"truncated varint at offset {start}")
        b = buf[pos]
        pos += 1
        tag |= (b & 0x7F) << shift
        shift += 7
    if tag > 0xFFFFFFFF:
        raise ValueError(f"invalid tag at offset {start}")
    field = tag >> 3
    wt = tag & 7
    if field == 0:
        raise ValueError(f"field number 0 at offset {start}")
    if wt > 5:
        raise ValueError(f"invalid wire type {wt} at offset {start}")
    return field, wt, pos


def _length(buf: memoryview | bytes, pos: int, end: int, tagpos: int) -> tuple[int, int]:
    """(start, stop) of the length-delimited payload whose length varint is at ``pos``."""
    if pos < end and buf[pos] < 0x80:
        n = buf[pos]
        pos += 1
    else:
        n, pos = _varint(buf, pos, end)
    if n > end - pos:
        raise ValueError(f"length {n} past end of buffer at offset {tagpos}")
    return pos, pos + n


def _skip(buf: memoryview | bytes, pos: int, end: int, field: int, wt: int, tagpos: int, depth: int) -> int:
    """Position after the value of a field whose tag (at ``tagpos``) was already read."""
    if wt == _VARINT:
        if pos < end and buf[pos] < 0x80:
            return pos + 1
        return _varint(buf, pos, end)[1]
    if wt == _LEN:
        return _length(buf, pos, end, tagpos)[1]
    if wt == _I64 or wt == _I32:
        size = 8 if wt == _I64 else 4
        if size > end - pos:
            raise ValueError(f"truncated fixed{size * 8} at offset {tagpos}")
        return pos + size
    if wt == _EGROUP:
        raise ValueError(f"unexpected end-group tag at offset {tagpos}")
    # _SGROUP: skip fields up to the matching end-group tag
    if depth >= _MAX_GROUP_DEPTH:
        raise ValueError(f"groups nested too deeply at offset {tagpos}")
    while pos < end:
        inner_pos = pos
        f, w, pos = _tag(buf, pos, end)
        if w == _EGROUP:
            if f != field:
                raise ValueError(f"mismatched end-group tag at offset {inner_pos}")
            return pos
        pos = _skip(buf, pos, end, f, w, inner_pos, depth + 1)
    raise ValueError(f"unterminated group at offset {tagpos}")


def _wrong_wire_type(field: int, wt: int, tagpos: int) -> ValueError:
    return ValueError(f"wrong wire type {wt} for field {field} at offset {tagpos}")


def _utf8(buf: memoryview | bytes, start: int, stop: int, field: int, tagpos: int) -> str:
    try:
        return str(buf[start:stop], "utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"invalid UTF-8 in field {field} at offset {tagpos}") from None


def _entry_key_is_shm(buf: memoryview | bytes, pos: int, end: int) -> bool:
    """Whether the map entry in [pos, end) has the key "shared_memory_region" (last key wins)."""
    key_start = key_stop = pos
    while pos < end:
        tagpos = pos
        t = _TAG1[buf[pos]]
        if t is None:
            f, wt, pos = _tag(buf, pos, end)
        else:
            f, wt = t
            pos += 1
        if f == 1:
            if wt != _LEN:
                raise _wrong_wire_type(f, wt, tagpos)
            key_start, pos = _length(buf, pos, end, tagpos)
            key_stop = pos
        else:
            pos = _skip(buf, pos, end, f, wt, tagpos, 0)
    return buf[key_start:key_stop] == _SHM_KEY


def _tensor_uses_shm(buf: memoryview | bytes, pos: int, end: int, params_field: int) -> bool:
    """Whether the input / requested-output tensor in [pos, end) has a shared_memory_region
    parameter; its parameters map is field ``params_field``. All entries are walked."""
    found = False
    while pos < end:
        tagpos = pos
        t = _TAG1[buf[pos]]
        if t is None:
            f, wt, pos = _tag(buf, pos, end)
        else:
            f, wt = t
            pos += 1
        if f == params_field:
            if wt != _LEN:
                raise _wrong_wire_type(f, wt, tagpos)
            start, pos = _length(buf, pos, end, tagpos)
            if _entry_key_is_shm(buf, start, pos):
                found = True
        else:
            pos = _skip(buf, pos, end, f, wt, tagpos, 0)
    return found


def scan_request(raw: bytes) -> tuple[str, str, str, bool]:
    """(model_name, model_version, id, uses_shared_memory) of a serialized ModelInferRequest.

    Also reads ModelReady/ModelMetadata/ModelConfig/ModelStatistics requests (field 1 = name,
    field 2 = version). Only inputs (field 5) and requested outputs (field 6) are descended into,
    to find a ``shared_memory_region`` parameter. Raises ValueError on malformed bytes.
    """
    buf = raw if isinstance(raw, bytes) else _byte_view(raw)
    end = len(buf)
    strings = ["", "", ""]
    shm = False
    pos = 0
    while pos < end:
        tagpos = pos
        t = _TAG1[buf[pos]]
        if t is None:
            f, wt, pos = _tag(buf, pos, end)
        else:
            f, wt = t
            pos += 1
        if 1 <= f <= 7:
            if wt != _LEN:
                raise _wrong_wire_type(f, wt, tagpos)
            start, pos = _length(buf, pos, end, tagpos)
            if f <= 3:
                strings[f - 1] = _utf8(buf, start, pos, f, tagpos)
            elif f == 5:
                shm = _tensor_uses_shm(buf, start, pos, 4) or shm
            elif f == 6:
                shm = _tensor_uses_shm(buf, start, pos, 2) or shm
        else:
            pos = _skip(buf, pos, end, f, wt, tagpos, 0)
    return strings[0], strings[1], strings[2], shm


def sample_key(request_id: str) -> float:
    """Deterministic key in [0, 1): 64-bit FNV-1a of the UTF-8 bytes, mixed by murmur3's fmix64
    finalizer, top 53 bits. The finalizer matters: FNV-1a's top bits barely move for ids that
    differ only in their last characters ("req-1", "req-2", ...), so without it a 10% sample of
    sequential ids can be 0% or 23%."""
    if not isinstance(request_id, str):
        raise TypeError(f"request_id must be str, not {type(request_id).__name__}")
    h = _FNV_OFFSET
    for b in request_id.encode("utf-8"):
        h = ((h ^ b) * _FNV_PRIME) & _U64
    return (fmix64(h) >> 11) * 2.0**-53


def fmix64(h: int) -> int:
    """murmur3's 64-bit finalizer (full avalanche)."""
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _U64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _U64
    h ^= h >> 33
    return h


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def build_request(raw: bytes, model_name: str | None, model_version: str | None, shadow: bool) -> bytes:
    """``raw`` with fields appended: model_name (1) and model_version (2) when not None, and the
    ``shadow`` bool parameter (4) when ``shadow``. Protobuf's last-wins rule makes them override.
    One allocation and copy; ``raw`` itself when nothing is appended. No parse of ``raw``."""
    for arg in (model_name, model_version):
        if arg is not None and not isinstance(arg, str):
            raise TypeError(f"model name and version must be str or None, not {type(arg).__name__}")
    parts: list[bytes] = []
    if model_name is not None:
        s = model_name.encode("utf-8")
        parts += (b"\x0a", _varint_bytes(len(s)), s)
    if model_version is not None:
        s = model_version.encode("utf-8")
        parts += (b"\x12", _varint_bytes(len(s)), s)
    if shadow:
        parts.append(SHADOW_PARAMETER)
    if not parts:
        return raw
    if not isinstance(raw, bytes):
        _byte_view(raw)  # same acceptance rule as the compiled twin
    return b"".join([raw, *parts])


def _output_tensor(buf: memoryview | bytes, pos: int, end: int) -> tuple[str, str, tuple[int, ...]]:
    name = datatype = ""
    shape: list[int] = []
    while pos < end:
        tagpos = pos
        t = _TAG1[buf[pos]]
        if t is None:
            f, wt, pos = _tag(buf, pos, end)
        else:
            f, wt = t
            pos += 1
        if f == 1 or f == 2:
            if wt != _LEN:
                raise _wrong_wire_type(f, wt, tagpos)
            start, pos = _length(buf, pos, end, tagpos)
            s = _utf8(buf, start, pos, f, tagpos)
            if f == 1:
                name = s
            else:
                datatype = s
        elif f == 3:
            if wt == _VARINT:
                v, pos = _varint(buf, pos, end)
                shape.append(v - (1 << 64) if v >> 63 else v)
            elif wt == _LEN:
                p, pos = _length(buf, pos, end, tagpos)
                while p < pos:
                    v, p = _varint(buf, p, pos)
                    shape.append(v - (1 << 64) if v >> 63 else v)
            else:
                raise _wrong_wire_type(f, wt, tagpos)
        else:
            pos = _skip(buf, pos, end, f, wt, tagpos, 0)
    return name, datatype, tuple(shape)


def scan_response(raw: bytes) -> list[tuple[str, str, tuple[int, ...], memoryview | None]]:
    """Per output tensor of a serialized ModelInferResponse, in order: (name, datatype, shape,
    contents), contents being a zero-copy view of the i-th raw_output_contents entry, or None when
    there are fewer entries than outputs. Raises ValueError on malformed bytes."""
    buf = raw if isinstance(raw, bytes) else _byte_view(raw)
    end = len(buf)
    outputs: list[tuple[str, str, tuple[int, ...]]] = []
    contents: list[tuple[int, int]] = []
    pos = 0
    while pos < end:
        tagpos = pos
        t = _TAG1[buf[pos]]
        if t is None:
            f, wt, pos = _tag(buf, pos, end)
        else:
            f, wt = t
            pos += 1
        if 1 <= f <= 6:
            if wt != _LEN:
                raise _wrong_wire_type(f, wt, tagpos)
            start, pos = _length(buf, pos, end, tagpos)
            if f == 5:
                outputs.append(_output_tensor(buf, start, pos))
            elif f == 6:
                contents.append((start, pos))
        else:
            pos = _skip(buf, pos, end, f, wt, tagpos, 0)
    result: list[tuple[str, str, tuple[int, ...], memoryview | None]] = []
    view_all = _byte_view(raw) if contents and outputs else None
    for i, (name, datatype, shape) in enumerate(outputs):
        view = None
        if i < len(contents):
            start, stop = contents[i]
            view = view_all[start:stop]  # type: ignore[index]
        result.append((name, datatype, shape, view))
    return result


def decode_bytes_tensor(buf: object) -> list[bytes]:
    """Elements of a Triton BYTES tensor (each: uint32 little-endian length, then the bytes)."""
    mv = _byte_view(buf)
    end = len(mv)
    items: list[bytes] = []
    pos = 0
    while pos < end:
        if end - pos < 4:
            raise ValueError(f"truncated BYTES element length at offset {pos}")
        (n,) = _U32.unpack_from(mv, pos)
        if n > end - pos - 4:
            raise ValueError(f"BYTES element of length {n} past end of buffer at offset {pos}")
        items.append(bytes(mv[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return items


def encode_bytes_tensor(items: Sequence[bytes]) -> bytes:
    """Triton BYTES tensor serialization of ``items`` (any bytes-like objects)."""
    parts: list[object] = []
    for item in items:
        mv = _byte_view(item)
        if mv.nbytes > 0xFFFFFFFF:
            raise ValueError("BYTES element longer than 4 GiB - 1")
        parts.append(_U32.pack(mv.nbytes))
        parts.append(mv)
    return b"".join(parts)  # type: ignore[arg-type]
