"""Wire-level packing: both twins against protobuf (the oracle for valid bytes), against each other
(c vs py on the same inputs, malformed ones included), and a few hand-made wire-format cases."""

from __future__ import annotations

import os
import subprocess
import sys
from types import FunctionType, ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import serialize_byte_tensor

import shadowgrpc._packing_py as packing_py

# The fixture returns a module (no state), so sharing it between examples is safe.
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SHM = "shared_memory_region"
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
NAMES = st.text(max_size=12)
KEYS = st.one_of(NAMES, st.sampled_from([SHM, "shadow", "binary_data", "priority"]))


# --- strategies --------------------------------------------------------------------------------

@st.composite
def infer_parameters(draw: st.DrawFn) -> pb.InferParameter:
    kind = draw(st.sampled_from(["bool", "int64", "string", "double", "uint64", "unset"]))
    p = pb.InferParameter()
    if kind == "bool":
        p.bool_param = draw(st.booleans())
    elif kind == "int64":
        p.int64_param = draw(INT64)
    elif kind == "string":
        p.string_param = draw(NAMES)
    elif kind == "double":
        p.double_param = draw(st.floats(allow_nan=False))
    elif kind == "uint64":
        p.uint64_param = draw(st.integers(min_value=0, max_value=2**64 - 1))
    return p


PARAMS = st.dictionaries(KEYS, infer_parameters(), max_size=3)


def _set_params(target, params: dict[str, pb.InferParameter]) -> None:
    for key, value in params.items():
        target[key].CopyFrom(value)


@st.composite
def infer_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=draw(NAMES), model_version=draw(NAMES), id=draw(NAMES))
    _set_params(msg.parameters, draw(PARAMS))
    for _ in range(draw(st.integers(0, 3))):
        t = msg.inputs.add(name=draw(NAMES), datatype=draw(st.sampled_from(["FP32", "INT64", "BYTES", ""])))
        t.shape.extend(draw(st.lists(INT64, max_size=4)))
        _set_params(t.parameters, draw(PARAMS))
        if draw(st.booleans()):
            t.contents.int64_contents.extend(draw(st.lists(INT64, max_size=4)))
    for _ in range(draw(st.integers(0, 2))):
        o = msg.outputs.add(name=draw(NAMES))
        _set_params(o.parameters, draw(PARAMS))
    msg.raw_input_contents.extend(draw(st.lists(st.binary(max_size=3000), max_size=3)))
    return msg


@st.composite
def infer_responses(draw: st.DrawFn) -> pb.ModelInferResponse:
    msg = pb.ModelInferResponse(model_name=draw(NAMES), model_version=draw(NAMES), id=draw(NAMES))
    _set_params(msg.parameters, draw(PARAMS))
    n = draw(st.integers(0, 4))
    for _ in range(n):
        t = msg.outputs.add(name=draw(NAMES), datatype=draw(st.sampled_from(["FP32", "INT64", "BYTES", ""])))
        t.shape.extend(draw(st.lists(INT64, max_size=4)))
        _set_params(t.parameters, draw(PARAMS))
    msg.raw_output_contents.extend(draw(st.lists(st.binary(max_size=200), max_size=n + 1)))
    return msg


def _varint(n: int) -> bytes:
    n &= 2**64 - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: int, wt: int) -> bytes:
    return _varint(field << 3 | wt)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _tag(field, 2) + _varint(len(payload)) + payload


@st.composite
def unknown_fields(draw: st.DrawFn, depth: int = 0) -> bytes:
    """Valid fields whose numbers no KServe message uses, of every wire type, groups included."""
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.integers(8, 2**29 - 1))
        wt = draw(st.sampled_from([0, 1, 2, 3, 5] if depth < 3 else [0, 1, 2, 5]))
        if wt == 0:
            out += _tag(field, 0) + _varint(draw(st.integers(0, 2**64 - 1)))
        elif wt == 1:
            out += _tag(field, 1) + draw(st.binary(min_size=8, max_size=8))
        elif wt == 5:
            out += _tag(field, 5) + draw(st.binary(min_size=4, max_size=4))
        elif wt == 2:
            payload = draw(st.binary(max_size=20))
            out += _tag(field, 2) + _varint(len(payload)) + payload
        else:
            out += _tag(field, 3) + draw(unknown_fields(depth + 1)) + _tag(field, 4)
    return out


