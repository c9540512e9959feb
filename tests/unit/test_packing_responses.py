"""Wire-level packing of responses and BYTES tensors: scan_response of both twins against protobuf
(the oracle for valid bytes) on random, mutated and hand-made bytes (tests/wire.py), and the BYTES
tensor codec against tritonclient's."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import serialize_byte_tensor

from tests.wire import (
    INT64,
    NAMES,
    RESPONSE_CASES,
    SETTINGS,
    _tag,
    _varint,
    expected_outputs,
    infer_responses,
    materialize,
    mutations,
    outcome,
    parse_or_none,
    unknown_fields,
)


# --- scan_response -------------------------------------------------------------------------------

@SETTINGS
@given(msg=infer_responses())
def test_scan_response_matches_protobuf(packing_impl: ModuleType, msg: pb.ModelInferResponse) -> None:
    raw = msg.SerializeToString()
    got = packing_impl.scan_response(raw)
    assert materialize(got) == expected_outputs(msg)
    for _, _, _, view in got:
        if view is not None:  # zero-copy: a view on raw itself
            assert isinstance(view, memoryview) and view.obj is raw and view.readonly


def _unpacked_output(name: str, datatype: str, shape: list[int]) -> bytes:
    body = _tag(1, 2) + _varint(len(name.encode())) + name.encode()
    body += b"".join(_tag(3, 0) + _varint(d) for d in shape)  # shape unpacked, one varint per dim
    body += _tag(2, 2) + _varint(len(datatype)) + datatype.encode()
    return _tag(5, 2) + _varint(len(body)) + body


@SETTINGS
@given(
    outs=st.lists(st.tuples(NAMES, st.sampled_from(["FP32", "INT8"]), st.lists(INT64, max_size=4)), max_size=3),
    contents=st.lists(st.binary(max_size=50), max_size=3),
    unknown=unknown_fields(),
)
def test_scan_response_unpacked_shapes_and_unknown_fields(
    packing_impl: ModuleType, outs: list, contents: list[bytes], unknown: bytes
) -> None:
    raw = unknown + b"".join(_unpacked_output(*o) for o in outs)
    raw += b"".join(_tag(6, 2) + _varint(len(c)) + c for c in contents) + unknown
    parsed = pb.ModelInferResponse.FromString(raw)
    assert materialize(packing_impl.scan_response(raw)) == expected_outputs(parsed)


@pytest.mark.parametrize(("raw", "expected"), RESPONSE_CASES)
def test_scan_response_wire_cases(packing_impl: ModuleType, raw: bytes, expected) -> None:
    if isinstance(expected, str):
        with pytest.raises(ValueError) as info:
            packing_impl.scan_response(raw)
        assert str(info.value) == expected
    else:
        assert materialize(packing_impl.scan_response(raw)) == expected


@SETTINGS
@given(data=st.data(), msg=infer_responses())
def test_scan_response_mutated_agrees_with_protobuf(
    packing_impl: ModuleType, data: st.DataObject, msg: pb.ModelInferResponse
) -> None:
    raw = data.draw(mutations(msg.SerializeToString()))
    got = outcome(packing_impl.scan_response, raw)
    parsed = parse_or_none(pb.ModelInferResponse, raw)
    if parsed is None:
        return
    if got[0] == "ok":
        assert got[1] == expected_outputs(parsed)
    else:
        assert "wrong wire type" in got[1]


# --- BYTES tensors -------------------------------------------------------------------------------

@SETTINGS
@given(items=st.lists(st.binary(max_size=40), max_size=8))
def test_bytes_tensor_roundtrip_matches_tritonclient(packing_impl: ModuleType, items: list[bytes]) -> None:
    encoded = packing_impl.encode_bytes_tensor(items)
    if items:
        assert encoded == serialize_byte_tensor(np.array(items, dtype=np.object_)).item()
    assert packing_impl.decode_bytes_tensor(encoded) == items
    assert packing_impl.decode_bytes_tensor(memoryview(encoded)) == items
    assert packing_impl.decode_bytes_tensor(np.frombuffer(encoded, dtype=np.uint8)) == items
    for cut in range(len(encoded)):
        try:
            prefix = packing_impl.decode_bytes_tensor(encoded[:cut])
        except ValueError as exc:
            assert "BYTES element" in str(exc)
        else:  # cut on an element boundary
            assert prefix == items[: len(prefix)]


def test_bytes_tensor_errors_and_buffers(packing_impl: ModuleType) -> None:
    assert packing_impl.encode_bytes_tensor([]) == b""
    assert packing_impl.decode_bytes_tensor(b"") == []
    assert packing_impl.encode_bytes_tensor([bytearray(b"ab"), memoryview(b"c"), np.array([1], "<u2")]) == (
        b"\x02\x00\x00\x00ab\x01\x00\x00\x00c\x02\x00\x00\x00\x01\x00"
    )
    with pytest.raises(ValueError, match="truncated BYTES element length at offset 5"):
        packing_impl.decode_bytes_tensor(b"\x01\x00\x00\x00a\x01\x00")
    with pytest.raises(ValueError, match="BYTES element of length 2 past end of buffer at offset 0"):
        packing_impl.decode_bytes_tensor(b"\x02\x00\x00\x00a")
    with pytest.raises(TypeError):
        packing_impl.encode_bytes_tensor(["text"])
    with pytest.raises(TypeError):
        packing_impl.encode_bytes_tensor(7)
    with pytest.raises(BufferError):
        packing_impl.decode_bytes_tensor(np.zeros(16, np.uint8)[::2])
