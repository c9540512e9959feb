"""Wire-level packing of requests: scan_request and build_request of both twins against protobuf
(the oracle for valid bytes), on random, mutated and hand-made wire-format bytes (tests/wire.py)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from tests.wire import (
    NAMES,
    SETTINGS,
    WIRE_CASES,
    _tag,
    _varint,
    expected_scan,
    infer_requests,
    mutations,
    outcome,
    parse_or_none,
    unknown_fields,
)


# --- scan_request --------------------------------------------------------------------------------

@SETTINGS
@given(msg=infer_requests())
def test_scan_request_matches_protobuf(packing_impl: ModuleType, msg: pb.ModelInferRequest) -> None:
    raw = msg.SerializeToString()
    assert packing_impl.scan_request(raw) == expected_scan(msg)


@SETTINGS
@given(a=infer_requests(), b=infer_requests(), unknown=unknown_fields(), unknown2=unknown_fields())
def test_scan_request_last_wins_and_unknown_fields(
    packing_impl: ModuleType, a: pb.ModelInferRequest, b: pb.ModelInferRequest, unknown: bytes, unknown2: bytes
) -> None:
    # Concatenated messages merge: singular fields appear twice and the last one wins.
    raw = unknown + a.SerializeToString() + unknown2 + b.SerializeToString() + unknown
    parsed = pb.ModelInferRequest.FromString(raw)
    assert packing_impl.scan_request(raw) == expected_scan(parsed)


@pytest.mark.parametrize(
    "cls", [pb.ModelReadyRequest, pb.ModelMetadataRequest, pb.ModelConfigRequest, pb.ModelStatisticsRequest]
)
def test_scan_request_on_model_requests(packing_impl: ModuleType, cls) -> None:
    assert (cls.DESCRIPTOR.fields_by_name["name"].number, cls.DESCRIPTOR.fields_by_name["version"].number) == (1, 2)
    raw = cls(name="fraud_ñ", version="3").SerializeToString()
    assert packing_impl.scan_request(raw) == ("fraud_ñ", "3", "", False)
    assert packing_impl.scan_request(cls().SerializeToString()) == ("", "", "", False)


def test_scan_request_accepts_any_contiguous_buffer(packing_impl: ModuleType) -> None:
    raw = pb.ModelInferRequest(model_name="m", id="r").SerializeToString()
    for buf in (bytearray(raw), memoryview(raw), np.frombuffer(raw, dtype=np.uint8)):
        assert packing_impl.scan_request(buf) == ("m", "", "r", False)
    with pytest.raises(BufferError):
        packing_impl.scan_request(np.frombuffer(raw * 2, dtype=np.uint8)[::2])
    with pytest.raises(TypeError):
        packing_impl.scan_request("not bytes")


@pytest.mark.parametrize(("raw", "expected"), WIRE_CASES)
def test_scan_request_wire_cases(packing_impl: ModuleType, raw: bytes, expected) -> None:
    if isinstance(expected, str):
        with pytest.raises(ValueError) as info:
            packing_impl.scan_request(raw)
        assert type(info.value) is ValueError
        assert str(info.value) == expected
        return
    assert packing_impl.scan_request(raw) == expected
    parsed = parse_or_none(pb.ModelInferRequest, raw)
    if parsed is not None:  # valid protobuf: must agree with it
        assert packing_impl.scan_request(raw) == expected_scan(parsed)


@SETTINGS
@given(data=st.data(), msg=infer_requests(), unknown=unknown_fields())
def test_scan_request_mutated_agrees_with_protobuf(
    packing_impl: ModuleType, data: st.DataObject, msg: pb.ModelInferRequest, unknown: bytes
) -> None:
    raw = data.draw(mutations(unknown + msg.SerializeToString()))
    got = outcome(packing_impl.scan_request, raw)
    parsed = parse_or_none(pb.ModelInferRequest, raw)
    if parsed is None:
        return  # invalid protobuf: ValueError, or a result (parts the scan never looks into)
    if got[0] == "ok":
        assert got[1] == expected_scan(parsed)
    else:  # protobuf keeps a known field with the wrong wire type as an unknown one; we refuse it
        assert "wrong wire type" in got[1]


@SETTINGS
@given(field=st.sampled_from([1, 2, 3]), payload=st.binary(max_size=12))
def test_scan_request_utf8_validation_is_strict(packing_impl: ModuleType, field: int, payload: bytes) -> None:
    raw = _tag(field, 2) + _varint(len(payload)) + payload
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(ValueError, match=f"invalid UTF-8 in field {field} at offset 0"):
            packing_impl.scan_request(raw)
    else:
        assert packing_impl.scan_request(raw)[field - 1] == text


# --- build_request -------------------------------------------------------------------------------

@SETTINGS
@given(
    msg=infer_requests(),
    name=st.one_of(st.none(), NAMES),
    version=st.one_of(st.none(), NAMES),
    shadow=st.booleans(),
)
def test_build_request_matches_protobuf(
    packing_impl: ModuleType, msg: pb.ModelInferRequest, name: str | None, version: str | None, shadow: bool
) -> None:
    raw = msg.SerializeToString()
    out = packing_impl.build_request(raw, name, version, shadow)
    if name is None and version is None and not shadow:
        assert out is raw
        return
    assert type(out) is bytes and out.startswith(raw)
    expected = pb.ModelInferRequest()
    expected.CopyFrom(msg)
    if name is not None:
        expected.model_name = name
    if version is not None:
        expected.model_version = version
    if shadow:
        expected.parameters["shadow"].CopyFrom(pb.InferParameter(bool_param=True))
    assert pb.ModelInferRequest.FromString(out) == expected
    assert packing_impl.scan_request(out) == expected_scan(expected)


def test_build_request_returns_raw_itself(packing_impl: ModuleType) -> None:
    for raw in (b"", pb.ModelInferRequest(model_name="m").SerializeToString(), bytearray(b"\x0a\x01m")):
        assert packing_impl.build_request(raw, None, None, False) is raw


def test_build_request_overrides_and_types(packing_impl: ModuleType) -> None:
    msg = pb.ModelInferRequest(model_name="live", model_version="1")
    msg.parameters["shadow"].string_param = "no"
    raw = msg.SerializeToString()
    out = packing_impl.build_request(memoryview(raw), "", None, True)
    parsed = pb.ModelInferRequest.FromString(out)
    assert (parsed.model_name, parsed.model_version) == ("", "1")
    assert parsed.parameters["shadow"] == pb.InferParameter(bool_param=True)
    assert packing_impl.build_request(bytearray(raw), "m" * 300, "7", False) == packing_impl.build_request(
        raw, "m" * 300, "7", False
    )
    with pytest.raises(TypeError):
        packing_impl.build_request(raw, b"bytes", None, False)
    with pytest.raises(UnicodeEncodeError):
        packing_impl.build_request(raw, "\ud800", None, False)


@pytest.fixture(scope="module")
def big_request() -> bytes:
    msg = pb.ModelInferRequest(model_name="live", id="big")
    msg.inputs.add(name="x", datatype="UINT8", shape=[64 << 20])
    msg.raw_input_contents.append(b"\x5a" * (64 << 20) + b"\x01")
    return msg.SerializeToString()


def test_build_request_64mib(packing_impl: ModuleType, big_request: bytes) -> None:
    assert packing_impl.scan_request(big_request) == ("live", "", "big", False)
    out = packing_impl.build_request(big_request, "shadow_model", "2", True)
    assert len(out) == len(big_request) + 2 + 12 + 3 + 14
    assert memoryview(out)[: len(big_request)] == big_request  # no copy
    parsed = pb.ModelInferRequest.FromString(out)
    assert (parsed.model_name, parsed.model_version, parsed.id) == ("shadow_model", "2", "big")
    assert parsed.parameters["shadow"].bool_param
    assert len(parsed.raw_input_contents[0]) == (64 << 20) + 1
    assert packing_impl.scan_request(out) == ("shadow_model", "2", "big", False)
