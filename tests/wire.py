"""The KServe wire format for the tests: plain FP32 requests and responses (``fp32_request``,
``fp32_response``); for the packing tests (tests/unit/test_packing_*.py), hypothesis strategies for
requests, responses, unknown fields and mutated bytes, raw-field builders, protobuf as the oracle
for valid bytes, and hand-made wire-format cases with the expected error or scan."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

# The packing_impl fixture returns a module (no state), so sharing it between examples is safe.
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SHM = "shared_memory_region"
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
NAMES = st.text(max_size=12)
KEYS = st.one_of(NAMES, st.sampled_from([SHM, "shadow", "binary_data", "priority"]))


def fp32_request(**inputs: np.ndarray) -> bytes:
    """A serialized ModelInferRequest for model "m" with these FP32 inputs (raw contents), in order."""
    r = pb.ModelInferRequest(model_name="m")
    for name, a in inputs.items():
        r.inputs.add(name=name, datatype="FP32", shape=list(a.shape))
        r.raw_input_contents.append(np.ascontiguousarray(a, np.float32).tobytes())
    return r.SerializeToString()


def fp32_response(**outputs: np.ndarray) -> bytes:
    """A serialized ModelInferResponse of model "m" with these FP32 outputs (raw contents), in order."""
    r = pb.ModelInferResponse(model_name="m")
    for name, a in outputs.items():
        r.outputs.add(name=name, datatype="FP32", shape=list(a.shape))
        r.raw_output_contents.append(np.ascontiguousarray(a, np.float32).tobytes())
    return r.SerializeToString()


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


# --- hand-made cases: (bytes, expected ValueError message or the result) --------------------------

# scan_request's
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

# scan_response's
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