@st.composite
def mutations(draw: st.DrawFn, base: bytes) -> bytes:
    """Random truncations, byte flips, insertions and deletions of ``base``."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        i = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[i:]
        elif op == "flip" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 4))]
    return bytes(data)


# --- helpers -------------------------------------------------------------------------------------

def expected_scan(msg: pb.ModelInferRequest) -> tuple[str, str, str, bool]:
    shm = any(SHM in t.parameters for t in msg.inputs) or any(SHM in o.parameters for o in msg.outputs)
    return msg.model_name, msg.model_version, msg.id, shm


def expected_outputs(msg: pb.ModelInferResponse) -> list[tuple]:
    raw = list(msg.raw_output_contents)
    return [
        (o.name, o.datatype, tuple(o.shape), raw[i] if i < len(raw) else None) for i, o in enumerate(msg.outputs)
    ]


def materialize(outputs: list[tuple]) -> list[tuple]:
    return [(n, d, s, None if v is None else bytes(v)) for n, d, s, v in outputs]


def outcome(fn, *args) -> tuple:
    """("ok", result) or ("ValueError", message); any other exception fails the test."""
    try:
        result = fn(*args)
    except ValueError as exc:
        return ("ValueError", str(exc))
    if isinstance(result, list) and result and isinstance(result[0], tuple):
        result = materialize(result)
    return ("ok", result)


def parse_or_none(cls, data: bytes):
    try:
        return cls.FromString(data)
    except Exception:  # google.protobuf.message.DecodeError
        return None


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


# (bytes, expected ValueError message or the scan result)
WIRE_CASES = [
    (b"\x0a", "truncated varint at offset 1"),
    (b"\x0a\x05ab", "length 5 past end of buffer at offset 0"),
    (b"\x0a\x80", "truncated varint at offset 1"),
    (b"\x08\x01", "wrong wire type 0 for field 1 at offset 0"),
    (b"\x1d\x00\x00\x00\x00", "wrong wire type 5 for field 3 at offset 0"),
    (b"\x0b\x0c", "wrong wire type 3 for field 1 at offset 0"),
    (b"\x00\x01", "field number 0 at offset 0"),
    (b"\x46", "invalid wire type 6 at offset 0"),
    (b"\x0a\x01\xff", "invalid UTF-8 in field 1 at offset 0"),
    (b"\x0a\x01x\x1a\x03\xed\xa0\x80", "invalid UTF-8 in field 3 at offset 3"),  # a surrogate
    (b"\x12\x02\xc0\x80", "invalid UTF-8 in field 2 at offset 0"),  # overlong NUL
    (b"\x0a\x01\xff\x0a\x01x", "invalid UTF-8 in field 1 at offset 0"),  # overwritten, still invalid
    (b"\x40" + b"\xff" * 10 + b"\x01", "varint longer than 10 bytes at offset 1"),
    (b"\x40" + b"\xff" * 9 + b"\x7f\x0a\x01x", ("x", "", "", False)),  # 10 bytes, high bits dropped
    (b"\xc0\x80\x80\x80\x80\x00\x01", "invalid tag at offset 0"),  # tag longer than 5 bytes
    (b"\xf8\xff\xff\xff\x1f\x01", "invalid tag at offset 0"),  # tag past 32 bits
    (b"\xc0\x80\x80\x80\x00\x01\x0a\x01x", ("x", "", "", False)),  # 5-byte tag of field 8
    (b"\x41\x00\x00", "truncated fixed64 at offset 0"),
    (b"\x45\x00", "truncated fixed32 at offset 0"),
    (b"\x44", "unexpected end-group tag at offset 0"),
    (b"\x43\x4c", "mismatched end-group tag at offset 1"),
    (b"\x43\x48\x01", "unterminated group at offset 0"),
    (b"\x43" * 101 + b"\x44" * 101, "groups nested too deeply at offset 100"),
    (b"\x43" * 100 + b"\x44" * 100 + b"\x12\x01v", ("", "v", "", False)),
    (b"\x43\x48\x01\x4b\x4d\x00\x00\x00\x00\x4c\x44\x0a\x01x", ("x", "", "", False)),  # nested groups
    (b"\x2a\x02\x20\x01", "wrong wire type 0 for field 4 at offset 2"),  # input.parameters not LEN
    (b"\x2a\x03\x22\x01\x10", "truncated varint at offset 5"),  # inside an input's map entry
    (b"\x32\x04\x12\x02\x0a\x05", "length 5 past end of buffer at offset 4"),
    (b"\x2a\x02\x22\x02", "length 2 past end of buffer at offset 2"),
    (b"\x2a\x02\x22\x00\x32\x02\x12\x01", "length 1 past end of buffer at offset 6"),
    (_ld(5, _ld(4, _ld(1, SHM.encode()))), ("", "", "", True)),
    (_ld(6, _ld(2, _ld(1, SHM.encode()) + _ld(2, b"\x18\x07"))), ("", "", "", True)),
    (_ld(6, _ld(4, _ld(1, SHM.encode()))), ("", "", "", False)),  # field 4 of an output is no map
    (_ld(5, _ld(4, _ld(1, SHM.encode()) + _ld(1, b"k"))), ("", "", "", False)),  # key: last one wins
    (_ld(5, _ld(4, _ld(1, b"k") + _ld(1, SHM.encode()))), ("", "", "", True)),
    (_ld(5, _ld(4, _ld(1, SHM.encode()[:-1]))), ("", "", "", False)),
    (_ld(5, _ld(4, _ld(2, b""))), ("", "", "", False)),  # no key: ""
    (_ld(5, _ld(1, b"x") + _ld(4, _ld(1, b"a")) + _ld(4, _ld(1, SHM.encode()))), ("", "", "", True)),
    (b"\x3a\x01\xff\x22\x01\xff", ("", "", "", False)),  # skipped fields are not looked into
]


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


RESPONSE_CASES = [
    (b"\x2a\x02\x1d\x00", "wrong wire type 5 for field 3 at offset 2"),
    (b"\x2a\x03\x1a\x01\x80", "truncated varint at offset 4"),  # packed shape cut inside a varint
    (b"\x2a\x02\x0a\x01", "length 1 past end of buffer at offset 2"),
    (b"\x2a\x03\x12\x01\xfe", "invalid UTF-8 in field 2 at offset 2"),
    (b"\x30\x01", "wrong wire type 0 for field 6 at offset 0"),
    (b"\x32\x03ab", "length 3 past end of buffer at offset 0"),
    (b"\x2a\x0c\x1a\x0a" + b"\xff" * 9 + b"\x01", [("", "", (-1,), None)]),
    (b"\x2a\x00\x2a\x00\x32\x01z", [("", "", (), b"z"), ("", "", (), None)]),
    (b"\x32\x01z\x32\x00\x2a\x00", [("", "", (), b"z")]),  # extra contents are ignored
]


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


# --- sample_key ----------------------------------------------------------------------------------

def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) % 2**64
    return h


@pytest.mark.parametrize(
    ("request_id", "fnv"),
    [("", 0xCBF29CE484222325), ("a", 0xAF63DC4C8601EC8C), ("foobar", 0x85944171F73967E8)],
)
def test_sample_key_vectors(packing_impl: ModuleType, request_id: str, fnv: int) -> None:
    assert _fnv1a64(request_id.encode()) == fnv
    assert packing_impl.sample_key(request_id) == (_fmix64(fnv) >> 11) * 2.0**-53


def _fmix64(h: int) -> int:
    # murmur3 fmix64, written independently of the twins.
    m = 2**64
    h ^= h >> 33
    h = h * 0xFF51AFD7ED558CCD % m
    h ^= h >> 33
    h = h * 0xC4CEB9FE1A85EC53 % m
    return h ^ (h >> 33)


@pytest.mark.parametrize("pattern", ["req-{}", "demo-intent-{}", "txn-{:08d}", "{}", "{:x}-user"])
@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5])
def test_sample_key_is_uniform_on_sequential_ids(packing_impl: ModuleType, pattern: str, rate: float) -> None:
    # Real request ids are often sequential; the sample must still hit the configured rate.
    n = 20000
    hits = sum(packing_impl.sample_key(pattern.format(i)) < rate for i in range(n))
    sd = (n * rate * (1 - rate)) ** 0.5
    assert abs(hits - n * rate) < 5 * sd, (pattern, rate, hits / n)


@SETTINGS
@given(request_id=st.text(max_size=64))
def test_sample_key_range_and_oracle(packing_impl: ModuleType, request_id: str) -> None:
    key = packing_impl.sample_key(request_id)
    assert 0.0 <= key < 1.0
    assert key == (_fmix64(_fnv1a64(request_id.encode("utf-8"))) >> 11) / 2**53


def test_sample_key_types(packing_impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        packing_impl.sample_key(b"id")
    with pytest.raises(UnicodeEncodeError):
        packing_impl.sample_key("\udc80")


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


# --- c vs py -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def twins() -> tuple[ModuleType, ModuleType]:
    import shadowgrpc._packing_c as packing_c

    return packing_c, packing_py


def _same(twins, name: str, *args) -> None:
    c, py = (getattr(m, name) for m in twins)
    assert outcome(c, *args) == outcome(py, *args)


@pytest.mark.c_extension
@SETTINGS
@given(
    data=st.data(),
    msg=infer_requests(),
    resp=infer_responses(),
    unknown=unknown_fields(),
    noise=st.binary(max_size=64),
)
def test_c_and_py_agree(
    twins, data: st.DataObject, msg: pb.ModelInferRequest, resp: pb.ModelInferResponse, unknown: bytes, noise: bytes
) -> None:
    raw = unknown + msg.SerializeToString()
    raw_resp = resp.SerializeToString()
    for candidate in (raw, data.draw(mutations(raw)), noise):
        _same(twins, "scan_request", candidate)
        _same(twins, "scan_response", candidate)
    for candidate in (raw_resp, data.draw(mutations(raw_resp))):
        _same(twins, "scan_response", candidate)
        _same(twins, "scan_request", candidate)
    name, version = data.draw(st.one_of(st.none(), NAMES)), data.draw(st.one_of(st.none(), NAMES))
    shadow = data.draw(st.booleans())
    _same(twins, "build_request", raw, name, version, shadow)
    _same(twins, "sample_key", msg.id)
    items = list(msg.raw_input_contents)
    encoded = twins[0].encode_bytes_tensor(items)
    assert encoded == twins[1].encode_bytes_tensor(items)
    for candidate in (encoded, data.draw(mutations(encoded)), noise):
        _same(twins, "decode_bytes_tensor", candidate)


@pytest.mark.c_extension
@pytest.mark.parametrize("raw", [case[0] for case in WIRE_CASES + RESPONSE_CASES])
def test_c_and_py_agree_on_wire_cases(twins, raw: bytes) -> None:
    _same(twins, "scan_request", raw)
    _same(twins, "scan_response", raw)


@pytest.mark.c_extension
def test_packing_c_loaded() -> None:
    import shadowgrpc._packing_c as packing_c
    import shadowgrpc.packing as packing

    assert packing.IMPLEMENTATION == "c"
    assert packing_c.__file__.endswith((".so", ".pyd"))
    for name in ("scan_request", "sample_key", "build_request", "scan_response", "decode_bytes_tensor",
                 "encode_bytes_tensor"):
        fn = getattr(packing, name)
        assert fn is getattr(packing_c, name)
        assert not isinstance(fn, FunctionType)  # compiled, not a Python function


@pytest.mark.parametrize(
    ("env", "prelude", "expected"),
    [
        ({"SHADOWGRPC_NO_EXTENSIONS": "1"}, "", "py"),
        # The extension missing (ImportError) falls back to the Python twin.
        ({"SHADOWGRPC_NO_EXTENSIONS": ""}, "import sys; sys.modules['shadowgrpc._packing_c'] = None; ", "py"),
    ],
)
def test_packing_selector_falls_back(env: dict[str, str], prelude: str, expected: str) -> None:
    code = prelude + "import shadowgrpc.packing as p; print(p.IMPLEMENTATION, p.scan_request.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert out.stdout.split() == [expected, f"shadowgrpc._packing_{expected}"]
